"""The unit of data every stage sees: one image with its labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SMOKE = 1
BACKGROUND = 0
IGNORE = 255


@dataclass
class Sample:
    """One image (or one tile of a larger frame) with what is known about it.

    Attributes:
        id: unique within its data set and split, stable across runs (used as a cache key).
        image: uint8 array HxWx3, RGB.
        label: image-level label, 1 smoke, 0 no smoke, None when unknown or ambiguous
            (such samples are scored on masks but never used to train a classifier).
        mask: uint8 HxW with 0 background, 1 smoke, 255 ignore; None if the set has no masks.
        aux: auxiliary boolean HxW masks, e.g. ``chimney`` and ``steam`` (synthetic set), used to
            measure how much CAM mass falls on distractors.
        source_id: id of the frame the sample was cut from; splits and leakage checks use it so
            that tiles of one frame never land on both sides of a split.
    """

    id: str
    image: np.ndarray
    label: int | None = None
    mask: np.ndarray | None = None
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    source_id: str = ""

    def __post_init__(self) -> None:
        if not self.source_id:
            self.source_id = self.id

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])
