"""RISE / deep-smoke-machine video clips (and IJmond's video metadata): image-level labels only.

``loader = "rise"``. The metadata JSON is a list of clips (``label_state``,
``label_state_admin``, ``file_name``, ``camera_id``, ``view_id``, ``start_time``, ``url_root``,
``url_part``, ...). Each clip is labelled smoke / no smoke by deep-smoke-machine's published rule
(`clip_label`), and frames are sampled from ``{videos}/{file_name}.mp4``: the ``first``, the
``middle`` (frame ``n // 2``) or ``every`` k-th frame. There are no pixel masks, so these data
sets are scored at image level (`bench.evaluate_image`).

Frames are decoded lazily: loading opens each clip's container to read its size and frame count
(a clip that cannot be opened is an `InputError` then), and pixels are decoded when a stage needs
them. Decoding uses PyAV, or OpenCV when PyAV is missing (``backend`` forces one).

Splits (``split_by`` in the ``[rise]`` table):

- ``"files"`` (default): every split names a metadata JSON under the root, e.g. the repository's
  published ``split/metadata_train_split_0_by_camera.json``.
- ``"camera"``: ``test_views`` / ``val_views`` list ``"{camera_id}-{view_id}"`` keys (the
  published camera split 0 tests on ``1-0, 2-0, 2-1, 2-2, 0-1, 0-7, 0-13``).
- ``"time"``: ``test_from`` / ``val_from`` dates; a clip's date is read from a RISE file name
  (``{camera}-{view}-{YYYY}-{MM}-{DD}-...``) or else from ``start_time`` (UTC).
- ``"hash"``: ``test_fraction`` of camera-view-day groups by a SHA-1 of the group key.

Frame ids are ``{file_name}#{frame index}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.config import DatasetConfig, check_options
from bench.data.file_index import FileIndex
from bench.data.frames import Frame
from bench.data.loaders import register_loader
from bench.data.split_rules import SplitRule
from bench.errors import ConfigError, InputError

VIDEO_EXTRA = "pip install 'smoke-wsss-bench[video]'"

# deep-smoke-machine, back-end/www/split_metadata.py, ``aggregate_label`` (the function that
# turns label states into the ``label`` field of the published split files): researchers'
# ``label_state_admin`` decides when it is 47 (gold pos), 32 (gold neg), 23 (strong pos) or
# 16 (strong neg); otherwise the volunteers' ``label_state`` decides when it is 23 (strong pos),
# 16 (strong neg), 19 (weak pos: two disagree, the third says smoke) or 20 (weak neg). Every
# other state (5/4 maybe, 3 discord, -1 no data, -2 bad video) leaves the clip unlabelled and
# the repository drops it. The weights are the repository's confidence of the aggregate.
# One deliberate difference: a clip that researchers marked bad (-2 in either state) is dropped
# even if the other state would label it, because the dataset README (label state -2) says bad
# videos "should not be used in building the model"; aggregate_label would fall back to the
# volunteers' label there.
BAD_VIDEO = -2
ADMIN_LABELS = {47: (1, 1.0), 32: (0, 1.0), 23: (1, None), 16: (0, None)}
CITIZEN_LABELS = {23: (1, 1.0), 16: (0, 1.0), 19: (1, 0.66), 20: (0, 0.66)}
_ADMIN_WEIGHT = {  # (admin label, citizen state) -> weight, as in aggregate_label
    (1, 23): 1.0, (1, 16): 0.5, (1, 20): 0.66, (1, 19): 0.83,
    (0, 23): 0.5, (0, 16): 1.0, (0, 20): 0.83, (0, 19): 0.66,
}

RISE_NAME = re.compile(r"^(?P<camera>\d+)-(?P<view>\d+)-(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})-")

_CHOICES = {
    "split_by": ("files", "camera", "time", "hash"),
    "sample": ("first", "middle", "every"),
    "backend": ("auto", "pyav", "opencv"),
    "missing_videos": ("error", "skip"),
}
_KNOWN = {*_CHOICES, "metadata", "videos", "video_path", "every", "test_views", "val_views",
          "test_from", "val_from", "test_fraction"}


def clip_label(entry: dict[str, Any]) -> tuple[int | None, float | None]:
    """(label, weight) of one metadata entry by deep-smoke-machine's rule; (None, None) if none.

    An entry without label states but with a ``label`` of 0 or 1 (the published split files
    carry the aggregate) keeps that label.
    """
    admin = entry.get("label_state_admin")
    citizen = entry.get("label_state")
    if admin is None and citizen is None:
        label = entry.get("label")
        if label in (0, 1) and not isinstance(label, bool):
            weight = entry.get("weight")
            return int(label), float(weight) if isinstance(weight, (int, float)) else None
        return None, None
    if BAD_VIDEO in (admin, citizen):
        return None, None
    if admin in ADMIN_LABELS:
        label, weight = ADMIN_LABELS[admin]
        if weight is None:
            weight = _ADMIN_WEIGHT.get((label, citizen), 0.75)
        return label, weight
    if citizen in CITIZEN_LABELS:
        return CITIZEN_LABELS[citizen]
    return None, None


@dataclass
class RiseOptions:
    """The ``[rise]`` table, validated."""

    metadata: str = "metadata.json"
    videos: str = "videos"
    video_path: str = "{file_name}.mp4"
    sample: str = "middle"
    every: int = 6
    split_by: str = "files"
    backend: str = "auto"
    missing_videos: str = "error"

    @classmethod
    def from_config(cls, config: DatasetConfig) -> RiseOptions:
        opts = config.options
        where = f"{config.path}: [rise]"
        check_options(config, _KNOWN, _CHOICES)
        out = cls(**{k: v for k, v in opts.items() if k in cls.__dataclass_fields__})
        if not isinstance(out.every, int) or out.every < 1:
            raise ConfigError(f"{where} every must be a positive integer")
        return out


# --------------------------------------------------------------------------- video decoding


def video_backend(choice: str = "auto") -> str:
    """``pyav`` or ``opencv``, whichever is importable (PyAV first); else a `ConfigError`."""
    order = {"auto": ("pyav", "opencv"), "pyav": ("pyav",), "opencv": ("opencv",)}[choice]
    for name in order:
        try:
            __import__("av" if name == "pyav" else "cv2")
        except ImportError:
            continue
        return name
    wanted = "PyAV or OpenCV" if choice == "auto" else {"pyav": "PyAV",
                                                          "opencv": "OpenCV"}[choice]
    raise ConfigError(f"reading video clips needs {wanted}: {VIDEO_EXTRA}")


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    base = getattr(av, "FFmpegError", None) or getattr(av, "AVError", Exception)
    return (base, OSError, ValueError, IndexError, StopIteration)


def probe_clip(path: Path, backend: str) -> tuple[tuple[int, int], int]:
    """((height, width), number of frames) of a clip, read from its container when possible."""
    if backend == "pyav":
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise InputError(path, "no video stream")
                stream = container.streams.video[0]
                height, width = stream.codec_context.height, stream.codec_context.width
                n = int(stream.frames or 0)
        except InputError:
            raise
        except _av_errors() as exc:
            raise InputError(path, f"cannot decode video ({exc.__class__.__name__}: "
                                   f"{exc})") from None
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError(path, "cannot decode video (OpenCV cannot open it)")
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
    if n <= 0 or height <= 0 or width <= 0:  # no usable header: count by decoding
        frames = decode_frames(path, backend, None)
        if not frames:
            raise InputError(path, "cannot decode video (no frames)")
        (height, width), n = frames[0].shape[:2], len(frames)
    return (height, width), n


def decode_frames(path: Path, backend: str, wanted: frozenset[int] | None) -> list[np.ndarray]:
    """Decode a clip to RGB uint8 frames; with ``wanted``, only those indices (others empty)."""
    last = max(wanted) if wanted else None
    out: list[np.ndarray] = []
    empty = np.zeros((0, 0, 3), np.uint8)
    if backend == "pyav":
        import av

        try:
            with av.open(str(path)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    keep = wanted is None or i in wanted
                    out.append(frame.to_ndarray(format="rgb24") if keep else empty)
                    if last is not None and i >= last:
                        break
        except _av_errors() as exc:
            raise InputError(path, f"cannot decode video ({exc.__class__.__name__}: "
                                   f"{exc})") from None
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError(path, "cannot decode video (OpenCV cannot open it)")
            i = 0
            while last is None or i <= last:
                ok, bgr = cap.read()
                if not ok:
                    break
                keep = wanted is None or i in wanted
                out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if keep else empty)
                i += 1
        finally:
            cap.release()
    return out


@lru_cache(maxsize=8)
def _decoded(path: Path, backend: str, wanted: frozenset[int]) -> dict[int, np.ndarray]:
    frames = decode_frames(path, backend, wanted)
    out = {}
    for i in sorted(wanted):
        if i >= len(frames):
            raise InputError(path, f"cannot decode video (frame {i} of {len(frames)} missing; "
                                   "truncated file?)")
        frames[i].setflags(write=False)
        out[i] = frames[i]
    return out


def sample_indices(n: int, how: str, every: int) -> list[int]:
    """Frame indices taken from an ``n``-frame clip: first (0), middle (``n // 2``), every k-th."""
    if how == "first":
        return [0]
    if how == "middle":
        return [n // 2]
    return list(range(0, n, every))


class ClipFrame(Frame):
    """A frame of a video clip, decoded on first use (a clip's sampled frames decode together)."""

    def __init__(self, frame_id: str, size: tuple[int, int], clip: Path, index: int,
                 wanted: frozenset[int], backend: str, label: int | None,
                 meta: dict[str, object]) -> None:
        super().__init__(frame_id, size, image_path=clip, label=label, meta=meta)
        self.index = index
        self.wanted = wanted
        self.backend = backend

    def pixels(self) -> np.ndarray:
        assert self.image_path is not None
        image = _decoded(self.image_path, self.backend, self.wanted)[self.index]
        if image.shape[:2] != self.size:
            raise InputError(self.image_path, f"frame {self.index} is {image.shape[1]}x"
                                              f"{image.shape[0]}, the header said "
                                              f"{self.size[1]}x{self.size[0]}")
        return image

    def content_key(self, index: FileIndex | None = None) -> str:
        """The clip file's digest and this frame's index in it."""
        return f"{super().content_key(index)}#{self.index}"

    @property
    def unit(self) -> str:
        """Frames of one clip are correlated: the clip is the bootstrap unit."""
        return str(self.image_path)


# --------------------------------------------------------------------------- metadata


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """The clips of a metadata JSON (a list of objects with a string ``file_name``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "metadata file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read metadata ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # the labelling tool's API answers {"data": [...], "total": n}
    if not isinstance(data, list):
        raise InputError(path, "metadata must be a JSON list of clips")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise InputError(path, f"clip {i} has no string 'file_name'")
        for key in ("label_state", "label_state_admin"):
            if key in entry and not isinstance(entry[key], int):
                raise InputError(path, f"clip {i} ({entry['file_name']}): {key} must be an "
                                       f"integer, not {entry[key]!r}")
    return data


def clip_view(entry: dict[str, Any]) -> str | None:
    """The ``"{camera_id}-{view_id}"`` key of a clip (fields first, then the file name)."""
    if isinstance(entry.get("camera_id"), int) and isinstance(entry.get("view_id"), int):
        return f"{entry['camera_id']}-{entry['view_id']}"
    m = RISE_NAME.match(entry["file_name"])
    return f"{m['camera']}-{m['view']}" if m else None


def clip_date(entry: dict[str, Any]) -> datetime | None:
    """The day of a clip: from a RISE file name, else from ``start_time`` (epoch, UTC)."""
    m = RISE_NAME.match(entry["file_name"])
    if m:
        return datetime(int(m["y"]), int(m["m"]), int(m["d"]))
    start = entry.get("start_time")
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        day = datetime.fromtimestamp(start, tz=timezone.utc).date()
        return datetime(day.year, day.month, day.day)
    return None


def _entries_for_split(config: DatasetConfig, split: str, root: Path,
                       opts: RiseOptions) -> tuple[Path, list[dict[str, Any]]]:
    if split not in config.splits:
        raise ConfigError(f"data set '{config.name}' has no split '{split}' (splits: "
                          f"{', '.join(config.split_names)})")
    if opts.split_by == "files":
        value = config.splits[split]
        if not isinstance(value, str):
            raise ConfigError(f"{config.path}: splits.{split} must name a metadata JSON file "
                              "when split_by = \"files\"")
        path = root / value
        return path, read_metadata(path)
    rule = SplitRule.from_options(config, "views")
    path = root / opts.metadata
    entries = []
    for entry in read_metadata(path):
        view, day = clip_view(entry), clip_date(entry)
        if rule.by == "camera" and view is None:
            raise InputError(path, f"clip {entry['file_name']} has no camera_id/view_id")
        if rule.by == "time" and day is None:
            raise InputError(path, f"clip {entry['file_name']} has no date (file name or "
                                   "start_time)")
        group = f"{view}-{day.date().isoformat() if day else ''}"
        if rule.assign(view, day, group if view else entry["file_name"]) == split:
            entries.append(entry)
    return path, entries


@register_loader("rise")
def load_rise(config: DatasetConfig, split: str, root: Path | None,
              profile: str) -> list[Frame]:
    """Video clips with RISE / deep-smoke-machine metadata; frames sampled, image labels only."""
    assert root is not None
    opts = RiseOptions.from_config(config)
    meta_path, entries = _entries_for_split(config, split, root, opts)
    backend = video_backend(opts.backend)
    videos = root / opts.videos
    frames: list[Frame] = []
    seen: set[str] = set()
    for entry in entries:
        label, weight = clip_label(entry)
        if label is None:
            continue  # unlabelled, undecided or bad clips are dropped, as deep-smoke-machine does
        name = entry["file_name"]
        if name in seen:
            raise InputError(meta_path, f"clip '{name}' is listed twice")
        seen.add(name)
        try:
            clip = videos / opts.video_path.format(**entry)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{config.path}: [rise] video_path {opts.video_path!r} cannot be "
                              f"filled from clip {name} ({exc})") from None
        if not clip.is_file():
            if opts.missing_videos == "skip":
                continue
            raise InputError(clip, f"video of clip '{name}' in {meta_path.name} not found "
                                   "(set missing_videos = \"skip\" to leave it out)")
        size, n = probe_clip(clip, backend)
        indices = sample_indices(n, opts.sample, opts.every)
        wanted = frozenset(indices)
        meta: dict[str, object] = {"clip": name, "weight": weight, "view": clip_view(entry),
                                   "label_state": entry.get("label_state"),
                                   "label_state_admin": entry.get("label_state_admin")}
        for index in indices:
            frames.append(ClipFrame(f"{name}#{index}", size, clip, index, wanted, backend,
                                    label, {**meta, "frame": index}))
    if not frames:
        hint = "" if opts.split_by == "files" else (
            f" (split_by = \"{opts.split_by}\" assigned none of its clips here; check the "
            "test_/val_ options and val_fraction)")
        raise InputError(meta_path, f"no labelled clips with videos in split '{split}'{hint}")
    return frames
