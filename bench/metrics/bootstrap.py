"""Uncertainty of summed-area metrics: bootstrap intervals and paired comparisons.

Rows (images, or groups of them such as the frames of a clip) are resampled with replacement and
the summed metric of each resample is recomputed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from bench.metrics.areas import _check_areas, _metric_array


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
