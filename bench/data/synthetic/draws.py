"""Random numbers of the synthetic generator: keyed, counter-based Philox streams.

``F32`` is the float type of every draw, texture and canvas.
"""

from __future__ import annotations

import math
import threading

import numpy as np

F32 = np.float32

_LOCAL = threading.local()


def _philox() -> tuple[np.random.Generator, np.random.Philox]:
    """This thread's Philox generator (re-keyed for every block of draws)."""
    gen = getattr(_LOCAL, "gen", None)
    if gen is None:
        gen = _LOCAL.gen = np.random.Generator(np.random.Philox(key=0))
    return gen, gen.bit_generator


class _Draws:
    """A stream of uniform numbers in [0, 1) for one part of one scene.

    Philox is a keyed, counter-based generator: the stream is keyed by (seed, index, part) and
    its k-th draw starts at counter (0, k, 0, 0), so a stream needs no generator object of its
    own (creating one per image costs more than drawing the whole scene's numbers) and does not
    depend on what other streams or threads draw. Scalars come from a list refilled 256 at a
    time (scalar Generator calls are slow); ``array`` serves small arrays from that list and
    large ones from a draw of their own.
    """

    __slots__ = ("block", "buf", "i", "key")

    def __init__(self, seed: int, index: int, part: int) -> None:
        self.key = np.array([((int(index) % 2**60) << 4) | part, int(seed) % 2**64], np.uint64)
        self.block = 0
        self.buf: list[float] = []
        self.i = 0

    def _draw(self, n: int) -> np.ndarray:
        gen, bitgen = _philox()
        bitgen.state = {"bit_generator": "Philox",
                        "state": {"counter": np.array([0, self.block, 0, 0], np.uint64),
                                  "key": self.key},
                        "buffer": np.zeros(4, np.uint64), "buffer_pos": 4,
                        "has_uint32": 0, "uinteger": 0}
        self.block += 1
        return gen.random(n)

    def _refill(self) -> None:
        self.buf = self._draw(256).tolist()
        self.i = 0

    def u(self) -> float:
        if self.i >= len(self.buf):
            self._refill()
        self.i += 1
        return self.buf[self.i - 1]

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.u()

    def int(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi)."""
        return lo + int(self.u() * (hi - lo))

    def sign(self) -> float:
        return 1.0 if self.u() < 0.5 else -1.0

    def pick(self, cumulative: list[float]) -> int:
        """Index drawn with the given cumulative weights."""
        x = self.u() * cumulative[-1]
        return next((i for i, c in enumerate(cumulative) if x < c), len(cumulative) - 1)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 array of uniforms."""
        n = math.prod(shape)
        if n <= 160:
            return np.array([self.u() for _ in range(n)]).reshape(shape)
        return self._draw(n).reshape(shape)

    def jitter(self, colour: np.ndarray, spread: float) -> np.ndarray:
        """``colour`` plus independent uniform offsets in [-spread, spread] per channel."""
        return colour + np.array([self.u() - 0.5, self.u() - 0.5, self.u() - 0.5],
                                 F32) * F32(2 * spread)
