"""Sanity checks the runner applies to every stage's score: one warning line per failed check.

Two ways a stage can quietly mean nothing, both computed from what scoring already has:

- **Below ``all_smoke``**: its smoke IoU on the scored split is under the smoke IoU that
  ``all_smoke`` (every pixel smoke) gets on the same frames, which is the labelled smoke pixels
  over all valid pixels: no run of ``all_smoke`` needed, the per-frame areas hold both.
- **A collapsed segmenter**: the share of pixels it predicts as smoke on the scored split is
  under `COLLAPSE_RATIO` of the smoke share of the labels it trained on (its pseudo labels, or
  the masks of a supervised one): it learned to predict background.

NumPy only; the runner prints each warning to stderr and keeps them in the record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: a segmenter predicting less than this fraction of its training labels' smoke share collapsed
COLLAPSE_RATIO = 0.1

#: smoke IoUs closer than this count as equal (``all_smoke`` itself must not warn)
_TOLERANCE = 1e-9


def _totals(areas: np.ndarray) -> tuple[float, float, float]:
    """(predicted smoke, labelled smoke, valid pixels) summed over per-frame areas
    (``N x 4 x C``, rows intersect, union, pred, label as in `bench.metrics`)."""
    total = np.asarray(areas, np.float64).reshape(-1, 4, np.shape(areas)[-1]).sum(axis=0)
    return float(total[2, 1]), float(total[3, 1]), float(total[3].sum())


def all_smoke_iou(areas: np.ndarray) -> float:
    """``all_smoke``'s smoke IoU on the frames of these areas: labelled smoke / valid pixels
    (NaN without valid pixels)."""
    _, label, valid = _totals(areas)
    return label / valid if valid else math.nan


def predicted_smoke_share(areas: np.ndarray) -> float:
    """Predicted smoke pixels over valid pixels of these areas (NaN without valid pixels)."""
    pred, _, valid = _totals(areas)
    return pred / valid if valid else math.nan


def label_smoke_share(labels: Sequence[np.ndarray]) -> float:
    """Smoke (1) pixels over labelled (not 255) pixels of label maps (NaN when none is
    labelled)."""
    smoke = labelled = 0
    for label in labels:
        arr = np.asarray(label)
        smoke += int(np.count_nonzero(arr == 1))
        labelled += int(np.count_nonzero(arr != 255))
    return smoke / labelled if labelled else math.nan


def below_all_smoke(where: str, iou: float, baseline: float) -> str | None:
    """The warning for a smoke IoU under ``all_smoke``'s ``baseline`` (None when it is not,
    or when either is undefined). ``where`` names the stage and split."""
    if math.isnan(iou) or math.isnan(baseline) or iou >= baseline - _TOLERANCE:
        return None
    return f"{where}: smoke IoU {100 * iou:.2f} is below all_smoke's {100 * baseline:.2f}"


def collapsed(where: str, predicted: float, trained: float, what: str) -> str | None:
    """The warning for a segmenter whose predicted smoke share is under `COLLAPSE_RATIO` of
    the smoke share ``trained`` of its training labels (``what``: "pseudo labels", "masks");
    None when it is not, or when either share is undefined."""
    if math.isnan(predicted) or math.isnan(trained) or trained <= 0 or \
            predicted >= COLLAPSE_RATIO * trained:
        return None
    return (f"{where}: predicts smoke on {100 * predicted:.2f}% of pixels, under "
            f"{100 * COLLAPSE_RATIO:.0f}% of the {100 * trained:.2f}% smoke of its training "
            f"{what} (it learned to predict background)")
