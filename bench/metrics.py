"""Segmentation metrics for binary smoke masks (0 background, 1 smoke, 255 ignore).

NumPy only and import-light: nothing here imports torch, scipy or any plugin.

How scores are computed (the mmsegmentation ``IoUMetric`` / ``intersect_and_union`` scheme):

1. Per image keep four integer areas per class, in mmseg's row order
   ``area_intersect, area_union, area_pred, area_label`` -> an int64 array of shape ``(4, C)``
   (see :func:`image_areas`). Pixels whose *label* is ``ignore_index`` are left out of every area.
2. Sum the areas over the data set (:class:`AreaAccumulator`).
3. Divide once (:func:`metrics_from_areas`). A data-set IoU is therefore *not* the mean of per-image
   IoUs: large images and images with much smoke weigh more, exactly as in mmseg.

Metric definitions on the summed areas ``I, U, P, L`` (class 0 background, class 1 smoke):

====================  ======================================  ==================================
key                   formula                                 NaN when
====================  ======================================  ==================================
``IoU_background``    ``I[0] / U[0]``                         background in neither pred nor label
``IoU_smoke``         ``I[1] / U[1]``                         smoke in neither pred nor label
``mIoU``              nan-mean of the per-class IoUs          every class IoU is NaN (no pixels)
``precision``         ``I[1] / P[1]``                         no pixel predicted smoke
``recall``            ``I[1] / L[1]``                         no pixel labelled smoke
``F1``                ``2 I[1] / (P[1] + L[1])`` (smoke Dice)  smoke in neither pred nor label
``accuracy``          ``sum(I) / sum(L)`` (mmseg ``aAcc``)    no non-ignored pixel
====================  ======================================  ==================================

Empty denominators give NaN, never 0 and never a warning: a class that never appears in prediction
or label has no IoU, and ``mIoU`` averages the classes that do (``nanmean``, as mmseg does). F1 is
computed as ``2I / (P + L)``, which equals the harmonic mean of precision and recall whenever both
exist and is 0 (not NaN) when smoke is labelled but never predicted. For more than two classes the
extra IoUs are keyed ``IoU_class<c>`` and precision, recall and F1 stay those of class 1. All values
are raw Python floats; rounding is the table layer's job.

Predictions may contain ``ignore_index`` (a pseudo label that abstains). Like mmseg, such a pixel
counts towards its label's area but towards no predicted area, so it is a miss, never a false alarm.

Soft maps (CAMs in [0, 1]) are scored with a threshold sweep: at threshold ``t`` a pixel is smoke
iff ``soft >= t`` compared exactly, i.e. as ``soft.astype(np.float64) >= t``. (Beware: with NumPy 2
a float32 map compared with a Python float compares in float32, which differs at the boundaries.)
:class:`SweepAccumulator` keeps per-image areas for every threshold, the threshold is chosen on a
validation split (:meth:`SweepAccumulator.best_threshold`) and applied to the test split
(:func:`apply_threshold`), which records the threshold it used. :func:`binarize` makes a mask at
a chosen threshold with the same exact comparison.

Uncertainty: :func:`bootstrap_ci` resamples images with replacement and recomputes the summed
metric of each resample; :func:`paired_bootstrap` does the same for the difference between two
methods scored on the same images. Both take ``groups`` to resample correlated rows together
(the frames of a video clip); the harness scores stitched frames, so tiles never are rows.

Distractors: :func:`distractor_mass` and :class:`DistractorAccumulator` measure the share of CAM
mass that lands on auxiliary masks such as ``chimney`` or ``steam``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AREA_ROWS",
    "DEFAULT_THRESHOLDS",
    "IGNORE_INDEX",
    "METRICS",
    "AreaAccumulator",
    "DistractorAccumulator",
    "SweepAccumulator",
    "SweepResult",
    "apply_threshold",
    "binarize",
    "bootstrap_ci",
    "distractor_mass",
    "group_areas",
    "image_areas",
    "metric_curve",
    "metrics_from_areas",
    "paired_bootstrap",
    "sweep_areas",
]

IGNORE_INDEX = 255
"""Label value of pixels that are left out of every area."""

AREA_ROWS = ("area_intersect", "area_union", "area_pred", "area_label")
"""Row order of an area array (mmseg's order)."""

METRICS = ("mIoU", "IoU_background", "IoU_smoke", "precision", "recall", "F1", "accuracy")
"""Keys of :func:`metrics_from_areas` for the binary task, in table order."""

DEFAULT_THRESHOLDS: np.ndarray = np.round(np.arange(0.02, 1.0001, 0.02), 2)
"""The 50 sweep thresholds 0.02, 0.04, ..., 1.00 (float64).

0 is left out: at ``t = 0`` every map, even an all-zero one, predicts smoke everywhere, so that
score describes the data set, not the method (it is the all-smoke baseline, which ships as its own
plugin). ``np.round`` makes each the float64 nearest to its two-decimal value, so a record shows
``0.3`` rather than ``0.30000000000000004``. Read-only.
"""
DEFAULT_THRESHOLDS.flags.writeable = False

_CLASS_NAMES = ("background", "smoke")

# Sort keys for the sweep: the bit pattern of a non-negative float orders like its value, and the
# two top bits (free for values in [0, 2)) hold the label class: 0 background, 1 smoke, >= 2 ignore.
_KEY_LAYOUT = {
    np.dtype(np.float32): (np.uint32, 30),
    np.dtype(np.float64): (np.uint64, 62),
}


# --------------------------------------------------------------------------- input validation


def _as_label(label: Any, name: str = "label") -> np.ndarray:
    arr = np.asarray(label)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr


def _as_pred(pred: Any) -> np.ndarray:
    arr = np.asarray(pred)
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pred must have an integer or bool dtype, got {arr.dtype}")
    return arr


def _check_shapes(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {name_a} {a.shape} vs {name_b} {b.shape}")


def _bad_values(values: np.ndarray, limit: int = 8) -> str:
    uniq = np.unique(values)
    shown = ", ".join(str(v) for v in uniq[:limit].tolist())
    return shown + (", ..." if uniq.size > limit else "")


def _check_label_values(
    label: np.ndarray, num_classes: int, ignore_index: int, name: str = "label"
) -> None:
    """Raise ValueError unless every value is a class index or ``ignore_index``."""
    if label.size == 0:
        return
    if label.dtype == np.uint8 and ignore_index == 255:
        # uint8 wraps 255 to 0, so the valid set {0..C-1, 255} maps to {0..C}: one add, one max.
        if int((label + np.uint8(1)).max()) <= num_classes:
            return
    else:
        lo, hi = int(label.min()), int(label.max())
        if lo >= 0 and hi < num_classes:
            return
    bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if bad.any():
        allowed = ", ".join(str(c) for c in range(num_classes))
        raise ValueError(
            f"{name} contains values outside {{{allowed}, {ignore_index}}}: "
            f"{_bad_values(label[bad])}"
        )


def _as_soft(soft: Any, name: str = "soft map") -> np.ndarray:
    """Return ``soft`` as a float32 or float64 array after checking it is finite and in [0, 1]."""
    arr = np.asarray(soft)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64 if arr.dtype.itemsize > 2 else np.float32)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)  # exact
    elif arr.dtype not in _KEY_LAYOUT:
        raise ValueError(f"{name} must have a real float dtype up to float64, got {arr.dtype}")
    if arr.size:
        lo, hi = arr.min(), arr.max()  # NaN propagates, so one pass catches NaN, inf and range
        if not (lo >= 0 and hi <= 1):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} has non-finite values (NaN or inf)")
            raise ValueError(f"{name} has values outside [0, 1] (min {lo}, max {hi})")
    return arr


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


# --------------------------------------------------------------------------- per-image areas


def image_areas(
    pred: np.ndarray,
    label: np.ndarray,
    num_classes: int = 2,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Areas of one image, as mmseg's ``intersect_and_union``.

    Args:
        pred: integer or bool HxW prediction with values in ``0..num_classes-1``; ``ignore_index``
            is also accepted and means "no class predicted" (counted as a miss).
        label: integer or bool HxW ground truth with values in ``0..num_classes-1`` or
            ``ignore_index``; ignored pixels are excluded from every area.
        num_classes: number of classes (2 for smoke).
        ignore_index: label value to skip.

    Returns:
        int64 array of shape ``(4, num_classes)``; rows ``area_intersect, area_union, area_pred,
        area_label`` (see :data:`AREA_ROWS`).

    Raises:
        ValueError: shapes differ, a dtype is not integer/bool, or a value is out of range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred_a, label_a = _as_pred(pred), _as_label(label)
    _check_shapes(pred_a, label_a, "pred", "label")
    if pred_a.size == 0:
        _check_label_values(label_a, num_classes, ignore_index)
        return np.zeros((4, num_classes), dtype=np.int64)
    if (
        num_classes == 2
        and ignore_index == 255
        and label_a.dtype == np.uint8
        and pred_a.dtype in (np.uint8, np.bool_)
    ):
        shifted = label_a + np.uint8(1)  # 255 wraps: 0 ignore, 1 background, 2 smoke
        pred_u8 = pred_a.view(np.uint8)
        if shifted.max() <= 2 and (pred_a.dtype == np.bool_ or pred_u8.max() <= 1):
            return _binary_areas_u8(pred_u8, shifted)
    _check_label_values(label_a, num_classes, ignore_index)
    if num_classes == 2:
        pred_b = _binary_view(pred_a)
        if pred_b is not None:
            return _binary_areas(pred_b, label_a, ignore_index)
    return _histogram_areas(pred_a, label_a, num_classes, ignore_index)


def _binary_view(pred: np.ndarray) -> np.ndarray | None:
    """``pred`` as a bool array if all its values are 0 or 1, else None."""
    if pred.dtype == np.bool_:
        return pred
    if int(pred.min()) < 0 or int(pred.max()) > 1:
        return None
    if pred.dtype.itemsize == 1:
        return pred.view(np.bool_)  # 0/1 bytes are valid bools: no copy
    return pred != 0


def _binary_areas_u8(pred: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Fastest path: uint8 pred in {0, 1} and ``shifted = label + 1`` in {0, 1, 2}.

    Four byte-wise counts: valid pixels (``shifted != 0``), smoke labels (``shifted & 2``),
    valid smoke predictions (``pred * shifted != 0``) and hits (``pred * shifted & 2``).
    """
    n_valid = np.count_nonzero(shifted)
    hits = np.multiply(pred, shifted, dtype=np.uint8)
    p1 = np.count_nonzero(hits)
    l1 = np.count_nonzero(np.bitwise_and(shifted, np.uint8(2), out=shifted))
    i1 = np.count_nonzero(np.bitwise_and(hits, np.uint8(2), out=hits))
    return _binary_table(n_valid, l1, p1, i1)


def _binary_table(n_valid: int, l1: int, p1: int, i1: int) -> np.ndarray:
    """Areas (4, 2) from valid pixels, smoke labels, smoke predictions and smoke hits."""
    l0, p0 = n_valid - l1, n_valid - p1
    i0 = n_valid - (p1 + l1 - i1)  # valid pixels outside pred-smoke union label-smoke
    return np.array([[i0, i1], [p0 + l0 - i0, p1 + l1 - i1], [p0, p1], [l0, l1]], dtype=np.int64)


def _binary_areas(pred1: np.ndarray, label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Fast path for two classes: four boolean counts, the rest by inclusion-exclusion."""
    valid = label != ignore_index
    lab1 = label == 1
    n_valid = np.count_nonzero(valid)
    l1 = np.count_nonzero(lab1)
    p1 = np.count_nonzero(np.logical_and(pred1, valid, out=valid))
    i1 = np.count_nonzero(np.logical_and(pred1, lab1, out=lab1))
    return _binary_table(n_valid, l1, p1, i1)


def _histogram_areas(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """General path: a joint histogram of (label, pred) over the non-ignored pixels."""
    bad = (pred != ignore_index) & ((pred < 0) | (pred >= num_classes))
    if bad.any():
        allowed = ", ".join(str(c) for c in range(num_classes))
        raise ValueError(
            f"pred contains values outside {{{allowed}, {ignore_index}}}: {_bad_values(pred[bad])}"
        )
    valid = label != ignore_index
    lab = label[valid].astype(np.intp)
    prd = pred[valid].astype(np.intp)
    prd[prd == ignore_index] = num_classes  # an extra "no prediction" column
    joint = np.bincount(lab * (num_classes + 1) + prd, minlength=num_classes * (num_classes + 1))
    joint = joint.reshape(num_classes, num_classes + 1)
    inter = np.diagonal(joint).astype(np.int64)
    area_label = joint.sum(axis=1, dtype=np.int64)
    area_pred = joint[:, :num_classes].sum(axis=0, dtype=np.int64)
    return np.stack([inter, area_pred + area_label - inter, area_pred, area_label])


class _PerImageAreas:
    """Per-image area arrays kept in order with their image ids (shared by the accumulators)."""

    def __init__(self, row_shape: tuple[int, ...]) -> None:
        self._row_shape = row_shape
        self._rows: list[np.ndarray] = []
        self._ids: list[str | None] = []
        self._stacked: np.ndarray | None = None

    def _keep(self, areas: np.ndarray, image_id: str | None) -> None:
        self._rows.append(areas)
        self._ids.append(image_id)
        self._stacked = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def ids(self) -> list[str | None]:
        """Image ids in the order they were added (None where none was given)."""
        return list(self._ids)

    @property
    def areas(self) -> np.ndarray:
        """Per-image areas, int64 ``(N, *row_shape)``."""
        if self._stacked is None:
            self._stacked = (np.stack(self._rows) if self._rows
                             else np.zeros((0, *self._row_shape), dtype=np.int64))
        return self._stacked

    @property
    def total(self) -> np.ndarray:
        """Areas summed over the images, int64 ``row_shape``."""
        return self.areas.sum(axis=0, dtype=np.int64)


class AreaAccumulator(_PerImageAreas):
    """Collects per-image areas over a data set.

    ``add`` once per image; ``areas`` holds the per-image areas ``(N, 4, C)`` (kept for the
    bootstrap), ``total`` their sum ``(4, C)``, ``ids`` the image ids in order, and ``metrics()``
    the data-set metrics.
    """

    def __init__(self, num_classes: int = 2, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__((4, num_classes))
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def add(self, pred: np.ndarray, label: np.ndarray, image_id: str | None = None) -> np.ndarray:
        """Score one image and keep its areas; returns them, shape ``(4, C)``."""
        areas = image_areas(pred, label, self.num_classes, self.ignore_index)
        self.add_areas(areas, image_id)
        return areas

    def add_areas(self, areas: np.ndarray, image_id: str | None = None) -> None:
        """Keep precomputed areas of one image (e.g. read back from a cache)."""
        arr = np.asarray(areas)
        if arr.shape != (4, self.num_classes):
            raise ValueError(f"areas must have shape (4, {self.num_classes}), got {arr.shape}")
        self._keep(arr.astype(np.int64, copy=True), image_id)

    def metrics(self) -> dict[str, float]:
        """Data-set metrics, see :func:`metrics_from_areas`."""
        return metrics_from_areas(self.total)


# --------------------------------------------------------------------------- metrics


def _check_areas(areas: np.ndarray, name: str = "areas") -> None:
    if areas.ndim != 3 or areas.shape[1] != 4 or areas.shape[2] < 2:
        raise ValueError(f"{name} must have shape (N, 4, C) with C >= 2, got {areas.shape}")


def _metric_arrays(areas: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics of areas shaped ``(..., 4, C)``; each value has shape ``(...)``."""
    a = np.asarray(areas, dtype=np.float64)
    inter, union, pred, lab = a[..., 0, :], a[..., 1, :], a[..., 2, :], a[..., 3, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        present = ~np.isnan(iou)
        n_present = present.sum(axis=-1)
        miou = np.where(present, iou, 0.0).sum(axis=-1) / np.where(n_present > 0, n_present, np.nan)
        out = {"mIoU": miou}
        for c in range(iou.shape[-1]):
            name = _CLASS_NAMES[c] if c < len(_CLASS_NAMES) else f"class{c}"
            out[f"IoU_{name}"] = iou[..., c]
        out["precision"] = inter[..., 1] / pred[..., 1]
        out["recall"] = inter[..., 1] / lab[..., 1]
        out["F1"] = 2.0 * inter[..., 1] / (pred[..., 1] + lab[..., 1])
        out["accuracy"] = inter.sum(axis=-1) / lab.sum(axis=-1)
    return out


def _metric_array(areas: np.ndarray, metric: str) -> np.ndarray:
    values = _metric_arrays(areas)
    if metric not in values:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(values)}")
    return values[metric]


def metrics_from_areas(total: np.ndarray) -> dict[str, float]:
    """Metrics of summed areas ``(4, C)`` as raw floats (NaN for empty denominators).

    Keys (binary task): ``mIoU, IoU_background, IoU_smoke, precision, recall, F1, accuracy``; the
    module docstring gives each formula and when it is NaN.
    """
    arr = np.asarray(total)
    if arr.ndim != 2 or arr.shape[0] != 4 or arr.shape[1] < 2:
        raise ValueError(f"total must have shape (4, C) with C >= 2, got {arr.shape}")
    return {k: float(v) for k, v in _metric_arrays(arr).items()}


# --------------------------------------------------------------------------- threshold sweep


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

    Method: each pixel gets an integer sort key, its label class in the two top bits (ignored
    pixels sort last) and the bit pattern of its value, which orders like the value for
    non-negative floats, below. One sort of the keys, then ``2T`` binary searches of the
    thresholds' keys, give for every threshold the number of background and smoke pixels at or
    above it; all areas follow from these counts. This is exact for any increasing thresholds and
    costs one vectorised O(HW log HW) sort instead of T full-image comparisons. (Searching every
    pixel in the thresholds, then a bincount by label and cumulative sums, is exact too, but on
    512x512 maps only about 2x faster than the naive loop and 6-9x slower than the sort: each
    pixel's binary search mispredicts branches. ``benchmarks/test_bench_metrics.py`` measures
    all three.)

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


def _sweep_areas(soft: Any, label: Any, th: np.ndarray, ignore_index: int) -> np.ndarray:
    label_a = _as_label(label)
    x = _as_soft(soft)
    _check_shapes(x, label_a, "soft map", "label")
    _check_label_values(label_a, 2, ignore_index)
    key_dtype, shift = _KEY_LAYOUT[x.dtype]
    flat = np.ascontiguousarray(x).reshape(-1)
    lab = label_a.reshape(-1)
    if not (lab.dtype == np.uint8 and ignore_index == 255):
        lab = np.where(lab == ignore_index, 3, lab).astype(key_dtype)
    # class in the top two bits; uint8 255 << 30 wraps to 3 << 30, i.e. "ignore" sorts last
    keys = np.left_shift(lab, shift, dtype=key_dtype)
    bits = flat.view(key_dtype)
    if flat.size and bits.max() > key_dtype(1 << shift):  # a -0.0: clear its sign bit
        bits = np.bitwise_and(bits, key_dtype((1 << (shift + 1)) - 1))
    np.bitwise_or(keys, bits, out=keys)
    keys.sort()

    one = key_dtype(1 << shift)
    tkeys = _threshold_keys(th, key_dtype, shift, x.dtype)
    end0, end1 = np.searchsorted(keys, np.array([one, 2 * one], dtype=key_dtype), side="left")
    pos = np.searchsorted(keys, np.concatenate([tkeys, tkeys | one]), side="left")
    n_t = th.size
    g0 = end0 - pos[:n_t]  # background pixels with soft >= t
    g1 = end1 - pos[n_t:]  # smoke pixels with soft >= t
    n0, n1 = int(end0), int(end1 - end0)

    out = np.empty((n_t, 4, 2), dtype=np.int64)
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


# --------------------------------------------------------------------------- bootstrap


def _resampled_totals(flat: np.ndarray, n_boot: int, seed: int | None) -> Iterator[np.ndarray]:
    """Yield blocks of bootstrap totals ``(b, K)`` of per-image rows ``flat`` ``(N, K)``.

    Each resample draws N images with replacement, i.e. multinomial counts over the images; the
    counts are drawn as N uniform indices per resample and binned (same distribution as
    ``rng.multinomial`` and about five times faster), then one float64 matmul sums the areas
    (exact: integer sums far below 2**53). Blocks bound memory to about 32 MB.
    """
    rng = np.random.default_rng(seed)
    n = flat.shape[0]
    rows = flat.astype(np.float64)
    block = max(1, min(n_boot, 4_000_000 // n))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        idx += np.arange(b)[:, None] * n
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        yield counts.astype(np.float64) @ rows


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def group_areas(areas: np.ndarray, groups: Sequence[Hashable] | None) -> np.ndarray:
    """Per-image areas summed per group (groups in order of first appearance).

    The bootstrap resamples these rows: the unit of independence is the group (a frame whose
    tiles are rows, a clip whose frames are rows), never a part of it.
    """
    if groups is None:
        return areas
    if len(groups) != areas.shape[0]:
        raise ValueError(f"{len(groups)} groups for {areas.shape[0]} rows of areas")
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(g, len(index)) for g in groups], np.int64)
    if len(index) == areas.shape[0]:
        return areas
    out = np.zeros((len(index), *areas.shape[1:]), areas.dtype)
    np.add.at(out, codes, areas)
    return out


def bootstrap_ci(
    per_image_areas: np.ndarray,
    metric: str = "mIoU",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | None = 0,
    groups: Sequence[Hashable] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a data-set metric, resampling images.

    Each resample draws N images with replacement, sums their areas and divides (the same
    statistic as the point estimate, not a mean of per-image scores). Resamples whose metric is
    NaN (e.g. no smoke anywhere in them) are dropped; if all are, the interval is (NaN, NaN).
    Deterministic for a given ``seed``.

    Args:
        per_image_areas: ``(N, 4, C)`` areas, e.g. ``AreaAccumulator.areas``.
        metric: a key of :func:`metrics_from_areas`.
        n_boot: number of resamples.
        alpha: 0.05 gives the 95% interval (2.5th and 97.5th percentiles).
        seed: seed of ``np.random.default_rng``.
        groups: one label per row; rows of a group are resampled together (e.g. the frames
            of one video clip). None: every row is its own unit.

    Returns:
        ``(low, high)`` as floats.
    """
    areas = np.asarray(per_image_areas)
    _check_areas(areas, "per_image_areas")
    areas = group_areas(areas, groups)
    _check_boot_args(n_boot, alpha)
    n, _, n_cls = areas.shape
    if n == 0:
        raise ValueError("per_image_areas holds no images")
    _metric_array(areas[0], metric)  # unknown metric -> ValueError before any work
    stats = [
        _metric_array(tot.reshape(-1, 4, n_cls), metric)
        for tot in _resampled_totals(areas.reshape(n, -1), int(n_boot), seed)
    ]
    return _percentile_interval(np.concatenate(stats), alpha)


def paired_bootstrap(
    areas_a: np.ndarray,
    areas_b: np.ndarray,
    metric: str = "mIoU",
    n_boot: int = 1000,
    seed: int | None = 0,
    alpha: float = 0.05,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Paired bootstrap comparison of two methods scored on the same images in the same order.

    Every resample draws one set of images and scores both methods on it, so the image-to-image
    variation shared by both cancels out of the difference. ``groups`` (one label per image)
    resamples the images of a group together, as :func:`bootstrap_ci` does.

    Returns a dict with:
        ``metric``, ``value_a``, ``value_b``: the metric of each method on all images;
        ``delta``: ``value_a - value_b``;
        ``ci_low``, ``ci_high``: percentile ``1 - alpha`` interval of the resampled deltas;
        ``p_value``: two-sided, ``min(1, 2 * min(F(<= 0), F(>= 0)))`` where ``F`` is the fraction
            of resampled deltas at most / at least 0 (ties at 0 count on both sides, so a method
            against itself gets 1). It is the smallest alpha whose percentile interval excludes 0;
            with ``n_boot`` resamples it cannot resolve values below ``1 / n_boot`` and 0 means
            "below that". NaN deltas are dropped;
        ``n_images``, ``n_boot``, ``alpha``.

    Raises:
        ValueError: the arrays differ in shape (not the same images) or are not ``(N, 4, C)``.
    """
    a, b = np.asarray(areas_a), np.asarray(areas_b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired bootstrap needs the same images in the same order: shapes {a.shape} vs "
            f"{b.shape}"
        )
    _check_areas(a, "areas_a")
    _check_boot_args(n_boot, alpha)
    a, b = group_areas(a, groups), group_areas(b, groups)
    n, _, n_cls = a.shape
    if n == 0:
        raise ValueError("no images to compare")
    value_a = float(_metric_array(a.sum(axis=0), metric))
    value_b = float(_metric_array(b.sum(axis=0), metric))
    both = np.concatenate([a.reshape(n, -1), b.reshape(n, -1)], axis=1)
    half = 4 * n_cls
    deltas = np.concatenate(
        [
            _metric_array(tot[:, :half].reshape(-1, 4, n_cls), metric)
            - _metric_array(tot[:, half:].reshape(-1, 4, n_cls), metric)
            for tot in _resampled_totals(both, int(n_boot), seed)
        ]
    )
    deltas = deltas[~np.isnan(deltas)]
    ci_low, ci_high = _percentile_interval(deltas, alpha)
    if deltas.size:
        p_value = min(1.0, 2.0 * min(np.mean(deltas <= 0), np.mean(deltas >= 0)))
    else:
        p_value = float("nan")
    return {
        "metric": metric,
        "value_a": value_a,
        "value_b": value_b,
        "delta": value_a - value_b,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "p_value": float(p_value),
        "n_images": n,
        "n_boot": int(n_boot),
        "alpha": float(alpha),
    }


# --------------------------------------------------------------------------- distractors


def _cam_masses(cam: Any, aux: Mapping[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    x = _as_soft(cam, "cam")
    total = float(x.sum(dtype=np.float64))
    masses: dict[str, float] = {}
    for name, mask in aux.items():
        m = np.asarray(mask)
        _check_shapes(x, m, "cam", f"aux mask {name!r}")
        if m.dtype != np.bool_:
            if not np.issubdtype(m.dtype, np.integer):
                raise ValueError(f"aux mask {name!r} must be bool or 0/1 integers, got {m.dtype}")
            if m.size and (int(m.min()) < 0 or int(m.max()) > 1):
                raise ValueError(f"aux mask {name!r} has values other than 0 and 1")
            m = m != 0
        masses[name] = float(x[m].sum(dtype=np.float64))
    return total, masses


def distractor_mass(cam: np.ndarray, aux: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of the CAM's total mass on each auxiliary mask: ``sum(cam * mask) / sum(cam)``.

    Args:
        cam: HxW soft map in [0, 1].
        aux: name -> HxW bool (or 0/1) mask, e.g. ``{"chimney": ..., "steam": ...}``.

    Returns:
        name -> share in [0, 1]; NaN for every name if the CAM sums to 0. Masks may overlap, so
        shares need not sum to at most 1.
    """
    total, masses = _cam_masses(cam, aux)
    return {k: (v / total if total > 0 else float("nan")) for k, v in masses.items()}


class DistractorAccumulator:
    """Distractor mass over a data set: summed mass on each mask / summed CAM mass.

    An image contributes to a mask's share only if it carries that mask (a missing mask means
    "unknown", not "no distractor"), so each name's denominator is the total CAM mass of the
    images that have it.
    """

    def __init__(self) -> None:
        self._mass: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self.ids: list[str | None] = []

    def add(
        self, cam: np.ndarray, aux: Mapping[str, np.ndarray], image_id: str | None = None
    ) -> dict[str, float]:
        """Add one image; returns its own shares (as :func:`distractor_mass`)."""
        total, masses = _cam_masses(cam, aux)
        for name, mass in masses.items():
            self._mass[name] = self._mass.get(name, 0.0) + mass
            self._total[name] = self._total.get(name, 0.0) + total
        self.ids.append(image_id)
        return {k: (v / total if total > 0 else float("nan")) for k, v in masses.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def shares(self) -> dict[str, float]:
        """name -> data-set share of CAM mass; NaN where the CAMs summed to 0."""
        return {
            k: (self._mass[k] / self._total[k] if self._total[k] > 0 else float("nan"))
            for k in self._mass
        }
