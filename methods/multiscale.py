"""Multi-scale CAM: the wrapped source run on rescaled (and flipped) copies, maps merged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import CamWrapper, fuse_maps, register_method, resize_image, resize_map


@register_method("multiscale")
class MultiScale(CamWrapper):
    """Multi-scale (and flip) inference over any CAM source: scales, flip, mean or max."""

    label = "Multi scale"
    demo = "effnet+multiscale[scales=1:2,flip=false]"

    @dataclass
    class Params:
        """scales: factors relative to the source's own input size; flip: add mirrored copies;
        mode: how the maps merge (mean, max)."""

        scales: tuple[float, ...] = (0.5, 1.0, 1.5)
        flip: bool = True
        mode: str = "mean"

        def __post_init__(self) -> None:
            if not self.scales or min(self.scales) <= 0:
                raise ValueError("scales must be positive numbers, e.g. scales=0.5:1:1.5")
            if self.mode not in ("mean", "max"):
                raise ValueError(f"mode must be mean or max, not '{self.mode}'")

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        views: list[list[np.ndarray]] = [[] for _ in images]
        for scale in self.params.scales:
            for flip in (False, True) if self.params.flip else (False,):
                batch = []
                for image in images:
                    h, w = image.shape[:2]
                    view = resize_image(image, (max(1, round(h * scale)), max(1, round(w * scale))))
                    batch.append(np.ascontiguousarray(view[:, ::-1]) if flip else view)
                for i, cam in enumerate(self.inner.compute(batch)):
                    cam = cam[:, ::-1] if flip else cam
                    views[i].append(resize_map(cam, images[i].shape[:2]))
        return [np.clip(fuse_maps(v, self.params.mode), 0, 1) for v in views]
