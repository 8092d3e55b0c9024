"""Knobs of the synthetic generator (`SyntheticConfig`) and what it returns (`SyntheticImage`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults: the benchmark's synthetic data set).

    Attributes:
        size: images are ``size`` x ``size`` unless ``height`` / ``width`` are given.
        smoke_rate: fraction of images with smoke (the others are negatives).
        smoke_coverage: target mean fraction of smoke-mask pixels in smoky images.
        edge_softness: 0 gives crisp plume edges, 1 very diffuse ones (a wider opacity ramp).
        steam_rate: fraction of images with white steam plumes (steam is *not* smoke).
        chimney_given_smoke: P(chimneys in the scene | smoke); the first plume then rises
            from a chimney top. Otherwise the scene has no chimney at all.
        chimney_given_no_smoke: P(chimneys in the scene | no smoke). Together with
            ``chimney_given_smoke`` the spurious-correlation knob (see the package docstring).
        alpha_threshold: smoke opacity above which a pixel is labelled smoke (and steam
            opacity above which a pixel counts as steam).
        height: image height (default ``size``).
        width: image width (default ``size``).
    """

    size: int = 256
    smoke_rate: float = 0.5
    smoke_coverage: float = 0.05
    edge_softness: float = 0.5
    steam_rate: float = 0.3
    chimney_given_smoke: float = 0.9
    chimney_given_no_smoke: float = 0.5
    alpha_threshold: float = 0.15
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        for name in ("smoke_rate", "edge_softness", "steam_rate", "chimney_given_smoke",
                     "chimney_given_no_smoke"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.alpha_threshold <= 0.9:
            raise ValueError(f"alpha_threshold must be in [0, 0.9], got {self.alpha_threshold}")
        if not 0.0 < self.smoke_coverage <= 0.3:
            raise ValueError(f"smoke_coverage must be in (0, 0.3], got {self.smoke_coverage}")
        for name, value in (("size", self.size), ("height", self.height), ("width", self.width)):
            if value is not None and not 32 <= value <= 2048:
                raise ValueError(f"{name} must be in [32, 2048], got {value}")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return (self.height or self.size, self.width or self.size)


@dataclass
class SyntheticImage:
    """One rendered scene with everything known about it.

    Attributes:
        image: uint8 HxWx3 RGB.
        mask: uint8 HxW, 1 where ``smoke_alpha > alpha_threshold``, else 0.
        label: 1 iff ``mask`` has a smoke pixel.
        chimney: bool HxW, visible chimney pixels (not under smoke or steam).
        steam: bool HxW, steam pixels (steam opacity above the threshold and not smoke).
        smoke_alpha: float32 HxW, combined opacity of the smoke plumes in [0, 1].
        meta: how the scene was drawn: ``smoke``, ``steam``, ``chimney`` (the three coin
            flips), ``sky`` (kind), ``furnace`` (bool), ``chimney_tops`` [(x, y)] of the drawn
            chimneys, ``sources`` [(x, y, kind)] of the plumes, kind ``chimney`` / ``roof`` /
            ``behind`` for smoke and ``steam`` for steam.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    chimney: np.ndarray
    steam: np.ndarray
    smoke_alpha: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)
