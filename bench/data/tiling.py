"""Tiling large frames into fixed-size crops (the thesis crops 1920x1280 frames, never resizes)."""

from __future__ import annotations

from bench.maps import window_starts

Box = tuple[int, int, int, int]  # y0, x0, height, width


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of tiles covering ``length``: a regular grid, the last tile flush with the end.

    Tiles overlap only as much as needed to cover every pixel (e.g. 1920 → 0, 512, 1024, 1408):
    `bench.maps.window_starts` with the stride equal to the tile (0 or less: one tile).
    """
    if tile <= 0 or length <= tile:
        return [0]
    return window_starts(length, tile, tile)


def tile_boxes(height: int, width: int, tile: int) -> list[Box]:
    """Boxes covering a ``height`` x ``width`` frame with ``tile``-sized crops (0: one box)."""
    if tile <= 0 or (height <= tile and width <= tile):
        return [(0, 0, height, width)]
    th, tw = min(tile, height), min(tile, width)
    return [(y, x, th, tw) for y in tile_starts(height, th) for x in tile_starts(width, tw)]


def box_suffix(box: Box, height: int, width: int) -> str:
    """The id suffix of a tile (empty for a box covering the whole frame)."""
    y, x, h, w = box
    return "" if (y, x, h, w) == (0, 0, height, width) else f"@{y}_{x}"
