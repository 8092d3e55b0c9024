"""Map helpers shared by CAM sources, wrappers, refiners and the data loaders.

Everything here works on NumPy arrays and is cheap to import: this module never imports torch
at import time, so ``from bench import window_starts`` (or `fuse_maps`, `normalize_cam`) stays
fast. Only the two resizing functions use torch, imported when they are first called, because
they must match the resampling the torch models use (bilinear with antialiasing).

- `window_starts`: offsets of overlapping windows (sliding-window CAMs, tiled segmenter
  inference, tiling large frames into crops);
- `fuse_maps`: pixel-wise fusion of same-sized maps (mean, max, geometric mean);
- `normalize_cam`: min-max normalisation to [0, 1];
- `resize_image`, `resize_map`: bilinear resizing of images and soft maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.errors import ConfigError

#: how `fuse_maps` combines maps
FUSE = ("mean", "max", "gmean")


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` every ``stride`` along ``length``, the last one flush
    with the end (one window when ``tile`` covers ``length``).

    A stride below 1 counts as 1. ``window_starts(1920, 512, 256)`` is
    ``[0, 256, 512, 768, 1024, 1280, 1408]``; with ``stride == tile`` windows overlap only as
    much as needed to reach the end (``window_starts(1920, 512, 512)``: 0, 512, 1024, 1408).
    """
    if tile >= length:
        return [0]
    stride = max(1, stride)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def fuse_maps(maps: Sequence[np.ndarray], mode: str = "mean") -> np.ndarray:
    """Fuse same-sized maps in [0, 1]: ``mean``, ``max`` or ``gmean`` (geometric mean)."""
    if not maps:
        raise ValueError("fuse_maps needs at least one map")
    if mode not in FUSE:
        raise ConfigError(f"fusion mode must be one of {', '.join(FUSE)}, not '{mode}'")
    if len(maps) == 1:
        return np.asarray(maps[0], dtype=np.float32)
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    if mode == "mean":
        out = stack.mean(0)
    elif mode == "max":
        out = stack.max(0)
    else:
        out = np.prod(np.clip(stack, 0.0, None), axis=0) ** (1.0 / len(maps))
    return out.astype(np.float32)


def normalize_cam(cam: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Min-max normalise a map to [0, 1] (a constant map becomes all zeros)."""
    cam = np.asarray(cam, dtype=np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    if hi - lo < eps:
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo)


def writable(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array (decoded images are read-only; torch wants writable)."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 HxWx3 image to ``size`` = (height, width), bilinear with antialiasing.

    Uses torch (imported on the first call that has to resize).
    """
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(writable(image)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float HxW map to ``size`` = (height, width), bilinear (half-pixel centres).

    Antialiased when shrinking. Uses torch (imported on the first call that has to resize).
    """
    h, w = int(size[0]), int(size[1])
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == (h, w):
        return cam
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(writable(cam))[None, None]
    antialias = h < cam.shape[0] or w < cam.shape[1]
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias)
    return y[0, 0].numpy()
