"""The noise bank: fractal, billow and grain texture tiles, and random views of them.

The bank is built once per image size (per process) from a fixed seed and quantised to
multiples of 1/4096, so CPU-dependent last bits cannot reach a rendered byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bench.data.synthetic.canvas import _clamp
from bench.data.synthetic.draws import F32, _Draws

_BANK_SALT = 0x0B4A_7C11


@dataclass(frozen=True)
class _Bank:
    """Texture tiles, each (n, T, T) float32, T >= 2 x the longer image side."""

    fractal: np.ndarray  # fBm in [0, 1], mean 0.5, std 0.18: clouds, smoke, grit
    billow: np.ndarray   # sum of |octaves| in [0, 1]: round puffs with dark creases (steam)
    grain: np.ndarray    # white Gaussian noise, unit variance (sensor grain)


def _upsample_wrap(low: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a periodic (m, m) field by an integer factor (stays periodic)."""
    m = low.shape[0]
    pos = (np.arange(m * factor) + 0.5) / factor - 0.5
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(low.dtype)
    i0, i1 = i0 % m, (i0 + 1) % m
    rows = low[i0] * (1.0 - f)[:, None] + low[i1] * f[:, None]
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i1] * f[None, :]


def _blur_wrap(a: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian-like blur: a binomial kernel (variance n / 4 = sigma^2, exact integer
    weights) applied along both axes with wrap-around, in a fixed order (deterministic)."""
    n = max(2, 2 * round(2 * sigma * sigma))  # even, so the kernel is centred
    weights = [a.dtype.type(math.comb(n, k) / 2.0**n) for k in range(n + 1)]
    r = n // 2
    for axis in (0, 1):
        padded = np.pad(a, [(r, r) if ax == axis else (0, 0) for ax in (0, 1)], mode="wrap")
        length = a.shape[axis]
        out = np.zeros_like(a)
        for k, weight in enumerate(weights):
            window = padded[k:k + length] if axis == 0 else padded[:, k:k + length]
            out += weight * window
        a = out
    return a


def _octave(rng: np.random.Generator, side: int, sigma: float) -> np.ndarray:
    """Periodic smoothed white noise with feature size ``sigma`` and unit std.

    Coarse octaves are smoothed at a lower resolution (sigma 1.5 ... 3 px there) and upsampled.
    """
    factor = 1
    while sigma / (2 * factor) >= 1.5 and side // (2 * factor) >= 16 and side % (2 * factor) == 0:
        factor *= 2
    low = _blur_wrap(rng.standard_normal((side // factor, side // factor), dtype=F32),
                     sigma / factor)
    low /= low.std(dtype=np.float64).astype(F32)
    return _upsample_wrap(low, factor) if factor > 1 else low


@lru_cache(maxsize=4)
def _bank(side: int) -> _Bank:
    """Build the texture bank for images whose longer side is ``side`` (cached per process).

    Octaves have feature sizes side/8 ... ~1 px; the fractal weights them 1/f (the amplitude
    halves with the size), the billow sums their absolute values. Each octave is normalised by
    its standard deviation, a reduction whose last bits may depend on the CPU's SIMD width, so
    tiles are quantised to multiples of 1/4096: such differences cannot change a tile value
    (and hence a rendered byte) unless one lands exactly on a rounding boundary.
    """
    t = 64 * math.ceil(side / 32)  # >= 2 side, a multiple of 64 (octaves upsample exactly)
    n = 4 if side <= 512 else 2
    rng = np.random.default_rng(np.random.SeedSequence([_BANK_SALT, side]))
    sigmas = [side / 8 / 2**i for i in range(8) if side / 8 / 2**i >= 0.7]
    wf, wb = [1.0], [1.0]  # octave weights 0.5^i and 0.6^i (products, not libm pow)
    for _ in sigmas[1:]:
        wf.append(wf[-1] * 0.5)
        wb.append(wb[-1] * 0.6)
    fractal = np.empty((n, t, t), F32)
    billow = np.empty((n, t, t), F32)
    for k in range(n):
        fbm = np.zeros((t, t), F32)
        bil = np.zeros((t, t), F32)
        for sigma, af, ab in zip(sigmas, wf, wb, strict=True):
            octave = _octave(rng, t, sigma)
            fbm += F32(af) * octave
            np.abs(octave, out=octave)
            bil += F32(ab) * octave
        # to mean 0.5, std 0.18; E|z| = sqrt(2 / pi), Var|z| = 1 - 2 / pi for normal z
        fbm *= F32(0.18 / math.sqrt(sum(a * a for a in wf)))
        bil -= F32(0.7979 * sum(wb))
        bil *= F32(0.18 / math.sqrt(0.3634 * sum(a * a for a in wb)))
        for out, values in ((fractal, fbm), (billow, bil)):
            values += F32(0.5)
            _clamp(values, 0.0, 1.0)
            values *= F32(4096.0)
            out[k] = np.round(values) * F32(1.0 / 4096.0)
    grain = rng.standard_normal((2, t, t), dtype=F32)
    return _Bank(fractal, billow, grain)


def _crop(tiles: np.ndarray, d: _Draws, h: int, w: int, stride: int = 1) -> np.ndarray:
    """A random (h, w) view of a random tile (strided for finer texture, maybe mirrored)."""
    n, side, _ = tiles.shape
    stride = max(1, min(stride, side // h, side // w))
    k = int(d.u() * n)
    oy = int(d.u() * (side - h * stride + 1))
    ox = int(d.u() * (side - w * stride + 1))
    view = tiles[k, oy:oy + h * stride:stride, ox:ox + w * stride:stride]
    return view[:, ::-1] if d.u() < 0.5 else view
