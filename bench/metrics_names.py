"""Names shared by the CLI and the table layer (kept import-light)."""

SPLITS = ("train", "val", "test")
