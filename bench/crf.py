"""Bilateral filtering and dense CRF inference on a permutohedral lattice.

The public face of the compiled module ``bench._bilateral`` (C++17, ``ext/``):

- `bilateral_filter` — Gaussian filtering of K value channels over the joint space of pixel
  position and colour, for one image or a batch;
- `dense_crf` — mean-field inference of the fully connected CRF of Krähenbühl & Koltun (2011),
  with backend ``"bench"`` (ours) or ``"pydensecrf2"`` (the reference implementation, the
  optional extra ``crf``);
- `set_num_threads` / `get_num_threads` — the default thread count of the C++ code.

The DenseCRF regularised loss of Tang et al. (2018), a torch module built on `bilateral_filter`,
is `bench.nn.crf_loss.DenseCRFLoss`; this module never imports torch.

What `bilateral_filter` computes: with features ``f_i = (x_i, y_i) / sigma_xy ⊕ (r_i, g_i, b_i)
/ sigma_rgb``, ``out[k, i] ≈ c · sum_j exp(-|f_i - f_j|² / 2) · values[k, j]`` (the sum includes
``j = i``). The permutohedral lattice (Adams et al. 2010) approximates it in O(N) per channel.
The constant ``c`` is 1 where the lattice is densely populated (a full-dimensional feature
cloud); on images, whose features fill a thin sheet of the 5-D space, the lattice drops the mass
blurred onto unoccupied lattice points and ``c`` is 0.5–0.85 (measured and checked in
tests/test_bilateral.py, with the approximation error bounds). The filter is linear in
``values`` and exactly symmetric as a matrix, and its result does not depend on the number of
threads. `dense_crf` normalises its kernels, so ``c`` cancels there; `DenseCRFLoss` values scale
with it.

How `dense_crf` (backend ``"bench"``) spends its time: it builds the bilateral kernel's lattice
for each image, then runs each mean-field iteration as one pass over the pixels (slice both
kernels, update Q, splat Q into both; ``ext/meanfield.hpp``). The Gaussian kernel depends only
on the image size, ``gauss_sxy`` and ``gauss_weight``, so its lattice and normalisation are kept
for the next calls (the CRF refiner runs over many tiles of one size; about 10 MB per 512x512
grid, at most four grids and 64 MB); ``bench._bilateral.clear_cache()`` forgets them. The result
depends neither on the number of threads nor on whether that kernel was kept: tests check both.
`benchmarks/test_bench_crf.py` compares the speed with pydensecrf2.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np

__all__ = [
    "CRF_BACKENDS",
    "PYDENSECRF_HINT",
    "bilateral_filter",
    "dense_crf",
    "get_num_threads",
    "set_num_threads",
]

Backend = Literal["bench", "pydensecrf2"]
CRF_BACKENDS: tuple[str, ...] = ("bench", "pydensecrf2")
PYDENSECRF_HINT = "pip install 'smoke-wsss-bench[crf]'"

_num_threads: int | None = None


def set_num_threads(n: int | None) -> None:
    """Set the default thread count of `bilateral_filter`, `dense_crf` and `DenseCRFLoss`.

    ``None`` restores the default: every CPU this process may run on.
    """
    global _num_threads
    _num_threads = None if n is None else _check_threads(n)


def get_num_threads() -> int:
    """The thread count used when a call does not pass ``num_threads``."""
    if _num_threads is not None:
        return _num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def bilateral_filter(image: np.ndarray, values: np.ndarray, sigma_xy: float, sigma_rgb: float,
                     *, num_threads: int | None = None) -> np.ndarray:
    """Filter ``values`` with a Gaussian over pixel position and colour of ``image``.

    Args:
        image: uint8 RGB, (H, W, 3) — or (N, H, W, 3) for a batch.
        values: float32 or float64, (K, H, W) — or (N, K, H, W) with a batched image.
        sigma_xy: spatial standard deviation in pixels (> 0).
        sigma_rgb: colour standard deviation in intensity levels 0–255 (> 0).
        num_threads: threads to use (default `get_num_threads`). A batch is split by image.

    Returns:
        An array of the shape and dtype of ``values``: ``c · sum_j exp(-|f_i - f_j|²/2) v_j``
        (see the module docstring for the features ``f`` and the constant ``c``).

    Raises:
        ValueError: a wrong dtype, shape, channel count, non-finite value or bad sigma.
    """
    from bench import _bilateral

    image = np.asarray(image)
    values = np.asarray(values)
    batched = image.ndim == 4
    _check_image(image, "image", batched=batched)
    _check_values(values, image, batched=batched)
    sigma_xy = _check_sigma(sigma_xy, "sigma_xy")
    sigma_rgb = _check_sigma(sigma_rgb, "sigma_rgb")
    threads = _threads(num_threads)
    images = np.ascontiguousarray(image if batched else image[None])
    vals = np.ascontiguousarray(values if batched else values[None])
    out = _bilateral.filter_batch(images, vals, sigma_xy, sigma_rgb, threads)
    return out if batched else out[0]


def dense_crf(image: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
              gauss_sxy: float = 3.0, gauss_weight: float = 3.0, bilateral_sxy: float = 80.0,
              bilateral_srgb: float = 13.0, bilateral_weight: float = 10.0, clip: float = 1e-5,
              backend: Backend = "bench", num_threads: int | None = None) -> np.ndarray:
    """Mean-field inference of a fully connected CRF with Potts compatibilities.

    The model and conventions of Krähenbühl & Koltun (NIPS 2011) and their reference code
    (``pydensecrf``): unary ``-log(clip(probs))``; a Gaussian smoothness kernel over
    ``(x, y) / gauss_sxy`` with weight ``gauss_weight`` and a bilateral appearance kernel over
    ``(x, y) / bilateral_sxy`` and ``rgb / bilateral_srgb`` with weight ``bilateral_weight``,
    each symmetrically normalised; ``Q ← softmax(-unary + Σ weight · K̃ Q)`` for ``iterations``
    steps, starting from ``softmax(-unary)``. The defaults are the standard settings of the
    weakly supervised segmentation literature (see ``methods/crf.py``).

    Args:
        image: uint8 RGB image (H, W, 3).
        probs: float32/float64 (K, H, W) label probabilities in [0, 1], K >= 2.
        iterations: mean-field steps (>= 0; 0 returns ``softmax(-unary)``).
        gauss_sxy, gauss_weight: smoothness kernel width (pixels) and weight (0 disables it).
        bilateral_sxy, bilateral_srgb, bilateral_weight: appearance kernel widths (pixels,
            intensity levels) and weight (0 disables it).
        clip: lower clip of ``probs`` before the log (as ``pydensecrf.utils.unary_from_softmax``).
        backend: ``"bench"`` (the compiled lattice here) or ``"pydensecrf2"`` (needs
            ``pip install 'smoke-wsss-bench[crf]'``).
        num_threads: threads for the ``"bench"`` backend (default `get_num_threads`).

    Returns:
        float32 (K, H, W) probabilities (each pixel sums to 1).

    Raises:
        ValueError: bad dtypes, shapes, values or parameters.
        ImportError: ``backend="pydensecrf2"`` without pydensecrf2 installed.
    """
    image = np.asarray(image)
    probs = np.asarray(probs)
    _check_image(image, "image", batched=False)
    if probs.dtype not in (np.float32, np.float64):
        raise ValueError(f"probs must be float32 or float64, got {probs.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must have shape (K, H, W) = (K, {image.shape[0]}, "
                         f"{image.shape[1]}) to match image, got {probs.shape}")
    if probs.shape[0] < 2:
        raise ValueError(f"probs needs at least 2 labels (K >= 2), got K = {probs.shape[0]}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
            or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    sigmas = {name: _check_sigma(value, name) for name, value in (
        ("gauss_sxy", gauss_sxy), ("bilateral_sxy", bilateral_sxy),
        ("bilateral_srgb", bilateral_srgb))}
    weights = {name: _check_number(value, name) for name, value in (
        ("gauss_weight", gauss_weight), ("bilateral_weight", bilateral_weight))}
    if not 0 < clip < 1:
        raise ValueError(f"clip must be in (0, 1), got {clip!r}")
    if backend not in CRF_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(CRF_BACKENDS)}; got {backend!r}")

    unary = -np.log(np.clip(probs, clip, 1.0)).astype(np.float32)
    image = np.ascontiguousarray(image)
    if backend == "pydensecrf2":
        return _dense_crf_pydensecrf(image, unary, int(iterations), **sigmas, **weights)
    from bench import _bilateral

    return _bilateral.dense_crf(image, np.ascontiguousarray(unary), sigmas["gauss_sxy"],
                                weights["gauss_weight"], sigmas["bilateral_sxy"],
                                sigmas["bilateral_srgb"], weights["bilateral_weight"],
                                int(iterations), _threads(num_threads))


def _dense_crf_pydensecrf(image: np.ndarray, unary: np.ndarray, iterations: int, *,
                          gauss_sxy: float, gauss_weight: float, bilateral_sxy: float,
                          bilateral_srgb: float, bilateral_weight: float) -> np.ndarray:
    """The same model run by pydensecrf2 (Krähenbühl's code), for comparison."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ImportError("backend='pydensecrf2' needs the optional package pydensecrf2: "
                          f"{PYDENSECRF_HINT}") from None
    k, h, w = unary.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(k, -1)))
    if gauss_weight != 0:
        crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_weight)
    if bilateral_weight != 0:
        crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image,
                                 compat=bilateral_weight)
    q = np.asarray(crf.inference(iterations), dtype=np.float32)
    return q.reshape(k, h, w)


# --- validation -----------------------------------------------------------------------------

def _describe(array: np.ndarray) -> str:
    return f"{array.dtype} array of shape {array.shape}"


def _check_image(image: np.ndarray, name: str, *, batched: bool) -> None:
    expected = "(N, H, W, 3)" if batched else "(H, W, 3)"
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 RGB array {expected}, got {_describe(image)}")
    if image.ndim != (4 if batched else 3) or image.shape[-1] != 3:
        raise ValueError(f"{name} must have shape {expected} with 3 colour channels, "
                         f"got {image.shape}")
    if image.shape[-3] == 0 or image.shape[-2] == 0:
        raise ValueError(f"{name} must not be empty, got shape {image.shape}")


def _check_values(values: np.ndarray, image: np.ndarray, *, batched: bool) -> None:
    if values.dtype not in (np.float32, np.float64):
        raise ValueError(f"values must be float32 or float64, got {_describe(values)}")
    h, w = image.shape[-3:-1]
    if batched:
        expected = f"(N, K, H, W) = ({image.shape[0]}, K, {h}, {w})"
        ok = values.ndim == 4 and values.shape[0] == image.shape[0]
    else:
        expected = f"(K, H, W) = (K, {h}, {w})"
        ok = values.ndim == 3
    if not ok or values.shape[-2:] != (h, w) or values.shape[-3] == 0:
        raise ValueError(f"values must have shape {expected} to match image {image.shape}, "
                         f"got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (found NaN or inf)")


def _check_number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _check_sigma(value: Any, name: str) -> float:
    number = _check_number(value, name)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _check_threads(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_threads must be an integer >= 1, got {n!r}")
    return int(n)


def _threads(num_threads: int | None) -> int:
    return get_num_threads() if num_threads is None else _check_threads(num_threads)
