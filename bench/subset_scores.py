"""The metrics of a split's named subsets, summed from the per-frame areas of its score.

A record stores one row of areas per scored frame (`bench.evaluate.StageScore`); a subset's
metrics are those rows summed and divided once, exactly as the whole split's are
(`bench.metrics.metrics_from_areas`), with a bootstrap interval over the subset's frames (its
clips for video frames). Nothing is rescored, and the threshold is the split's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.data.subsets import Subset
from bench.evaluate import StageScore
from bench.metrics import bootstrap_ci, metrics_from_areas

#: keys of a record's ``ci`` that describe the interval rather than name a metric
_CI_INFO = ("level", "n_boot", "unit", "n_units")


def score_subsets(subsets: Sequence[Subset], score: StageScore, level: str, n_boot: int,
                  seed: int) -> dict[str, dict[str, Any]]:
    """Each subset's ``{"rule", "order", "n_images", "metrics", "ci"}`` from ``score``'s
    stored areas (``order``: its place in the data set file, as records sort their keys).

    ``level`` is the record's (``pixel`` or ``image``); a subset that does not apply at that
    level (a smoke-share rule on image labels) is left out. The interval metrics are the ones
    the split's own record has intervals for.
    """
    out: dict[str, dict[str, Any]] = {}
    areas = np.asarray(score.per_image_areas)
    units = list(score.units or score.image_ids)
    for order, subset in enumerate(subsets):
        keep = subset.members(score.image_ids, areas, level)
        if keep is None:
            continue
        rows = areas[keep]
        metrics = metrics_from_areas(rows.sum(axis=0) if len(rows) else
                                     np.zeros(areas.shape[1:], np.int64))
        if level == "image":
            metrics.update(_image_extras(score, keep))
        kept_units = [u for u, k in zip(units, keep, strict=True) if k]
        ci: dict[str, Any] = {k: score.ci[k] for k in _CI_INFO if k in score.ci}
        if "n_units" in ci:
            ci["n_units"] = len(set(kept_units))
        for name, value in score.ci.items():
            if name in _CI_INFO or not isinstance(value, list):
                continue
            if name == "fp_pixel_rate_neg":  # a mean over no-smoke frames, not an area ratio
                ci[name] = _fp_interval(score, keep, n_boot, seed)
            else:
                ci[name] = _interval(rows, name, kept_units, n_boot, seed)
        out[subset.name] = {"rule": subset.rule.describe(), "order": order,
                            "n_images": int(keep.sum()), "metrics": metrics, "ci": ci}
    return out


def _interval(rows: np.ndarray, metric: str, units: list[str], n_boot: int,
              seed: int) -> list[float]:
    if not len(rows) or metric not in metrics_from_areas(rows.sum(axis=0)):
        return [math.nan, math.nan]
    lo, hi = bootstrap_ci(rows, metric=metric, n_boot=n_boot, seed=seed, groups=units)
    return [float(lo), float(hi)]


def _fp_interval(score: StageScore, keep: np.ndarray, n_boot: int, seed: int) -> list[float]:
    from bench.evaluate_image import _mean_ci

    fractions = score.extra.get("fractions")
    if fractions is None:
        return [math.nan, math.nan]
    smoke = np.asarray(score.per_image_areas)[keep][:, 3, 1] > 0
    return _mean_ci(np.asarray(fractions, np.float64)[keep][~smoke], n_boot, seed)


def _image_extras(score: StageScore, keep: np.ndarray) -> dict[str, float]:
    """Image level: pixel metrics are NaN, and the predicted smoke fraction on the subset's
    no-smoke (``fp_pixel_rate_neg``) and smoke frames, as `bench.evaluate_image` reports."""
    out = {name: math.nan for name in ("mIoU", "IoU_background", "IoU_smoke")}
    fractions = score.extra.get("fractions")
    if fractions is None:
        return out
    fractions = np.asarray(fractions, np.float64)[keep]
    smoke = np.asarray(score.per_image_areas)[keep][:, 3, 1] > 0  # the image label
    neg, pos = fractions[~smoke], fractions[smoke]
    out["fp_pixel_rate_neg"] = float(neg.mean()) if neg.size else math.nan
    out["smoke_fraction_pos"] = float(pos.mean()) if pos.size else math.nan
    return out
