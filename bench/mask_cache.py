"""A content-keyed store of per-frame mask sets and arrays (SAM masks, image embeddings).

Expensive per-image results that do not depend on the pipeline upstream (SAM's automatic masks
depend on the image, the model, its checkpoint and the generator's settings; its image
embedding on the image, model and checkpoint) are stored once under a key of exactly those
things, so every pipeline and merge strategy that needs them shares them, and reruns read them
back::

    <root>/<kind>/<key[:2]>/<key>.npz

``kind`` separates what is stored (``auto-masks``, ``embedding``). Keys hash the image's
*pixels* (shape, dtype and bytes) with a JSON description of the settings (`MaskCache.key`), so
a renamed or copied frame hits, and a checkpoint is named by its content digest
(`MaskCache.file_digest`, memoised by path, size and mtime in ``<root>/file-index.json``).
Writes are atomic. An unreadable entry is an error naming the file (delete it to recompute),
never a silent recomputation.

`hits` and `misses` count lookups since the last `reset_counts` (the ``sam`` refiner reports
them after each split).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import write_npz
from bench.errors import InputError
from bench.mask_set import MaskSet


class MaskCache:
    """Mask sets and arrays under ``root``, keyed by image content and settings."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self._files: Any = None

    @staticmethod
    def key(image: np.ndarray, settings: dict[str, Any]) -> str:
        """sha256 of the image's pixels (shape, dtype, bytes) and the settings (JSON, sorted)."""
        image = np.ascontiguousarray(image)
        h = hashlib.sha256()
        h.update(f"{image.shape}|{image.dtype.str}|".encode())
        h.update(image.data)
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def file_digest(self, path: str | Path) -> str:
        """The sha256 of a file's bytes (a checkpoint), memoised by path, size and mtime."""
        from bench.data.file_index import FileIndex

        if self._files is None:
            self._files = FileIndex(self.root / "file-index.json")
        digest = self._files.digest(path)
        self._files.save()
        return str(digest)

    def path(self, kind: str, key: str) -> Path:
        """Where the entry ``key`` of ``kind`` lives."""
        return self.root / kind / key[:2] / f"{key}.npz"

    def reset_counts(self) -> None:
        """Start counting hits and misses afresh."""
        self.hits = self.misses = 0

    # ------------------------------------------------------------------ entries
    def load_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key`` (counted as a hit), or None (a miss)."""
        path = self.path(kind, key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(path, f"unreadable mask cache entry ({exc}); delete it to "
                                   "recompute") from None
        self.hits += 1
        return arrays

    def save_arrays(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
        """Store ``arrays`` under ``key`` (compressed, atomically); returns the file."""
        path = self.path(kind, key)
        write_npz(path, arrays)
        return path

    def load_masks(self, kind: str, key: str) -> MaskSet | None:
        """The mask set stored under ``key``, or None."""
        arrays = self.load_arrays(kind, key)
        if arrays is None:
            return None
        try:
            return MaskSet.from_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise InputError(self.path(kind, key), f"not a mask set ({exc}); delete it to "
                                                   "recompute") from None

    def save_masks(self, kind: str, key: str, masks: MaskSet) -> Path:
        """Store a mask set (packed bits, compressed) under ``key``."""
        return self.save_arrays(kind, key, masks.to_arrays())
