"""The scene canvas: a channels-first float32 image with structure and chimney masks.

Also the pixel-geometry helpers that scenery, plumes, textures and the camera share.
"""

from __future__ import annotations

import math

import numpy as np

from bench.data.synthetic.draws import F32, _Draws


class _Canvas:
    """A channels-first float32 image plus structure and chimney masks being drawn."""

    def __init__(self, h: int, w: int, palette: np.ndarray) -> None:
        self.h, self.w = h, w
        self.img = np.empty((3, h, w), F32)
        self.struct = np.zeros((h, w), bool)
        self.chimney = np.zeros((h, w), bool)
        self.roof = np.full(w, h, np.int64)  # first near-structure row per column
        self.palette = palette  # the scene's structure colours

    def box(self, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int]:
        """Integer box clipped to the image (may be empty)."""
        return (max(0, int(y0)), min(self.h, math.ceil(y1)),
                max(0, int(x0)), min(self.w, math.ceil(x1)))

    def paint(self, inside: np.ndarray, y0: int, x0: int, colour: np.ndarray,
              shade: np.ndarray | None = None) -> None:
        """Paint ``colour`` (times ``shade``) where ``inside`` (a box at (y0, x0)) is true."""
        h, w = inside.shape
        reg = self.img[:, y0:y0 + h, x0:x0 + w]
        src = colour[:, None, None] if shade is None else colour[:, None, None] * shade[None]
        np.copyto(reg, src, where=inside[None])
        self.struct[y0:y0 + h, x0:x0 + w] |= inside

    def rect(self, y0: float, y1: float, x0: float, x1: float, colour: np.ndarray) -> None:
        """Fill an axis-aligned rectangle of structure."""
        a, b, c, d = self.box(y0, y1, x0, x1)
        if a < b and c < d:
            self.img[:, a:b, c:d] = colour[:, None, None]
            self.struct[a:b, c:d] = True

    def colour(self, d: _Draws, light: float) -> np.ndarray:
        """One of the scene's structure colours, with brightness and a little hue jitter."""
        base = self.palette[int(d.u() * len(self.palette))]
        return d.jitter(base * F32(light * d.uniform(0.8, 1.15)), 6)


def _grid(y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a box as (h, 1) and (1, w) float32 arrays."""
    yy = np.arange(y0, y1, dtype=F32)[:, None] + F32(0.5)
    xx = np.arange(x0, x1, dtype=F32)[None, :] + F32(0.5)
    return yy, xx


def _clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clamp ``x`` in place; returns ``x`` (float32 bounds keep ``np.clip`` on its fast path)."""
    return np.clip(x, x.dtype.type(lo), x.dtype.type(hi), out=x)


def _segment_distance(yy: np.ndarray, xx: np.ndarray, a: tuple[float, float],
                      b: tuple[float, float]) -> np.ndarray:
    """Distance of pixel centres to the segment a-b, points given as (x, y)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    inv = 1.0 / max(dx * dx + dy * dy, 1e-6)
    px, py = xx - F32(ax), yy - F32(ay)
    t = _clamp((px * F32(dx) + py * F32(dy)) * F32(inv), 0.0, 1.0)
    ex, ey = px - t * F32(dx), py - t * F32(dy)
    return np.sqrt(ex * ex + ey * ey)


def _runs(u: np.ndarray, w: int, min_width: float, max_width: float,
          offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Split columns 0..w-1 into runs of widths drawn from ``u`` (one row of ``u`` per run).

    Returns the run index of every column and the start column of every run.
    """
    widths = np.maximum(2, (w * (min_width + (max_width - min_width) * u)).astype(np.int64))
    ends = np.cumsum(widths) - int(offset)
    idx = np.minimum(np.searchsorted(ends, np.arange(w), side="right"), len(u) - 1)
    return idx, ends - widths
