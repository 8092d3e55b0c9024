"""Image-level scoring for splits without pixel masks (RISE clips, class folders).

A segmentation map becomes an image-level decision in two steps, both chosen on the calibration
split (``val``; ``train`` when ``val`` is scored), never on the scored split:

1. **Pixel threshold** ``t``: a soft map is binarised as ``map >= t`` (compared exactly, as
   `bench.metrics.binarize` does). ``t`` is chosen from the sweep grid 0.02, 0.04, ..., 1.00
   *jointly* with step 2, because a fixed 0.5 favours methods whose maps happen to be
   calibrated around 0.5. Label maps (0 / 1 / 255) need no ``t``: 1 is smoke, anything else not.
   A caller may fix ``t`` (``pixel_threshold``) instead.
2. **Area threshold** ``a``: a frame is predicted smoky when its smoke fraction (smoke pixels /
   all pixels) *exceeds* ``a``. For each ``t`` every distinct cut of the calibration fractions is
   tried; ``a`` is the midpoint between the two calibration fractions the cut falls between
   (half the smallest fraction for "everything smoky", the largest fraction for "nothing
   smoky"), so it is not glued to one calibration image.

The pair maximising image-level F1 on the calibration split wins; ties go to higher accuracy,
then to ``t`` nearest 0.5, then to the smaller ``a``. If the calibration split has no smoke
frames, F1 is undefined and accuracy decides (recorded as a warning).

Reported on the scored split (only samples with an image label; unlabelled ones are counted and
skipped): ``precision``, ``recall``, ``F1``, ``accuracy`` (image level), ``fp_pixel_rate_neg``
(mean predicted smoke fraction over no-smoke frames: how much smoke a method paints where there
is none, the out-of-distribution false-alarm measure) and ``smoke_fraction_pos`` (the same over
smoke frames), plus the confusion counts. Pixel metrics (``mIoU``, ``IoU_*``) are NaN (stored as
null) because there are no masks.

Each image is stored as a one-pixel "area" record (prediction = the image decision, label = the
image label), so the summed-area metrics of `bench.metrics` *are* the image-level metrics, and
`bench.metrics.bootstrap_ci` (and ``bench compare`` with ``--metric F1``) work unchanged on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.evaluate import StageScore
from bench.metrics import DEFAULT_THRESHOLDS, binarize, bootstrap_ci, metrics_from_areas

CI_METRICS = ("F1", "precision", "recall", "accuracy")
PIXEL_METRICS = ("mIoU", "IoU_background", "IoU_smoke")


def smoke_fraction_table(maps: Sequence[np.ndarray], output: str,
                         thresholds: np.ndarray) -> np.ndarray:
    """Smoke fraction of every map at every pixel threshold, shape ``(N, T)``.

    Soft maps: the share of pixels with ``value >= t`` (exact float64 comparison) per threshold
    ``t``; label maps: the share of pixels equal to 1, repeated over a single column (T = 1).
    """
    if output == "labels":
        return np.array([[float(np.mean(np.asarray(m) == 1)) if np.asarray(m).size else 0.0]
                         for m in maps]).reshape(len(maps), 1)
    th = np.asarray(thresholds, np.float64)
    out = np.zeros((len(maps), len(th)))
    for i, m in enumerate(maps):
        values = np.asarray(m, np.float64).ravel()
        if values.size == 0:
            continue
        # k = number of thresholds <= value: the pixel is smoke at thresholds 0..k-1
        hist = np.bincount(np.searchsorted(th, values, side="right"), minlength=len(th) + 1)
        at_or_above = np.cumsum(hist[::-1])[::-1]  # [j] = pixels with k >= j
        out[i] = at_or_above[1:] / values.size
    return out


def smoke_fraction(m: np.ndarray, output: str, pixel_threshold: float | None) -> float:
    """Predicted smoke share of one map (soft maps binarised at ``pixel_threshold``)."""
    arr = np.asarray(m)
    if arr.size == 0:
        return 0.0
    if output == "labels" or pixel_threshold is None:
        return float(np.mean(arr == 1))
    return float(binarize(arr, pixel_threshold).mean())


def area_cuts(fractions: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every distinct cut of ``fractions`` with its confusion counts, F1 and accuracy.

    Returns arrays over the candidate area thresholds ``a`` (frame smoky iff fraction > ``a``):
    ``a``, ``tp``, ``fp``, ``tn``, ``fn``, ``F1`` (NaN without smoke in labels or predictions)
    and ``accuracy``.
    """
    f = np.asarray(fractions, np.float64)
    y = np.asarray(labels).astype(bool)
    u = np.unique(f)
    cuts = []
    if u[0] > 0:
        cuts.append(u[0] / 2)
    cuts.extend(((u[:-1] + u[1:]) / 2).tolist())
    cuts.append(u[-1])
    a = np.asarray(cuts, np.float64)
    pos, neg = np.sort(f[y]), np.sort(f[~y])
    tp = len(pos) - np.searchsorted(pos, a, side="right")
    fp = len(neg) - np.searchsorted(neg, a, side="right")
    fn = len(pos) - tp
    tn = len(neg) - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    acc = (tp + tn) / max(len(f), 1)
    return {"a": a, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "F1": f1, "accuracy": acc}


@dataclass
class ImageThresholds:
    """The pixel and area thresholds chosen on the calibration split."""

    pixel: float | None
    area: float
    calibration: dict[str, float]
    warnings: list[str]


def choose_thresholds(maps: Sequence[np.ndarray], labels: Sequence[int], output: str,
                      pixel_threshold: float | None = None,
                      grid: np.ndarray = DEFAULT_THRESHOLDS) -> ImageThresholds:
    """Choose (pixel, area) thresholds maximising image-level F1 on labelled calibration maps."""
    y = np.asarray(labels, np.int64)
    if y.size == 0:
        raise ConfigError("image-level scoring needs labelled frames in the calibration split")
    warnings = []
    if not (y == 1).any():
        warnings.append("calibration split has no smoke frames: chosen by accuracy")
    if not (y == 0).any():
        warnings.append("calibration split has no smoke-free frames")
    pixel_grid = (np.array([np.nan]) if output == "labels" else
                  np.asarray([pixel_threshold], np.float64) if pixel_threshold is not None
                  else np.asarray(grid, np.float64))
    table = smoke_fraction_table(maps, output,
                                 pixel_grid if output != "labels" else np.zeros(1))
    best: tuple[Any, ...] | None = None
    for j, t in enumerate(pixel_grid):
        cuts = area_cuts(table[:, j], y)
        f1 = np.nan_to_num(cuts["F1"], nan=-1.0)
        closeness = 0.0 if np.isnan(t) else -abs(float(t) - 0.5)
        for k in range(len(cuts["a"])):
            key = (f1[k], cuts["accuracy"][k], closeness, -cuts["a"][k])
            if best is None or key > best[0]:
                best = (key, t, k, cuts)
    assert best is not None
    _, t, k, cuts = best
    calibration = {"F1": float(cuts["F1"][k]), "accuracy": float(cuts["accuracy"][k]),
                   **{n: int(cuts[n][k]) for n in ("tp", "fp", "tn", "fn")}}
    return ImageThresholds(None if np.isnan(t) else float(t), float(cuts["a"][k]), calibration,
                           warnings)


def image_areas_table(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-image ``(N, 4, 2)`` areas of one-pixel images (prediction and label in {0, 1}).

    Identical to `bench.metrics.image_areas` of ``[[pred]]`` against ``[[label]]`` per image.
    """
    p = np.asarray(pred, bool)
    y = np.asarray(label, bool)
    out = np.zeros((len(p), 4, 2), np.int64)
    for c, (pc, yc) in enumerate(((~p, ~y), (p, y))):
        out[:, 0, c] = pc & yc
        out[:, 1, c] = pc | yc
        out[:, 2, c] = pc
        out[:, 3, c] = yc
    return out


def _labelled(ids: Sequence[str], labels: Sequence[int | None],
              maps: Sequence[np.ndarray]) -> tuple[list[str], list[int], list[np.ndarray]]:
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    return ([ids[i] for i in keep], [int(labels[i]) for i in keep],  # type: ignore[arg-type]
            [maps[i] for i in keep])


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """Percentile 95% bootstrap interval of a mean (NaN, NaN for no values)."""
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def score_image_level(eval_ids: Sequence[str], eval_labels: Sequence[int | None],
                      eval_maps: Sequence[np.ndarray], output: str,
                      calib_labels: Sequence[int | None], calib_maps: Sequence[np.ndarray],
                      calib_name: str = "val", n_boot: int = 1000, seed: int = 0,
                      pixel_threshold: float | None = None,
                      eval_units: Sequence[str] | None = None) -> StageScore:
    """Score maps against image labels (see the module docstring for the rules).

    Args:
        eval_ids, eval_labels, eval_maps: the scored split (unlabelled samples are skipped).
        output: ``"soft"`` (maps in [0, 1]) or ``"labels"`` (0 / 1 / 255).
        calib_labels, calib_maps: the calibration split the thresholds are chosen on.
        calib_name: its name, for the record.
        n_boot, seed: bootstrap resamples and seed of the 95% intervals.
        pixel_threshold: fix the pixel threshold instead of choosing it (soft maps only).
        eval_units: the bootstrap unit of each scored sample (e.g. its video clip: frames of
            one clip are resampled together); None: every sample is its own unit.

    Returns:
        A `bench.evaluate.StageScore` whose per-image areas are one-pixel image decisions.
    """
    ids, labels, maps = _labelled(eval_ids, eval_labels, eval_maps)
    units = None if eval_units is None else [
        unit for unit, lab in zip(eval_units, eval_labels, strict=True) if lab is not None]
    skipped = len(eval_ids) - len(ids)
    if not ids:
        raise ConfigError("image-level scoring: no sample of the scored split has an image label")
    _, c_labels, c_maps = _labelled([""] * len(calib_labels), calib_labels, calib_maps)
    chosen = choose_thresholds(c_maps, c_labels, output, pixel_threshold)
    fractions = np.array([smoke_fraction(m, output, chosen.pixel) for m in maps])
    y = np.asarray(labels, np.int64)
    pred = fractions > chosen.area
    areas = image_areas_table(pred, y == 1)
    metrics = metrics_from_areas(areas.sum(axis=0))
    for name in PIXEL_METRICS:
        metrics[name] = float("nan")
    neg, pos = fractions[y == 0], fractions[y == 1]
    metrics.update({
        "fp_pixel_rate_neg": float(neg.mean()) if neg.size else float("nan"),
        "smoke_fraction_pos": float(pos.mean()) if pos.size else float("nan"),
        "n_pos": float(pos.size), "n_neg": float(neg.size),
        "tp": float(np.sum(pred & (y == 1))), "fp": float(np.sum(pred & (y == 0))),
        "tn": float(np.sum(~pred & (y == 0))), "fn": float(np.sum(~pred & (y == 1))),
    })
    ci: dict[str, Any] = {"level": 0.95, "n_boot": n_boot}
    for name in CI_METRICS:
        lo, hi = bootstrap_ci(areas, metric=name, n_boot=n_boot, seed=seed, groups=units)
        ci[name] = [float(lo), float(hi)]
    ci["fp_pixel_rate_neg"] = _mean_ci(neg, n_boot, seed)
    info = {
        "level": "image", "value": chosen.pixel, "area_fraction": chosen.area,
        "chosen_on": calib_name, "criterion": "image F1",
        "pixel_threshold": ("fixed" if pixel_threshold is not None else
                            "none (label maps)" if output == "labels" else "chosen jointly"),
        "grid": [float(DEFAULT_THRESHOLDS[0]), float(DEFAULT_THRESHOLDS[-1]),
                 float(DEFAULT_THRESHOLDS[1] - DEFAULT_THRESHOLDS[0])],
        "calibration": chosen.calibration, "n_calibration": len(c_labels),
        "skipped_unlabelled": skipped, "warnings": chosen.warnings,
    }
    return StageScore(metrics, ci, chosen.pixel, info, {}, areas, ids, len(ids),
                      extra={"fractions": fractions}, units=units)
