"""Sliding-window CAM: the wrapped source run on overlapping tiles at native resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import CamWrapper, register_method, window_starts


@register_method("sliding_window")
class SlidingWindow(CamWrapper):
    """Tiles (tile, stride) through any CAM source, stitched with uniform or Hann blending.

    Each tile's map comes from the wrapped source as it is, so tiles should be on a common
    scale: use a source whose maps are not normalised per image, e.g. a classifier with
    ``normalize=sigmoid`` (per-position probabilities); per-tile min-max stretches every tile,
    smoke-free ones included, to [0, 1].
    """

    label = "Sliding window"
    demo = "effnet[normalize=sigmoid]+sliding_window[tile=160,stride=96]"

    @dataclass
    class Params:
        """tile: window side in pixels (512: IJmond's 1920x1280 frames at native resolution);
        stride: step between windows; blend: ``mean`` (uniform weights) or ``hann`` (windows
        weigh their centre more, hiding seams)."""

        tile: int = 512
        stride: int = 256
        blend: str = "hann"

        def __post_init__(self) -> None:
            if self.tile < 16 or self.stride < 1:
                raise ValueError("tile must be >= 16 and stride >= 1")
            if self.blend not in ("mean", "hann"):
                raise ValueError(f"blend must be mean or hann, not '{self.blend}'")

    def weights(self, h: int, w: int) -> np.ndarray:
        """Blending weights of one window (strictly positive, so every pixel is covered)."""
        if self.params.blend == "mean":
            return np.ones((h, w), np.float64)
        wy = np.hanning(h + 2)[1:-1] if h > 1 else np.ones(1)
        wx = np.hanning(w + 2)[1:-1] if w > 1 else np.ones(1)
        return np.outer(wy, wx) + 1e-3

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        tile, stride = self.params.tile, self.params.stride
        jobs: list[tuple[int, int, int, np.ndarray]] = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            th, tw = min(tile, h), min(tile, w)
            for y in window_starts(h, th, stride):
                for x in window_starts(w, tw, stride):
                    jobs.append((i, y, x, image[y:y + th, x:x + tw]))
        cams: list[np.ndarray] = []
        step = max(1, self.inner.batch_size)
        for start in range(0, len(jobs), step):
            cams.extend(self.inner.compute([job[3] for job in jobs[start:start + step]]))
        acc = [np.zeros(im.shape[:2], np.float64) for im in images]
        norm = [np.zeros(im.shape[:2], np.float64) for im in images]
        count = [0] * len(images)
        single: list[np.ndarray | None] = [None] * len(images)
        for (i, y, x, crop), cam in zip(jobs, cams, strict=True):
            th, tw = crop.shape[:2]
            wgt = self.weights(th, tw)
            acc[i][y:y + th, x:x + tw] += wgt * cam
            norm[i][y:y + th, x:x + tw] += wgt
            count[i] += 1
            single[i] = cam
        return [single[i] if count[i] == 1 else np.clip(acc[i] / norm[i], 0, 1).astype(np.float32)
                for i in range(len(images))]
