"""Score one stage's maps on a split: fixed labels directly, soft maps at a calibrated threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.data.frames import Target
from bench.metrics import (
    DEFAULT_THRESHOLDS,
    AreaAccumulator,
    SweepAccumulator,
    binarize,
    bootstrap_ci,
    distractor_mass,
    metrics_from_areas,
)

#: Thresholds of the sweep (0.02 ... 1.00). 0 is left out: "cam >= 0" would call every pixel
#: smoke, which would let an all-zero map pose as all-smoke.
SWEEP_THRESHOLDS = DEFAULT_THRESHOLDS
CI_METRICS = ("mIoU", "IoU_smoke")


@dataclass
class StageScore:
    """Metrics of one stage on the scored split, with how they were obtained."""

    metrics: dict[str, float]
    ci: dict[str, Any]
    threshold: float | None
    threshold_info: dict[str, Any] | None
    distractors: dict[str, float]
    per_image_areas: np.ndarray
    image_ids: list[str]
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)


def score_stage(eval_samples: Sequence[Target], eval_maps: Sequence[np.ndarray], output: str,
                calib_samples: Sequence[Target] | None = None,
                calib_maps: Sequence[np.ndarray] | None = None, calib_name: str = "val",
                n_boot: int = 1000, seed: int = 0) -> StageScore:
    """Score ``eval_maps`` against the masks of ``eval_samples``.

    Soft maps are binarised at the threshold that maximises mIoU on the calibration split
    (never on the scored split); label maps are scored as they are (an ignore value 255 in a
    prediction counts as background: it is neither a hit nor a false alarm). The 95% interval
    comes from a bootstrap over images.
    """
    threshold = None
    info = None
    if output == "soft":
        if calib_samples is None or calib_maps is None:
            raise ValueError("soft maps need a calibration split to choose a threshold")
        sweep = SweepAccumulator(thresholds=SWEEP_THRESHOLDS)
        for sample, cam in zip(calib_samples, calib_maps, strict=True):
            if sample.mask is None:
                raise ValueError(f"calibration sample {sample.id} has no mask")
            sweep.add(cam, sample.mask, sample.id)
        threshold, calib_value = sweep.best_threshold("mIoU")
        threshold = float(threshold)
        grid = [float(SWEEP_THRESHOLDS[0]), float(SWEEP_THRESHOLDS[-1]),
                float(SWEEP_THRESHOLDS[1] - SWEEP_THRESHOLDS[0])]
        info = {"value": threshold, "chosen_on": calib_name, "criterion": "mIoU",
                "calibration_mIoU": float(calib_value), "grid": grid}
    acc = AreaAccumulator()
    mass = {"total": 0.0}
    for sample, m in zip(eval_samples, eval_maps, strict=True):
        if sample.mask is None:
            raise ValueError(f"sample {sample.id} has no mask to score against")
        pred = (binarize(m, threshold) if output == "soft"
                else (np.asarray(m) == 1).astype(np.uint8))
        acc.add(pred, sample.mask, sample.id)
        if sample.aux:
            weights = m.astype(np.float64) if output == "soft" else pred.astype(np.float64)
            total = float(weights.sum())
            mass["total"] += total
            if total > 0:
                for key, share in distractor_mass(weights, sample.aux).items():
                    mass[key] = mass.get(key, 0.0) + share * total
    areas = acc.areas
    metrics = metrics_from_areas(acc.total)
    ci = {"level": 0.95, "n_boot": n_boot}
    for name in CI_METRICS:
        lo, hi = bootstrap_ci(areas, metric=name, n_boot=n_boot, seed=seed)
        ci[name] = [float(lo), float(hi)]
    distractors = ({k: v / mass["total"] for k, v in mass.items() if k != "total"}
                   if mass["total"] > 0 else {})
    return StageScore(metrics, ci, threshold, info, distractors, areas, list(acc.ids),
                      len(areas))
