"""Per-image areas, their sum over a data set, and the metrics of summed areas.

The scoring scheme (mmseg's ``intersect_and_union`` areas, summed, divided once) and every
metric's formula are explained in the :mod:`bench.metrics` package docstring.
"""

from __future__ import annotations

import numpy as np

from bench.metrics._checks import (
    _as_label,
    _as_pred,
    _bad_values,
    _check_label_values,
    _check_shapes,
)

IGNORE_INDEX = 255
"""Label value of pixels that are left out of every area."""

AREA_ROWS = ("area_intersect", "area_union", "area_pred", "area_label")
"""Row order of an area array (mmseg's order)."""

METRICS = ("mIoU", "IoU_background", "IoU_smoke", "precision", "recall", "F1", "accuracy")
"""Keys of :func:`metrics_from_areas` for the binary task, in table order."""

_CLASS_NAMES = ("background", "smoke")


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
    ``bench.metrics`` package docstring gives each formula and when it is NaN.
    """
    arr = np.asarray(total)
    if arr.ndim != 2 or arr.shape[0] != 4 or arr.shape[1] < 2:
        raise ValueError(f"total must have shape (4, C) with C >= 2, got {arr.shape}")
    return {k: float(v) for k, v in _metric_arrays(arr).items()}
