"""Throughput of metric accumulation (pytest-benchmark), against naive NumPy baselines.

Run: ``python -m pytest benchmarks/test_bench_metrics.py --benchmark-only``
(pyproject's addopts has ``--benchmark-skip``, which ``--benchmark-only`` overrides and
``--benchmark-enable`` does not). Each test stores its throughput in
``extra_info["mpix_per_s"]`` (mean round) and ``["mpix_per_s_best"]`` (fastest round, steadier on
a shared machine); the fast paths also store ``speedup_vs_<baseline>``, the ratio of best-round
throughputs measured in the same run. The run's "benchmark summary" lists the throughputs, the
ratios and, per group, which simple baseline is the one to beat (the fastest in that run: for
the threshold sweep this has been ``searchsorted`` + ``bincount``, which does one binary search
per pixel; the per-threshold loop is slower). Nothing is asserted about time.

Data: 64 synthetic 512x512 images with smooth CAMs (a few Gaussian blobs), labels from a
related field with an ignore band (255) along the smoke boundary, predictions = CAM >= 0.5.
The slow baselines run on the first 16 images; throughput is per pixel, so ratios are fair.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bench.metrics import DEFAULT_THRESHOLDS, AreaAccumulator, SweepAccumulator

N_IMAGES, SIZE, N_SLOW = 64, 512, 16
ROUNDS = 5
_results: dict[str, tuple[float, float]] = {}  # name -> Mpix/s of (mean, best) round


def _field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    out = np.zeros(yy.shape, np.float32)
    for _ in range(3):
        cy, cx = rng.uniform(0, 1, 2)
        s = rng.uniform(0.08, 0.25)
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)).astype(np.float32)
    return np.clip(out, 0, 1)


@pytest.fixture(scope="module")
def data() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    cams, labels, preds = [], [], []
    for _ in range(N_IMAGES):
        truth = _field(rng, yy, xx)
        label = (truth >= 0.5).astype(np.uint8)
        label[np.abs(truth - 0.5) < 0.02] = 255
        noise = rng.normal(0, 0.05, truth.shape).astype(np.float32)
        cam = np.clip(0.7 * truth + 0.3 * _field(rng, yy, xx) + noise, 0, 1)
        cams.append(cam)
        labels.append(label)
        preds.append((cam >= 0.5).astype(np.uint8))
    return {"cam": cams, "label": labels, "pred": preds}


@pytest.fixture(scope="module", autouse=True)
def _summary(report):
    """Put the throughputs and ratios into the run's benchmark summary once the module ran."""
    yield
    if not _results:
        return
    report("metric accumulation throughput, Mpix/s (mean round, best round):")
    for name, (m, b) in _results.items():
        report(f"  {name:30s} {m:9.1f} {b:9.1f}")
    for fast, slow in _PAIRS:
        if fast in _results and slow in _results:
            report(f"  {fast} / {slow}: {_results[fast][1] / _results[slow][1]:.2f}x "
                   "(best rounds)")
    for fast, group in (("areas_accumulator", "hard-prediction areas"),
                        ("sweep_accumulator", "threshold sweep")):
        line = _baseline_to_beat(fast, group)
        if line:
            report(f"  {line}")


def _baseline_to_beat(fast: str, group: str) -> str | None:
    """A sentence naming the fastest simple baseline of ``fast`` in this run and the ratio."""
    slows = [slow for f, slow in _PAIRS if f == fast and slow in _results]
    if fast not in _results or not slows:
        return None
    best = max(slows, key=lambda slow: _results[slow][1])
    ratio = _results[fast][1] / _results[best][1]
    verdict = "beats it" if ratio >= 1 else "does NOT beat it"
    return (f"{group}: the baseline to beat is {best}, the fastest simple baseline in this run "
            f"({_results[best][1]:.1f} Mpix/s best round); {fast} {verdict} at {ratio:.2f}x.")


_PAIRS = (
    ("areas_accumulator", "areas_naive_sum"),
    ("areas_accumulator", "areas_naive_count_nonzero"),
    ("sweep_accumulator", "sweep_naive_threshold_loop"),
    ("sweep_accumulator", "sweep_searchsorted_bincount"),
)


def _run(benchmark, name: str, fn: Callable[[], object], n_images: int) -> None:
    benchmark.extra_info["images"] = n_images
    benchmark.extra_info["image_size"] = f"{SIZE}x{SIZE}"
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, untimed
        return
    mpix = n_images * SIZE * SIZE / 1e6
    best = mpix / benchmark.stats.stats.min
    _results[name] = (mpix / benchmark.stats.stats.mean, best)
    benchmark.extra_info["mpix_per_s"] = _results[name][0]
    benchmark.extra_info["mpix_per_s_best"] = best
    for fast, slow in _PAIRS:
        if fast == name and slow in _results:
            benchmark.extra_info[f"speedup_vs_{slow}"] = best / _results[slow][1]


# --------------------------------------------------------------------------- naive baselines


def naive_areas_sum(pred: np.ndarray, label: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """The textbook per-class loop, counting with ``.sum()``."""
    valid = label != 255
    out = np.zeros((4, num_classes), np.int64)
    for c in range(num_classes):
        p, lab = (pred == c) & valid, label == c
        inter, area_p, area_l = (p & lab).sum(), p.sum(), lab.sum()
        out[:, c] = inter, area_p + area_l - inter, area_p, area_l
    return out


def naive_areas_count(pred: np.ndarray, label: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """The same loop counting with ``np.count_nonzero`` (a stronger baseline)."""
    valid = label != 255
    out = np.zeros((4, num_classes), np.int64)
    for c in range(num_classes):
        p, lab = (pred == c) & valid, label == c
        inter = np.count_nonzero(p & lab)
        area_p, area_l = np.count_nonzero(p), np.count_nonzero(lab)
        out[:, c] = inter, area_p + area_l - inter, area_p, area_l
    return out


def naive_sweep(soft: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """One full-image comparison per threshold (float64 thresholds: exact comparisons)."""
    return np.stack([naive_areas_count((soft >= t).view(np.uint8), label) for t in thresholds])


def searchsorted_sweep(soft: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per-pixel binary search into the thresholds, bincount split by label, cumulative sums."""
    n_t = thresholds.size
    k = np.searchsorted(thresholds, soft.reshape(-1).astype(np.float64), side="right")
    lab = label.reshape(-1)
    cls = np.where(lab == 255, 2, lab).astype(np.intp)
    hist = np.bincount(cls * (n_t + 1) + k, minlength=3 * (n_t + 1)).reshape(3, n_t + 1)
    at_or_above = hist[:2, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]  # pixels with soft >= t_j
    g0, g1 = at_or_above
    n0, n1 = hist[0].sum(), hist[1].sum()
    out = np.empty((n_t, 4, 2), np.int64)
    out[:, 0] = np.stack([n0 - g0, g1], axis=1)
    out[:, 1] = np.stack([n0 + n1 - g1, g0 + n1], axis=1)
    out[:, 2] = np.stack([n0 + n1 - g0 - g1, g0 + g1], axis=1)
    out[:, 3] = [n0, n1]
    return out


def test_baselines_agree_with_bench(data) -> None:
    """Sanity (runs without --benchmark-enable too): every baseline computes the same areas."""
    cam, label, pred = data["cam"][0], data["label"][0], data["pred"][0]
    acc, sweep = AreaAccumulator(), SweepAccumulator()
    np.testing.assert_array_equal(acc.add(pred, label), naive_areas_sum(pred, label))
    np.testing.assert_array_equal(acc.add(pred, label), naive_areas_count(pred, label))
    want = sweep.add(cam, label)
    np.testing.assert_array_equal(naive_sweep(cam, label, DEFAULT_THRESHOLDS), want)
    np.testing.assert_array_equal(searchsorted_sweep(cam, label, DEFAULT_THRESHOLDS), want)


# --------------------------------------------------------------------------- hard predictions


@pytest.mark.benchmark(group="areas")
def test_areas_naive_sum(benchmark, data) -> None:
    def run() -> None:
        for p, lab in zip(data["pred"], data["label"], strict=True):
            naive_areas_sum(p, lab)

    _run(benchmark, "areas_naive_sum", run, N_IMAGES)


@pytest.mark.benchmark(group="areas")
def test_areas_naive_count_nonzero(benchmark, data) -> None:
    def run() -> None:
        for p, lab in zip(data["pred"], data["label"], strict=True):
            naive_areas_count(p, lab)

    _run(benchmark, "areas_naive_count_nonzero", run, N_IMAGES)


@pytest.mark.benchmark(group="areas")
def test_areas_accumulator(benchmark, data) -> None:
    def run() -> None:
        acc = AreaAccumulator()
        for p, lab in zip(data["pred"], data["label"], strict=True):
            acc.add(p, lab)

    _run(benchmark, "areas_accumulator", run, N_IMAGES)


# --------------------------------------------------------------------------- threshold sweep


@pytest.mark.benchmark(group="sweep")
def test_sweep_naive_threshold_loop(benchmark, data) -> None:
    def run() -> None:
        for cam, lab in zip(data["cam"][:N_SLOW], data["label"][:N_SLOW], strict=True):
            naive_sweep(cam, lab, DEFAULT_THRESHOLDS)

    _run(benchmark, "sweep_naive_threshold_loop", run, N_SLOW)


@pytest.mark.benchmark(group="sweep")
def test_sweep_searchsorted_bincount(benchmark, data) -> None:
    def run() -> None:
        for cam, lab in zip(data["cam"][:N_SLOW], data["label"][:N_SLOW], strict=True):
            searchsorted_sweep(cam, lab, DEFAULT_THRESHOLDS)

    _run(benchmark, "sweep_searchsorted_bincount", run, N_SLOW)


@pytest.mark.benchmark(group="sweep")
def test_sweep_accumulator(benchmark, data) -> None:
    def run() -> None:
        acc = SweepAccumulator()
        for cam, lab in zip(data["cam"], data["label"], strict=True):
            acc.add(cam, lab)

    _run(benchmark, "sweep_accumulator", run, N_IMAGES)
