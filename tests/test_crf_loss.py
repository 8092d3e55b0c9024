"""bench.nn.crf_loss.DenseCRFLoss: value and gradient against the closed form, scaling, devices,
errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.crf import bilateral_filter
from bench.nn.crf_loss import DenseCRFLoss


def batch(n: int = 2, k: int = 2, h: int = 8, w: int = 7, seed: int = 0,
          dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W), softmax segmentations (N, K, H, W), binary ROIs (N, H, W)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    logits = torch.randn((n, k, h, w), generator=g, dtype=dtype)
    rois = (torch.rand((n, h, w), generator=g) > 0.2).to(dtype)
    return images, logits.softmax(1), rois


def closed_form(images: torch.Tensor, seg: torch.Tensor, rois: torch.Tensor,
                sigma_rgb: float, sigma_xy: float) -> float:
    """-sum_n S_n^T W_n S_n / N with S masked by the ROI, W applied image by image."""
    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
    s = (seg * rois[:, None]).detach().numpy()
    total = 0.0
    for n in range(s.shape[0]):
        total -= float((s[n] * bilateral_filter(pixels[n], s[n], sigma_xy, sigma_rgb)).sum())
    return total / s.shape[0]


def test_value_matches_closed_form() -> None:
    images, seg, rois = batch()
    loss = DenseCRFLoss(weight=0.5, sigma_rgb=15.0, sigma_xy=4.0)(images, seg, rois)
    assert loss.shape == () and loss.dtype == torch.float64
    assert float(loss) == pytest.approx(0.5 * closed_form(images, seg, rois, 15.0, 4.0),
                                        rel=1e-10)


def test_gradcheck_double_precision() -> None:
    images, seg, rois = batch(n=2, k=3, h=6, w=5)
    loss = DenseCRFLoss(weight=1.0, sigma_rgb=20.0, sigma_xy=3.0)
    seg = seg.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(images, s, rois), (seg,), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)


def test_gradient_is_minus_two_w_s_over_n() -> None:
    images, seg, rois = batch(n=3)
    seg = seg.detach().requires_grad_(True)
    DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=5.0)(images, seg, rois).backward()
    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
    masked = (seg * rois[:, None]).detach().numpy()
    ws = bilateral_filter(pixels, masked, 5.0, 15.0)
    expected = -2.0 * ws * rois[:, None].numpy() / 3
    np.testing.assert_allclose(seg.grad.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_scale_factor_downscales_like_rloss() -> None:
    images, seg, rois = batch(n=2, h=16, w=12)
    loss = DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=8.0, scale_factor=0.5)
    value = loss(images, seg, rois)
    f = torch.nn.functional
    small_images = f.interpolate(images.float(), scale_factor=0.5, mode="nearest")
    small_seg = f.interpolate(seg, scale_factor=0.5, mode="bilinear", align_corners=False)
    small_rois = f.interpolate(rois[:, None], scale_factor=0.5, mode="nearest")[:, 0]
    expected = closed_form(small_images.round().to(torch.uint8), small_seg, small_rois, 15.0,
                           4.0)
    assert float(value) == pytest.approx(expected, rel=1e-10)
    seg = seg.detach().requires_grad_(True)
    loss(images, seg, rois).backward()
    assert seg.grad is not None and seg.grad.shape == seg.shape


def test_float32_inputs_float_images_and_default_rois() -> None:
    images, seg, _ = batch(dtype=torch.float32)
    module = DenseCRFLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=4.0)
    from_uint8 = module(images, seg)
    from_float = module(images.float(), seg)
    assert from_uint8.dtype == torch.float32
    assert float(from_uint8) == pytest.approx(float(from_float), rel=1e-6)
    ones = torch.ones(seg.shape[0], *seg.shape[2:])
    assert float(from_uint8) == pytest.approx(float(module(images, seg, ones)), rel=1e-6)
    assert float(from_uint8) < 0  # -S^T W S with a positive W


def test_devices_are_stated() -> None:
    assert DenseCRFLoss.supported_devices == ("cpu", "cuda")
    assert DenseCRFLoss.filter_device == "cpu"
    assert "CUDA" in (DenseCRFLoss.__doc__ or "")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors() -> None:
    images, seg, rois = batch(dtype=torch.float32)
    cpu = DenseCRFLoss(1.0, 15.0, 4.0)(images, seg, rois)
    seg_cuda = seg.cuda().requires_grad_(True)
    value = DenseCRFLoss(1.0, 15.0, 4.0)(images.cuda(), seg_cuda, rois.cuda())
    value.backward()
    assert value.device.type == "cuda" and seg_cuda.grad.device.type == "cuda"
    assert float(value) == pytest.approx(float(cpu), rel=1e-5)


IMAGES, SEG, ROIS = batch(n=2, k=2, h=6, w=5, dtype=torch.float32)


@pytest.mark.parametrize(("images", "seg", "rois", "match"), [
    (IMAGES.numpy(), SEG, ROIS, "torch tensors"),
    (IMAGES.long(), SEG, ROIS, "images must be uint8 or floating"),
    (IMAGES[:, :2], SEG, ROIS, "3 RGB channels"),
    (IMAGES.permute(0, 2, 3, 1), SEG, ROIS, "3 RGB channels"),
    (IMAGES[0], SEG, ROIS, r"images must have shape \(N, 3, H, W\)"),
    (IMAGES, SEG.long(), ROIS, "segmentations must be a floating tensor"),
    (IMAGES, SEG[0], ROIS, r"segmentations must have shape \(N, K, H, W\)"),
    (IMAGES, SEG[:, :, :4], ROIS, "must agree in N, H and W"),
    (IMAGES[:1], SEG, ROIS, "must agree in N, H and W"),
    (IMAGES, SEG, ROIS[:, :4], r"rois must have shape \(N, H, W\)"),
    (IMAGES.float() / 255, SEG, ROIS, "scaled to"),
    (IMAGES.float() - 128, SEG, ROIS, "0-255"),
])
def test_bad_inputs_raise_value_error(images: object, seg: object, rois: object,
                                      match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseCRFLoss(1.0, 15.0, 4.0)(images, seg, rois)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sigma_rgb": 0}, "sigma_rgb"), ({"sigma_xy": -1}, "sigma_xy"),
    ({"scale_factor": 2.0}, "scale_factor"), ({"weight": float("nan")}, "weight"),
])
def test_bad_parameters_raise_value_error(kwargs: dict, match: str) -> None:
    args = {"weight": 1.0, "sigma_rgb": 15.0, "sigma_xy": 80.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        DenseCRFLoss(**args)


def test_bench_crf_imports_without_torch() -> None:
    code = "import sys, bench.crf; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
