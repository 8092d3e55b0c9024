"""Training-free smoke map from the dark channel prior and colour (no learning at all)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import CamSource, normalize_cam, register_method


@register_method("dark_channel")
class DarkChannelSmoke(CamSource):
    """Haze-like, low-saturation regions via the dark channel prior (He et al., CVPR 2009).

    Smoke adds airlight: it raises the dark channel (the minimum over colour channels and a
    local patch) and lowers saturation. The map is ``dark_channel * (1 - saturation) ** gamma``
    with very bright (near-white, sky or steam-like) pixels down-weighted by ``white_suppression``,
    normalised per image. A reference point for how far colour alone goes; it cannot tell
    smoke from haze or steam.
    """

    @dataclass
    class Params:
        patch: int = 7  # dark-channel patch size in pixels
        gamma: float = 1.0  # weight of the low-saturation term
        white_suppression: float = 0.5  # 0: none; 1: pure white scores zero

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from scipy.ndimage import minimum_filter

        p = self.params
        out = []
        for image in images:
            rgb = image.astype(np.float32) / 255.0
            lo = rgb.min(axis=2)
            hi = rgb.max(axis=2)
            dark = minimum_filter(lo, size=max(1, p.patch), mode="nearest")
            saturation = np.where(hi > 1e-6, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
            score = dark * (1.0 - saturation) ** p.gamma
            score *= 1.0 - p.white_suppression * np.clip((lo - 0.8) / 0.2, 0.0, 1.0)
            out.append(normalize_cam(score))
        return out
