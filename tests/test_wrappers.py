"""CAM wrappers: multi-scale, sliding window and fusion reduce to the base CAM in their
trivial settings; stitching and fusion arithmetic; fusion through the runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.maps import fuse_maps, resize_map, window_starts
from bench.nn.classifier_cam import ClassifierCam
from bench.plugins import METHODS, discover
from bench.stages import CamSource, RunContext


def plugin(name: str, inner: CamSource | None = None, **params: object) -> CamSource:
    discover()
    cls = METHODS.get(name).cls
    obj = cls(cls.Params(**params), RunContext(device="cpu", progress=False))
    if inner is not None:
        obj.inner = inner
    return obj


@pytest.fixture(scope="module")
def base() -> ClassifierCam:
    cam = ClassifierCam(ClassifierCam.Params(backbone="resnet18", weights="none", input_size=64,
                                             cam_scale=1.0),
                        RunContext(device="cpu", seed=0, progress=False))
    net = cam.build()
    x = torch.from_numpy(np.stack(images(4))).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # a head orthogonal to the mean feature: CAMs are not all zero
        mean = net.layer_grids(x, ())[0].mean((0, 2, 3))
        w = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
        net.model.fc.weight.copy_(w - (w @ mean) / (mean @ mean) * mean)
    assert all(np.ptp(m) > 0.5 for m in cam.compute(images(3)))
    return cam


class Brightness(CamSource):
    """A pointwise CAM (pixel brightness): the same wherever a window cuts the image."""

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [im.mean(2).astype(np.float32) / 255 for im in images]


def images(n: int, h: int = 96, w: int = 96) -> list[np.ndarray]:
    """Dark noise with a bright square somewhere (so CAMs have structure)."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        image = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y:y + h // 3, x:x + w // 3] = 230
        out.append(image)
    return out


def test_multiscale_one_scale_no_flip_is_the_base(base: ClassifierCam) -> None:
    batch = images(3)
    ms = plugin("multiscale", base, scales=(1.0,), flip=False)
    for a, b in zip(ms.compute(batch), base.compute(batch), strict=True):
        np.testing.assert_array_equal(a, b)


def test_multiscale_flip_of_a_pointwise_cam_and_scales() -> None:
    batch = images(2, 48, 80)
    exact = plugin("multiscale", Brightness(), scales=(1.0,), flip=True, mode="max")
    for a, b in zip(exact.compute(batch), Brightness().compute(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    several = plugin("multiscale", Brightness(), scales=(0.5, 1.0, 1.5))
    out = several.compute(batch)
    assert [m.shape for m in out] == [(48, 80)] * 2 and all(0 <= m.min() <= m.max() <= 1
                                                            for m in out)


def test_sliding_window_tile_covering_the_image_is_the_base(base: ClassifierCam) -> None:
    batch = images(2)
    for tile in (96, 512):
        sw = plugin("sliding_window", base, tile=tile, stride=32)
        for a, b in zip(sw.compute(batch), base.compute(batch), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("blend", ["mean", "hann"])
def test_sliding_window_stitches_exactly(blend: str) -> None:
    """Windows of a pointwise CAM must stitch back to the whole-image CAM (weights sum)."""
    batch = images(2, 100, 150)
    sw = plugin("sliding_window", Brightness(), tile=48, stride=30, blend=blend)
    for a, b in zip(sw.compute(batch), Brightness().compute(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_window_starts_cover_and_end_flush() -> None:
    assert window_starts(1920, 512, 256) == [0, 256, 512, 768, 1024, 1280, 1408]
    assert window_starts(100, 512, 256) == [0]
    assert window_starts(100, 100, 7) == [0]


@pytest.mark.parametrize("mode", ["mean", "max", "gmean"])
def test_fusing_a_cam_with_itself_returns_it(base: ClassifierCam, mode: str) -> None:
    cam = base.compute(images(1))[0]
    np.testing.assert_allclose(fuse_maps([cam, cam], mode), cam, atol=1e-7, rtol=0)
    np.testing.assert_allclose(fuse_maps([cam, cam, cam], mode), cam, atol=1e-6, rtol=0)
    fusion = plugin("fusion", sources="a:b", mode=mode)
    fusion.bind_sources([base, base])  # type: ignore[attr-defined]
    np.testing.assert_allclose(fusion.compute(images(1))[0], cam, atol=1e-7, rtol=0)


def test_fuse_maps_arithmetic() -> None:
    a = np.array([[0.0, 1.0]], np.float32)
    b = np.array([[1.0, 0.25]], np.float32)
    np.testing.assert_allclose(fuse_maps([a, b], "mean"), [[0.5, 0.625]])
    np.testing.assert_allclose(fuse_maps([a, b], "max"), [[1.0, 1.0]])
    np.testing.assert_allclose(fuse_maps([a, b], "gmean"), [[0.0, 0.5]])


def test_fusion_sources_split_outside_brackets() -> None:
    fusion = plugin("fusion", sources="resnet50+multiscale[scales=0.5:1]:classifier[layers=a:b]")
    assert fusion.sources() == ["resnet50+multiscale[scales=0.5:1]", "classifier[layers=a:b]"]


def test_resize_map_identity_and_size() -> None:
    m = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    assert resize_map(m, (5, 7)) is m or np.array_equal(resize_map(m, (5, 7)), m)
    assert resize_map(m, (10, 3)).shape == (10, 3)


def test_fusion_runs_its_sources_through_the_runner(smoke5k_root: Path, tmp_path: Path) -> None:
    """The runner prepares fusion's sources as sub-pipelines and records the fused CAM."""
    from bench.runner import Cell, RunOptions, run_cell

    opts = RunOptions(out=tmp_path / "out", data_roots={"smoke5k": str(smoke5k_root)},
                      progress=False, n_boot=10, device="cpu")
    recs = run_cell(Cell("fusion[sources=all_smoke:all_background,mode=mean]", "smoke5k",
                         "test", opts))
    assert recs[-1]["config"]["stages"][0]["params"]["sources"] == "all_smoke:all_background"
    maps = list((tmp_path / "out" / "cache").glob("*/maps-test-*.npz"))
    assert maps
    with np.load(maps[0]) as npz:
        values = {float(v) for k in npz.files if k != "__timing__" for v in np.unique(npz[k])}
    assert values == {0.5}
