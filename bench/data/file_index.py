"""Content digests of data files, memoised by path, size and modification time.

A split's fingerprint (`bench.data.splits.fingerprint`) and the leakage check hash each image
file's bytes, so a byte-identical copy of a data set (another folder, new modification times: a
``cp``, a ``git checkout``, an ``rsync`` without ``-t``, a node's scratch disk) keeps every cached
stage. Reading every byte on every run would be slow, so, like git's index, a `FileIndex`
remembers each file's digest under its absolute path together with its size and ``mtime_ns``: a
file whose ``stat`` still matches is not read again, so an unchanged tree costs only ``stat``
calls.

The index of a run folder lives in ``<out>/cache/file-index.json``. It is only a cache: a
missing, corrupt or foreign file is ignored, and two processes that write it at once lose at
most some entries (last writer wins; every write is atomic).

As in git, an entry is trusted only if the file's modification time lies clearly before the
moment it was hashed (`RACY_NS`); otherwise a rewrite of the same size within one tick of the
file system's clock could go unnoticed, so such "racy" entries are hashed again until they age.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.atomic import write_json

#: digest algorithm of file contents (recorded in the index file)
ALGORITHM = "sha256"
#: an entry whose file was modified less than this long before it was hashed is re-hashed
RACY_NS = 2_000_000_000
#: version of the index file's layout
VERSION = 1


def hash_file(path: str | os.PathLike[str]) -> str:
    """The hex digest (`ALGORITHM`) of a file's bytes."""
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(fh, ALGORITHM).hexdigest()
        digest = hashlib.new(ALGORITHM)  # pragma: no cover (Python < 3.11)
        for block in iter(lambda: fh.read(1 << 20), b""):  # pragma: no cover
            digest.update(block)
        return digest.hexdigest()  # pragma: no cover


class FileIndex:
    """Digests of file contents keyed by absolute path, valid while size and mtime match.

    Args:
        path: the index file to read and `save` to; None keeps the index in memory only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        #: absolute path -> [size, mtime_ns, hashed_ns, digest]
        self.entries: dict[str, list[Any]] = self._read(path) if path is not None else {}
        self.dirty = False

    @classmethod
    def for_run(cls, out: str | os.PathLike[str]) -> FileIndex:
        """The index of run folder ``out`` (``<out>/cache/file-index.json``)."""
        return cls(Path(out) / "cache" / "file-index.json")

    def digest(self, path: str | os.PathLike[str]) -> str:
        """The content digest of ``path``: from the index if its ``stat`` matches, else hashed."""
        key = os.path.abspath(path)
        st = os.stat(key)
        entry = self.entries.get(key)
        if (entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                and st.st_mtime_ns < entry[2] - RACY_NS):
            return str(entry[3])
        hashed_ns = time.time_ns()
        value = hash_file(key)
        self.entries[key] = [st.st_size, st.st_mtime_ns, hashed_ns, value]
        self.dirty = True
        return value

    def save(self) -> None:
        """Write new entries to the index file (merged with what is there now), atomically."""
        if self.path is None or not self.dirty:
            return
        merged = {**self._read(self.path), **self.entries}
        write_json(self.path, {"version": VERSION, "algorithm": ALGORITHM, "files": merged})
        self.entries = merged
        self.dirty = False

    @staticmethod
    def _read(path: Path) -> dict[str, list[Any]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION \
                or data.get("algorithm") != ALGORITHM or not isinstance(data.get("files"), dict):
            return {}
        return {k: v for k, v in data["files"].items()
                if isinstance(v, list) and len(v) == 4 and isinstance(v[3], str)}


#: the index used when a caller passes none: lives as long as the process
MEMORY_INDEX = FileIndex()


def as_index(index: FileIndex | str | os.PathLike[str] | None) -> FileIndex:
    """``index`` itself, the index of a run folder (a path), or the in-memory `MEMORY_INDEX`."""
    if index is None:
        return MEMORY_INDEX
    if isinstance(index, FileIndex):
        return index
    return FileIndex.for_run(index)
