"""CAM fusion: several CAM sources (pipelines) merged pixel-wise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import (
    MultiSourceCam,
    fuse_maps,
    join_origins,
    pipeline_weights,
    register_method,
    split_sources,
)


@register_method("fusion")
class Fusion(MultiSourceCam):
    """Fuse the CAMs of several sources (mean, max, geometric mean); each trains on its own.

    fusion[sources=resnet50:vit_small_patch16_224,mode=gmean]; sources are pipelines separated
    by ':' (``resnet50+multiscale:effnet``), each cached as if it ran alone. To fuse layers of
    one classifier, use its ``layers`` parameter: ``resnet50[layers=layer4.1:layer4]``.
    """

    label = "Fusion"

    @dataclass
    class Params:
        """sources: CAM pipelines separated by ':'; mode: mean, max or gmean."""

        sources: str = "resnet50:vit_small_patch16_224"
        mode: str = "mean"

        def __post_init__(self) -> None:
            if not split_sources(self.sources):
                raise ValueError("sources must name at least one CAM pipeline")
            if self.mode not in ("mean", "max", "gmean"):
                raise ValueError(f"mode must be mean, max or gmean, not '{self.mode}'")

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """The initial weights of every source pipeline's learned stages, in order."""
        return join_origins(value for source in split_sources(params.sources)
                            for value in pipeline_weights(source, profile))

    def sources(self) -> list[str]:
        return split_sources(self.params.sources)

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        per_source = [source.compute(images) for source in self.source_plugins]
        return [fuse_maps([maps[i] for maps in per_source], self.params.mode)
                for i in range(len(images))]
