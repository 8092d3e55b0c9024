"""Score one stage's maps on a split, per frame: fixed labels directly, soft maps at a calibrated
threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.metrics import (
    DEFAULT_THRESHOLDS,
    AreaAccumulator,
    SweepAccumulator,
    binarize,
    bootstrap_ci,
    distractor_mass,
    metrics_from_areas,
)
from bench.stitch import FrameView, stitched

#: Thresholds of the sweep (0.02 ... 1.00). 0 is left out: "cam >= 0" would call every pixel
#: smoke, which would let an all-zero map pose as all-smoke.
SWEEP_THRESHOLDS = DEFAULT_THRESHOLDS
CI_METRICS = ("mIoU", "IoU_smoke")


@dataclass
class StageScore:
    """Metrics of one stage on the scored split, with how they were obtained.

    ``per_image_areas`` has one row per scored frame (tiles stitched), ``image_ids`` the frame
    ids and ``units`` the bootstrap unit of each row (the frame, or the clip of a video frame).
    """

    metrics: dict[str, float]
    ci: dict[str, Any]
    threshold: float | None
    threshold_info: dict[str, Any] | None
    distractors: dict[str, float]
    per_image_areas: np.ndarray
    image_ids: list[str]
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)
    units: list[str] | None = None


def calibrate(views: Sequence[FrameView], maps: Sequence[np.ndarray],
              calib_name: str) -> tuple[float, dict[str, Any]]:
    """The threshold that maximises mIoU over the stitched frames of a calibration split."""
    sweep = SweepAccumulator(thresholds=SWEEP_THRESHOLDS)
    for view, cam in zip(views, stitched(views, maps, "soft"), strict=True):
        if view.mask is None:
            raise ValueError(f"calibration frame {view.id} has no mask")
        sweep.add(cam, view.mask, view.id)
    threshold, calib_value = sweep.best_threshold("mIoU")
    grid = [float(SWEEP_THRESHOLDS[0]), float(SWEEP_THRESHOLDS[-1]),
            float(SWEEP_THRESHOLDS[1] - SWEEP_THRESHOLDS[0])]
    return float(threshold), {"value": float(threshold), "chosen_on": calib_name,
                              "criterion": "mIoU", "calibration_mIoU": float(calib_value),
                              "grid": grid}


def score_stage(eval_views: Sequence[FrameView], eval_maps: Sequence[np.ndarray], output: str,
                calib_views: Sequence[FrameView] | None = None,
                calib_maps: Sequence[np.ndarray] | None = None, calib_name: str = "val",
                n_boot: int = 1000, seed: int = 0) -> StageScore:
    """Score a stage's tile maps against the masks of the frames they were cut from.

    The tile maps of each frame are stitched into one frame-sized map first (`bench.stitch`),
    so every pixel of a frame counts once. Soft maps are binarised at the threshold that
    maximises mIoU on the (stitched) calibration split, never on the scored split; label maps
    are scored as they are (an ignore value 255 in a prediction counts as background: it is
    neither a hit nor a false alarm). The 95% interval comes from a bootstrap over frames (over
    clips for video frames).

    Args:
        eval_views, eval_maps: the scored frames and the tile maps they index into.
        output: ``"soft"`` or ``"labels"``.
        calib_views, calib_maps: the calibration split (soft maps only).
        calib_name: the calibration split's name, for the record.
        n_boot, seed: bootstrap resamples and seed of the 95% intervals.
    """
    threshold = None
    info = None
    if output == "soft":
        if calib_views is None or calib_maps is None:
            raise ValueError("soft maps need a calibration split to choose a threshold")
        threshold, info = calibrate(calib_views, calib_maps, calib_name)
    acc = AreaAccumulator()
    mass = {"total": 0.0}
    for view, m in zip(eval_views, stitched(eval_views, eval_maps, output), strict=True):
        if view.mask is None:
            raise ValueError(f"frame {view.id} has no mask to score against")
        pred = (binarize(m, threshold) if output == "soft"
                else (np.asarray(m) == 1).astype(np.uint8))
        acc.add(pred, view.mask, view.id)
        if view.aux:
            weights = m.astype(np.float64) if output == "soft" else pred.astype(np.float64)
            total = float(weights.sum())
            mass["total"] += total
            if total > 0:
                for key, share in distractor_mass(weights, view.aux).items():
                    mass[key] = mass.get(key, 0.0) + share * total
    areas = acc.areas
    units = [view.unit or view.id for view in eval_views]
    metrics = metrics_from_areas(acc.total)
    ci = {"level": 0.95, "n_boot": n_boot, "unit": "frame", "n_units": len(set(units))}
    for name in CI_METRICS:
        lo, hi = bootstrap_ci(areas, metric=name, n_boot=n_boot, seed=seed, groups=units)
        ci[name] = [float(lo), float(hi)]
    distractors = ({k: v / mass["total"] for k, v in mass.items() if k != "total"}
                   if mass["total"] > 0 else {})
    return StageScore(metrics, ci, threshold, info, distractors, areas, list(acc.ids),
                      len(areas), units=units)
