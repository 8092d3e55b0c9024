"""Distractor measures: the share of CAM mass on auxiliary masks (``chimney``, ``steam``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.metrics._checks import _as_soft, _check_shapes


def _cam_masses(cam: Any, aux: Mapping[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    x = _as_soft(cam, "cam")
    total = float(x.sum(dtype=np.float64))
    masses: dict[str, float] = {}
    for name, mask in aux.items():
        m = np.asarray(mask)
        _check_shapes(x, m, "cam", f"aux mask {name!r}")
        if m.dtype != np.bool_:
            if not np.issubdtype(m.dtype, np.integer):
                raise ValueError(f"aux mask {name!r} must be bool or 0/1 integers, got {m.dtype}")
            if m.size and (int(m.min()) < 0 or int(m.max()) > 1):
                raise ValueError(f"aux mask {name!r} has values other than 0 and 1")
            m = m != 0
        masses[name] = float(x[m].sum(dtype=np.float64))
    return total, masses


def distractor_mass(cam: np.ndarray, aux: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of the CAM's total mass on each auxiliary mask: ``sum(cam * mask) / sum(cam)``.

    Args:
        cam: HxW soft map in [0, 1].
        aux: name -> HxW bool (or 0/1) mask, e.g. ``{"chimney": ..., "steam": ...}``.

    Returns:
        name -> share in [0, 1]; NaN for every name if the CAM sums to 0. Masks may overlap, so
        shares need not sum to at most 1.
    """
    total, masses = _cam_masses(cam, aux)
    return {k: (v / total if total > 0 else float("nan")) for k, v in masses.items()}


class DistractorAccumulator:
    """Distractor mass over a data set: summed mass on each mask / summed CAM mass.

    An image contributes to a mask's share only if it carries that mask (a missing mask means
    "unknown", not "no distractor"), so each name's denominator is the total CAM mass of the
    images that have it.
    """

    def __init__(self) -> None:
        self._mass: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self.ids: list[str | None] = []

    def add(
        self, cam: np.ndarray, aux: Mapping[str, np.ndarray], image_id: str | None = None
    ) -> dict[str, float]:
        """Add one image; returns its own shares (as :func:`distractor_mass`)."""
        total, masses = _cam_masses(cam, aux)
        for name, mass in masses.items():
            self._mass[name] = self._mass.get(name, 0.0) + mass
            self._total[name] = self._total.get(name, 0.0) + total
        self.ids.append(image_id)
        return {k: (v / total if total > 0 else float("nan")) for k, v in masses.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def shares(self) -> dict[str, float]:
        """name -> data-set share of CAM mass; NaN where the CAMs summed to 0."""
        return {
            k: (self._mass[k] / self._total[k] if self._total[k] > 0 else float("nan"))
            for k in self._mass
        }
