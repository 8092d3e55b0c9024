"""Scoring soft maps: the exact threshold sweep and the choice of a threshold on another split.

At threshold ``t`` a pixel is smoke iff ``soft >= t`` compared exactly (as
``soft.astype(np.float64) >= t``); see the :mod:`bench.metrics` package docstring.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.metrics._checks import (
    _KEY_LAYOUT,
    _as_label,
    _as_soft,
    _check_label_values,
    _check_shapes,
)
from bench.metrics.areas import IGNORE_INDEX, _metric_array, _PerImageAreas, metrics_from_areas

DEFAULT_THRESHOLDS: np.ndarray = np.round(np.arange(0.02, 1.0001, 0.02), 2)
"""The 50 sweep thresholds 0.02, 0.04, ..., 1.00 (float64).

0 is left out: at ``t = 0`` every map, even an all-zero one, predicts smoke everywhere, so that
score describes the data set, not the method (it is the all-smoke baseline, which ships as its own
plugin). ``np.round`` makes each the float64 nearest to its two-decimal value, so a record shows
``0.3`` rather than ``0.30000000000000004``. Read-only.
"""
DEFAULT_THRESHOLDS.flags.writeable = False


def _as_thresholds(thresholds: Any) -> np.ndarray:
    t = np.array(thresholds, dtype=np.float64, copy=True).reshape(-1)
    if np.ndim(thresholds) != 1 or t.size == 0:
        raise ValueError("thresholds must be a non-empty 1-D sequence")
    if not np.isfinite(t).all():
        raise ValueError("thresholds must be finite")
    if t.size > 1 and not (np.diff(t) > 0).all():
        raise ValueError("thresholds must be strictly increasing")
    t.flags.writeable = False
    return t


def _ceil_to(thresholds: np.ndarray, float_dtype: np.dtype) -> np.ndarray:
    """Per threshold ``t`` (clipped to [0, 2]), the smallest ``x`` of ``float_dtype`` with x >= t.

    For a map ``m`` of that dtype with values in [0, 1], ``m >= t`` in exact arithmetic is then
    ``m >= x`` in the map's own dtype.
    """
    t = np.where(thresholds <= 0, 0.0, np.minimum(thresholds, 2.0))  # also turns -0.0 into 0.0
    x = t.astype(float_dtype)  # round to nearest; step up where that went below t
    below = x.astype(np.float64) < t
    x[below] = np.nextafter(x[below], float_dtype.type(np.inf))
    return x


def _threshold_keys(
    thresholds: np.ndarray, key_dtype: type, shift: int, float_dtype: np.dtype
) -> np.ndarray:
    """Sort key (see :func:`sweep_areas`) of the smallest map value at or above each threshold."""
    keys = _ceil_to(thresholds, float_dtype).view(key_dtype)
    return np.minimum(keys, key_dtype((1 << shift) - 1))  # t >= 2 selects nothing


def binarize(soft: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask, 1 where ``soft >= threshold`` compared exactly, as :func:`sweep_areas` does.

    Use this (not ``soft >= threshold`` on a float32 map, which NumPy 2 compares in float32) to
    binarise at a threshold chosen by a sweep, so the mask scores what the sweep reported.
    """
    x = _as_soft(soft)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    cut = _ceil_to(np.array([float(threshold)]), x.dtype)[0]
    return (x >= cut).view(np.uint8)


def sweep_areas(
    soft: np.ndarray,
    label: np.ndarray,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Binary areas of one soft map at every threshold, exactly, without a pass per threshold.

    At threshold ``t`` a pixel is predicted smoke iff ``soft >= t`` in exact arithmetic (the same
    as ``soft.astype(np.float64) >= t``).

    Method: each pixel gets an integer key, the bit pattern of its value (which orders like the
    value for non-negative floats) with its label class in bits above it (ignored pixels
    last), and each threshold becomes the key of the smallest map value at or above it. The
    areas follow from, per class, the number of pixels whose key is at or above each threshold
    key. Those counts come from a histogram of each pixel's *rank*, the number of threshold keys
    at or below its key, and the rank comes from a lookup table rather than a search: the top
    bits of a key pick a bucket, the buckets being so narrow that none holds two threshold keys;
    the table gives the rank at the bucket's start and the one threshold key inside it (if any),
    and one comparison with that key finishes the rank (:class:`_RankTable`). So a map costs a
    few vectorised passes (shift, two table lookups, a comparison, ``bincount``) whatever the
    number of thresholds, and the result is exact. Thresholds too close together for a table of
    at most 2^14 buckets per class (for thresholds spread over [0.02, 1], closer than about
    1/4000 of their size) fall back to one sort of the keys and ``2T`` binary searches, also
    exact. ``benchmarks/test_bench_metrics.py`` measures this against the two simple ways: a
    comparison per threshold, and a per-pixel ``searchsorted`` + ``bincount`` (the faster one,
    and so the one to beat: about 5.5x slower on 512x512 maps; a sort of the keys, this
    function's earlier method, cost as much as that baseline alone).

    Args:
        soft: HxW map with values in [0, 1] (float16/32/64, bool or 0/1 integers).
        label: HxW ground truth, 0, 1 or ``ignore_index``.
        thresholds: strictly increasing finite thresholds, length T.
        ignore_index: label value to skip.

    Returns:
        int64 array ``(T, 4, 2)``: the areas of :func:`image_areas` at each threshold.
    """
    th = _as_thresholds(thresholds)
    return _sweep_areas(soft, label, th, ignore_index)


@dataclass(frozen=True)
class _RankTable:
    """Lookup tables that give each pixel its rank among the threshold keys (see ``sweep_areas``).

    A pixel's value key ``v`` (its float's bit pattern) is first moved to ``max(v, lo) - lo``:
    ``lo`` is just below the smallest threshold key, so that keys below every threshold (rank 0
    anyway) take no buckets, or 0 where the table is small without it. Its label class goes
    above the highest bit such a key can have (``class_shift``; ignored pixels are class 3) and
    ``key >> shift`` is its bucket. Its bin in the rank histogram is then
    ``base[bucket] + (key >= boundary[bucket])``: ``base`` is ``class * (m + 1)`` plus the number
    of threshold keys at or below the bucket's first key (ignored pixels all get the extra bin
    ``2 * (m + 1)``) and ``boundary`` the one threshold key inside the bucket above its first
    key, with the class bits set, or the largest key (never reached) where there is none.

    Only the ``m`` distinct threshold keys a map value in [0, 1] can reach count; ``column``
    maps each threshold to the column of ``at_or_above`` (pixels whose rank is at least the
    column) that holds its count: thresholds that share a key share a column (e.g. all
    thresholds <= 0), and thresholds above 1 point at a zero column ``m + 1``.
    """

    lo: int
    class_shift: int
    shift: int
    base: np.ndarray
    boundary: np.ndarray
    column: np.ndarray
    m: int


_SMALL_TABLE_BITS = 12  # buckets per class without the offset ``lo`` (2^12: 48-96 KiB)
_MAX_TABLE_BITS = 14  # at most 2^14 buckets per class, 2^16 in all (768 KiB for float64 maps)


def _table_layout(reach: np.ndarray, top: int, lo: int) -> tuple[int, int] | None:
    """(class_shift, shift) for reachable keys ``reach`` moved by ``lo``; None if too large."""
    class_shift = (top - lo).bit_length()
    moved = [int(k) - lo for k in reach]
    # the largest shift keeping consecutive keys in different buckets: below their top
    # differing bit
    shift = min(((a ^ b).bit_length() - 1 for a, b in itertools.pairwise(moved)),
                default=class_shift)
    shift = min(shift, class_shift)
    if class_shift - shift > _MAX_TABLE_BITS:
        return None
    return class_shift, shift


@functools.lru_cache(maxsize=16)
def _rank_table(th_bytes: bytes, float_dtype: np.dtype) -> _RankTable | None:
    """The :class:`_RankTable` of thresholds (float64 bytes) for maps of ``float_dtype``.

    None when no table of at most 2^14 buckets per class separates the thresholds' keys.
    Cached: an accumulator sweeps every image of a split over the same thresholds.
    """
    key_dtype, value_bits = _KEY_LAYOUT[float_dtype]
    th = np.frombuffer(th_bytes, dtype=np.float64)
    tkeys = _threshold_keys(th, key_dtype, value_bits, float_dtype)
    top = int(np.array(1.0, dtype=float_dtype).view(key_dtype))  # key of the largest value
    unique = np.unique(tkeys)
    reach = unique[unique <= top]
    lo = 0
    if not reach.size:  # no threshold a map value can reach: one bucket per class
        layout: tuple[int, int] | None = (top.bit_length(), top.bit_length())
    else:
        layout = _table_layout(reach, top, 0)
        size = None if layout is None else layout[0] - layout[1]  # log2 buckets per class
        if (size is None or size > _SMALL_TABLE_BITS) and int(reach[0]) > 0:
            # keys below reach[0] all become 0: rank 0, as before
            moved = _table_layout(reach, top, int(reach[0]) - 1)
            if moved is not None and (size is None or moved[0] - moved[1] < size):
                layout, lo = moved, int(reach[0]) - 1
    if layout is None:
        return None
    class_shift, shift = layout
    m = int(reach.size)
    per_class = 1 << (class_shift - shift)
    starts = np.arange(per_class, dtype=np.uint64) << np.uint64(shift)
    moved = reach.astype(np.uint64) - np.uint64(lo)
    below = np.searchsorted(moved, starts, side="right")  # threshold keys <= bucket start
    nxt = moved[np.minimum(below, m - 1)] if m else np.zeros(per_class, np.uint64)
    inside = (below < m) & (nxt < starts + np.uint64(1 << shift))
    top_key = np.iinfo(key_dtype).max
    base = np.full(4 * per_class, 2 * (m + 1), dtype=np.intp)
    boundary = np.full(4 * per_class, top_key, dtype=key_dtype)
    for cls in (0, 1):
        rows = slice(cls * per_class, (cls + 1) * per_class)
        base[rows] = cls * (m + 1) + below
        bits = np.uint64(cls) << np.uint64(class_shift)
        boundary[rows] = np.where(inside, nxt | bits, np.uint64(top_key)).astype(key_dtype)
    # threshold key reach[p] is reached by pixels of rank >= p + 1; unreachable ones: column m+1
    column = np.where(tkeys <= top, np.searchsorted(reach, tkeys, side="left") + 1, m + 1)
    for arr in (base, boundary, column):
        arr.flags.writeable = False
    return _RankTable(lo, class_shift, shift, base, boundary, column, m)


def _sweep_areas(soft: Any, label: Any, th: np.ndarray, ignore_index: int) -> np.ndarray:
    label_a = _as_label(label)
    x = _as_soft(soft)
    _check_shapes(x, label_a, "soft map", "label")
    _check_label_values(label_a, 2, ignore_index)
    key_dtype, value_bits = _KEY_LAYOUT[x.dtype]
    flat = np.ascontiguousarray(x).reshape(-1)
    lab = label_a.reshape(-1)
    if lab.dtype == np.uint8 and ignore_index == 255:
        lab = np.bitwise_and(lab, np.uint8(3))  # 0, 1 stay; 255 ("ignore") becomes 3
    else:
        lab = np.where(lab == ignore_index, 3, lab).astype(np.uint8)
    bits = flat.view(key_dtype)
    if flat.size and bits.max() > key_dtype(1 << value_bits):  # a -0.0: clear its sign bit
        bits = np.bitwise_and(bits, key_dtype((1 << (value_bits + 1)) - 1))

    table = _rank_table(th.tobytes(), x.dtype)
    if table is not None:
        g0, g1, n0, n1 = _counts_by_table(bits, lab, table, key_dtype)
    else:
        g0, g1, n0, n1 = _counts_by_sort(bits, lab, th, key_dtype, value_bits, x.dtype)

    out = np.empty((th.size, 4, 2), dtype=np.int64)
    p1 = g0 + g1
    out[:, 0, 0] = n0 - g0  # background predicted background
    out[:, 0, 1] = g1
    out[:, 1, 0] = n0 + n1 - g1  # union of the background sets
    out[:, 1, 1] = g0 + n1
    out[:, 2, 0] = n0 + n1 - p1
    out[:, 2, 1] = p1
    out[:, 3, 0] = n0
    out[:, 3, 1] = n1
    return out


def _counts_by_table(
    bits: np.ndarray, lab: np.ndarray, table: _RankTable, key_dtype: type
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per threshold, background and smoke pixels at or above it (g0, g1), and class sizes.

    ``bits``: the value keys; ``lab``: uint8 classes 0, 1 or 3 (ignored).
    """
    keys = np.left_shift(lab, table.class_shift, dtype=key_dtype)
    if table.lo:
        moved = np.maximum(bits, key_dtype(table.lo))
        np.subtract(moved, key_dtype(table.lo), out=moved)
        np.bitwise_or(keys, moved, out=keys)
    else:
        np.bitwise_or(keys, bits, out=keys)
    bucket = np.right_shift(keys, table.shift)
    index = np.take(table.base, bucket)
    np.add(index, np.greater_equal(keys, np.take(table.boundary, bucket)), out=index)
    m1 = table.m + 1
    hist = np.bincount(index, minlength=2 * m1 + 1)[: 2 * m1].reshape(2, m1)
    # at_or_above[c, j]: pixels of class c of rank >= j; a zero column for unreachable keys
    at_or_above = np.zeros((2, m1 + 1), dtype=np.int64)
    at_or_above[:, :m1] = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    g0, g1 = at_or_above[:, table.column]
    return g0, g1, int(at_or_above[0, 0]), int(at_or_above[1, 0])


def _counts_by_sort(
    bits: np.ndarray,
    lab: np.ndarray,
    th: np.ndarray,
    key_dtype: type,
    shift: int,
    float_dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """:func:`_counts_by_table` for thresholds too close for a table: sort, then search.

    Keys are the class in the two top bits (ignored pixels sort last) above the value key; one
    sort, then ``2T`` binary searches of the thresholds' keys.
    """
    keys = np.left_shift(lab, shift, dtype=key_dtype)
    np.bitwise_or(keys, bits, out=keys)
    keys.sort()
    one = key_dtype(1 << shift)
    tkeys = _threshold_keys(th, key_dtype, shift, float_dtype)
    end0, end1 = np.searchsorted(keys, np.array([one, 2 * one], dtype=key_dtype), side="left")
    pos = np.searchsorted(keys, np.concatenate([tkeys, tkeys | one]), side="left")
    n_t = th.size
    g0 = end0 - pos[:n_t]  # background pixels with soft >= t
    g1 = end1 - pos[n_t:]  # smoke pixels with soft >= t
    return g0, g1, int(end0), int(end1 - end0)


def metric_curve(sweep: np.ndarray, metric: str = "mIoU") -> np.ndarray:
    """``metric`` at every threshold of summed sweep areas ``(T, 4, 2)``; float64 ``(T,)``."""
    arr = np.asarray(sweep)
    if arr.ndim != 3 or arr.shape[1:] != (4, 2):
        raise ValueError(f"sweep areas must have shape (T, 4, 2), got {arr.shape}")
    return _metric_array(arr, metric)


class SweepAccumulator(_PerImageAreas):
    """Per-image areas of soft maps at every threshold: ``areas`` is int64 ``(N, T, 4, 2)``.

    Fill one accumulator per split. Choose the threshold on the validation split with
    :meth:`best_threshold`, then score the test split at that threshold with :meth:`areas_at` (or
    :func:`apply_threshold`, which also records the choice). Never choose on test.
    """

    def __init__(
        self, thresholds: np.ndarray = DEFAULT_THRESHOLDS, ignore_index: int = IGNORE_INDEX
    ) -> None:
        self.thresholds = _as_thresholds(thresholds)
        super().__init__((self.thresholds.size, 4, 2))
        self.ignore_index = ignore_index

    def add(self, soft: np.ndarray, label: np.ndarray, image_id: str | None = None) -> np.ndarray:
        """Sweep one image and keep its areas; returns them, shape ``(T, 4, 2)``."""
        areas = _sweep_areas(soft, label, self.thresholds, self.ignore_index)
        self._keep(areas, image_id)
        return areas

    def curve(self, metric: str = "mIoU") -> np.ndarray:
        """Data-set ``metric`` at every threshold, float64 ``(T,)``."""
        return metric_curve(self.total, metric)

    def best_threshold(self, metric: str = "mIoU") -> tuple[float, float]:
        """The threshold maximising the data-set ``metric`` and that maximum.

        Ties go to the lowest threshold; NaN values never win. Call this on the validation split.

        Raises:
            ValueError: no images, an unknown metric, or the metric is NaN at every threshold.
        """
        if not self._rows:
            raise ValueError("no images added: cannot choose a threshold")
        values = self.curve(metric)
        if np.isnan(values).all():
            raise ValueError(f"{metric} is NaN at every threshold: cannot choose a threshold")
        best = int(np.nanargmax(values))  # first maximum = lowest threshold
        return float(self.thresholds[best]), float(values[best])

    def index_of(self, threshold: float) -> int:
        """Position of ``threshold`` in ``thresholds`` (within 1e-9); ValueError if absent."""
        hits = np.flatnonzero(np.abs(self.thresholds - float(threshold)) <= 1e-9)
        if hits.size != 1:
            raise ValueError(f"threshold {threshold} is not one of the swept thresholds")
        return int(hits[0])

    def areas_at(self, threshold: float) -> np.ndarray:
        """Per-image areas at one swept threshold, int64 ``(N, 4, 2)`` (bootstrap-ready)."""
        return self.areas[:, self.index_of(threshold)].copy()

    def metrics_at(self, threshold: float) -> dict[str, float]:
        """Data-set metrics at one swept threshold."""
        return metrics_from_areas(self.total[self.index_of(threshold)])


@dataclass
class SweepResult:
    """A threshold chosen on one split and applied to another.

    Attributes:
        threshold: the threshold used on the evaluation split.
        selection_metric: the metric the threshold maximised on the selection split.
        selection_value: that metric's value on the selection split.
        selected_on: name of the selection split (``"val"``).
        evaluated_on: name of the evaluation split (``"test"``).
        metrics: metrics of the evaluation split at ``threshold``.
        areas: per-image areas of the evaluation split at ``threshold``, ``(N, 4, 2)``.
    """

    threshold: float
    selection_metric: str
    selection_value: float
    selected_on: str
    evaluated_on: str
    metrics: dict[str, float]
    areas: np.ndarray = field(repr=False)

    def as_record(self) -> dict[str, Any]:
        """Flat dict for a run record: the metrics plus how the threshold was chosen."""
        return {
            **self.metrics,
            "threshold": self.threshold,
            "threshold_metric": self.selection_metric,
            "threshold_selected_on": self.selected_on,
            f"{self.selected_on}_{self.selection_metric}": self.selection_value,
        }


def apply_threshold(
    val: SweepAccumulator,
    test: SweepAccumulator,
    metric: str = "mIoU",
    val_name: str = "val",
    test_name: str = "test",
) -> SweepResult:
    """Choose the threshold on ``val`` and score ``test`` at it.

    Raises:
        ValueError: the accumulators sweep different thresholds, are the same object, or share
            an image id (ids that are None are not compared).
    """
    if val is test:
        raise ValueError("the threshold must be chosen on a split other than the one scored")
    if val.thresholds.shape != test.thresholds.shape or not np.array_equal(
        val.thresholds, test.thresholds
    ):
        raise ValueError("val and test were swept over different thresholds")
    shared = {i for i in val.ids if i is not None} & {i for i in test.ids if i is not None}
    if shared:
        raise ValueError(
            f"{len(shared)} image id(s) are in both {val_name} and {test_name}, "
            f"e.g. {sorted(map(str, shared))[0]!r}"
        )
    threshold, value = val.best_threshold(metric)
    return SweepResult(
        threshold=threshold,
        selection_metric=metric,
        selection_value=value,
        selected_on=val_name,
        evaluated_on=test_name,
        metrics=test.metrics_at(threshold),
        areas=test.areas_at(threshold),
    )
