"""Shared setup of the performance suites (pytest-benchmark).

Run with ``pytest benchmarks --benchmark-enable`` (or ``--benchmark-only``). The project's
pytest options include ``--benchmark-skip`` so that the unit-test run never times anything;
``--benchmark-enable`` lifts that skip here. Suites put what they measure into the
``bench_report`` fixture; the lines are printed at the end of the run (speed ratios, Mpix/s).
Nothing here asserts a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import ndimage as ndi

_REPORT: list[str] = []


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is not None and config.getoption("benchmark_enable", False):
        session.skip = False


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT:
        terminalreporter.section("benchmark summary")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def bench_report() -> dict[str, float]:
    """Measured numbers by name; suites also append summary lines with `report_line`."""
    return {}


def report_line(text: str) -> None:
    _REPORT.append(text)


@pytest.fixture(scope="session")
def report() -> Any:
    return report_line


def smoke_scene(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A smoke-like image (sky, ground, chimney, grey plume, noise) and a blurred CAM of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    sky = np.stack([110 + 60 * yy / h, 150 + 50 * yy / h, np.full_like(yy, 210)], -1)
    ground = yy > h * rng.uniform(0.65, 0.8)
    img = np.where(ground[..., None], np.array([70, 80, 60], np.float32), sky)
    cx, cw = int(w * rng.uniform(0.25, 0.45)), max(2, w // 16)
    top = int(h * rng.uniform(0.35, 0.5))
    img[top:, cx:cx + cw] = (90, 60, 50)
    plume = np.zeros((h, w), np.float32)
    x, y, r = cx + cw / 2, float(top), w / 14
    for _ in range(8):
        plume = np.maximum(plume, ((xx - x) ** 2 + (yy - y) ** 2 < r * r).astype(np.float32))
        x += rng.uniform(0.5, 1.2) * r
        y -= rng.uniform(0.1, 0.6) * r
        r *= 1.15
    plume = ndi.gaussian_filter(plume, 0.6)
    alpha = 0.85 * plume[..., None]
    img = (1 - alpha) * img + alpha * np.array([185, 180, 175], np.float32)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    cam = ndi.gaussian_filter((plume > 0.5).astype(np.float32), w / 12)
    cam = np.clip(0.9 * cam / max(float(cam.max()), 1e-6) + 0.05, 0, 1).astype(np.float32)
    return img, cam


@pytest.fixture(scope="session")
def scenes512() -> list[tuple[np.ndarray, np.ndarray]]:
    """Eight 512x512 smoke-like scenes with their CAMs."""
    return [smoke_scene(seed, 512, 512) for seed in range(8)]
