"""Synthetic industrial smoke scenes: the embedded default data set (no download needed).

Each image is a pure function of ``(index, seed, config)``. A scene has

- a sky (clear, overcast, hazy, low sun or dark overcast; a gradient and fractal clouds),
- a hazy far skyline; a near skyline of halls, tanks, conveyors, masts, cranes and sometimes a
  blast furnace (tapered shaft, lattice scaffold, downcomer pipe); tiers of low plant buildings
  below it; sometimes a tree line in front,
- chimneys (concrete, dark steel or brick, sometimes red/white bands; cylindrical shading),
- semi-transparent smoke plumes (brown, orange, yellow-brown, grey, dark) with fractal edges and
  texture, bent by one wind per scene, rising from chimney tops, roofs or from behind the skyline,
- white steam plumes (billowy, light grey in the creases, often over-exposed) that count as *no
  smoke*, as in IJmond's labelling: an image with steam and no smoke is a negative (a hard one),
- a camera: haze, exposure, white balance, contrast, tone curve, vignetting, blur, sensor grain.

Colours are chosen to overlap on purpose: grey smoke vs overcast sky, light grey smoke vs steam
shadows, brown smoke vs rusty structures, orange smoke vs a low-sun horizon or a crane.

Every image comes with its smoke opacity (``smoke_alpha``), the smoke mask
(``smoke_alpha > alpha_threshold``), the image label (``mask.any()``, by construction) and
auxiliary masks of the visible chimney and steam pixels (both disjoint from the smoke mask), so
that a CAM's mass on distractors can be measured.

The knobs (`SyntheticConfig`):

- ``smoke_rate``: fraction of images with smoke; the rest are negatives.
- ``smoke_coverage``: target mean fraction of smoke-mask pixels in smoky images (real smoke covers
  a few percent of a frame; at most 0.3, where plumes fill the sky). Per image it varies by a
  factor 0.3 ... 2.3 around the target; the mean is calibrated (``_COVERAGE_TABLE``).
- ``edge_softness``: width of the plume's opacity ramp at its edge, 0 crisp ... 1 very diffuse.
- ``steam_rate``: fraction of images with steam plumes (independent of smoke).
- ``chimney_given_smoke`` / ``chimney_given_no_smoke``: **the spurious-correlation knob**.
  ``chimney_given_smoke`` is P(the scene shows chimneys | smoke); the first plume then rises from
  a chimney top, otherwise the scene has no chimney at all and plumes rise from roofs or from
  behind the skyline. ``chimney_given_no_smoke`` is P(the scene shows chimneys | no smoke). When
  the two are equal, chimneys carry no information about smoke. Training data with them far apart
  (e.g. 0.95 / 0.2) makes "chimney means smoke" a shortcut that works; test data with them equal
  (0.5 / 0.5) or reversed (0.5 / 0.9, 0.1 / 0.9) punishes a method that learned it: false
  positives on smoke-free chimneys, misses on chimney-free plumes, and CAM mass on the
  ``chimney`` aux mask show it directly.
- ``alpha_threshold``: opacity above which a pixel is labelled smoke (or counted as steam).

**Determinism.** Random numbers come from four Philox streams keyed by (seed, index, part):
labels, scene and camera / chimneys / steam / smoke. A knob changes only what it governs (raising
``smoke_coverage`` leaves sky, skyline, chimneys and steam of scene ``index`` as they were).
Textures come from a bank of noise tiles built once per image size from a fixed seed and
quantised to multiples of 1/4096 (so last-bit differences while building it cannot show).
Geometry and pixels use only ``+ - * /``, ``sqrt``, ``abs``, ``min``/``max`` and comparisons:
no ``exp``/``pow``/``sin`` (their results may differ between CPUs and math libraries), no
floating-point reductions (SIMD summation order differs), no BLAS, no FFT, no threads. The same
(index, seed, config) gives the same bytes on any machine with the same NumPy version; a
golden-bytes test pins them.

**Speed.** Channels-first float32 canvases; structures drawn as vectorised rows of blocks;
plumes evaluated at half resolution over their (generous) bounding box, then only in the tight
box where they are non-zero; textures taken as views of the bank; random numbers drawn in
blocks. On the 2-vCPU development VM: about 3.7 ms per 256x256 image (270 images/s) with light
background load, about 5 ms of CPU time when other processes saturate the machine (see
``benchmarks/test_bench_synthetic.py``). The bank takes ~0.4 s to build at 256 px, once per
process.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from bench.sample import Sample

__all__ = ["SMOKE_COLOURS", "SyntheticConfig", "SyntheticImage", "contact_sheet", "generate",
           "render"]

_BANK_SALT = 0x0B4A_7C11
F32 = np.float32

SMOKE_COLOURS = np.array([
    (122, 92, 66),    # brown
    (150, 108, 70),   # light brown
    (190, 116, 58),   # orange (iron-oxide plume)
    (168, 138, 96),   # yellow-brown
    (128, 124, 120),  # grey
    (160, 156, 150),  # light grey (close to overcast sky and to steam shadows)
    (74, 68, 62),     # dark grey-brown
], F32)
_SMOKE_CUMULATIVE = np.cumsum([0.22, 0.16, 0.16, 0.1, 0.16, 0.08, 0.12]).tolist()
STRUCTURE_COLOURS = np.array([
    (60, 63, 70),     # dark steel
    (92, 95, 100),    # grey
    (112, 84, 64),    # rust brown (close to brown smoke)
    (142, 124, 100),  # beige
    (72, 88, 106),    # blue-grey
    (96, 104, 90),    # green-grey
    (150, 150, 146),  # light concrete
    (44, 42, 41),     # near black
], F32)
# Measured mean mask coverage of smoky images (first row) for the plume-size parameter (second
# row), at 128 and 256 px (they agree within a few percent); render inverts it. Overlapping
# plumes and frame borders make it concave; plumes fill the sky at about 0.3.
_COVERAGE_TABLE = (
    (0.0, 0.0081, 0.015, 0.0277, 0.0425, 0.055, 0.0729, 0.0889, 0.1183, 0.1429, 0.1815, 0.226,
     0.2585, 0.291, 0.315),
    (0.0, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0),
)
_SKY_KINDS = ("clear", "overcast", "haze", "low_sun", "dark")
_SKY_CUMULATIVE = np.cumsum([0.32, 0.3, 0.14, 0.1, 0.14]).tolist()


# ------------------------------------------------------------------------------------ config
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
            ``chimney_given_smoke`` the spurious-correlation knob (see the module docstring).
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


# --------------------------------------------------------------------------- random numbers
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


# ------------------------------------------------------------------------------- noise bank
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


@lru_cache(maxsize=4)
def _radius2(h: int, w: int) -> np.ndarray:
    """Squared distance from the image centre, 1 at the corners (for vignetting)."""
    y = (np.arange(h, dtype=F32) + F32(0.5)) / F32(h) - F32(0.5)
    x = (np.arange(w, dtype=F32) + F32(0.5)) / F32(w) - F32(0.5)
    return (y[:, None] * y[:, None] + x[None, :] * x[None, :]) * F32(2.0)


# ------------------------------------------------------------------------------------ canvas
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


# ------------------------------------------------------------------------------- background
def _sky(cv: _Canvas, d: _Draws, bank: _Bank, horizon: int) -> tuple[np.ndarray, str]:
    """Fill the canvas with sky (gradient and clouds); returns the horizon colour and kind."""
    kind = _SKY_KINDS[d.pick(_SKY_CUMULATIVE)]
    if kind == "clear":
        top, hor = np.array((62, 112, 186), F32), np.array((168, 196, 224), F32)
        cloud = np.array((242, 244, 248), F32)
    elif kind == "overcast":  # grey on grey: the hard case for grey smoke
        g = 135 + 80 * d.u()
        top, hor = np.array((g - 12, g - 6, g), F32), np.array((g + 12, g + 12, g + 14), F32)
        cloud = top + F32(28 * d.sign())
    elif kind == "haze":  # yellowish-white haze: close to light smoke
        top, hor = np.array((160, 172, 186), F32), np.array((212, 208, 196), F32)
        cloud = np.array((226, 224, 218), F32)
    elif kind == "low_sun":  # orange horizon: close to orange smoke
        top, hor = np.array((96, 116, 164), F32), np.array((232, 176, 128), F32)
        cloud = np.array((236, 196, 170), F32)
    else:  # dark overcast
        g = 85 + 50 * d.u()
        top, hor = np.array((g - 8, g - 4, g + 2), F32), np.array((g + 22, g + 22, g + 24), F32)
        cloud = top - F32(18)
    bright = F32(d.uniform(0.88, 1.1))
    top, hor = d.jitter(top * bright, 6), d.jitter(hor * bright, 6)
    cloud = d.jitter(np.minimum(cloud * bright, 250), 5)
    t = np.minimum((np.arange(cv.h, dtype=F32) + F32(0.5)) / F32(max(horizon, 1)), F32(1.0))
    if d.u() < 0.6:
        t = t * (F32(2.0) - t)
    grad = top[:, None] * (F32(1.0) - t) + hor[:, None] * t  # (3, h)
    amount = d.uniform(0.0, 0.35 if kind == "clear" else 0.8)
    lo, width = d.uniform(0.35, 0.6), d.uniform(0.08, 0.35)
    clouds = _crop(bank.fractal, d, cv.h, cv.w)
    if amount < 0.05:
        cv.img[:] = grad[:, :, None]
        return hor, kind
    k = F32(amount / width)
    clouds = clouds * k  # a linear ramp from lo, saturating at amount
    clouds -= F32(lo) * k
    _clamp(clouds, 0.0, amount)
    mid = (top + hor) * F32(0.5)  # (not a mean: reductions may round differently per CPU)
    for ch in range(3):  # blend towards the cloud colour (relative to the mid sky colour)
        np.multiply(clouds, cloud[ch] - mid[ch], out=cv.img[ch])
        cv.img[ch] += grad[ch][:, None]
    return hor, kind


def _far_skyline(cv: _Canvas, d: _Draws, base: int, hor: np.ndarray) -> None:
    """A hazy, low-contrast band of distant blocks just above the near skyline."""
    h, w = cv.h, cv.w
    u = d.array((2, 64))
    idx, _ = _runs(u[0], w, 1 / 60, 1 / 7, 8 * u[1, 0])
    lift = int(d.u() * h / 40)
    heights = (u[1] * u[1] * 0.1 * h).astype(np.int64) + lift
    tops = base - heights[idx]
    r0 = int(tops.min())
    if r0 >= base:
        return
    inside = np.arange(r0, base)[:, None] >= tops[None, :]
    depth = F32(d.uniform(0.12, 0.4))
    dark = STRUCTURE_COLOURS[int(d.u() * len(STRUCTURE_COLOURS))]
    colour = hor * (F32(1.0) - depth) + dark * depth
    reg = cv.img[:, r0:base]
    np.copyto(reg, colour[:, None, None], where=inside[None])


def _paint_profile(cv: _Canvas, top: np.ndarray, colour: np.ndarray, factor: np.ndarray,
                   windows: np.ndarray, period: int, bottom: int) -> None:
    """Paint a row of blocks given per column: top row, colour (3, w), brightness factor and
    whether the block has window bands; blocks reach down to ``bottom`` (exclusive).

    Columns whose top is >= ``bottom`` stay untouched. Roof edges are lit.
    """
    r0 = int(top.min())
    if r0 >= bottom:
        return
    inside = np.arange(r0, bottom)[:, None] >= top[None, :]
    reg = cv.img[:, r0:bottom]
    src = colour * factor[None, :]
    np.copyto(reg, src[:, None, :], where=inside[None])
    bands = np.arange(r0 + (2 - r0) % period, bottom, period)  # rows with window bands
    if len(bands) and windows.any():
        dark = windows[None, :] & (bands[:, None] >= top[None, :])
        cv.img[:, bands] *= np.where(dark, F32(0.72), F32(1.0))[None]
    cols = np.flatnonzero(top < bottom)
    cv.img[:, top[cols], cols] *= F32(1.22)  # lit roof edges
    cv.struct[r0:bottom] |= inside
    np.minimum(cv.roof, np.where(top < bottom, top, cv.h), out=cv.roof)


_Profile = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _block_rows(cv: _Canvas, d: _Draws,
                specs: list[tuple[float, float, float, float, float, float]]) -> list[_Profile]:
    """Rows of abutting blocks, all drawn at once: per row, per column (top, colour (3, w),
    brightness factor, has window bands).

    ``specs`` holds per row (ground row, max height, light, gap fraction, min and max block
    width as fractions of the image width). Block heights are skewed towards low.
    """
    w = cv.w
    k = len(specs)
    row, height, light, gap, min_w, max_w = (np.array(col)[:, None] for col in zip(*specs,
                                                                                    strict=True))
    n = int(1.1 / float(min_w.min())) + 2
    u = d.array((k, n, 11))
    widths = np.maximum(2, (w * (min_w + (max_w - min_w) * u[:, :, 0])).astype(np.int64))
    ends = np.cumsum(widths, axis=1) - (0.1 * w * u[:, :1, 10]).astype(np.int64)
    starts = ends - widths
    # block of every column, all rows in one searchsorted (rows shifted apart)
    shift = (np.arange(k, dtype=np.int64) * (1 << 40))[:, None]
    cols = np.arange(w)
    idx = np.searchsorted((ends + shift).ravel(), (cols[None, :] + shift).ravel(),
                          side="right").reshape(k, w) - (np.arange(k) * n)[:, None]
    idx = np.minimum(idx, n - 1)
    t = u[:, :, 3]
    tops = np.where(u[:, :, 2] < gap, cv.h, (row - height * t * np.sqrt(t)).astype(np.int64))
    colours = cv.palette[(u[:, :, 4] * len(cv.palette)).astype(np.int64)]  # (k, n, 3)
    colours *= (light * (0.8 + 0.35 * u[:, :, 5]))[:, :, None].astype(F32)
    colours += ((u[:, :, 6:9] - 0.5) * 12.0).astype(F32)
    period = np.where(u[:, :, 1] < 0.35, 3 + (u[:, :, 9] * 7).astype(np.int64), 1 << 30)
    rk = np.arange(k)[:, None]
    top = tops[rk, idx]
    colour = colours[rk, idx].transpose(0, 2, 1).copy()  # (k, 3, w)
    pillar = (cols[None, :] - starts[rk, idx]) % period[rk, idx] == 0  # every period-th column
    factor = np.where(pillar, (0.7 + 0.5 * u[:, :, 7])[rk, idx], 1.0).astype(F32)
    windows = (u[:, :, 8] < 0.35)[rk, idx]
    return [(top[i], colour[i], factor[i], windows[i]) for i in range(k)]


def _ground_band(cv: _Canvas, d: _Draws, base: int, light: float, tiers: list[_Profile]) -> None:
    """Plant clutter from the skyline base down: tiers of abutting low buildings, back to front.

    Lower tiers are closer (and drawn a little darker); a few lines (pipes, rails, fences) run
    across.
    """
    h, w = cv.h, cv.w
    cv.img[:, base:] = cv.colour(d, light * 0.7)[:, None, None]
    cv.struct[base:] = True
    span = h - base
    for k, profile in enumerate(tiers):
        bottom = min(h, int(base + span * (k + 1.4) / len(tiers)) + 1)
        _paint_profile(cv, *profile, period=d.int(3, 7), bottom=bottom)
    for _ in range(d.int(1, 5)):
        y = base + int(d.u() * span)
        x0, x1 = int(d.u() * w * 0.5), int(w * d.uniform(0.5, 1.0))
        cv.img[:, y, x0:x1] *= F32(d.uniform(0.6, 1.35))


def _buildings(cv: _Canvas, d: _Draws, base: int, light: float, halls: _Profile) -> None:
    """Halls (a row of blocks), then tanks and conveyors, on the skyline base."""
    h, w = cv.h, cv.w
    _paint_profile(cv, *halls, period=d.int(3, 9), bottom=base + 1)
    for _ in range(d.int(0, 4)):
        bw = w * d.uniform(0.04, 0.14)
        x = w * d.uniform(-0.05, 1.0)
        r = d.u()
        top = base - h * r * math.sqrt(r) * 0.16 - 2
        colour = cv.colour(d, light)
        if d.u() < 0.65:  # tank: a cylinder with a domed top
            radius = bw / 2
            cap = radius * d.uniform(0.15, 0.5)
            side = F32(0.12 * d.sign())
            a, b, c, e = cv.box(top - cap, base + 1, x, x + bw)
            if a < b and c < e:
                yy, xx = _grid(a, b, c, e)
                s = (xx - F32(x + radius)) / F32(radius)
                dy = (yy - F32(top)) / F32(cap)
                inside = (np.abs(s) <= 1) & ((yy >= top) | (s * s + dy * dy <= 1))
                shade = F32(0.7) + F32(0.4) * np.sqrt(np.maximum(F32(1.0) - s * s, 0))
                shade += side * s
                cv.paint(inside, a, c, colour, shade)
                first = np.where(inside.any(0), inside.argmax(0) + a, cv.h)
                np.minimum(cv.roof[c:e], first, out=cv.roof[c:e])
        else:  # conveyor: a thick slanted line up to a roof
            x1 = x + bw * d.uniform(1.0, 2.5) * d.sign()
            thick = max(1.0, w * d.uniform(0.004, 0.01))
            a, b, c, e = cv.box(top - thick, base + thick, min(x, x1) - thick,
                                max(x, x1) + thick)
            if a < b and c < e:
                yy, xx = _grid(a, b, c, e)
                inside = _segment_distance(yy, xx, (x, base), (x1, top)) <= thick
                cv.paint(inside, a, c, colour)


def _furnace(cv: _Canvas, d: _Draws, base: int, light: float) -> float | None:
    """A blast furnace: tapered shaft, throat house, lattice scaffold, downcomer pipe.

    Returns the x of its centre, or None when the scene has none (60 % of the scenes).
    """
    if d.u() >= 0.4:
        return None
    w = cv.w
    fw = w * d.uniform(0.08, 0.18)
    fx = w * d.uniform(0.1, 0.9)
    top = max(2.0, base - base * d.uniform(0.3, 0.7))
    tall = base - top
    side = d.sign()
    colour = cv.colour(d, light * 0.85)
    pipe_colour = d.jitter(colour * F32(1.2), 8)
    thick = max(1.2, fw * d.uniform(0.05, 0.09))
    period = max(3, int(fw * d.uniform(0.12, 0.25)))
    pts = [(fx, top + 0.04 * tall), (fx + side * 0.55 * fw, top - 0.04 * tall),
           (fx + side * 1.0 * fw, top + 0.25 * tall), (fx + side * 1.15 * fw, base)]
    xs = [p[0] for p in pts]
    a, b, c, e = cv.box(top - 0.05 * tall - thick, base + 1, min(xs) - 0.6 * fw - thick,
                        max(xs) + 0.6 * fw + thick)
    if not (a < b and c < e):
        return None
    yy, xx = _grid(a, b, c, e)
    rel = (yy - F32(top)) * F32(1.0 / tall)  # (h, 1): 0 at the top, 1 at the base
    dx = xx - F32(fx)                          # (1, w)
    adx = np.abs(dx)
    shaft_hw = F32(0.2 * fw) + F32(0.2 * fw) * np.minimum(np.maximum(rel, F32(0.0)), F32(1.0))
    shaft = (rel >= 0.22) & (adx <= shaft_hw)
    shaft |= (rel >= 0.0) & (rel < 0.22) & (adx <= F32(0.14 * fw))  # throat
    shaft |= (rel >= 0.08) & (rel < 0.18) & (adx <= F32(0.26 * fw))  # top house
    # lattice: girders every `period` rows, diagonals where (x +- y) % 2 period == 0, edges
    iy = np.arange(a, b) - int(top)
    ix = np.arange(c, e) - int(fx)
    p2 = 2 * period
    lattice = (ix % p2)[None, :] == (iy % p2)[:, None]
    lattice |= (ix % p2)[None, :] == (-iy % p2)[:, None]
    lattice |= (iy % period == 0)[:, None]
    lattice |= (np.abs(adx - F32(0.5 * fw)) < 1.0)
    lattice &= (rel >= 0.12) & (adx <= F32(0.5 * fw))
    cyl = _clamp(dx / np.maximum(shaft_hw, F32(1.0)), -1.0, 1.0)
    shade = F32(0.72) + F32(0.38) * np.sqrt(F32(1.0) - cyl * cyl) + F32(0.1 * side) * cyl
    cv.paint(lattice, a, c, colour * F32(0.85))
    cv.paint(shaft, a, c, colour, shade)
    for p, q in itertools.pairwise(pts):  # downcomer pipe, segment by segment
        sa, sb, sc, se = cv.box(min(p[1], q[1]) - thick, max(p[1], q[1]) + thick + 1,
                                min(p[0], q[0]) - thick, max(p[0], q[0]) + thick + 1)
        if sa < sb and sc < se:
            yy, xx = _grid(sa, sb, sc, se)
            cv.paint(_segment_distance(yy, xx, p, q) <= thick, sa, sc, pipe_colour)
    return fx


def _masts(cv: _Canvas, d: _Draws, base: int) -> None:
    """Thin distractors that are not chimneys: poles, masts and sometimes a crane."""
    h, w = cv.h, cv.w
    dark = d.jitter(np.array((50, 50, 52), F32), 15)
    if d.u() < 0.6:
        for _ in range(d.int(1, 6)):
            x = d.u() * w
            top = base - h * d.uniform(0.04, 0.3)
            cv.rect(top, base + 1, x, x + 1, dark)
    if d.u() < 0.2:  # crane: yellow / orange mast and jib (orange like some smoke)
        colour = d.jitter(np.array((200, 150, 40), F32), 25)
        x = d.u() * w
        top = base - h * d.uniform(0.15, 0.35)
        cv.rect(top, base + 1, x, x + 2, colour)
        jib = w * d.uniform(0.1, 0.3) * d.sign()
        cv.rect(top, top + 2, min(x, x + jib), max(x, x + jib), colour)


@dataclass
class _Chimney:
    x: float      # centre
    top: float    # row of the top
    hw: float     # half width at the top
    taper: float  # extra half width per row


def _chimney_layout(d: _Draws, h: int, w: int, base: int) -> list[_Chimney]:
    """1-3 chimneys, drawn from their own stream whether or not the scene shows them."""
    count = 1 + int(d.u() < 0.55) + int(d.u() < 0.2)
    out: list[_Chimney] = []
    for _ in range(count):
        hw = max(1.5, w * d.uniform(0.007, 0.02))
        x = w * d.uniform(0.08, 0.92)
        top = max(0.06 * h, base - base * d.uniform(0.3, 0.62))
        taper = hw * d.uniform(0.0, 0.8) / max(base - top, 1.0)
        if all(abs(x - c.x) > 3 * (hw + c.hw) for c in out):
            out.append(_Chimney(x, top, hw, taper))
    return out


def _draw_chimneys(cv: _Canvas, d: _Draws, chimneys: list[_Chimney], base: int,
                   light: float) -> None:
    """Stacks with cylindrical shading, a dark rim, sometimes red/white bands."""
    side = F32(d.sign())
    for ch in chimneys:
        kind = d.u()
        if kind < 0.5:
            colour = d.jitter(np.array((165, 162, 156), F32) * F32(light), 18)  # concrete
        elif kind < 0.8:
            colour = d.jitter(np.array((80, 78, 78), F32) * F32(light), 15)  # dark steel
        else:
            colour = d.jitter(np.array((150, 90, 70), F32) * F32(light), 15)  # brick
        banded, band_frac, n_bands = d.u() < 0.35, d.uniform(0.04, 0.08), d.int(2, 6)
        bottom = base + 2
        hw_bottom = ch.hw + ch.taper * (bottom - ch.top)
        a, b, c, e = cv.box(ch.top, bottom, ch.x - hw_bottom - 1, ch.x + hw_bottom + 1)
        if not (a < b and c < e):
            continue
        yy, xx = _grid(a, b, c, e)
        half = F32(ch.hw) + F32(ch.taper) * (yy - F32(ch.top))
        s = (xx - F32(ch.x)) / half
        inside = np.abs(s) <= 1
        _clamp(s, -1.0, 1.0)
        shade = F32(0.7) + F32(0.35) * np.sqrt(F32(1.0) - s * s) + F32(0.15) * side * s
        rows = np.empty((3, b - a, 1), F32)
        rows[:] = colour[:, None, None]
        if banded:  # red/white warning bands near the top
            band = max(2, int((bottom - ch.top) * band_frac))
            red = np.array((178, 52, 44), F32) * F32(light)
            white = np.array((225, 222, 215), F32) * F32(light)
            for k in range(n_bands):
                rows[:, k * band:(k + 1) * band, 0] = (red if k % 2 == 0 else white)[:, None]
        rows[:, :max(1, int(ch.hw * 0.4)), 0] *= F32(0.55)  # rim
        reg = cv.img[:, a:b, c:e]
        np.copyto(reg, rows * shade[None], where=inside[None])
        cv.struct[a:b, c:e] |= inside
        cv.chimney[a:b, c:e] |= inside


def _foreground(cv: _Canvas, d: _Draws, bank: _Bank, light: float) -> None:
    """A band of vegetation at the bottom (35 % of the scenes), with a bumpy tree-line edge."""
    if d.u() >= 0.35:
        return
    h, w = cv.h, cv.w
    depth = h * d.uniform(0.04, 0.12)
    bump = _crop(bank.fractal, d, 1, w, stride=4)[0]
    edge = F32(h - depth) - (bump - F32(0.3)) * F32(depth * d.uniform(0.5, 1.5))
    a = max(0, int(edge.min()))
    inside = (np.arange(a, h, dtype=F32)[:, None] + F32(0.5)) >= edge[None, :]
    colour = d.jitter(np.array((62, 84, 46), F32) * F32(light), 8)
    tex = _crop(bank.fractal, d, h - a, w, stride=4)
    cv.paint(inside, a, 0, colour, F32(0.45) + F32(0.9) * tex)
    cv.chimney[a:] &= ~inside


# ----------------------------------------------------------------------------------- plumes
@dataclass
class _Plume:
    x: float          # source (pixel coordinates)
    y: float
    lean: float       # tangent of the lean from vertical (+ to the right)
    bend: float       # extra bending into the wind (across offset at the end / length)
    length: float
    w0: float         # half width at the source
    spread: float     # half width growth per pixel of length
    softness: float   # half width of the opacity ramp at the edge (in units of half width)
    edge_amp: float   # fractal displacement of the edge (in units of half width)
    opacity: float
    fade_start: float  # fraction of the length where the plume starts to thin out
    contrast: float   # how strongly the texture modulates the density
    steam: bool
    behind: bool      # rises from behind the skyline: structures hide its foot


_Piece = tuple[int, int, np.ndarray, np.ndarray]  # (y0, x0, alpha, texture) of a box


def _up2(a: np.ndarray) -> np.ndarray:
    """Exact 2x bilinear upsampling (pixel centres aligned, edges replicated)."""
    h, w = a.shape
    p = np.empty((h + 2, w + 2), F32)
    p[1:-1, 1:-1] = a
    p[0, 1:-1], p[-1, 1:-1] = a[0], a[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    mid = p[1:-1] * F32(0.75)
    rows = np.empty((2 * h, w + 2), F32)
    np.add(mid, p[:-2] * F32(0.25), out=rows[0::2])
    np.add(mid, p[2:] * F32(0.25), out=rows[1::2])
    mid = rows[:, 1:-1] * F32(0.75)
    out = np.empty((2 * h, 2 * w), F32)
    np.add(mid, rows[:, :-2] * F32(0.25), out=out[:, 0::2])
    np.add(mid, rows[:, 2:] * F32(0.25), out=out[:, 1::2])
    return out


def _plume(cv: _Canvas, d: _Draws, bank: _Bank, p: _Plume) -> _Piece | None:
    """Opacity of a plume in a box around it, with the texture used for its shading.

    In plume coordinates (u along the bent axis from the source, v across it) the opacity is
    ``opacity * edge(|v| / half(u) + noise) * tail(u / length + noise) * foot(u) * density``
    with linear ramps (cheap; the fractal displacement hides their shape) and noise from the
    bank at a stride that scales its features to the plume's width.

    The geometric bounding box is generous (widest point, largest displacement, longest tail),
    so the opacity is first evaluated at half resolution over it; the box then shrinks to the
    rows and columns where that is non-zero (plus a margin). Plumes whose edge ramp is several
    pixels wide anyway (soft smoke, steam) are upsampled from there; the others are evaluated
    again at full resolution in the smaller box. The shading texture is full resolution.
    """
    norm = math.sqrt(1.0 + p.lean * p.lean)
    sin, cos = p.lean / norm, 1.0 / norm
    length = max(p.length, 2.0)
    extent = 1.25 * length  # nothing is left of the plume beyond this
    reach = 1.0 + p.softness + p.edge_amp  # |v| / half beyond which the opacity is 0
    xs, ys = [], []
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        u = f * extent
        v = p.bend * u * u / length
        xs.append(p.x + u * sin + v * cos)
        ys.append(p.y - (u * cos - v * sin))
    pad = (p.w0 + p.spread * extent) * reach + 2.0
    a, b, c, e = cv.box(min(ys) - pad, max(ys) + pad, min(xs) - pad, max(xs) + pad)
    if not (a < b and c < e):
        return None
    tiles = bank.billow if p.steam else bank.fractal
    n, side, _ = tiles.shape
    mean_half = p.w0 + p.spread * length * 0.5
    # the coarsest bank features are ~side / 16 px; aim them at about the plume's mean width
    stride = max(1, min(int(side / 16 / max(mean_half, 1.0)), 4, side // (b - a),
                        side // (e - c)))
    k1, k2 = int(d.u() * n), int(d.u() * n)
    oy = int(d.u() * (side - (b - a) * stride + 1))
    ox = int(d.u() * (side - (e - c) * stride + 1))
    edge_noise = tiles[k1, oy:oy + (b - a) * stride:stride, ox:ox + (e - c) * stride:stride]
    tex = tiles[k2, oy:oy + (b - a) * stride:stride, ox:ox + (e - c) * stride:stride]
    if min(b - a, e - c) < 16:
        yy, xx = _grid(a, b, c, e)
        alpha = _plume_alpha(p, sin, cos, length, yy, xx, edge_noise, tex)
    else:
        # coarse pass: 2x2 block centres of the box
        yy = (np.arange((b - a + 1) // 2, dtype=F32) * F32(2.0) + F32(a + 1))[:, None]
        xx = (np.arange((e - c + 1) // 2, dtype=F32) * F32(2.0) + F32(c + 1))[None, :]
        coarse = _plume_alpha(p, sin, cos, length, yy, xx, edge_noise[::2, ::2], tex[::2, ::2])
        rows, cols = np.flatnonzero(coarse.any(1)), np.flatnonzero(coarse.any(0))
        if not len(rows):
            return None
        r0, r1 = max(0, int(rows[0]) - 2), min(coarse.shape[0], int(rows[-1]) + 3)
        q0, q1 = max(0, int(cols[0]) - 2), min(coarse.shape[1], int(cols[-1]) + 3)
        y0, y1 = a + 2 * r0, min(b, a + 2 * r1)
        x0, x1 = c + 2 * q0, min(e, c + 2 * q1)
        edge_noise = edge_noise[y0 - a:y1 - a, x0 - c:x1 - c]
        tex = tex[y0 - a:y1 - a, x0 - c:x1 - c]
        if p.steam or 2.0 * p.softness * mean_half >= 6.0:
            alpha = _up2(coarse[r0:r1, q0:q1])[:y1 - y0, :x1 - x0]
        else:
            yy, xx = _grid(y0, y1, x0, x1)
            alpha = _plume_alpha(p, sin, cos, length, yy, xx, edge_noise, tex)
        a, b, c, e = y0, y1, x0, x1
    if p.behind:
        alpha[cv.struct[a:b, c:e]] = 0.0
    return a, c, alpha, tex


def _plume_alpha(p: _Plume, sin: float, cos: float, length: float, yy: np.ndarray,
                 xx: np.ndarray, edge_noise: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """Opacity of a plume at pixel centres ``yy`` (h, 1) x ``xx`` (1, w)."""
    dx, dy = xx - F32(p.x), F32(p.y) - yy
    u = dx * F32(sin) + dy * F32(cos)          # along the plume axis
    v = dx * F32(cos) - dy * F32(sin)          # across it
    bend = u * u
    bend *= F32(p.bend / length)
    v -= bend
    np.abs(v, out=v)
    half = np.maximum(u, F32(0.0))
    half *= F32(p.spread)
    half += F32(p.w0)
    v /= half                                  # |v| / half width
    ramp = F32(1.0 / (2.0 * p.softness))
    alpha = edge_noise * F32(-2.0 * p.edge_amp * ramp)
    alpha += F32((1.0 + p.softness + p.edge_amp) * ramp)
    v *= ramp
    alpha -= v                                 # (1 + s - |v| / half - displacement) / 2s
    np.maximum(alpha, F32(0.0), out=alpha)
    # tail: thins out from fade_start to the end, frayed by the texture
    kl = 1.0 / (1.0 - p.fade_start)
    tail = u * F32(-kl / length)
    tail -= tex * F32(0.5 * kl)
    tail += F32(1.25 * kl)                     # (1.25 - u / length - tex / 2) / (1 - fade_start)
    # foot: the opacity rises over ~ a source width above the source
    u *= F32(1.0 / max(p.w0, 1.0))
    u += F32(0.3)
    np.minimum(tail, u, out=tail)
    _clamp(tail, 0.0, 1.0)
    alpha *= tail
    density = tex * F32(p.contrast * p.opacity)
    density += F32((1.0 - 0.5 * p.contrast) * p.opacity)
    alpha *= density
    return _clamp(alpha, 0.0, 1.0)


def _composite(cv: _Canvas, target: np.ndarray, piece: _Piece, colour: np.ndarray,
               shade: np.ndarray) -> None:
    """Blend ``colour * shade`` over the canvas with the piece's opacity; accumulate the
    opacity into ``target`` (1 - (1 - a)(1 - b))."""
    y0, x0, alpha, _ = piece
    h, w = alpha.shape
    reg = cv.img[:, y0:y0 + h, x0:x0 + w]
    reg += alpha[None] * (colour[:, None, None] * shade[None] - reg)
    acc = target[y0:y0 + h, x0:x0 + w]
    acc += alpha * (F32(1.0) - acc)


def _free_source(cv: _Canvas, d: _Draws, base: int) -> tuple[float, float, str]:
    """A plume foot on a roof or hidden behind the skyline (no chimney involved)."""
    x = cv.w * d.uniform(0.06, 0.94)
    roof = float(min(cv.roof[int(x)], base))
    if d.u() < 0.5:
        return x, roof, "roof"
    return x, roof + cv.h * d.uniform(0.01, 0.05), "behind"


def _steam(cv: _Canvas, d: _Draws, bank: _Bank, tops: list[tuple[float, float, float]],
           base: int, wind: float, light: float, hor: np.ndarray, target: np.ndarray,
           sources: list[tuple[float, float, str]]) -> None:
    """1-2 white, billowy steam plumes from chimney tops (other than the first) or roofs."""
    h, w = cv.h, cv.w
    for k in range(1 + int(d.u() < 0.3)):
        if tops and d.u() < 0.5:
            x, y, hw = tops[(k + 1) % len(tops)]
            kind = "chimney"
        else:
            x, y, kind = _free_source(cv, d, base)
            hw = w * d.uniform(0.01, 0.03)
        sources.append((x, y, "steam"))
        area = h * w * d.uniform(0.015, 0.1)
        spread = d.uniform(0.35, 0.9)
        w0 = hw * d.uniform(1.0, 1.6)
        plume = _Plume(x, y, lean=wind * d.uniform(0.2, 0.8), bend=d.uniform(0.0, 0.3) * wind,
                       length=(-w0 + math.sqrt(w0 * w0 + spread * area / 0.75)) / spread,
                       w0=w0, spread=spread, softness=d.uniform(0.15, 0.4),
                       edge_amp=d.uniform(0.45, 0.8), opacity=d.uniform(0.9, 1.0),
                       fade_start=d.uniform(0.3, 0.7), contrast=d.uniform(0.4, 0.9),
                       steam=True, behind=kind == "behind")
        # white, brighter than clouds (often over-exposed), tinted a little by the sky
        colour = d.jitter(np.array((252, 252, 254), F32), 3) * F32(0.94) + hor * F32(0.06)
        colour *= F32(0.95 + 0.2 * light)
        piece = _plume(cv, d, bank, plume)
        if piece is not None:
            shade = F32(0.8) + F32(0.4) * piece[3]  # bright puffs, light grey creases
            _composite(cv, target, piece, colour, shade)


def _smoke(cv: _Canvas, d: _Draws, bank: _Bank, cfg: SyntheticConfig,
           tops: list[tuple[float, float, float]], base: int, wind: float, light: float,
           target: np.ndarray, sources: list[tuple[float, float, str]]) -> None:
    """1-3 smoke plumes; the first rises from the first chimney when the scene has chimneys.

    Plume sizes are set so that the mean mask area over smoky images is about
    ``smoke_coverage`` of the frame: the size parameter comes from the measured
    ``_COVERAGE_TABLE``, split over the plumes, each plume's nominal area (2 w0 L + spread L^2)
    divided by 0.55 (mask area / nominal area at the defaults).
    """
    h, w = cv.h, cv.w
    n = 1 + int(d.u() < 0.35) + int(d.u() < 0.1)
    feet = []
    for k in range(n):
        if tops and (k == 0 or d.u() < 0.6):
            x, y, hw = tops[0] if k == 0 else tops[int(d.u() * len(tops))]
            feet.append((x, y, "chimney", hw))
        else:
            x, y, kind = _free_source(cv, d, base)
            feet.append((x, y, kind, w * d.uniform(0.008, 0.025)))
    r = d.u()
    size_param = float(np.interp(cfg.smoke_coverage, *_COVERAGE_TABLE))
    total = size_param * h * w * (0.25 + 1.5 * r * r) / 0.75  # x 0.33 ... 2.33, mean 1
    shares = [d.uniform(0.5, 1.5) for _ in feet]
    softness = 0.04 + 0.9 * cfg.edge_softness
    thr = cfg.alpha_threshold
    for (x, y, kind, hw), share in zip(feet, shares, strict=True):
        sources.append((x, y, kind))
        spread = d.uniform(0.1, 0.4)
        w0 = hw * d.uniform(0.9, 1.4)
        area = total * share / sum(shares) / 0.55  # nominal plume area for that mask area
        # area = 2 w0 L + spread L^2; long plumes would leave the frame: widen them instead
        length = (-w0 + math.sqrt(w0 * w0 + spread * area)) / spread
        length = max(length, 0.06 * max(h, w))
        if length > 0.8 * h:
            length = 0.8 * h
            spread = max(spread, (area - 2.0 * w0 * length) / (length * length))
        opacity = d.uniform(0.35, 0.6) if d.u() < 0.25 else d.uniform(0.65, 1.0)
        plume = _Plume(x, y, lean=wind * d.uniform(0.3, 1.2) + d.uniform(-0.15, 0.15),
                       bend=d.uniform(0.0, 0.5) * wind, length=length, w0=w0, spread=spread,
                       softness=softness, edge_amp=d.uniform(0.3, 0.65), opacity=opacity,
                       fade_start=d.uniform(0.2, 0.7), contrast=d.uniform(0.6, 1.4),
                       steam=False, behind=kind == "behind")
        colour = SMOKE_COLOURS[d.pick(_SMOKE_CUMULATIVE)]
        colour = d.jitter(colour * F32(0.6 + 0.4 * light), 12)
        piece = _plume(cv, d, bank, plume)
        if piece is None:
            continue
        alpha = piece[2]
        peak = float(alpha.max())
        if 0.0 < peak < thr + 0.1:  # too faint to be labelled anywhere: make its core visible
            alpha *= F32(min(thr + 0.1, 1.0) / peak)
            np.minimum(alpha, F32(1.0), out=alpha)
        shade = F32(1.15) - F32(0.35) * piece[3]  # denser parts darker
        _composite(cv, target, piece, colour, shade)


# ------------------------------------------------------------------------------------ render
def render(index: int, seed: int, config: SyntheticConfig | None = None) -> SyntheticImage:
    """Render scene ``index`` of the stream ``seed`` (identical bytes for identical arguments)."""
    cfg = config or SyntheticConfig()
    h, w = cfg.shape
    scene = _Draws(seed, index, 0)
    bank = _bank(max(h, w))

    has_smoke = scene.u() < cfg.smoke_rate
    has_steam = scene.u() < cfg.steam_rate
    has_chimney = scene.u() < (cfg.chimney_given_smoke if has_smoke
                               else cfg.chimney_given_no_smoke)

    order = scene.array((len(STRUCTURE_COLOURS),)).argsort()
    cv = _Canvas(h, w, STRUCTURE_COLOURS[order[:3]])
    base = int(h * scene.uniform(0.6, 0.9))
    light = scene.uniform(0.7, 1.15)
    hor, sky_kind = _sky(cv, scene, bank, base)
    if scene.u() < 0.75:
        _far_skyline(cv, scene, base, hor)
    furnace = _furnace(cv, scene, base, light)
    n_tiers, span = 2, h - base
    rows = _block_rows(cv, scene, [(base, h * 0.2, light, 0.25, 0.04, 0.2)] + [
        (base + span * (k + scene.uniform(0.0, 0.5)) / n_tiers, span * 0.25,
         light * (0.95 - 0.1 * k), 0.0, 0.03, 0.18) for k in range(n_tiers)])
    _buildings(cv, scene, base, light, rows[0])
    _ground_band(cv, scene, base, light, rows[1:])
    _masts(cv, scene, base)
    chimneys: list[_Chimney] = []
    if has_chimney:
        chim = _Draws(seed, index, 1)
        chimneys = _chimney_layout(chim, h, w, base)
        _draw_chimneys(cv, chim, chimneys, base, light)
    _foreground(cv, scene, bank, light)
    r0 = int(cv.struct.any(1).argmax())
    grit = _crop(bank.fractal, scene, h - r0, w, stride=2) - F32(0.5)
    grit *= cv.struct[r0:]
    grit *= F32(scene.uniform(20, 50))
    cv.img[:, r0:] += grit[None]
    r = scene.uniform(0.0, 0.6)
    haze = 0.35 * r * r  # applied by the camera, after the plumes
    wind = scene.uniform(-1.0, 1.0)  # shared by every plume of the scene
    tops = [(c.x, c.top, c.hw) for c in chimneys] if has_chimney else []
    sources: list[tuple[float, float, str]] = []

    # steam first, so that smoke is drawn in front of it where they overlap
    steam_alpha = np.zeros((h, w), F32)
    if has_steam:
        _steam(cv, _Draws(seed, index, 2), bank, tops, base, wind, light, hor, steam_alpha, sources)
    smoke_alpha = np.zeros((h, w), F32)
    if has_smoke:
        _smoke(cv, _Draws(seed, index, 3), bank, cfg, tops, base, wind, light, smoke_alpha, sources)

    image = _camera(cv.img, scene, bank, haze, hor)
    mask = smoke_alpha > F32(cfg.alpha_threshold)
    steam = (steam_alpha > F32(cfg.alpha_threshold)) & ~mask
    return SyntheticImage(
        image=image, mask=mask.view(np.uint8), label=int(mask.any()),
        chimney=cv.chimney & ~mask & ~steam, steam=steam, smoke_alpha=smoke_alpha,
        meta={"smoke": has_smoke, "steam": has_steam, "chimney": has_chimney,
              "sky": sky_kind, "furnace": furnace is not None,
              "chimney_tops": [(c.x, c.top) for c in chimneys] if has_chimney else [],
              "sources": sources})


def _camera(img: np.ndarray, d: _Draws, bank: _Bank, haze: float,
            hor: np.ndarray) -> np.ndarray:
    """Haze, exposure, white balance, contrast, vignetting, blur, grain, tone curve -> uint8.

    Haze (a blend towards the horizon colour), exposure, white balance and contrast are one
    affine map per channel; ``img`` (channels first) is used as scratch space.
    """
    _, h, w = img.shape
    gain = F32(d.uniform(0.82, 1.18)) * (F32(0.95) + F32(0.1) * np.array(
        [d.u(), d.u(), d.u()], F32))
    contrast = F32(d.uniform(0.85, 1.15))
    scale = gain * contrast * F32(1.0 - haze)
    offset = gain * contrast * F32(haze) * hor + F32(128.0) * (F32(1.0) - contrast)
    offset += F32(0.5)  # truncating x + 0.5 rounds x
    if d.u() < 0.3:
        img *= (F32(1.0) - F32(d.uniform(0.0, 0.35)) * _radius2(h, w))[None]
    if d.u() < 0.2:  # slight optical / compression blur: [1 2 1] x [1 2 1] (/ 16 in scale)
        buf = np.empty_like(img)
        inner = buf[:, :, 1:-1]
        np.add(img[:, :, :-2], img[:, :, 2:], out=inner)
        inner += img[:, :, 1:-1]
        inner += img[:, :, 1:-1]
        buf[:, :, 0], buf[:, :, -1] = img[:, :, 0] * F32(4.0), img[:, :, -1] * F32(4.0)
        inner = img[:, 1:-1]
        np.add(buf[:, :-2], buf[:, 2:], out=inner)
        inner += buf[:, 1:-1]
        inner += buf[:, 1:-1]
        img[:, 0], img[:, -1] = buf[:, 0] * F32(4.0), buf[:, -1] * F32(4.0)
        scale = scale * F32(1.0 / 16.0)
    r = d.u()
    grain = _crop(bank.grain, d, h, w) * F32(0.8 + 3.5 * r * r)
    img *= scale[:, None, None]
    img += offset[:, None, None]
    img += grain[None]
    if d.u() < 0.35:  # tone curve x + g x (255 - x) / 255, g in [-0.3, 0.3] (gamma-like;
        g = d.uniform(-0.3, 0.3)  # monotonic on the range the exposure can reach)
        curve = img * F32(-g / 255.0)
        curve += F32(1.0 + g)
        img *= curve
    _clamp(img, 0.0, 255.5)
    planes = img.astype(np.uint8)  # truncation
    out = np.empty((h, w, 3), np.uint8)
    for ch in range(3):
        out[:, :, ch] = planes[ch]
    return out


def generate(n: int, seed: int, config: SyntheticConfig | None = None,
             start: int = 0) -> list[Sample]:
    """Scenes ``start`` ... ``start + n - 1`` of stream ``seed`` as `Sample` objects.

    Ids are ``syn-{seed}-{index:05d}``; ``aux`` holds the ``chimney`` and ``steam`` masks.
    """
    cfg = config or SyntheticConfig()
    out = []
    for index in range(start, start + n):
        item = render(index, seed, cfg)
        out.append(Sample(f"syn-{seed}-{index:05d}", item.image, item.label, item.mask,
                          {"chimney": item.chimney, "steam": item.steam}))
    return out


def contact_sheet(n: int = 16, seed: int = 0, config: SyntheticConfig | None = None,
                  columns: int = 4) -> np.ndarray:
    """Scenes next to an overlay copy (red smoke mask, blue steam, green chimneys), uint8."""
    cfg = config or SyntheticConfig()
    h, w = cfg.shape
    rows = (n + columns - 1) // columns
    sheet = np.zeros((rows * h, columns * 2 * w, 3), np.uint8)
    for k in range(n):
        item = render(k, seed, cfg)
        r, c = divmod(k, columns)
        over = item.image.astype(F32) * F32(0.55)
        over[item.mask == 1] += F32(0.45) * np.array((255, 0, 0), F32)
        over[item.steam] += F32(0.45) * np.array((60, 90, 255), F32)
        over[item.chimney] += F32(0.45) * np.array((0, 255, 0), F32)
        sheet[r * h:(r + 1) * h, 2 * c * w:(2 * c + 1) * w] = item.image
        sheet[r * h:(r + 1) * h, (2 * c + 1) * w:(2 * c + 2) * w] = over.clip(0, 255)
    return sheet


def _main() -> None:
    import argparse

    from PIL import Image

    parser = argparse.ArgumentParser(description="Write a contact sheet of synthetic scenes.")
    parser.add_argument("out", help="PNG path")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    sheet = contact_sheet(args.n, args.seed, SyntheticConfig(size=args.size))
    Image.fromarray(sheet).save(args.out)


if __name__ == "__main__":
    _main()
