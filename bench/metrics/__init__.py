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

Modules, one job each (import from ``bench.metrics``, which re-exports every public name):

- :mod:`bench.metrics.areas`: per-image areas, :class:`AreaAccumulator`, :func:`metrics_from_areas`;
- :mod:`bench.metrics.sweep`: the exact threshold sweep, :class:`SweepAccumulator`,
  :func:`apply_threshold`, :func:`binarize`;
- :mod:`bench.metrics.bootstrap`: :func:`bootstrap_ci`, :func:`paired_bootstrap`,
  :func:`group_areas`;
- :mod:`bench.metrics.distractors`: :func:`distractor_mass`, :class:`DistractorAccumulator`.
"""

from bench.metrics.areas import (
    AREA_ROWS,
    IGNORE_INDEX,
    METRICS,
    AreaAccumulator,
    image_areas,
    metrics_from_areas,
)
from bench.metrics.bootstrap import bootstrap_ci, group_areas, paired_bootstrap
from bench.metrics.distractors import DistractorAccumulator, distractor_mass
from bench.metrics.sweep import (
    DEFAULT_THRESHOLDS,
    SweepAccumulator,
    SweepResult,
    apply_threshold,
    binarize,
    metric_curve,
    sweep_areas,
)

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
