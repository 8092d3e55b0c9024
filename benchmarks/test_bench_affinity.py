"""The random walk of AffinityNet/IRN: the sparse walk against IRN's dense one (issue 14).

One graph: a 128x128 map of stride-4 cells (a 512-px tile), the boundary map from the image
gradient of a smoke-like scene and the values from its CAM, radius 5, beta 10, exp_times 8
(IRN's inference settings):

- **sparse** (`bench.random_walk.propagate`): the transition matrix as a sparse matrix with one
  entry per neighbour within the radius (69 per cell), 256 sparse-dense products;
- **dense** (`bench.random_walk.dense_random_walk`, ``squaring=False``): the dense 16384 x 16384
  transition matrix IRN builds, and the same 256 products with it (2 GiB in float64);
- **IRN's squaring** (``squaring=True``: ``T`` squared 8 times, as IRN's
  ``to_transition_matrix``) on a 64x64 map: at 128x128 each of its 8 products is a dense
  16384-cubed product (minutes each on 2 CPU cores), so it runs there only with
  ``BENCH_AFFINITY_SQUARING_128=1``.

Every dense result must equal the sparse one to 1e-4 (of the map's maximum). Peak memory is
measured with ``tracemalloc`` (NumPy and scipy allocations) in one extra, untimed call. The
summary gives the speed ratios from each benchmark's fastest round. Nothing asserts a time.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest

from bench.random_walk import dense_random_walk, path_affinities, propagate

RADIUS, BETA, EXP_TIMES = 5, 10.0, 8


def _cells(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape
    return x.reshape(size, h // size, size, w // size).mean(axis=(1, 3))


def graph(image: np.ndarray, cam: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, boundary) on a ``size`` x ``size`` map of a smoke-like scene: its CAM averaged
    over cells and the image's gradient magnitude (cell means, scaled to [0, 1])."""
    gray = image.astype(np.float32).mean(-1)
    gy, gx = np.gradient(gray)
    edges = _cells(np.hypot(gx, gy), size)
    boundary = np.clip(edges / np.percentile(edges, 99), 0, 1).astype(np.float32)
    return _cells(cam, size).astype(np.float32), boundary


@pytest.fixture(scope="module")
def graphs(scenes512: list) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The first 512x512 scene as 128x128 cells (stride 4) and as 64x64 cells."""
    image, cam = scenes512[0]
    return {size: graph(image, cam, size) for size in (128, 64)}


def peak_mib(fn: Any, *args: Any, **kw: Any) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn(*args, **kw)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def dense(values: np.ndarray, boundary: np.ndarray, squaring: bool) -> np.ndarray:
    """IRN's ``propagate_to_edge`` with the dense transition matrix."""
    aff = path_affinities(boundary, RADIUS)
    return dense_random_walk(values * (1 - boundary), aff, RADIUS, BETA, EXP_TIMES,
                             squaring=squaring)


def sparse(values: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    return propagate(values, boundary, RADIUS, BETA, EXP_TIMES)


def _best(benchmark: Any) -> float:
    return float(benchmark.stats.stats.min)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return {}


@pytest.mark.parametrize("size", [128, 64])
def test_sparse_walk(benchmark: Any, graphs: dict, results: dict, size: int) -> None:
    values, boundary = graphs[size]
    benchmark.group = f"random walk {size}x{size}, radius 5, exp_times 8"
    out = benchmark.pedantic(sparse, args=(values, boundary), rounds=5, warmup_rounds=1)
    assert out.std() > 0.05 * out.max()  # the walk has not flattened the map
    results[f"sparse{size}"] = (_best(benchmark), peak_mib(sparse, values, boundary), out)


def _compare(results: dict, key: str, size: int, out: np.ndarray, report: Any,
             what: str) -> None:
    if f"sparse{size}" not in results:
        pytest.skip(f"needs test_sparse_walk[{size}] first")
    seconds, memory, ref = results[f"sparse{size}"]
    d_seconds, d_memory = results[key]
    err = float(np.abs(out - ref).max() / ref.max())
    assert err < 1e-4, err
    report(f"random walk {size}x{size} cells (radius 5, beta 10, exp_times 8): sparse "
           f"{seconds * 1e3:.0f} ms, peak {memory:.0f} MiB; {what} {d_seconds:.2f} s, peak "
           f"{d_memory:.0f} MiB: {d_seconds / seconds:.0f}x faster, {d_memory / memory:.0f}x "
           f"less memory; max difference {err:.1e} of the maximum (both in float64, "
           f"returned as float32)")


def test_dense_walk_128(benchmark: Any, graphs: dict, results: dict, report: Any) -> None:
    values, boundary = graphs[128]
    benchmark.group = "random walk 128x128, radius 5, exp_times 8"
    out = benchmark.pedantic(dense, args=(values, boundary, False), rounds=1, iterations=1)
    results["dense128"] = (_best(benchmark), peak_mib(dense, values, boundary, False))
    _compare(results, "dense128", 128, out, report,
             "dense 16384x16384 transition matrix, 256 products")


def test_irn_squaring_64(benchmark: Any, graphs: dict, results: dict, report: Any) -> None:
    values, boundary = graphs[64]
    benchmark.group = "random walk 64x64, radius 5, exp_times 8"
    out = benchmark.pedantic(dense, args=(values, boundary, True), rounds=1, iterations=1)
    results["square64"] = (_best(benchmark), peak_mib(dense, values, boundary, True))
    _compare(results, "square64", 64, out, report, "IRN's dense walk (T squared 8 times)")


@pytest.mark.skipif(os.environ.get("BENCH_AFFINITY_SQUARING_128") != "1",
                    reason="8 dense 16384-cubed products: set BENCH_AFFINITY_SQUARING_128=1")
def test_irn_squaring_128(graphs: dict, results: dict, report: Any) -> None:
    values, boundary = graphs[128]
    tracemalloc.start()  # one call, timed and traced (it takes minutes)
    start = time.perf_counter()
    try:
        out = dense(values, boundary, True)
        seconds = time.perf_counter() - start
        memory = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    results["square128"] = (seconds, memory)
    _compare(results, "square128", 128, out, report, "IRN's dense walk (T squared 8 times)")
