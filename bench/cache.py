"""The stage cache of a run folder: keys, trained state and per-split maps.

Layout under ``<out>/cache/``::

    <key>/model/                       trained state, written atomically, marked by DONE
    <key>/maps-<split>-<fingerprint>.npz  one map per tile: float16 soft maps, uint8 labels
    file-index.json                    content digests of data files (bench.data.file_index)
    synthetic/<key>.npz                rendered synthetic frames (bench.data.synthetic_cache)
    plans/*.json                       what plugin classes say of each pipeline (bench.plans)

A stage's key hashes everything its outputs depend on (`stage_key`): its resolved
configuration, its code (`bench.code_digest`), the key of the stage before it and, once any
stage up to it trains, the training data's content fingerprint. So a rerun reuses what is
unchanged and recomputes an edited stage and everything downstream of it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_dir, write_json, write_npz

#: key of the ``.npz`` entry holding the seconds a map file took to compute
TIMING_ENTRY = "__timing__"
#: bytes of decoded map files `shared_maps` keeps (least recently used dropped first)
SHARED_MAPS_BYTES = 512 * 2**20


class _MapsMemo:
    """Map files read in this run (`shared_maps`): path -> (stat, maps, seconds)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.files: OrderedDict[str, tuple[tuple[int, int], dict[str, np.ndarray],
                                           float | None, int]] = OrderedDict()

    def get(self, path: Path, stat: tuple[int, int]) -> tuple[dict[str, np.ndarray],
                                                             float | None] | None:
        found = self.files.get(str(path))
        if found is None or found[0] != stat:
            return None
        self.files.move_to_end(str(path))
        return found[1], found[2]

    def put(self, path: Path, stat: tuple[int, int], maps: dict[str, np.ndarray],
            timing: float | None) -> None:
        size = sum(m.nbytes for m in maps.values())
        if size > self.limit:
            return
        old = self.files.pop(str(path), None)
        self.bytes -= old[3] if old is not None else 0
        self.files[str(path)] = (stat, maps, timing, size)
        self.bytes += size
        while self.bytes > self.limit:
            _, (_, _, _, dropped) = self.files.popitem(last=False)
            self.bytes -= dropped


_SHARED_MAPS: ContextVar[_MapsMemo | None] = ContextVar("bench_shared_maps", default=None)


@contextmanager
def shared_maps(limit: int = SHARED_MAPS_BYTES) -> Iterator[None]:
    """Within this block a map file is decoded once (`StageCache.load_maps`): the cells of a
    run that share a stage (``effnet`` under ``effnet+crf``, ...) read its maps from memory.
    Map files never change once written (their name holds the stage key and the data's
    fingerprint; a rewrite is checked by size and mtime), and `StageCache.ordered` hands out
    copies, so sharing them is safe. Nested blocks share the outer one's memo."""
    if _SHARED_MAPS.get() is not None:
        yield
        return
    token = _SHARED_MAPS.set(_MapsMemo(limit))
    try:
        yield
    finally:
        _SHARED_MAPS.reset(token)


def share_maps_in_this_process(limit: int = SHARED_MAPS_BYTES) -> None:
    """Share decoded map files for the rest of this thread's life (a run's worker process)."""
    if _SHARED_MAPS.get() is None:
        _SHARED_MAPS.set(_MapsMemo(limit))


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-serialisable object (key order independent)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_key(upstream: dict[str, Any], inference_params: Sequence[str] = ()) -> tuple[str, str]:
    """``(key, model_key)`` of a stage from its key inputs (``upstream["stage"]`` is its config).

    ``model_key`` names the trained state: the key without the plugin's inference-only
    parameters, so variants that differ only in how they infer share one training.
    """
    key = stable_hash(upstream)
    skip = set(inference_params)
    if not skip:
        return key, key
    config = upstream["stage"]
    params = {k: v for k, v in config["params"].items() if k not in skip}
    return key, stable_hash({**upstream, "stage": {**config, "params": params},
                             "trained_state": True})


def compact(m: np.ndarray, output: str) -> np.ndarray:
    """A map as it is stored: soft maps as float16, label maps as uint8."""
    if output == "labels":
        return np.asarray(m).astype(np.uint8)
    return np.asarray(m, dtype=np.float32).astype(np.float16)


def restore(m: np.ndarray) -> np.ndarray:
    """A stored map as stages see it (soft maps back to float32), always a new array: stored
    maps may be shared (`shared_maps`)."""
    return m.astype(np.float32) if m.dtype == np.float16 else m.copy()


def _entry(sample_id: str) -> str:
    return sample_id.replace("/", "|")


class StageCache:
    """The cache folder of one stage key under ``<out>/cache``."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self.dir = root / key

    def maps_path(self, split: str, fingerprint: str) -> Path:
        """Where the maps of a split with this content fingerprint are stored."""
        return self.dir / f"maps-{split}-{fingerprint}.npz"

    def load_maps(self, path: Path) -> tuple[dict[str, np.ndarray], float | None]:
        """Stored maps by entry name and the seconds they took (None if not recorded); inside
        `shared_maps`, a file already read in this run comes from memory."""
        memo = _SHARED_MAPS.get()
        if memo is not None:
            st = path.stat()
            stat = (st.st_size, st.st_mtime_ns)
            found = memo.get(path, stat)
            if found is not None:
                return dict(found[0]), found[1]
        with np.load(path) as npz:
            maps = {k: npz[k] for k in npz.files if k != TIMING_ENTRY}
            timing = float(npz[TIMING_ENTRY]) if TIMING_ENTRY in npz.files else None
        if memo is not None:
            memo.put(path, stat, maps, timing)
            return dict(maps), timing
        return maps, timing

    def save_maps(self, path: Path, ids: Sequence[str], maps: Sequence[np.ndarray],
                  elapsed: float) -> dict[str, np.ndarray]:
        """Store compacted maps (atomically) and return them by entry name."""
        out = {_entry(sid): m for sid, m in zip(ids, maps, strict=True)}
        write_npz(path, {**out, TIMING_ENTRY: np.array(elapsed)})
        return out

    @staticmethod
    def ordered(stored: dict[str, np.ndarray], ids: Sequence[str]) -> list[np.ndarray]:
        """The stored maps of ``ids`` in order, restored."""
        return [restore(stored[_entry(sid)]) for sid in ids]


def model_dir(root: Path, model_key: str) -> Path:
    """The folder of a stage's trained state."""
    return root / model_key / "model"


def model_done(directory: Path) -> dict[str, Any] | None:
    """The ``DONE`` marker of a trained state (None while it is not complete)."""
    done = directory / "DONE"
    return json.loads(done.read_text()) if done.exists() else None


def save_model(directory: Path, save: Any, fit_s: float) -> None:
    """Write a trained state atomically: ``save(tmp)`` then the ``DONE`` marker."""
    with atomic_dir(directory) as tmp:
        save(tmp)
        write_json(tmp / "DONE", {"fit_s": fit_s})
