"""A frame's binary masks (SAM's, or any other proposal set) stored as packed bits.

`MaskSet` keeps N masks of one HxW frame as an ``(N, row_bytes(H, W))`` uint8 array (one bit per
pixel, `numpy.packbits` order, rows zero-padded to whole 64-bit words so that popcounts run on
``uint64``) plus each mask's area, so a frame's 100 automatic SAM masks at
512x512 take 3.3 MB instead of 26 MB, and set operations over all masks at once are byte-wise
bit operations: `overlaps` counts ``|S_i ∩ R|`` for every mask with one ``&`` and a popcount.
Per-mask scores (SAM's predicted IoU and stability) travel along in ``scores``.

NumPy only (no torch): merge strategies, the mask cache and the benchmarks use it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def row_bytes(h: int, w: int) -> int:
    """Bytes of one packed HxW mask: ``ceil(H*W / 64)`` 64-bit words."""
    return (h * w + 63) // 64 * 8


def _popcount(bits: np.ndarray) -> np.ndarray:
    """Set bits per row of a packed uint8 array (rows of whole 64-bit words), as int64."""
    words = bits.view(np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)
    return np.unpackbits(bits, axis=-1).sum(axis=-1, dtype=np.int64)  # pragma: no cover


def _pack_rows(flat: np.ndarray) -> np.ndarray:
    """``(N, H*W)`` booleans packed into zero-padded rows of `row_bytes`."""
    packed = np.packbits(flat, axis=-1)
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate(
            [packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed)


@dataclass
class MaskSet:
    """N binary masks of one ``shape`` (H, W) frame as packed bits.

    Attributes:
        shape: the frame's (H, W).
        bits: ``(N, row_bytes(H, W))`` uint8, each row one mask's pixels in raster order
            (`numpy.packbits`), zero-padded to whole 64-bit words.
        areas: ``(N,)`` int64 pixel count of each mask.
        scores: optional per-mask float arrays of length N (``predicted_iou``,
            ``stability_score``, ...), kept in order through `select`.
    """

    shape: tuple[int, int]
    bits: np.ndarray
    areas: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.shape)
        self.shape = (h, w)
        self.bits = np.ascontiguousarray(self.bits, dtype=np.uint8)
        if self.bits.ndim != 2 or self.bits.shape[1] != row_bytes(h, w):
            raise ValueError(f"packed masks of shape {self.bits.shape} do not fit a {h}x{w} "
                             f"frame ({row_bytes(h, w)} bytes a mask)")
        self.areas = np.asarray(self.areas, dtype=np.int64).reshape(-1)
        if len(self.areas) != len(self.bits):
            raise ValueError(f"{len(self.areas)} areas for {len(self.bits)} masks")
        for name, values in self.scores.items():
            if len(values) != len(self.bits):
                raise ValueError(f"score '{name}' has {len(values)} values for "
                                 f"{len(self.bits)} masks")

    @classmethod
    def from_dense(cls, masks: np.ndarray | list[np.ndarray], shape: tuple[int, int] | None = None,
                   scores: Mapping[str, Any] | None = None) -> MaskSet:
        """Pack a stack of boolean HxW masks (an ``(N, H, W)`` array or a list; ``shape`` is
        needed only when there are no masks)."""
        if isinstance(masks, list) and not masks:
            if shape is None:
                raise ValueError("an empty mask list needs the frame's shape")
            masks = np.zeros((0, *shape), dtype=bool)
        dense = np.asarray(masks).astype(bool, copy=False)
        if dense.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {dense.shape}")
        flat = dense.reshape(len(dense), dense.shape[1] * dense.shape[2])
        return cls(dense.shape[1:], _pack_rows(flat),
                   flat.sum(axis=1, dtype=np.int64),
                   {k: np.asarray(v, dtype=np.float32) for k, v in (scores or {}).items()})

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> MaskSet:
        """A set of no masks for an HxW frame."""
        return cls(shape, np.zeros((0, row_bytes(*shape)), np.uint8),
                   np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def nbytes(self) -> int:
        """Bytes the packed masks take (without the scores)."""
        return int(self.bits.nbytes + self.areas.nbytes)

    def pack(self, region: np.ndarray) -> np.ndarray:
        """One HxW boolean region packed the way the masks are (a row of ``bits``)."""
        region = np.asarray(region, dtype=bool)
        if region.shape != self.shape:
            raise ValueError(f"region of shape {region.shape} for masks of shape {self.shape}")
        return _pack_rows(region.reshape(-1))

    def unpack(self, row: np.ndarray) -> np.ndarray:
        """A packed row (a mask, or a union of masks) back as a boolean HxW array."""
        h, w = self.shape
        return np.unpackbits(row, count=h * w).reshape(h, w).view(bool)

    def overlaps(self, region: np.ndarray) -> np.ndarray:
        """``|S_i ∩ region|`` for every mask ``S_i`` (int64, length N); ``region`` is a boolean
        HxW array or a packed row from `pack`."""
        packed = region if region.ndim == 1 and region.dtype == np.uint8 else self.pack(region)
        return _popcount(self.bits & packed)

    def union_bits(self, keep: np.ndarray | None = None) -> np.ndarray:
        """The union of the masks where ``keep`` (boolean, length N; default all) as a packed
        row (all zero when none is kept); combine rows with ``& | ~``, then `unpack`."""
        rows = self.bits if keep is None else self.bits[np.asarray(keep, dtype=bool)]
        if not len(rows):
            return np.zeros(self.bits.shape[1], np.uint8)
        return np.bitwise_or.reduce(rows, axis=0)

    def union(self, keep: np.ndarray | None = None) -> np.ndarray:
        """`union_bits` as an HxW boolean array."""
        return self.unpack(self.union_bits(keep))

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as a boolean HxW array."""
        return self.unpack(self.bits[i])

    def dense(self) -> np.ndarray:
        """All masks as an ``(N, H, W)`` boolean array (N·H·W bytes: for small sets and tests)."""
        h, w = self.shape
        return np.unpackbits(self.bits, axis=1, count=h * w).reshape(-1, h, w).view(bool)

    def select(self, keep: np.ndarray) -> MaskSet:
        """The masks where ``keep`` (boolean or indices), scores included."""
        return MaskSet(self.shape, self.bits[keep], self.areas[keep],
                       {k: v[keep] for k, v in self.scores.items()})

    # ------------------------------------------------------------------ storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The set as named arrays for an ``.npz`` file (`from_arrays` reads them back)."""
        out = {"shape": np.asarray(self.shape, np.int64), "bits": self.bits,
               "areas": self.areas}
        out.update({f"score_{k}": np.asarray(v) for k, v in self.scores.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MaskSet:
        """The inverse of `to_arrays`; raises KeyError or ValueError on a foreign layout."""
        shape = tuple(int(v) for v in np.asarray(arrays["shape"]).reshape(-1))
        if len(shape) != 2:
            raise ValueError(f"mask set shape must be (H, W), got {shape}")
        scores = {k[len("score_"):]: np.asarray(arrays[k]) for k in arrays
                  if k.startswith("score_")}
        return cls((shape[0], shape[1]), np.asarray(arrays["bits"]),
                   np.asarray(arrays["areas"]), scores)
