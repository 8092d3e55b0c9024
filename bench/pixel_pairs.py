"""Pixel pairs within a radius, the path between them, and their affinity labels (IRN).

The geometry of IRN's ``PathIndex`` (Ahn, Cho & Kwak, "Weakly Supervised Learning of Instance
Segmentation with Inter-pixel Relations", CVPR 2019; ``misc/indexing.py`` of jiwoon-ahn/irn),
NumPy only:

- `pair_offsets`: the offsets ``(dy, dx)`` of one half-plane (``dy > 0``, or ``dy == 0`` and
  ``dx > 0``) with ``dy² + dx² < radius²``, so that every unordered pair of pixels closer than
  ``radius`` is counted once, from the pixel that comes first in raster order (34 offsets for
  radius 5, 152 for radius 10);
- `pair_paths`: for each offset, the pixels of the line from the source ``(0, 0)`` to the
  destination ``(dy, dx)``: every pixel of their bounding box whose distance to the line is
  below 1, both ends included. A pair's affinity is ``1 - max(boundary)`` along it;
- `pair_labels`: the training target of a pair from a label map (0 background, 1 smoke, 255
  ignore): `PAIR_BG` (both background), `PAIR_FG` (both smoke), `PAIR_NEG` (one of each) or
  `PAIR_IGNORE` (a pixel is ignore, or the destination lies outside the map).

Pair arrays are ``K x H x W`` for ``K`` offsets: entry ``[k, y, x]`` is the pair from ``(y, x)``
to ``(y + dy_k, x + dx_k)``. Unlike IRN's training crops, which keep only the sources at least
``radius - 1`` pixels from the left, right and bottom borders, every pair inside the map is
kept.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from bench.sample import BACKGROUND, IGNORE, SMOKE

#: codes of `pair_labels`
PAIR_IGNORE, PAIR_BG, PAIR_FG, PAIR_NEG = 0, 1, 2, 3


def _check_radius(radius: int) -> int:
    if int(radius) != radius or radius < 2:
        raise ValueError(f"radius must be an integer >= 2, got {radius}")
    return int(radius)


@cache
def _geometry(radius: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    r = radius
    dirs = [(0, x) for x in range(1, r)]
    dirs += [(y, x) for y in range(1, r) for x in range(-r + 1, r) if x * x + y * y < r * r]
    paths = []
    for dy, dx in dirs:
        length_sq = dy * dy + dx * dx
        points = [(y, x) for y in range(min(0, dy), max(0, dy) + 1)
                  for x in range(min(0, dx), max(0, dx) + 1)
                  if (dy * x - dx * y) ** 2 < length_sq]  # distance to the line below 1
        paths.append(np.asarray(points, dtype=np.int64).reshape(-1, 2))
    offsets = np.asarray(dirs, dtype=np.int64).reshape(-1, 2)
    offsets.setflags(write=False)
    for p in paths:
        p.setflags(write=False)
    return offsets, tuple(paths)


def pair_offsets(radius: int) -> np.ndarray:
    """The ``K x 2`` offsets ``(dy, dx)`` of the pairs within ``radius`` (one half-plane)."""
    return _geometry(_check_radius(radius))[0]


def pair_paths(radius: int) -> tuple[np.ndarray, ...]:
    """For each of `pair_offsets`, the ``L x 2`` pixels ``(y, x)`` of its path, relative to the
    source, both ends included."""
    return _geometry(_check_radius(radius))[1]


def pair_slices(height: int, width: int, dy: int, dx: int
                ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """``(source, destination)`` slices of a map such that ``m[source]`` and ``m[destination]``
    are the two ends of every pair of offset ``(dy, dx)`` (``dy >= 0``) inside the map."""
    left, right = max(0, -dx), max(0, dx)
    rows = height - dy
    cols = width - left - right
    src = (slice(0, max(rows, 0)), slice(left, left + max(cols, 0)))
    dst = (slice(dy, dy + max(rows, 0)), slice(left + dx, left + dx + max(cols, 0)))
    return src, dst


def pair_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """uint8 ``K x H x W`` pair codes of a label map (0 background, 1 smoke, 255 ignore):
    `PAIR_BG`, `PAIR_FG`, `PAIR_NEG`, or `PAIR_IGNORE` where either pixel is ignore or the
    destination is outside the map."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D map, got shape {labels.shape}")
    bad = (labels != BACKGROUND) & (labels != SMOKE) & (labels != IGNORE)
    if bad.any():
        raise ValueError(f"labels may hold 0, 1 and 255 only, got "
                         f"{sorted(np.unique(labels[bad]).tolist())[:5]}")
    offsets = pair_offsets(radius)
    h, w = labels.shape
    out = np.zeros((len(offsets), h, w), np.uint8)
    for k, (dy, dx) in enumerate(offsets):
        src, dst = pair_slices(h, w, int(dy), int(dx))
        a, b = labels[src], labels[dst]
        valid = (a != IGNORE) & (b != IGNORE)
        code = np.where(a == b, np.where(a == SMOKE, PAIR_FG, PAIR_BG), PAIR_NEG)
        out[k][src] = np.where(valid, code, PAIR_IGNORE)
    return out
