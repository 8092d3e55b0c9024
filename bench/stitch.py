"""Stitch the maps of a frame's tiles back into one frame-sized map before scoring.

Tiles are an inference and training detail: a frame larger than ``[tiles] size`` is cut into
tiles that may overlap (a 640-px-wide frame with 512-px tiles gives starts 0 and 128), and every
stage produces one map per tile. Scoring counts each pixel of a frame once, so the tile maps are
first put back together:

- **Soft maps** are averaged where tiles overlap (every covering tile weighs the same).
- **Label maps** (0, 1, 255) cannot be averaged. Each pixel takes the label of the covering tile
  in which it lies *deepest*: farthest from a cut edge, i.e. an edge of the tile that is not
  also an edge of the frame (where a network sees least context). Inside an overlap of two tiles
  this splits the overlap at its middle. Ties go to the tile that comes first in raster order
  (top to bottom, then left to right).

NumPy only; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]  # y0, x0, height, width (bench.data.tiling.Box)


@dataclass
class FrameView:
    """One scored unit: a frame (or, scored per tile, a tile) and the tiles that cover it.

    Attributes:
        id: the frame id (or the tile id when a data set is scored per tile).
        size: (height, width) of the scored unit.
        mask: its label mask (0, 1, 255) or None.
        aux: auxiliary masks (e.g. ``chimney``, ``steam``) at the unit's size.
        parts: ``(index, box)`` per tile: the index of the tile's map in the split's map list
            and its box inside the unit.
        unit: the bootstrap unit (the frame id, or the clip of a video frame).
    """

    id: str
    size: tuple[int, int]
    mask: np.ndarray | None
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    parts: list[tuple[int, Box]] = field(default_factory=list)
    unit: str = ""


def _check_part(view: FrameView, box: Box, m: np.ndarray) -> None:
    y, x, h, w = box
    if m.shape[:2] != (h, w):
        raise ValueError(f"frame {view.id}: the map of the tile at ({y}, {x}) is "
                         f"{m.shape[0]}x{m.shape[1]}, its tile is {h}x{w}")


def stitch_soft(view: FrameView, maps: Sequence[np.ndarray]) -> np.ndarray:
    """The frame's soft map: the mean of the tile maps covering each pixel (float32)."""
    total = np.zeros(view.size, np.float64)
    count = np.zeros(view.size, np.int32)
    for index, box in view.parts:
        y, x, h, w = box
        _check_part(view, box, maps[index])
        total[y:y + h, x:x + w] += maps[index]
        count[y:y + h, x:x + w] += 1
    if (count == 0).any():
        raise ValueError(f"frame {view.id}: its tiles leave pixels uncovered")
    return (total / count).astype(np.float32)


def cut_edge_depth(box: Box, size: tuple[int, int]) -> np.ndarray:
    """Per pixel of ``box``, its distance to the nearest edge of the box that cuts the frame.

    Edges on the frame's own border do not count; a box covering the whole frame has depth
    ``height + width`` everywhere (larger than any real distance).
    """
    y, x, h, w = box
    height, width = size
    far = h + w
    ys = np.arange(h)
    xs = np.arange(w)
    top = ys if y > 0 else np.full(h, far)
    bottom = (h - 1 - ys) if y + h < height else np.full(h, far)
    left = xs if x > 0 else np.full(w, far)
    right = (w - 1 - xs) if x + w < width else np.full(w, far)
    return np.minimum(np.minimum(top, bottom)[:, None], np.minimum(left, right)[None, :])


def stitch_labels(view: FrameView, maps: Sequence[np.ndarray]) -> np.ndarray:
    """The frame's label map: each pixel from the covering tile it lies deepest in (uint8)."""
    out = np.zeros(view.size, np.uint8)
    best = np.full(view.size, -1, np.int64)
    for index, box in view.parts:
        y, x, h, w = box
        _check_part(view, box, maps[index])
        depth = cut_edge_depth(box, view.size)
        region = best[y:y + h, x:x + w]
        take = depth > region  # strict: an earlier tile keeps a tie
        region[take] = depth[take]
        out[y:y + h, x:x + w][take] = np.asarray(maps[index], np.uint8)[take]
    if (best < 0).any():
        raise ValueError(f"frame {view.id}: its tiles leave pixels uncovered")
    return out


def stitch(view: FrameView, maps: Sequence[np.ndarray], output: str) -> np.ndarray:
    """Stitch one frame's tile maps: ``output`` is ``"soft"`` or ``"labels"``."""
    if output not in ("soft", "labels"):
        raise ValueError(f"output must be 'soft' or 'labels', not '{output}'")
    if len(view.parts) == 1 and view.parts[0][1] == (0, 0, *view.size):  # one whole-frame tile
        index, box = view.parts[0]
        _check_part(view, box, maps[index])
        return np.asarray(maps[index], np.float32 if output == "soft" else np.uint8)
    return stitch_soft(view, maps) if output == "soft" else stitch_labels(view, maps)


def stitched(views: Iterable[FrameView], maps: Sequence[np.ndarray],
             output: str) -> Iterator[np.ndarray]:
    """Frame maps one at a time (a lazy sequence, so only one stitched frame is in memory)."""
    for view in views:
        yield stitch(view, maps, output)
