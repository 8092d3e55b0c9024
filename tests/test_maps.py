"""bench.maps: torch-free map helpers (window starts, fusion, normalisation), one window-starts
function behind sliding windows, tiled segmenter inference and data-set tiling."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.data.tiling import tile_boxes, tile_starts
from bench.errors import ConfigError
from bench.maps import fuse_maps, normalize_cam, window_starts


@pytest.mark.parametrize("name", ["window_starts", "fuse_maps", "normalize_cam", "resize_map"])
def test_public_map_helpers_do_not_import_torch(name: str) -> None:
    code = textwrap.dedent(f"""
        import sys
        import bench
        bench.{name}
        from bench import {name}  # noqa: F401
        assert "torch" not in sys.modules, "torch imported"
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr


def test_window_starts_every_stride_last_flush_with_the_end() -> None:
    assert window_starts(1920, 512, 256) == [0, 256, 512, 768, 1024, 1280, 1408]
    assert window_starts(101, 40, 30) == [0, 30, 60, 61]
    assert window_starts(100, 512, 256) == [0]
    assert window_starts(10, 4, 0) == window_starts(10, 4, 1)  # a stride below 1 counts as 1
    for length, tile, stride in [(513, 128, 96), (77, 32, 1), (64, 64, 48), (1280, 512, 384)]:
        starts = window_starts(length, tile, stride)
        assert starts == sorted(set(starts)) and starts[-1] + tile == length
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all()


def test_tile_starts_are_window_starts_with_stride_equal_to_the_tile() -> None:
    for length in range(1, 130):
        for tile in range(1, 70):
            expected = [0] if length <= tile else window_starts(length, tile, tile)
            assert tile_starts(length, tile) == expected
    assert tile_starts(300, 0) == tile_starts(300, -5) == [0]
    assert tile_boxes(1280, 1920, 512)[-1] == (768, 1408, 512, 512)


def test_fuse_maps_and_normalize_cam() -> None:
    a = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    b = np.array([[1.0, 0.5], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(fuse_maps([a, b], "mean"), (a + b) / 2)
    np.testing.assert_allclose(fuse_maps([a, b], "max"), np.maximum(a, b))
    np.testing.assert_allclose(fuse_maps([a, b], "gmean"), np.sqrt(a * b), atol=1e-7)
    assert fuse_maps([a]).dtype == np.float32
    with pytest.raises(ConfigError, match="fusion mode"):
        fuse_maps([a, b], "median")
    np.testing.assert_allclose(normalize_cam(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert not normalize_cam(np.full((3, 3), 7.0)).any()
