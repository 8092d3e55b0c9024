"""DenseCRF regularised loss (Tang et al., "On Regularized Losses for Weakly-supervised CNN
Segmentation", ECCV 2018) as a torch module, filtering on the permutohedral lattice.

Same semantics as the public ``DenseCRFLoss`` of meng-tang/rloss: images and segmentations are
downscaled by ``scale_factor`` (images and ROI nearest, segmentations bilinear), the spatial
sigma is scaled with them, the segmentation is masked by the ROI, and

    loss = weight · (-Σ_n S_nᵀ W_n S_n) / N,     ∂loss/∂S = weight · (-2 W S / N) ⊙ ROI,

with ``W`` the bilateral affinity of `bench.crf.bilateral_filter`. Our ``W`` is an exactly
symmetric matrix, so that gradient is exact (checked with ``torch.autograd.gradcheck``).
This module imports torch (`bench.crf` does not); plugins import it as ``bench.DenseCRFLoss``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.crf import _check_number, _check_sigma, _threads, bilateral_filter

__all__ = ["DenseCRFLoss"]


class DenseCRFLoss(torch.nn.Module):
    """DenseCRF regularised loss on softmax outputs and RGB images.

    Devices: accepts CPU and CUDA tensors (see ``supported_devices``). The filtering always
    runs on the CPU (``filter_device``): the downscaled inputs are copied to the host, and the
    gradient is copied back to the segmentation's device. One bilateral filtering per call:
    the backward pass reuses the ``W S`` of the forward pass.

    Args:
        weight: multiplier of the loss (rloss uses e.g. 2e-9 at full resolution; our ``W``
            approximates the unnormalised Gaussian affinity, see `bench.crf`).
        sigma_rgb: colour standard deviation in intensity levels (rloss default 15).
        sigma_xy: spatial standard deviation in pixels at full resolution (rloss default 80).
        scale_factor: resolution at which to filter (rloss default 0.5); ``sigma_xy`` is
            scaled with it.
        num_threads: threads for the filter (default `bench.crf.get_num_threads`).

    Call with ``images`` (N, 3, H, W) RGB, uint8 or floating with values in 0–255 (floats are
    rounded to uint8 for the filter), ``segmentations`` (N, K, H, W) floating softmax outputs,
    and optionally ``rois`` (N, H, W) with 1 where the loss applies (default: everywhere).
    Returns a scalar tensor on the segmentation's device and dtype.
    """

    supported_devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    filter_device: ClassVar[str] = "cpu"

    def __init__(self, weight: float, sigma_rgb: float, sigma_xy: float,
                 scale_factor: float = 1.0, num_threads: int | None = None) -> None:
        super().__init__()
        self.weight = _check_number(weight, "weight")
        self.sigma_rgb = _check_sigma(sigma_rgb, "sigma_rgb")
        self.sigma_xy = _check_sigma(sigma_xy, "sigma_xy")
        self.scale_factor = _check_sigma(scale_factor, "scale_factor")
        if self.scale_factor > 1:
            raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor!r}")
        self.num_threads = None if num_threads is None else _threads(num_threads)

    def forward(self, images: torch.Tensor, segmentations: torch.Tensor,
                rois: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted loss for a batch (see the class docstring for shapes)."""
        _check_inputs(images, segmentations, rois)
        n, _, h, w = segmentations.shape
        if rois is None:
            rois = segmentations.new_ones((n, h, w))
        rois = rois.to(device=segmentations.device, dtype=segmentations.dtype)
        images = images.detach()
        s = self.scale_factor
        if s != 1.0:
            images = F.interpolate(images.float(), scale_factor=s, mode="nearest")
            segmentations = F.interpolate(segmentations, scale_factor=s, mode="bilinear",
                                          align_corners=False)
            rois = F.interpolate(rois.unsqueeze(1), scale_factor=s, mode="nearest").squeeze(1)
            if segmentations.shape[-1] == 0 or segmentations.shape[-2] == 0:
                raise ValueError(f"scale_factor {s} shrinks images of size {h}x{w} to nothing")
        pixels = _to_uint8_nhwc(images)
        loss = _DenseCRFLossFunction.apply(segmentations, pixels, rois, self.sigma_rgb,
                                           self.sigma_xy * s, self.num_threads)
        return self.weight * loss

    def extra_repr(self) -> str:
        return (f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, weight={self.weight}, "
                f"scale_factor={self.scale_factor}")


class _DenseCRFLossFunction(torch.autograd.Function):
    """-Σ SᵀWS / N with its closed-form gradient -2 W S / N (masked by the ROI)."""

    @staticmethod
    def forward(ctx: Any, segmentations: torch.Tensor, pixels: np.ndarray,  # type: ignore[override]
                rois: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                num_threads: int | None) -> torch.Tensor:
        n = segmentations.shape[0]
        masked = (segmentations * rois.unsqueeze(1)).detach()
        dtype = torch.float64 if masked.dtype == torch.float64 else torch.float32
        s = np.ascontiguousarray(masked.to(device="cpu", dtype=dtype).numpy())
        ws = bilateral_filter(pixels, s, sigma_xy, sigma_rgb, num_threads=num_threads)
        loss = -float(np.dot(s.ravel().astype(np.float64), ws.ravel())) / n
        ws_t = torch.from_numpy(ws).to(device=segmentations.device, dtype=segmentations.dtype)
        ctx.save_for_backward(ws_t, rois)
        ctx.n = n
        return segmentations.new_tensor(loss)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        ws, rois = ctx.saved_tensors
        grad = -2.0 * grad_output * ws * rois.unsqueeze(1) / ctx.n
        return grad, None, None, None, None, None


def _check_inputs(images: Any, segmentations: Any, rois: Any) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(segmentations, torch.Tensor):
        raise ValueError("images and segmentations must be torch tensors")
    if not segmentations.is_floating_point():
        raise ValueError(f"segmentations must be a floating tensor (softmax outputs), got "
                         f"{segmentations.dtype}")
    if segmentations.ndim != 4 or segmentations.shape[1] == 0:
        raise ValueError(f"segmentations must have shape (N, K, H, W), got "
                         f"{tuple(segmentations.shape)}")
    n, _, h, w = segmentations.shape
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating RGB in 0-255, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W) with 3 RGB channels, got "
                         f"{tuple(images.shape)}")
    if tuple(images.shape[2:]) != (h, w) or images.shape[0] != n:
        raise ValueError(f"images {tuple(images.shape)} and segmentations "
                         f"{tuple(segmentations.shape)} must agree in N, H and W")
    for device in (images.device, segmentations.device):
        if device.type not in DenseCRFLoss.supported_devices:
            raise ValueError(f"DenseCRFLoss supports devices {DenseCRFLoss.supported_devices}, "
                             f"got {device}")
    if rois is not None:
        if not isinstance(rois, torch.Tensor):
            raise ValueError("rois must be a torch tensor of shape (N, H, W)")
        if tuple(rois.shape) != (n, h, w):
            raise ValueError(f"rois must have shape (N, H, W) = {(n, h, w)}, got "
                             f"{tuple(rois.shape)}")


def _to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) tensor in 0-255 → contiguous uint8 (N, H, W, 3) array on the host."""
    host = images.detach().to("cpu")
    if host.dtype != torch.uint8:
        host = host.float()
        if not torch.isfinite(host).all():
            raise ValueError("images must be finite")
        lo, hi = float(host.min()), float(host.max())
        if lo < -0.5 or hi > 255.5:
            raise ValueError(f"images must hold RGB values in 0-255 (not normalised), got "
                             f"range [{lo:.3g}, {hi:.3g}]")
        if 0 < hi <= 1.0:
            raise ValueError("images look scaled to [0, 1]; pass RGB values in 0-255 "
                             "(e.g. images * 255) or uint8 tensors")
        host = host.round().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(host.permute(0, 2, 3, 1).numpy())
