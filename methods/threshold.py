"""Thresholding refiner: soft map → pseudo labels, with an optional ignore band."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import IGNORE, Refiner, Sample, register_method


@register_method("threshold")
class Threshold(Refiner):
    """Pseudo labels from a soft map: smoke above the threshold, ignore within the band around it.

    Pixels with ``cam >= threshold + band / 2`` become smoke, below ``threshold - band / 2``
    background, and in between 255 (ignored by segmenter training and by metrics).
    """

    output = "labels"
    accepts = ("soft",)
    demo = "dark_channel+threshold"

    @dataclass
    class Params:
        threshold: float = 0.5
        band: float = 0.0

        def __post_init__(self) -> None:
            if not 0.0 <= self.threshold <= 1.0 or self.band < 0:
                raise ValueError("threshold must be in [0, 1] and band >= 0")

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        lo = self.params.threshold - self.params.band / 2
        hi = self.params.threshold + self.params.band / 2
        labels = np.full(cam.shape, IGNORE, np.uint8)
        labels[cam >= hi] = 1
        labels[cam < lo] = 0
        return labels
