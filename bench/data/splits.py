"""Splits of a data set: tiling, image labels, a deterministic validation carve-out, limits.

- Frames larger than ``[tiles] size`` are cut into tiles (`bench.data.tiling`), never resized.
- Image labels come from the loader (class folders, synthetic) or from masks, per tile or per
  training crop: smoke if the smoke fraction exceeds ``smoke_min_fraction``, no smoke if it is
  zero, and *unlabelled* in between (scored on masks, never used to train a classifier).
- A data set without a ``val`` split gets one carved from ``train`` by a hash of the frame id
  (tiles of one frame stay together); the fraction is recorded.
- ``[exclude]`` leaves frames out of a split by id before any of this (`apply_exclusions`); what
  was left out is recorded in ``SplitData.derived["excluded"]``.
- A split's fingerprint hashes the content of its files (`bench.data.file_index`), so a copy of a
  data set elsewhere keeps its cache.
- Inside `shared_loads` (every ``bench run``: `bench.executors.run_cells`, and each worker
  process) a data set's splits are loaded once and shared by the cells: each (data set, split)
  calls its loader once, and each distinct `load_splits` call is answered from memory after the
  first (the caller gets its own `SplitData`, sharing the frames). The frames of at most
  `SHARED_DATASETS` data sets are kept.
- A loader may keep what it computes in the run's cache folder (`bench.data.loaders.CACHE_DIR`,
  ``<out>/cache`` when ``index`` names a run folder): the synthetic loader stores rendered
  frames there (`bench.data.synthetic_cache`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.config import DatasetConfig
from bench.data.file_index import FileIndex, as_index
from bench.data.frames import Frame, SampleList, SampleRef
from bench.data.hashing import hash_unit
from bench.data.loaders import CACHE_DIR, LOADERS
from bench.data.subsets import Subset, resolve_subsets
from bench.data.tiling import box_suffix, tile_boxes
from bench.errors import ConfigError

DEFAULT_SMOKE_MIN_FRACTION = 0.01
#: data sets whose loaded splits `shared_loads` keeps at once (an out-of-distribution cell
#: needs two); older ones are dropped
SHARED_DATASETS = 2


@dataclass
class _SharedLoads:
    """What `shared_loads` keeps, per data set (most recently used last)."""

    datasets: OrderedDict[tuple[str, ...], dict[str, dict[Any, Any]]] = field(
        default_factory=OrderedDict)

    def of(self, dataset: tuple[str, ...]) -> dict[str, dict[Any, Any]]:
        """The memo of one data set: ``frames`` by split, ``results`` by `load_splits` call."""
        if dataset in self.datasets:
            self.datasets.move_to_end(dataset)
        else:
            self.datasets[dataset] = {"frames": {}, "results": {}}
            while len(self.datasets) > SHARED_DATASETS:
                self.datasets.popitem(last=False)
        return self.datasets[dataset]


_SHARED: ContextVar[_SharedLoads | None] = ContextVar("bench_shared_loads", default=None)


@contextmanager
def shared_loads() -> Iterator[None]:
    """Within this block, `load_splits` loads each (data set, split) once and shares it (see
    the module doc); nested blocks share the outer one's memo."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set(_SharedLoads())
    try:
        yield
    finally:
        _SHARED.reset(token)


def share_loads_in_this_process() -> None:
    """Share loaded splits for the rest of this thread's life (a run's worker process)."""
    if _SHARED.get() is None:
        _SHARED.set(_SharedLoads())


@dataclass
class SplitData:
    """The loaded splits of one data set plus what was derived and how."""

    dataset: str
    splits: dict[str, SampleList]
    derived: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: the training frames cut into ``[image_labels] crop``-sized crops (None: no crops)
    train_crops: SampleList | None = None
    #: split -> its named subsets (``[subsets.<split>]``, `bench.data.subsets`); never part of
    #: a cache key: subsets only regroup the scored frames
    subsets: dict[str, list[Subset]] = field(default_factory=dict)

    def classifier_train(self) -> SampleList:
        """What a classifier trains on: labelled training crops (or tiles)."""
        base = self.train_crops if self.train_crops is not None else self["train"]
        return base.labelled()

    def __getitem__(self, split: str) -> SampleList:
        try:
            return self.splits[split]
        except KeyError:
            raise ConfigError(f"data set '{self.dataset}' has no split '{split}' (splits: "
                              f"{', '.join(self.splits)})") from None


def derive_label(mask: np.ndarray | None, frame_label: int | None, whole_frame: bool,
                 min_fraction: float) -> int | None:
    """Image label of a crop: from its mask if known, else from the frame's label when possible."""
    if mask is None:
        if frame_label == 0 or whole_frame:
            return frame_label
        return None
    valid = mask != 255
    total = int(valid.sum())
    if total == 0:
        return None
    smoke = int((mask == 1).sum())
    if smoke == 0:
        return 0
    return 1 if smoke / total > min_fraction else None


def frames_to_refs(frames: list[Frame], tile: int, crop: int, min_fraction: float,
                   use_frame_labels: bool) -> list[SampleRef]:
    """Cut frames into tiles (and tiles into ``crop``-sized crops if ``crop`` > 0) with labels."""
    refs = []
    for frame in frames:
        height, width = frame.size
        for y, x, h, w in tile_boxes(height, width, tile):
            boxes = [(y, x, h, w)]
            if crop > 0:
                boxes = [(y + by, x + bx, bh, bw) for by, bx, bh, bw in tile_boxes(h, w, crop)]
            for box in boxes:
                by, bx, bh, bw = box
                whole = box == (0, 0, height, width)
                mask = None if frame.mask is None else frame.mask[by:by + bh, bx:bx + bw]
                if use_frame_labels and frame.label is not None and whole:
                    label = frame.label
                else:
                    label = derive_label(mask, frame.label, whole, min_fraction)
                refs.append(SampleRef(frame.id + box_suffix(box, height, width), frame, box,
                                      label))
    return refs


def limit_frames(frames: list[Frame], limit: int | None, salt: str) -> list[Frame]:
    """At most ``limit`` frames, chosen deterministically by a hash of their ids."""
    if not limit or len(frames) <= limit:
        return frames
    order = sorted(frames, key=lambda f: hash_unit(f.id, salt))[:limit]
    keep = {f.id for f in order}
    return [f for f in frames if f.id in keep]


def fingerprint(frames: list[Frame], refs: list[SampleRef], config: DatasetConfig,
                extra: dict[str, Any], index: FileIndex | None = None) -> str:
    """A hash of what the split holds: frame ids, image contents (file bytes, memoised by
    ``index``), masks, tiles and options; not where the files are or when they were written."""
    h = hashlib.sha256()
    # [subsets] only regroups scored frames: declaring one keeps every cached stage
    h.update(repr(sorted(((k, v) for k, v in config.raw.items() if k != "subsets"),
                         key=str)).encode())
    h.update(repr(sorted(extra.items())).encode())
    for frame in frames:
        h.update(frame.id.encode())
        if frame.image_path is not None or frame.image is not None:
            h.update(frame.content_key(index).encode())
        if frame.mask is not None:
            h.update(hashlib.sha1(np.ascontiguousarray(frame.mask)).digest())
    for ref in refs:
        h.update(f"{ref.id}:{ref.box}:{ref.label}".encode())
    return h.hexdigest()[:16]


def apply_exclusions(config: DatasetConfig, split: str,
                     frames: list[Frame]) -> tuple[list[Frame], dict[str, Any] | None]:
    """Leave out the frames that ``[exclude]`` names for ``split``.

    Returns the kept frames and what was left out (``{"ids": [...], "count": n}``, plus
    ``"absent"``: ids no frame has, when ``[exclude] missing = "ignore"``), or None if the file
    excludes nothing from ``split``. An id that no frame has is a `ConfigError` naming the file
    (a typo must not silently exclude nothing) unless ``missing = "ignore"``.
    """
    wanted = config.exclude.get(split)
    if not wanted:
        return frames, None
    have = {f.id for f in frames}
    absent = [i for i in wanted if i not in have]
    if absent and config.exclude_missing != "ignore":
        close = difflib.get_close_matches(absent[0], sorted(have), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{config.path}: [exclude] {split}: {len(absent)} id(s) match no frame of split "
            f"'{split}': {', '.join(repr(i) for i in absent[:5])}"
            f"{' ...' if len(absent) > 5 else ''}{hint}; ids are frame ids (file stems for "
            "folder_pairs); if the file also serves subsets of the data set, add "
            "missing = \"ignore\" to [exclude]")
    drop = set(wanted) & have
    info: dict[str, Any] = {"ids": sorted(drop), "count": len(drop)}
    if absent:
        info["absent"] = absent
    return [f for f in frames if f.id not in drop], info


def load_splits(config: DatasetConfig, root: Path | None, profile: str = "quick",
                limit: int | None = None, splits: list[str] | None = None,
                index: FileIndex | str | os.PathLike[str] | None = None) -> SplitData:
    """Load, tile, label and carve the splits of a data set.

    Args:
        config: the parsed dataset file.
        root: its data root (None for synthetic data).
        profile: ``quick`` or ``full`` (loaders may size synthetic splits by profile).
        limit: keep at most this many frames per split (deterministic by id hash).
        splits: the splits to load (default: all, with ``val`` carved from ``train`` if absent).
        index: where content digests of image files are memoised: a `FileIndex`, or a run
            folder whose ``cache/file-index.json`` holds one (saved after loading); default an
            in-memory index that lives as long as the process. The folder of a file-backed
            index is the cache folder loaders may keep things in (`CACHE_DIR`).

    Inside `shared_loads`, an identical call is answered from memory and each split's loader
    runs once (module doc).
    """
    index = as_index(index)
    cache_dir = index.path.parent if index.path is not None else None
    shared = _SHARED.get()
    memo = shared.of((config.name, str(config.path), repr(sorted(config.raw.items(), key=str)),
                      str(root), profile)) if shared is not None else None
    call = (limit, tuple(splits) if splits is not None else None, str(index.path))
    if memo is not None and call in memo["results"]:
        return _copy_split_data(memo["results"][call])
    loader = LOADERS.get(config.loader)

    def load(split: str) -> tuple[list[Frame], dict[str, Any] | None]:
        if memo is not None and split in memo["frames"]:
            frames, excluded = memo["frames"][split]
            return list(frames), copy.deepcopy(excluded)
        token = CACHE_DIR.set(cache_dir)
        try:
            found = apply_exclusions(config, split, loader(config, split, root, profile))
        finally:
            CACHE_DIR.reset(token)
        if memo is not None:
            memo["frames"][split] = (list(found[0]), copy.deepcopy(found[1]))
        return found
    declared = [s for s in config.splits if isinstance(s, str)]
    wanted = splits or config.split_names
    carve = "val" not in declared and "train" in declared
    need_train = carve and ("val" in wanted or "train" in wanted)
    tile = config.tile_size
    labels_cfg = config.image_labels
    min_fraction = float(labels_cfg.get("smoke_min_fraction", DEFAULT_SMOKE_MIN_FRACTION))
    crop = int(labels_cfg.get("crop", 0))
    use_frame_labels = bool(labels_cfg.get("use_frame_labels", True))
    out: dict[str, SampleList] = {}
    prints: dict[str, str] = {}
    derived: dict[str, Any] = {"tile_size": tile, "train_crop": crop,
                               "smoke_min_fraction": min_fraction}
    frame_sets: dict[str, list[Frame]] = {}
    for split in declared:
        if split in wanted or (split == "train" and need_train):
            frames, excluded = load(split)
            frame_sets[split] = frames
            if excluded is not None:
                derived.setdefault("excluded", {})[split] = excluded
    if carve and "train" in frame_sets:
        train = frame_sets["train"]
        in_val = [hash_unit(f.id, "val") < config.val_fraction for f in train]
        frame_sets["train"] = [f for f, v in zip(train, in_val, strict=True) if not v]
        frame_sets["val"] = [f for f, v in zip(train, in_val, strict=True) if v]
        derived["val"] = {"carved_from": "train", "fraction": config.val_fraction,
                          "by": "sha1 of frame id"}
    train_crops = None
    subsets: dict[str, list[Subset]] = {}
    for split, frames in frame_sets.items():
        if split not in wanted:
            continue
        if config.subsets.get(split):
            excluded = derived.get("excluded", {}).get(split, {}).get("ids", [])
            subsets[split] = resolve_subsets(config.subsets[split], root, split,
                                             (f.id for f in frames), excluded,
                                             config.subsets_missing, config.path)
        frames = limit_frames(frames, limit, split)
        refs = frames_to_refs(frames, tile, 0, min_fraction, use_frame_labels)
        out[split] = SampleList(refs, f"{config.name}/{split}")
        extra = {"limit": limit, "split": split, "profile": profile}
        if split == "train" and crop > 0:
            crop_refs = frames_to_refs(frames, tile, crop, min_fraction, use_frame_labels)
            train_crops = SampleList(crop_refs, f"{config.name}/train-crops")
            refs = refs + crop_refs
        prints[split] = fingerprint(frames, refs, config, extra, index)
    index.save()
    if limit:
        derived["limit"] = limit
    data = SplitData(config.name, out, derived, prints, train_crops, subsets)
    if memo is not None:
        memo["results"][call] = data
        return _copy_split_data(data)
    return data


def _copy_split_data(data: SplitData) -> SplitData:
    """A `SplitData` of its own (the caller may add splits) over the same frames."""
    return dataclasses.replace(data, splits=dict(data.splits),
                               derived=copy.deepcopy(data.derived),
                               fingerprints=dict(data.fingerprints),
                               subsets={k: list(v) for k, v in data.subsets.items()})
