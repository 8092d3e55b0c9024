"""Synthetic generation throughput: images/s at 256x256 on one thread (the target is >= 200).

Run: python -m pytest benchmarks/test_bench_synthetic.py --benchmark-only
"""

from __future__ import annotations

import os

import pytest

from bench.synthetic import SyntheticConfig, render

N = 50


@pytest.fixture(autouse=True)
def one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def test_synthetic_images_per_second(benchmark) -> None:
    cfg = SyntheticConfig(size=256)
    render(0, 0, cfg)  # build the noise bank outside the timing
    benchmark.pedantic(lambda: [render(i, 0, cfg) for i in range(N)], rounds=5, iterations=1)
    ips = N / benchmark.stats.stats.min
    benchmark.extra_info["images_per_s"] = ips
    print(f"\nsynthetic: {ips:.0f} images/s at 256x256 (best of 5, one thread)")
