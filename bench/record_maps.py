"""The maps behind the records of a run folder, frame by frame.

A record names its stage's cache key (``config.cache_key``) and the content fingerprint of
every split it loaded (``config.data.fingerprints``); the stage's maps of a split are then
``<out>/cache/<key>/maps-<split>-<fingerprint>.npz``, one entry per tile (`bench.cache`). This
module loads the split's frames again (so tiles can be stitched back, `bench.stitch`), checks
that the data still has the record's fingerprint, and hands out one frame's map at a time.

A map file that is missing is recomputed from the cached trained state
(`bench.cached_pipeline.regenerate_maps`; nothing is trained) or, when that cannot be done, is
a `Missing` with the reason, which callers show in place of the picture.

Roles of a pipeline's stages (`stage_roles`): ``cam`` is its last CAM source or wrapper,
``pseudo`` the stage a segmenter trains on (the last stage when there is no segmenter), and
``final`` its last stage; a segmenter that runs alone (``supervised``) has neither CAM nor
pseudo labels.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.stitch import FrameView

ROLES = ("cam", "pseudo", "final")


@dataclass(frozen=True)
class Missing:
    """A map (or frames) that cannot be shown, and why (one line)."""

    reason: str


@dataclass
class Frames:
    """A split of a data set as it was scored: its tiles (``samples``), frames (``views``) and
    content fingerprint."""

    dataset: str
    split: str
    samples: Any  # bench.data.frames.SampleList
    views: list[FrameView]
    fingerprint: str
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {v.id: n for n, v in enumerate(self.views)}

    @property
    def ids(self) -> list[str]:
        """Frame ids in split order."""
        return [v.id for v in self.views]

    def view(self, frame_id: str) -> FrameView:
        """The frame ``frame_id`` (a `KeyError` naming it if the split has no such frame)."""
        try:
            return self.views[self._index[frame_id]]
        except KeyError:
            raise KeyError(f"{self.dataset}/{self.split} has no frame '{frame_id}'") from None

    def image(self, frame_id: str) -> np.ndarray:
        """The frame's pixels, uint8 HxWx3 (a tile's, for data sets scored per tile)."""
        view = self.view(frame_id)
        index, _ = view.parts[0]
        ref = self.samples.refs[index]
        pixels = ref.frame.pixels()
        if (ref.frame.size) == view.size:
            return pixels
        y, x, h, w = ref.box
        return pixels[y:y + h, x:x + w]


def stage_roles(rec: dict[str, Any]) -> dict[str, int | None]:
    """Stage index of each role (`ROLES`) in the pipeline of record ``rec`` (None: no such
    stage: a segmenter alone has no CAM and no pseudo labels)."""
    kinds = [s.get("kind") for s in (rec.get("config") or {}).get("stages", [])]
    if not kinds:
        kinds = [rec.get("stage_kind")] * (int(rec.get("stage", 0)) + 1)
    n = len(kinds)
    cams = [i for i, k in enumerate(kinds) if k in ("cam", "wrapper")]
    pseudo = (n - 2 if n >= 2 else None) if kinds[-1] == "segmenter" else n - 1
    return {"cam": cams[-1] if cams else None, "pseudo": pseudo, "final": n - 1}


def prefix_text(method: str, n: int) -> str:
    """The spec of the first ``n`` stages of pipeline ``method``."""
    from bench.spec import split_top_level

    return "+".join(split_top_level(method, "+")[:n])


class RunMaps:
    """The records of run folder ``out`` and the maps behind them.

    Args:
        out: the run folder (``records/``, ``cache/``).
        data_roots: ``--data-root`` overrides (by data set name) of the roots records name.
        regenerate: recompute a missing map from the cached trained state (never training);
            False: report it `Missing` straight away.
        whole_frames: always hand out whole frames (tiles stitched), also of data sets that
            score tiles as images (``[tiles] score = "tile"``; default: as they were scored).
    """

    def __init__(self, out: Path, data_roots: dict[str, str] | None = None,
                 regenerate: bool = True, whole_frames: bool = False) -> None:
        from bench.records import load_records

        self.out = Path(out)
        self.data_roots = dict(data_roots or {})
        self.regenerate = regenerate
        self.whole_frames = whole_frames
        self.records = load_records(self.out)
        self._by_place = {self._place(r, r["method"]): r for r in self.records}
        self._frames: dict[tuple[Any, ...], Frames | Missing] = {}
        self._files: dict[tuple[str, str], Any] = {}
        #: what was recomputed or could not be shown, one line each (for the caller to print)
        self.notes: list[str] = []
        includes = sorted({i for r in self.records for i in
                           ((r.get("config") or {}).get("options") or {}).get("include") or []})
        from bench.data import discover_datasets
        from bench.plugins import discover

        discover(includes)
        discover_datasets(includes)

    # ----------------------------------------------------------------- records
    @staticmethod
    def _place(rec: dict[str, Any], method: str) -> tuple[Any, ...]:
        return (method, rec["dataset"], rec.get("train_dataset", rec["dataset"]), rec["split"],
                rec["profile"], rec["seed"])

    def stage_record(self, rec: dict[str, Any], index: int) -> dict[str, Any] | None:
        """The record of stage ``index`` of ``rec``'s pipeline, from the same run (None if
        there is none)."""
        return self._by_place.get(self._place(rec, prefix_text(rec["method"], index + 1)))

    def roles(self, rec: dict[str, Any]) -> dict[str, dict[str, Any] | Missing | None]:
        """The record of each role (`ROLES`) of ``rec``'s pipeline: None where the pipeline has
        no such stage, `Missing` where its record is not in the run folder."""
        out: dict[str, dict[str, Any] | Missing | None] = {}
        for role, index in stage_roles(rec).items():
            if index is None:
                out[role] = None
                continue
            found = self.stage_record(rec, index)
            out[role] = found if found is not None else Missing(
                f"no record of '{prefix_text(rec['method'], index + 1)}' in {self.out}")
        return out

    # ----------------------------------------------------------------- frames
    def split_key(self, rec: dict[str, Any], split: str | None = None) -> str:
        """The key of ``split`` (default: the scored one) in the record's data: the split
        itself, or ``ood-<split>`` for the scored split of an out-of-distribution record."""
        split = split or rec["split"]
        ood = rec.get("train_dataset", rec["dataset"]) != rec["dataset"]
        return f"ood-{split}" if ood and split == rec["split"] else split

    def frames(self, rec: dict[str, Any], split: str | None = None) -> Frames | Missing:
        """The frames of ``split`` (default: the scored split) of the record's data set, as the
        record's run loaded them (profile, ``--limit``, data root)."""
        from bench.cached_pipeline import record_options

        split = split or rec["split"]
        opts = record_options(rec, self.out, self.data_roots)
        memo = (rec["dataset"], split, opts.profile, opts.limit,
                tuple(sorted(opts.data_roots.items())))
        if memo not in self._frames:
            self._frames[memo] = self._load_frames(rec["dataset"], split, opts)
        return self._frames[memo]

    def _load_frames(self, dataset: str, split: str, opts: Any) -> Frames | Missing:
        from bench.data import DATASETS, load_splits, resolve_root

        try:
            config = DATASETS.get(dataset)
            data = load_splits(config, resolve_root(config, opts.data_roots), opts.profile,
                               opts.limit, splits=[split], index=self.out)
        except BenchError as exc:
            return Missing(f"cannot load {dataset}/{split}: {exc}")
        samples = data[split]
        per_tile = config.score_per_tile and not self.whole_frames
        return Frames(dataset, split, samples, samples.frame_views(per_tile),
                      data.fingerprints[split])

    # ----------------------------------------------------------------- maps
    def maps_file(self, rec: dict[str, Any], split: str | None = None) -> Any:
        """The open ``.npz`` of the record's stage maps on ``split`` (recomputed when missing
        and `regenerate` is set), or `Missing`."""
        if rec.get("not_run"):
            return Missing(str(rec["not_run"]))
        split = split or rec["split"]
        memo = (str(rec["config"]["cache_key"]), self.split_key(rec, split))
        if memo not in self._files:
            self._files[memo] = self._open(rec, split)
        return self._files[memo]

    def _open(self, rec: dict[str, Any], split: str) -> Any:
        from bench.cache import StageCache

        frames = self.frames(rec, split)
        if isinstance(frames, Missing):
            return frames
        key = self.split_key(rec, split)
        expected = (((rec.get("config") or {}).get("data") or {}).get("fingerprints") or {}) \
            .get(key)
        if expected is not None and expected != frames.fingerprint:
            return Missing(f"the data of {rec['dataset']}/{split} changed since the run "
                           f"(fingerprint {frames.fingerprint}, the record's {expected})")
        path = StageCache(self.out / "cache", rec["config"]["cache_key"]).maps_path(
            key, frames.fingerprint)
        if not path.is_file():
            if not self.regenerate:
                return Missing(f"maps not cached ({path.relative_to(self.out)})")
            try:
                from bench.cached_pipeline import regenerate_maps

                regenerate_maps(rec, self.out, split, self.data_roots)
            except BenchError as exc:
                line = f"maps of '{rec['method']}' on {rec['dataset']}/{split} missing: {exc}"
                self.notes.append(line)
                return Missing(f"maps not cached, not recomputed: {exc}")
            self.notes.append(f"recomputed the maps of '{rec['method']}' on "
                              f"{rec['dataset']}/{split} from the cache: {path}")
            if not path.is_file():  # the runner wrote them under another name: a bug
                raise RuntimeError(f"recomputed maps were expected at {path}")
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            return Missing(f"unreadable map file {path}: {exc}")

    def frame_map(self, rec: dict[str, Any], frame_id: str,
                  split: str | None = None) -> np.ndarray | Missing:
        """Frame ``frame_id``'s map of the record's stage, its tiles stitched: float32 for a
        soft map, uint8 labels (0, 1, 255) for a label map."""
        from bench.cache import _entry, restore
        from bench.stitch import stitch

        npz = self.maps_file(rec, split)
        if isinstance(npz, Missing):
            return npz
        frames = self.frames(rec, split)
        assert not isinstance(frames, Missing)  # maps_file checked it
        view = frames.view(frame_id)
        tiles = []
        for index, _ in view.parts:
            entry = _entry(frames.samples.ids[index])
            if entry not in npz.files:
                return Missing(f"tile {frames.samples.ids[index]} is not in {npz.fid.name}")
            tiles.append(restore(npz[entry]))
        local = FrameView(view.id, view.size, view.mask, view.aux,
                          [(k, box) for k, (_, box) in enumerate(view.parts)], view.unit)
        return stitch(local, tiles, str(rec.get("output", "soft")))

    def frame_labels(self, rec: dict[str, Any], frame_id: str, split: str | None = None,
                     threshold: float | None = None) -> np.ndarray | Missing:
        """The frame's labels as the record scored them: a soft map binarised at the record's
        threshold (or ``threshold``), a label map as it is (0, 1, 255)."""
        m = self.frame_map(rec, frame_id, split)
        if isinstance(m, Missing) or rec.get("output") == "labels":
            return m
        return binarize_at(m, record_threshold(rec) if threshold is None else threshold)

    def close(self) -> None:
        """Close the open map files."""
        for npz in self._files.values():
            if not isinstance(npz, Missing):
                npz.close()
        self._files.clear()

    def __enter__(self) -> RunMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def print_notes(self) -> None:
        """Print `notes` to standard error, one ``bench: `` line each."""
        for line in self.notes:
            print(f"bench: {line}", file=sys.stderr)


def record_threshold(rec: dict[str, Any]) -> float:
    """The threshold record ``rec`` binarised its soft maps at."""
    value = (rec.get("threshold") or {}).get("value")
    if value is None:
        raise ValueError(f"record of '{rec['method']}' has no threshold for its soft maps")
    return float(value)


def binarize_at(soft: np.ndarray, threshold: float) -> np.ndarray:
    """Labels (0, 1) of a soft map at ``threshold``, as the scorer binarises it."""
    from bench.metrics import binarize

    return binarize(soft, threshold)


def frame_scores(areas: np.ndarray) -> dict[str, float]:
    """Smoke IoU, mIoU, precision and recall of one frame's areas (shape (4, 2)); NaN where a
    ratio is 0 / 0."""
    inter, union, pred, label = (np.asarray(areas, np.float64)[r] for r in range(4))

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b > 0 else float("nan")

    iou = [ratio(inter[c], union[c]) for c in (0, 1)]
    return {"IoU_smoke": iou[1], "mIoU": float(np.nanmean(iou)) if not np.isnan(iou).all()
            else float("nan"), "precision": ratio(inter[1], pred[1]),
            "recall": ratio(inter[1], label[1])}


def per_frame_iou(record_file: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Frame ids, smoke IoU (NaN where neither label nor prediction has smoke) and smoke union
    of each scored frame of a record (from its ``.areas.npz``)."""
    from bench.records import load_areas

    areas, ids, _ = load_areas(record_file)
    areas = np.asarray(areas, np.float64)
    union = areas[:, 1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, areas[:, 0, 1] / np.where(union > 0, union, 1), np.nan)
    return ids, iou, union


def pick_best_median_worst(ids: Sequence[str], iou: np.ndarray,
                           union: np.ndarray) -> dict[str, str]:
    """Frames with the best, median and worst smoke IoU among frames where it is defined.

    Ties: the best among equals has the larger smoke union (more smoke found), the worst the
    larger union (more wrong pixels), then frame id. The median is the middle of the other
    frames (best first), so the three are distinct; fewer frames give fewer picks.
    """
    rows = [(float(v), float(u), i) for i, v, u in zip(ids, iou, union, strict=True)
            if not np.isnan(v)]
    if not rows:
        return {}
    best = sorted(rows, key=lambda r: (-r[0], -r[1], r[2]))
    picks = {"best": best[0][2]}
    worst = sorted(rows, key=lambda r: (r[0], -r[1], r[2]))[0][2]
    if worst != picks["best"]:
        picks["worst"] = worst
    middle = [r[2] for r in best if r[2] not in picks.values()]
    if middle:
        picks["median"] = middle[len(middle) // 2]
    return {k: picks[k] for k in ("best", "median", "worst") if k in picks}
