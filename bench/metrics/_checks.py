"""Input checks shared by the metric modules (private: NumPy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

# Keys for the sweep: (unsigned dtype, value bits). The bit pattern of a non-negative float orders
# like its value, and values in [0, 2) leave the two top bits free for the label class (0
# background, 1 smoke, 3 ignore) in the sweep's sort fallback; its table path puts the class
# just above the highest bit a (moved) value key can have (bench.metrics.sweep._RankTable).
_KEY_LAYOUT = {
    np.dtype(np.float32): (np.uint32, 30),
    np.dtype(np.float64): (np.uint64, 62),
}


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
