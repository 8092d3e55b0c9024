"""COCO segmentation exports (Roboflow's ``_annotations.coco.json`` + images): the IJmond set.

``loader = "coco"``. Polygons (and RLE, and optionally bare boxes) are rasterised to masks with
0 background, 1 smoke, 255 ignore. Options live in the ``[coco]`` table (``datasets/README.md``
lists them all; ``datasets/ijmond.toml`` is the worked example):

Categories. ``high_opacity`` and ``low_opacity`` are case-insensitive fnmatch patterns over
category names (default ``*high*`` / ``*low*``). ``smoke = "all"`` makes both smoke;
``smoke = "high"`` makes only high-opacity smoke and turns low-opacity pixels into
``low_opacity_as = "ignore"`` (255, left out of every score: the default, because thin smoke is
neither a miss nor a false alarm) or ``"background"`` (0: a method that finds thin smoke is
penalised). Where regions overlap, smoke wins over ignore and ignore over background. Annotations
of any other category are an error unless ``other_categories`` says ``smoke``, ``ignore`` or
``skip``; annotations with no polygon (bare boxes) likewise follow ``box_only``.

Rasterisation (`bench.data.geometry`). A pixel is inside a polygon when its centre is
(even-odd rule), so a ``[10, 10, 20, 10, 20, 20, 10, 20]`` square covers exactly 100 pixels:
COCO's continuous pixel coordinates, with no one-pixel outline bias (PIL's ``ImageDraw.polygon``
fills the outline too, adding about half the perimeter). Points may lie up to ``edge_tolerance``
pixels outside the image (Roboflow rounds to the border); further out is an `InputError` naming
the file.

Frame ids. Roboflow renames ``kooks_1__2024-03-05T10-15-00_frame_12.jpg`` to
``kooks_1__2024-03-05T10-15-00_frame_12_jpg.rf.<hash>.jpg``, with a new hash in every export and
for every augmented copy. The id drops ``_jpg.rf.<hash>`` (so ids are stable across re-exports
and two exports of one frame share an id), and camera, time and frame number are parsed from
IJmond names ``{camera}__{ISO time}_frame_{n}``. Copies of one frame inside a split follow
``duplicates``: ``"first"`` (default: keep the copy listed first; the harness, not the export,
decides on augmentation), ``"keep"`` (ids get ``~2``, ``~3``, ...) or ``"error"``. With Roboflow's
own folders as splits, a frame of an evaluation split that is also in ``train`` is an error
(``cross_split_duplicates = "drop"`` drops it from the evaluation split instead).

Splits. ``split_by = "folders"`` (default): each split names export folders (``train``,
``valid``, ``test``). ``split_by = "camera"`` / ``"time"`` / ``"hash"``: the ``folders`` option
lists the folders pooled (default: the root if it holds the annotation file, else every
subfolder that does) and `bench.data.split_rules.SplitRule` assigns frames; split values are
then only labels.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.config import DatasetConfig, check_options
from bench.data.frames import Frame
from bench.data.geometry import decode_rle, rasterize_polygon
from bench.data.io import image_size
from bench.data.loaders import register_loader
from bench.data.split_rules import SplitRule
from bench.errors import ConfigError, InputError

DEFAULT_ANNOTATIONS = "_annotations.coco.json"
ROBOFLOW_SUFFIX = re.compile(
    r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,5})\.rf\.(?P<hash>[0-9A-Za-z]+)$")
IJMOND_STEM = re.compile(r"^(?P<camera>.+?)__(?P<time>.+?)_frame_(?P<frame>\d+)$")

_CHOICES = {
    "split_by": ("folders", "camera", "time", "hash"),
    "smoke": ("all", "high"),
    "low_opacity_as": ("ignore", "background"),
    "other_categories": ("error", "smoke", "ignore", "skip"),
    "box_only": ("error", "ignore", "skip"),
    "duplicates": ("first", "keep", "error"),
    "cross_split_duplicates": ("error", "drop"),
}
_KNOWN = {*_CHOICES, "annotations", "folders", "high_opacity", "low_opacity", "edge_tolerance",
          "test_cameras", "val_cameras", "test_from", "val_from", "test_fraction"}

SMOKE, IGNORE, SKIP = "smoke", "ignore", "skip"


@dataclass
class CocoOptions:
    """The ``[coco]`` table, validated."""

    annotations: str = DEFAULT_ANNOTATIONS
    split_by: str = "folders"
    folders: list[str] | None = None
    high_opacity: list[str] = field(default_factory=lambda: ["*high*"])
    low_opacity: list[str] = field(default_factory=lambda: ["*low*"])
    smoke: str = "all"
    low_opacity_as: str = "ignore"
    other_categories: str = "error"
    box_only: str = "error"
    duplicates: str = "first"
    cross_split_duplicates: str = "error"
    edge_tolerance: float = 1.0

    @classmethod
    def from_config(cls, config: DatasetConfig) -> CocoOptions:
        opts = dict(config.options)
        where = f"{config.path}: [coco]"
        check_options(config, _KNOWN, _CHOICES)
        for key in ("high_opacity", "low_opacity", "folders"):
            if key in opts:
                value = [opts[key]] if isinstance(opts[key], str) else opts[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{where} {key} must be a list of strings")
                opts[key] = value
        out = cls(**{k: v for k, v in opts.items() if k in cls.__dataclass_fields__})
        out.edge_tolerance = float(out.edge_tolerance)
        return out


# --------------------------------------------------------------------------- file names


@dataclass
class FrameName:
    """What a (Roboflow-renamed) IJmond file name tells: a stable id and where/when it is from."""

    id: str
    roboflow_hash: str | None = None
    camera: str | None = None
    time: datetime | None = None
    frame: int | None = None


def parse_frame_name(file_name: str) -> FrameName:
    """Split ``{camera}__{ISO time}_frame_{n}_jpg.rf.{hash}.jpg`` into its parts.

    Names that do not follow the IJmond pattern still lose Roboflow's ``_ext.rf.hash`` suffix;
    their camera and time are None.
    """
    from bench.data.split_rules import parse_time

    stem = Path(file_name).stem
    rf_hash = None
    m = ROBOFLOW_SUFFIX.match(stem)
    if m:
        stem, rf_hash = m["stem"], m["hash"]
    out = FrameName(stem, rf_hash)
    m = IJMOND_STEM.match(stem)
    if m:
        out.camera, out.time, out.frame = m["camera"], parse_time(m["time"]), int(m["frame"])
    return out


# --------------------------------------------------------------------------- the export


@dataclass
class ImageEntry:
    """One image of an export with its annotations, before rasterising."""

    name: FrameName
    path: Path
    height: int | None
    width: int | None
    annotations: list[dict[str, Any]]
    source: Path  # the annotation file


@dataclass
class Export:
    """A parsed annotation file."""

    path: Path
    categories: dict[int, str]
    images: list[ImageEntry]


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read annotation file ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg})") from None


@lru_cache(maxsize=16)
def _read_export_cached(path: Path, mtime_ns: int, size: int) -> Export:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "a COCO file must hold an object with 'images', 'annotations' "
                               "and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, f"COCO key '{key}' is missing or not a list")
    categories = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise InputError(path, f"bad category entry {cat!r}")
        categories[cat["id"]] = str(cat.get("name", cat["id"]))
    by_id: dict[int, ImageEntry] = {}
    order: list[ImageEntry] = []
    for img in data["images"]:
        if (not isinstance(img, dict) or not isinstance(img.get("id"), int)
                or not isinstance(img.get("file_name"), str)):
            raise InputError(path, f"image entry needs an integer 'id' and a 'file_name': "
                                   f"{str(img)[:120]}")
        if img["id"] in by_id:
            raise InputError(path, f"image id {img['id']} is listed twice")
        h, w = img.get("height"), img.get("width")
        entry = ImageEntry(parse_frame_name(img["file_name"]), path.parent / img["file_name"],
                           int(h) if isinstance(h, int) else None,
                           int(w) if isinstance(w, int) else None, [], path)
        by_id[img["id"]] = entry
        order.append(entry)
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise InputError(path, f"annotation entry is not an object: {str(ann)[:120]}")
        ann_id = ann.get("id", "?")
        image_id = ann.get("image_id")
        if image_id not in by_id:
            raise InputError(path, f"annotation {ann_id} refers to image id {image_id!r}, "
                                   "which is not in 'images'")
        if ann.get("category_id") not in categories:
            raise InputError(path, f"annotation {ann_id} has category id "
                                   f"{ann.get('category_id')!r}, which is not in 'categories'")
        by_id[image_id].annotations.append(ann)
    return Export(path, categories, order)


def read_export(path: Path) -> Export:
    """Parse one ``_annotations.coco.json`` (cached while the file is unchanged)."""
    try:
        st = path.stat()
    except OSError:
        raise InputError(path, "annotation file not found") from None
    return _read_export_cached(path.resolve(), st.st_mtime_ns, st.st_size)


def export_folders(root: Path, opts: CocoOptions) -> list[str]:
    """The folders pooled for rule-based splits (option ``folders`` or found under the root)."""
    if opts.folders is not None:
        return list(opts.folders)
    if (root / opts.annotations).is_file():
        return ["."]
    found = sorted(p.parent.name for p in root.glob(f"*/{opts.annotations}"))
    if not found:
        raise InputError(root, f"no {opts.annotations} in the root or its subfolders")
    return found


def _annotation_file(root: Path, folder: str, opts: CocoOptions) -> Path:
    path = root / folder / opts.annotations
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    return path


# --------------------------------------------------------------------------- masks


def _classify(name: str, opts: CocoOptions) -> str:
    """``smoke``, ``ignore``, ``background`` or ``skip`` for an annotation of category ``name``."""
    lower = name.lower()
    if any(fnmatch.fnmatchcase(lower, p.lower()) for p in opts.high_opacity):
        return SMOKE
    if any(fnmatch.fnmatchcase(lower, p.lower()) for p in opts.low_opacity):
        if opts.smoke == "all":
            return SMOKE
        return IGNORE if opts.low_opacity_as == "ignore" else "background"
    return opts.other_categories


def build_mask(entry: ImageEntry, categories: dict[int, str], size: tuple[int, int],
               opts: CocoOptions) -> np.ndarray:
    """Rasterise an image's annotations to uint8 (0 background, 1 smoke, 255 ignore)."""
    height, width = size
    smoke = np.zeros((height, width), bool)
    ignore = np.zeros((height, width), bool)
    tol = opts.edge_tolerance
    for ann in entry.annotations:
        ann_id = ann.get("id", "?")
        where = f"annotation {ann_id} of {entry.path.name}"
        cat = categories[ann["category_id"]]
        role = _classify(cat, opts)
        if role == "error":
            raise InputError(entry.source, f"{where} has category '{cat}', which is neither "
                                           "high nor low opacity (set high_opacity / "
                                           "low_opacity patterns or other_categories)")
        if role in (SKIP, "background"):
            continue
        seg = ann.get("segmentation")
        region = np.zeros((height, width), bool)
        if isinstance(seg, dict):
            try:
                region = decode_rle(seg, height, width, where)
            except ValueError as exc:
                raise InputError(entry.source, str(exc)) from None
        elif isinstance(seg, list) and seg:
            for poly in seg:
                if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                        or not all(isinstance(v, (int, float)) for v in poly)):
                    raise InputError(entry.source, f"{where}: a polygon must be a flat list of "
                                                   "at least 3 x, y pairs")
                xy = np.asarray(poly, np.float64).reshape(-1, 2)
                bad = ((xy[:, 0] < -tol) | (xy[:, 0] > width + tol) | (xy[:, 1] < -tol)
                       | (xy[:, 1] > height + tol))
                if bad.any():
                    x, y = xy[np.argmax(bad)]
                    raise InputError(entry.source, f"{where}: polygon point ({x:g}, {y:g}) is "
                                                   f"outside the {width}x{height} image")
                region |= rasterize_polygon(xy.ravel(), height, width)
        else:
            if opts.box_only == "error":
                raise InputError(entry.source, f"{where} has no polygon (a bare box?); set "
                                               "box_only = \"ignore\" or \"skip\"")
            if opts.box_only == SKIP:
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise InputError(entry.source, f"{where} has neither a polygon nor a bbox")
            x, y, w, h = (float(v) for v in bbox)
            region[max(round(y), 0):max(round(y + h), 0),
                   max(round(x), 0):max(round(x + w), 0)] = True
            role = IGNORE
        if role == SMOKE:
            smoke |= region
        else:
            ignore |= region
    mask = np.zeros((height, width), np.uint8)
    mask[ignore] = 255
    mask[smoke] = 1
    return mask


def frame_from_entry(entry: ImageEntry, categories: dict[int, str], opts: CocoOptions,
                     frame_id: str) -> Frame:
    """Check an image against its header and build its `Frame` with the rasterised mask."""
    if not entry.path.is_file():
        raise InputError(entry.path, f"image listed in {entry.source} not found")
    size = image_size(entry.path)
    if entry.height is not None and entry.width is not None and (
            (entry.height, entry.width) != size):
        raise InputError(entry.path, f"image is {size[1]}x{size[0]} but {entry.source.name} "
                                     f"says {entry.width}x{entry.height}")
    mask = build_mask(entry, categories, size, opts)
    name = entry.name
    meta: dict[str, object] = {"annotation_file": str(entry.source),
                               "roboflow_hash": name.roboflow_hash}
    if name.camera is not None:
        meta.update(camera=name.camera, frame=name.frame,
                    time=name.time.isoformat() if name.time else None)
    return Frame(frame_id, size, image_path=entry.path, mask=mask, meta=meta)


# --------------------------------------------------------------------------- the loader


def _split_folders(config: DatasetConfig, split: str) -> list[str]:
    if split not in config.splits:
        raise ConfigError(f"data set '{config.name}' has no split '{split}' (splits: "
                          f"{', '.join(config.split_names)})")
    value = config.splits[split]
    folders = [value] if isinstance(value, str) else value
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise ConfigError(f"{config.path}: splits.{split} must name an export folder (or a "
                          "list of them) when split_by = \"folders\"")
    return folders


def _group_key(entry: ImageEntry) -> str:
    """Frames of one camera and day share a group (hash splits, validation carve-outs)."""
    name = entry.name
    if name.camera is not None and name.time is not None:
        return f"{name.camera}__{name.time.date().isoformat()}"
    return name.id


def _select(entries: list[ImageEntry], rule: SplitRule, split: str) -> list[ImageEntry]:
    out = []
    for entry in entries:
        name = entry.name
        if rule.by == "camera" and name.camera is None:
            raise InputError(entry.path, "split_by = \"camera\" needs IJmond file names "
                                         "'{camera}__{time}_frame_{n}'")
        if rule.by == "time" and name.time is None:
            raise InputError(entry.path, "split_by = \"time\" needs a time in the file name "
                                         "'{camera}__{time}_frame_{n}'")
        if rule.assign(name.camera, name.time, _group_key(entry)) == split:
            out.append(entry)
    return out


def _dedupe(entries: list[ImageEntry], opts: CocoOptions) -> list[tuple[str, ImageEntry, int]]:
    """(frame id, entry, number of copies) per kept entry, following ``duplicates``."""
    seen: dict[str, list[ImageEntry]] = {}
    for entry in entries:
        seen.setdefault(entry.name.id, []).append(entry)
    out = []
    for fid, copies in seen.items():
        if len(copies) > 1 and opts.duplicates == "error":
            raise InputError(copies[1].source, f"frame '{fid}' appears {len(copies)} times "
                                               f"({copies[0].path.name}, {copies[1].path.name});"
                                               " set duplicates = \"first\" or \"keep\"")
        if opts.duplicates == "keep":
            out += [(fid if i == 0 else f"{fid}~{i + 1}", c, len(copies))
                    for i, c in enumerate(copies)]
        else:
            out.append((fid, copies[0], len(copies)))
    return out


@register_loader("coco")
def load_coco(config: DatasetConfig, split: str, root: Path | None,
              profile: str) -> list[Frame]:
    """COCO polygon exports (Roboflow ``_annotations.coco.json``; IJmond segmentation)."""
    assert root is not None
    opts = CocoOptions.from_config(config)
    if opts.split_by == "folders":
        exports = [read_export(_annotation_file(root, f, opts))
                   for f in _split_folders(config, split)]
        entries = [e for ex in exports for e in ex.images]
        if split != "train" and "train" in config.splits:
            train_ids = {e.name.id for f in _split_folders(config, "train")
                         for e in read_export(_annotation_file(root, f, opts)).images}
            shared = [e for e in entries if e.name.id in train_ids]
            if shared and opts.cross_split_duplicates == "error":
                raise InputError(shared[0].source,
                                 f"{len(shared)} frame(s) of split '{split}' are also in "
                                 f"'train' (e.g. '{shared[0].name.id}', another export of the "
                                 "same frame); set cross_split_duplicates = \"drop\" to drop "
                                 "them here")
            entries = [e for e in entries if e.name.id not in train_ids]
    else:
        rule = SplitRule.from_options(config, "cameras")
        exports = [read_export(_annotation_file(root, f, opts))
                   for f in export_folders(root, opts)]
        entries = _select([e for ex in exports for e in ex.images], rule, split)
    categories = {id(e): ex.categories for ex in exports for e in ex.images}
    frames = []
    for fid, entry, copies in _dedupe(entries, opts):
        frame = frame_from_entry(entry, categories[id(entry)], opts, fid)
        frame.meta["copies"] = copies
        frames.append(frame)
    if not frames:
        hint = "" if opts.split_by == "folders" else (
            f" (split_by = \"{opts.split_by}\" assigned none of its frames here; check the "
            "test_/val_ options and val_fraction)")
        raise InputError(root, f"no images in split '{split}' of data set '{config.name}'{hint}")
    return frames
