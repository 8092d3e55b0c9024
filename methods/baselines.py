"""Trivial baselines that give the leaderboard its floor: random, all smoke, all background."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench import CamSource, register_method


@register_method("random")
class RandomCam(CamSource):
    """Uniform random noise per pixel: the chance level (deterministic per image and seed)."""

    baseline: ClassVar[bool] = True

    @dataclass
    class Params:
        pass

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image in images:
            digest = hashlib.sha1(np.ascontiguousarray(image)).digest()
            seed = [self.ctx.seed, int.from_bytes(digest[:8], "little")]
            rng = np.random.default_rng(seed)
            out.append(rng.random(image.shape[:2], dtype=np.float32))
        return out


@register_method("all_smoke")
class AllSmoke(CamSource):
    """Every pixel is smoke: the recall-1 baseline."""

    baseline: ClassVar[bool] = True

    @dataclass
    class Params:
        pass

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ones(im.shape[:2], np.float32) for im in images]


@register_method("all_background")
class AllBackground(CamSource):
    """No pixel is smoke: scores about 0.5 mIoU where smoke is rare, hence smoke IoU beside mIoU."""

    baseline: ClassVar[bool] = True

    @dataclass
    class Params:
        pass

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros(im.shape[:2], np.float32) for im in images]
