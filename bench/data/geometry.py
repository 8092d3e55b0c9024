"""Mask geometry of COCO annotations: polygon rasterisation and RLE decoding (NumPy only).

A pixel is inside a polygon when its centre is (even-odd rule), in COCO's continuous pixel
coordinates: the image spans ``[0, width] x [0, height]``, so a ``[10, 10, 20, 10, 20, 20, 10, 20]``
square covers exactly 100 pixels. RLE follows pycocotools: runs alternate background and
foreground, start with background and run down columns; ``counts`` is either a list of run
lengths or the compressed string of ``rleToString``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rasterize_polygon(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean HxW mask of the pixels whose centres lie inside a polygon (even-odd rule).

    ``xy`` is a flat ``[x0, y0, x1, y1, ...]`` array in COCO pixel coordinates (the image spans
    ``[0, width] x [0, height]``). Vectorised scanline fill over the polygon's rows only.
    """
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    out = np.zeros((height, width), bool)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(np.floor(y0.min() - 0.5)), 0)
    r_hi = min(int(np.ceil(y0.max() - 0.5)), height - 1)
    if r_hi < r_lo:
        return out
    yc = np.arange(r_lo, r_hi + 1, dtype=np.float64)[:, None] + 0.5
    crosses = ((y0 <= yc) & (yc < y1)) | ((y1 <= yc) & (yc < y0))
    rows, edges = np.nonzero(crosses)
    if rows.size == 0:
        return out
    dy = y1[edges] - y0[edges]
    xs = x0[edges] + (yc[rows, 0] - y0[edges]) * (x1[edges] - x0[edges]) / dy
    # a pixel column c is toggled by every crossing strictly left of its centre c + 0.5
    start = np.clip(np.floor(xs - 0.5).astype(np.int64) + 1, 0, width)
    toggles = np.zeros((r_hi - r_lo + 1, width + 1), np.int32)
    np.add.at(toggles, (rows, start), 1)
    out[r_lo:r_hi + 1] = (np.cumsum(toggles, axis=1)[:, :width] & 1).astype(bool)
    return out


def rle_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' ``rleFrString``) to run lengths."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def decode_rle(segmentation: dict[str, Any], height: int, width: int, where: str) -> np.ndarray:
    """Boolean HxW mask of an RLE segmentation (compressed string or list of counts)."""
    size = segmentation.get("size")
    counts = segmentation.get("counts")
    if size is not None and list(size) != [height, width]:
        raise ValueError(f"{where}: RLE size {list(size)} differs from the image "
                         f"({height}, {width})")
    if isinstance(counts, str):
        runs = rle_counts(counts)
    elif isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts):
        runs = counts
    else:
        raise ValueError(f"{where}: RLE counts must be a string or a list of non-negative "
                         "integers")
    if sum(runs) != height * width or any(r < 0 for r in runs):
        raise ValueError(f"{where}: RLE runs cover {sum(runs)} pixels, the image has "
                         f"{height * width}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T  # COCO RLE runs down columns
