"""Synthetic industrial smoke scenes: the embedded default data set (no download needed).

Each image is a pure function of ``(index, seed, config)``. A scene has

- a sky (clear, overcast, hazy, low sun or dark overcast; gradient and fractal clouds),
- a hazy far skyline, a near skyline of halls, tanks, conveyors, masts, cranes and sometimes a
  blast furnace (tapered shaft, lattice scaffold, downcomer pipe), sometimes a foreground band,
- chimneys (concrete, dark or red/white banded stacks with cylindrical shading),
- semi-transparent smoke plumes (brown, orange, yellow-brown, grey, dark) with fractal edges and
  texture, bent by one wind per scene, rising from chimney tops, roofs or from behind the skyline,
- white steam plumes (billowy, shaded grey underneath) that count as *no smoke*, as in IJmond's
  labelling: an image with steam only is a negative (a hard negative),
- a camera: exposure, white balance, contrast, gamma, vignetting, blur and sensor grain.

Every image comes with its smoke opacity (``smoke_alpha``), the smoke mask
(``smoke_alpha > alpha_threshold``), the image label (``mask.any()``, by construction) and
auxiliary masks of visible chimney and steam pixels (both disjoint from the smoke mask) so that a
CAM's mass on distractors can be measured.

**The spurious-correlation knob** is a pair of probabilities: ``chimney_given_smoke`` is
P(the scene shows chimneys | smoke), and then the first plume rises from a chimney top; with
probability ``1 - chimney_given_smoke`` a smoky scene has no chimney at all and its plumes rise
from roofs or from behind the skyline. ``chimney_given_no_smoke`` is P(the scene shows chimneys |
no smoke). When the two are equal, chimneys say nothing about smoke. For training data set them
apart (e.g. 0.95 / 0.2: "chimney means smoke" is a shortcut that works), for test data equal
(0.5 / 0.5) or reversed (0.5 / 0.9 or 0.1 / 0.9): a method that learned the chimney instead of
the smoke then loses precision on smoke-free chimneys and recall on chimney-free plumes, and its
CAM mass on the ``chimney`` aux mask shows it directly.

**Determinism.** Random numbers come from ``numpy.random.Generator`` streams spawned from
``SeedSequence([seed, index, salt])``, one stream per scene part, so a knob changes only what it
governs (raising ``smoke_coverage`` leaves sky, skyline and steam of scene ``index`` alone).
Textures come from a bank of value-noise tiles built once per image size from a fixed seed with
elementwise float32 arithmetic only; per-pixel work uses only ``+ - * /``, ``sqrt``, ``abs``,
``min``/``max`` (no ``exp``/``pow``, whose SIMD versions differ between CPUs), no BLAS, no FFT and no
threads, so the bytes are the same on any machine with the same NumPy.

**Speed.** Channels-first float32 canvases, plumes and structures drawn inside their bounding
boxes, textures taken as views of the bank: about 2.5-3 ms per 256x256 image on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from bench.sample import Sample

__all__ = ["SyntheticConfig", "SyntheticImage", "contact_sheet", "generate", "render"]

_SALT = 0x5A0C_E5EE
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
_SMOKE_WEIGHTS = np.array([0.22, 0.16, 0.16, 0.1, 0.16, 0.08, 0.12])
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
_SKY_KINDS = ("clear", "overcast", "haze", "low_sun", "dark")
_SKY_WEIGHTS = np.array([0.32, 0.3, 0.14, 0.1, 0.14])


# ------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults: the benchmark's synthetic data set).

    Attributes:
        size: images are ``size`` x ``size`` unless ``height`` / ``width`` are given.
        smoke_rate: fraction of images with smoke (the others are negatives).
        smoke_coverage: target mean fraction of smoke-mask pixels in smoky images (per-image
            coverage varies around it, log-normally; plumes leaving the frame lower it a little).
        edge_softness: 0 gives crisp plume edges, 1 very diffuse ones (wider opacity ramp).
        steam_rate: fraction of images with white steam plumes (steam is *not* smoke).
        chimney_given_smoke: P(chimneys in the scene | smoke); the first plume then rises
            from a chimney top, otherwise the scene has no chimney at all.
        chimney_given_no_smoke: P(chimneys in the scene | no smoke). Together with
            ``chimney_given_smoke`` the spurious-correlation knob (see the module docstring).
        alpha_threshold: smoke opacity above which a pixel is labelled smoke (and steam opacity
            above which a pixel counts as steam).
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
        if not 0.0 <= self.alpha_threshold < 0.95:
            raise ValueError(f"alpha_threshold must be in [0, 0.95), got {self.alpha_threshold}")
        if not 0.0 < self.smoke_coverage <= 0.5:
            raise ValueError(f"smoke_coverage must be in (0, 0.5], got {self.smoke_coverage}")
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
        steam: bool HxW, steam pixels (steam opacity above the threshold, not smoke).
        smoke_alpha: float32 HxW, combined opacity of the smoke plumes in [0, 1].
        meta: what the scene was drawn from: ``smoke``, ``steam``, ``chimney`` (the three
            coin flips), ``sky``, ``furnace``, ``chimney_tops`` [(x, y)], ``sources``
            [(x, y, kind)] with kind ``chimney`` / ``roof`` / ``behind`` / ``steam``.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    chimney: np.ndarray
    steam: np.ndarray
    smoke_alpha: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)


# ------------------------------------------------------------------------------- noise bank
@dataclass(frozen=True)
class _Bank:
    """Texture tiles, each (n, T, T) float32 with T = 2 x the longer image side."""

    fractal: np.ndarray  # value-noise fBm in [0, 1], mean 0.5
    billow: np.ndarray   # sum of |value noise - 0.5| octaves in [0, 1]: puffy, for steam
    grain: np.ndarray    # white Gaussian noise, unit variance (sensor grain)


def _upsample_wrap(low: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a periodic (m, m) field by an integer factor (stays periodic)."""
    m = low.shape[0]
    pos = (np.arange(m * factor) + 0.5) / factor - 0.5
    i0 = np.floor(pos).astype(np.int64)
    f = pos - i0
    i0, i1 = i0 % m, (i0 + 1) % m
    rows = low[i0] * (1.0 - f)[:, None] + low[i1] * f[:, None]
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i1] * f[None, :]


def _octave(rng: np.random.Generator, side: int, sigma: float) -> np.ndarray:
    """Periodic Gaussian-smoothed white noise with feature size ``sigma`` and unit std.

    Coarse octaves are smoothed at a lower resolution (>= 2 px sigma there) and upsampled.
    """
    from scipy.ndimage import gaussian_filter

    factor = 1
    while sigma / (2 * factor) >= 2.0 and side // (2 * factor) >= 16:
        factor *= 2
    low = gaussian_filter(rng.standard_normal((side // factor, side // factor)),
                          sigma / factor, mode="wrap")
    low /= low.std()
    return _upsample_wrap(low, factor) if factor > 1 else low


@lru_cache(maxsize=4)
def _bank(side: int) -> _Bank:
    """Build the texture bank for images whose longer side is ``side`` (cached).

    Octaves have feature sizes side/4 ... 1 px; the fractal weights them 1/f (amplitude halves
    with the size), the billow sums their absolute values (round puffs, dark creases). Tiles are
    quantised to multiples of 1/4096, so that last-bit differences of the float64 filtering on
    another machine cannot change a value (and hence a rendered byte).
    """
    t = 2 * side
    n = 6 if side <= 512 else 3
    rng = np.random.default_rng(np.random.SeedSequence([_BANK_SALT, side]))
    sigmas = [side / 8 / 2**i for i in range(8) if side / 8 / 2**i >= 0.7]
    fractal = np.empty((n, t, t), F32)
    billow = np.empty((n, t, t), F32)
    for k in range(n):
        fbm = np.zeros((t, t))
        bil = np.zeros((t, t))
        wf = [0.5**i for i in range(len(sigmas))]
        wb = [0.6**i for i in range(len(sigmas))]
        for sigma, af, ab in zip(sigmas, wf, wb, strict=True):
            octave = _octave(rng, t, sigma)
            fbm += af * octave
            bil += ab * np.abs(octave)
        fbm /= math.sqrt(sum(a * a for a in wf))
        bil = (bil - 0.7979 * sum(wb)) / math.sqrt(0.3634 * sum(a * a for a in wb))
        fractal[k] = np.round(np.clip(0.5 + 0.18 * fbm, 0, 1) * 4096) / 4096
        billow[k] = np.round(np.clip(0.5 + 0.18 * bil, 0, 1) * 4096) / 4096
    grain = rng.standard_normal((2, t, t), dtype=F32)
    return _Bank(fractal, billow, grain)


def _crop(tiles: np.ndarray, rng: np.random.Generator, h: int, w: int,
          stride: int = 1) -> np.ndarray:
    """A random (h, w) view of a random tile (strided for finer texture, maybe mirrored)."""
    n, side, _ = tiles.shape
    if h * stride > side or w * stride > side:
        stride = 1
    u = rng.random(4)
    k = int(u[0] * n)
    oy = int(u[1] * (side - h * stride + 1))
    ox = int(u[2] * (side - w * stride + 1))
    view = tiles[k, oy:oy + h * stride:stride, ox:ox + w * stride:stride]
    return view[:, ::-1] if u[3] < 0.5 else view


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite ramp from 0 (x <= e0) to 1 (x >= e1); a new float32 array."""
    t = (x - F32(e0)) * F32(1.0 / (e1 - e0))
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (F32(3.0) - F32(2.0) * t)


@lru_cache(maxsize=4)
def _radius2(h: int, w: int) -> np.ndarray:
    """Squared distance from the image centre, 1 at the corners (for vignetting)."""
    y = (np.arange(h, dtype=F32) + F32(0.5)) / F32(h) - F32(0.5)
    x = (np.arange(w, dtype=F32) + F32(0.5)) / F32(w) - F32(0.5)
    return (y[:, None] ** 2 + x[None, :] ** 2) * F32(2.0)


def _pick(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with the given (normalised) weights, from one uniform number."""
    return int(np.searchsorted(np.cumsum(weights), rng.random() * weights.sum(), side="right"))


def _jitter(rng: np.random.Generator, colour: np.ndarray, spread: float) -> np.ndarray:
    return (colour + (rng.random(3).astype(F32) - F32(0.5)) * F32(2 * spread)).astype(F32)


# ------------------------------------------------------------------------------------ canvas
class _Canvas:
    """A channels-first float32 image plus structure and chimney masks being drawn."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.img = np.empty((3, h, w), F32)
        self.struct = np.zeros((h, w), bool)
        self.chimney = np.zeros((h, w), bool)
        self.roof = np.full(w, h, np.int64)  # first structure row per column (near layer)
        self.palette = STRUCTURE_COLOURS[:3]  # the scene's structure colours (set by render)

    def box(self, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int]:
        """Integer box clipped to the image (may be empty)."""
        return (max(0, int(y0)), min(self.h, int(math.ceil(y1))),
                max(0, int(x0)), min(self.w, int(math.ceil(x1))))

    def paint(self, inside: np.ndarray, y0: int, x0: int, colour: np.ndarray,
              shade: np.ndarray | None = None) -> None:
        """Paint ``colour`` (times ``shade``) where ``inside`` (a box at (y0, x0)) is true."""
        h, w = inside.shape
        reg = self.img[:, y0:y0 + h, x0:x0 + w]
        src = colour[:, None, None] if shade is None else colour[:, None, None] * shade[None]
        np.copyto(reg, np.broadcast_to(src, reg.shape), where=inside[None])
        self.struct[y0:y0 + h, x0:x0 + w] |= inside

    def rect(self, y0: float, y1: float, x0: float, x1: float, colour: np.ndarray) -> None:
        """Fill an axis-aligned rectangle (structure)."""
        a, b, c, d = self.box(y0, y1, x0, x1)
        if a < b and c < d:
            self.img[:, a:b, c:d] = colour[:, None, None]
            self.struct[a:b, c:d] = True
            self.chimney[a:b, c:d] = False
            self.roof[c:d] = np.minimum(self.roof[c:d], a)


def _grid(y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a box as (h, 1) and (1, w) float32 arrays."""
    yy = np.arange(y0, y1, dtype=F32)[:, None] + F32(0.5)
    xx = np.arange(x0, x1, dtype=F32)[None, :] + F32(0.5)
    return yy, xx


def _segment_distance(yy: np.ndarray, xx: np.ndarray, a: tuple[float, float],
                      b: tuple[float, float]) -> np.ndarray:
    """Distance of pixel centres to the segment a-b, points given as (x, y)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    inv = 1.0 / max(dx * dx + dy * dy, 1e-6)
    px, py = xx - F32(ax), yy - F32(ay)
    t = np.clip((px * F32(dx) + py * F32(dy)) * F32(inv), 0.0, 1.0)
    ex, ey = px - t * F32(dx), py - t * F32(dy)
    return np.sqrt(ex * ex + ey * ey)


# ------------------------------------------------------------------------------- background
def _sky(cv: _Canvas, rng: np.random.Generator, bank: _Bank,
         horizon: int) -> tuple[np.ndarray, str]:
    """Fill the canvas with sky (gradient and clouds); returns the horizon colour and kind."""
    kind = _SKY_KINDS[_pick(rng, _SKY_WEIGHTS)]
    if kind == "clear":
        top, hor = np.array((62, 112, 186), F32), np.array((168, 196, 224), F32)
        cloud = np.array((242, 244, 248), F32)
    elif kind == "overcast":  # grey on grey: the hard case for grey smoke
        g = F32(135 + 80 * rng.random())
        top, hor = np.array((g - 12, g - 6, g), F32), np.array((g + 12, g + 12, g + 14), F32)
        cloud = top + F32(28 if rng.random() < 0.5 else -28)
    elif kind == "haze":  # yellowish-white haze: close to light smoke
        top, hor = np.array((160, 172, 186), F32), np.array((212, 208, 196), F32)
        cloud = np.array((226, 224, 218), F32)
    elif kind == "low_sun":  # orange horizon: close to orange smoke
        top, hor = np.array((96, 116, 164), F32), np.array((232, 176, 128), F32)
        cloud = np.array((236, 196, 170), F32)
    else:  # dark overcast
        g = F32(85 + 50 * rng.random())
        top, hor = np.array((g - 8, g - 4, g + 2), F32), np.array((g + 22, g + 22, g + 24), F32)
        cloud = top - F32(18)
    bright = F32(rng.uniform(0.88, 1.1))
    top, hor = _jitter(rng, top * bright, 6), _jitter(rng, hor * bright, 6)
    cloud = _jitter(rng, np.minimum(cloud * bright, 250), 5)
    t = np.minimum((np.arange(cv.h, dtype=F32) + F32(0.5)) / F32(max(horizon, 1)), F32(1.0))
    t = t * (F32(2.0) - t) if rng.random() < 0.6 else t
    amount = F32(rng.uniform(0.0, 0.35 if kind == "clear" else 0.8))
    lo = F32(rng.uniform(0.35, 0.6))
    k = amount / F32(rng.uniform(0.08, 0.35))
    clouds = _crop(bank.fractal, rng, cv.h, cv.w) * k  # a linear ramp from lo, up to amount
    clouds -= lo * k
    np.clip(clouds, F32(0.0), amount, out=clouds)
    grad = top[:, None] * (F32(1.0) - t) + hor[:, None] * t  # (3, h)
    for ch in range(3):
        np.multiply(clouds, (cloud[ch] - grad[ch])[:, None], out=cv.img[ch])
        cv.img[ch] += grad[ch][:, None]
    return hor, kind


def _far_skyline(cv: _Canvas, rng: np.random.Generator, base: int, hor: np.ndarray) -> None:
    """A hazy, low-contrast band of distant blocks just above the near skyline."""
    h, w = cv.h, cv.w
    tops = np.full(w, base, np.int64)
    x = int(rng.integers(-8, 1))
    lift = int(rng.integers(0, max(2, h // 40)))
    while x < w:
        bw = int(rng.integers(max(3, w // 60), max(5, w // 7)))
        bh = int(rng.random() ** 2 * 0.1 * h) + lift
        tops[max(x, 0):x + bw] = base - bh
        x += bw
    r0 = int(tops.min())
    if r0 >= base:
        return
    inside = np.arange(r0, base)[:, None] >= tops[None, :]
    depth = F32(rng.uniform(0.12, 0.4))
    dark = STRUCTURE_COLOURS[int(rng.integers(len(STRUCTURE_COLOURS)))]
    colour = hor * (F32(1.0) - depth) + dark * depth
    reg = cv.img[:, r0:base]
    np.copyto(reg, np.broadcast_to(colour[:, None, None], reg.shape), where=inside[None])


def _structure_colour(cv: _Canvas, rng: np.random.Generator, light: float) -> np.ndarray:
    """One of the scene's structure colours, with brightness and a little hue jitter."""
    colour = cv.palette[int(rng.integers(len(cv.palette)))]
    return _jitter(rng, colour * F32(light * rng.uniform(0.8, 1.15)), 6)


def _paint_profile(cv: _Canvas, top: np.ndarray, colour: np.ndarray, factor: np.ndarray,
                   windows: np.ndarray, period: int, bottom: int) -> None:
    """Paint a row of blocks given per column: top row, colour (3, w), brightness factor and
    whether the block has window bands; blocks reach down to ``bottom`` (exclusive).

    Columns whose top is >= ``bottom`` stay untouched. Roof edges are lit.
    """
    r0 = int(top.min())
    if r0 >= bottom:
        return
    rel = np.arange(r0, bottom)[:, None] - top[None, :]
    inside = rel >= 0
    shade = np.where(windows[None, :] & (rel % period == 2), F32(0.72), F32(1.0))
    shade[rel == 0] = F32(1.22)
    shade *= factor[None, :]
    reg = cv.img[:, r0:bottom]
    np.copyto(reg, colour[:, None, :] * shade[None], where=inside[None])
    cv.struct[r0:bottom] |= inside
    np.minimum(cv.roof, np.where(top < bottom, top, cv.h), out=cv.roof)


def _blocks(cv: _Canvas, rng: np.random.Generator, row: float, height: float, light: float,
            gap: float, min_width: float = 0.03, max_width: float = 0.18
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (top, colour, factor, windows) of a row of blocks standing on ``row``.

    Block heights are up to ``height`` px; a fraction ``gap`` of the blocks is left empty.
    All random numbers are drawn as one array (scalar Generator calls are slow).
    """
    w = cv.w
    n = int(1.1 / min_width) + 2
    u = rng.random((n, 11))
    widths = np.maximum(2, (w * (min_width + (max_width - min_width) * u[:, 0])).astype(np.int64))
    ends = np.cumsum(widths) - int(0.1 * w * u[0, 10])
    cols = np.arange(w)
    idx = np.minimum(np.searchsorted(ends, cols, side="right"), n - 1)  # block of each column
    starts = ends - widths
    tops = np.where(u[:, 2] < gap, cv.h, (row - height * u[:, 3] ** 1.5).astype(np.int64))
    palette = cv.palette[(u[:, 4] * len(cv.palette)).astype(np.int64)]
    colours = palette * (F32(light) * (F32(0.8) + F32(0.35) * u[:, 5:6].astype(F32)))
    colours += (u[:, 6:9].astype(F32) - F32(0.5)) * F32(12.0)
    period = 3 + (u[:, 9] * 7).astype(np.int64)
    pillar = (u[idx, 1] < 0.35) & ((cols - starts[idx]) % period[idx] == 0)
    factor = np.where(pillar, F32(0.7) + F32(0.5) * u[idx, 7].astype(F32), F32(1.0))
    windows = u[idx, 8] < 0.35
    return tops[idx], np.ascontiguousarray(colours[idx].T), factor.astype(F32), windows


def _ground_band(cv: _Canvas, rng: np.random.Generator, base: int, light: float) -> None:
    """Plant clutter from the skyline base down: tiers of abutting low buildings, back to front.

    Lower tiers are closer and a little darker; a few lines (pipes, rails, fences) run across.
    """
    h, w = cv.h, cv.w
    cv.img[:, base:] = _structure_colour(cv, rng, light * 0.7)[:, None, None]
    cv.struct[base:] = True
    span = h - base
    tiers = int(rng.integers(2, 5))
    for k in range(tiers):
        row = base + span * (k + rng.uniform(0.0, 0.5)) / tiers
        bottom = min(h, int(base + span * (k + 1.4) / tiers) + 1)
        profile = _blocks(cv, rng, row, span * 0.25, light * (0.95 - 0.1 * k), gap=0.0)
        _paint_profile(cv, *profile, period=int(rng.integers(3, 7)), bottom=bottom)
    for _ in range(int(rng.integers(1, 5))):
        y = base + int(rng.random() * span)
        x0, x1 = int(rng.random() * w * 0.5), int(w * rng.uniform(0.5, 1.0))
        cv.img[:, y, x0:x1] *= F32(rng.uniform(0.6, 1.35))


def _buildings(cv: _Canvas, rng: np.random.Generator, base: int, light: float) -> None:
    """Halls (one vectorised row of blocks), then tanks and conveyors, on the skyline base."""
    h, w = cv.h, cv.w
    profile = _blocks(cv, rng, base, h * 0.2, light, gap=0.25, min_width=0.04, max_width=0.2)
    _paint_profile(cv, *profile, period=int(rng.integers(3, 9)), bottom=base + 1)
    for _ in range(int(rng.integers(0, 4))):
        bw = w * rng.uniform(0.04, 0.14)
        x = w * rng.uniform(-0.05, 1.0)
        top = base - h * rng.random() ** 1.5 * 0.16 - 2
        colour = _structure_colour(cv, rng, light)
        if rng.random() < 0.65:  # tank: a cylinder with a domed top
            radius = bw / 2
            cap = radius * rng.uniform(0.15, 0.5)
            a, b, c, d = cv.box(top - cap, base + 1, x, x + bw)
            if a < b and c < d:
                yy, xx = _grid(a, b, c, d)
                s = (xx - F32(x + radius)) / F32(radius)
                dy = (yy - F32(top)) / F32(cap)
                inside = (np.abs(s) <= 1) & ((yy >= top) | (s * s + dy * dy <= 1))
                shade = F32(0.7) + F32(0.4) * np.sqrt(np.maximum(F32(1.0) - s * s, 0))
                shade = shade + F32(0.12) * s * F32(1 if rng.random() < 0.5 else -1)
                cv.paint(inside, a, c, colour, np.broadcast_to(shade, inside.shape))
                cv.roof[c:d] = np.minimum(cv.roof[c:d], np.where(inside.any(0),
                                                                 inside.argmax(0) + a, cv.h))
        else:  # conveyor: a thick slanted line up to a roof
            x1 = x + bw * rng.uniform(1.0, 2.5) * (1 if rng.random() < 0.5 else -1)
            thick = max(1.0, w * rng.uniform(0.004, 0.01))
            a, b, c, d = cv.box(top - thick, base + thick, min(x, x1) - thick,
                                max(x, x1) + thick)
            if a < b and c < d:
                yy, xx = _grid(a, b, c, d)
                inside = _segment_distance(yy, xx, (x, base), (x1, top)) <= thick
                cv.paint(inside, a, c, colour)


def _furnace(cv: _Canvas, rng: np.random.Generator, base: int, light: float) -> float | None:
    """A blast furnace: tapered shaft, throat house, lattice scaffold, downcomer pipe.

    Returns the x of its centre, or None when the scene has none.
    """
    if rng.random() >= 0.4:
        return None
    h, w = cv.h, cv.w
    fw = w * rng.uniform(0.08, 0.18)
    fx = w * rng.uniform(0.1, 0.9)
    top = max(2.0, base - base * rng.uniform(0.3, 0.7))
    tall = base - top
    side = 1.0 if rng.random() < 0.5 else -1.0
    colour = _structure_colour(cv, rng, light * 0.85)
    pipe_colour = _jitter(rng, colour * F32(1.2), 8)
    thick = max(1.2, fw * rng.uniform(0.05, 0.09))
    pts = [(fx, top + 0.04 * tall), (fx + side * 0.55 * fw, top - 0.04 * tall),
           (fx + side * 1.0 * fw, top + 0.25 * tall), (fx + side * 1.15 * fw, base)]
    xs = [p[0] for p in pts]
    a, b, c, d = cv.box(top - 0.05 * tall - thick, base + 1, min(xs) - 0.6 * fw - thick,
                        max(xs) + 0.6 * fw + thick)
    if not (a < b and c < d):
        return None
    yy, xx = _grid(a, b, c, d)
    rel = (yy - F32(top)) / F32(tall)  # 0 at the top, 1 at the base
    dx = xx - F32(fx)
    adx = np.abs(dx)
    shaft_hw = F32(0.2 * fw) + F32(0.2 * fw) * np.clip(rel, 0, 1)
    shaft = (rel >= 0.22) & (adx <= shaft_hw)
    throat = (rel >= 0.0) & (rel < 0.22) & (adx <= F32(0.14 * fw))
    house = (rel >= 0.08) & (rel < 0.18) & (adx <= F32(0.26 * fw))
    period = max(3, int(fw * rng.uniform(0.12, 0.25)))
    iy = (yy - F32(top)).astype(np.int64)
    ix = (xx - F32(fx)).astype(np.int64)
    lattice = ((iy % period == 0) | ((ix + iy) % (2 * period) == 0)
               | ((ix - iy) % (2 * period) == 0) | (np.abs(adx - F32(0.5 * fw)) < 1.0))
    scaffold = (rel >= 0.12) & (adx <= F32(0.5 * fw)) & lattice
    cyl = np.clip(dx / np.maximum(shaft_hw, 1.0), -1, 1)
    shade = F32(0.72) + F32(0.38) * np.sqrt(F32(1.0) - cyl * cyl) + F32(0.1 * side) * cyl
    cv.paint(scaffold, a, c, colour * F32(0.85))
    cv.paint(shaft | throat | house, a, c, colour, np.broadcast_to(shade, shaft.shape))
    pipe = np.zeros(shaft.shape, bool)
    for p, q in zip(pts[:-1], pts[1:], strict=True):
        pipe |= _segment_distance(yy, xx, p, q) <= thick
    cv.paint(pipe, a, c, pipe_colour)
    return fx


def _masts(cv: _Canvas, rng: np.random.Generator, base: int) -> None:
    """Thin distractors that are not chimneys: poles, masts and sometimes a crane."""
    h, w = cv.h, cv.w
    dark = _jitter(rng, np.array((50, 50, 52), F32), 15)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 6))):
            x = rng.random() * w
            top = base - h * rng.uniform(0.04, 0.3)
            cv.rect(top, base + 1, x, x + 1, dark)
    if rng.random() < 0.2:  # crane: yellow / orange mast and jib
        colour = _jitter(rng, np.array((200, 150, 40), F32), 25)
        x = rng.random() * w
        top = base - h * rng.uniform(0.15, 0.35)
        cv.rect(top, base + 1, x, x + 2, colour)
        jib = w * rng.uniform(0.1, 0.3) * (1 if rng.random() < 0.5 else -1)
        cv.rect(top, top + 2, min(x, x + jib), max(x, x + jib), colour)


@dataclass
class _Chimney:
    x: float      # centre
    top: float    # row of the top
    hw: float     # half width at the top
    taper: float  # extra half width per row


def _chimney_layout(rng: np.random.Generator, h: int, w: int, base: int) -> list[_Chimney]:
    """Chimney geometry (drawn from its own stream whether or not the scene shows it)."""
    count = 1 + int(rng.random() < 0.55) + int(rng.random() < 0.2)
    out: list[_Chimney] = []
    for _ in range(count):
        hw = max(1.5, w * rng.uniform(0.007, 0.02))
        x = w * rng.uniform(0.08, 0.92)
        top = max(0.06 * h, base - base * rng.uniform(0.3, 0.62))
        taper = hw * rng.uniform(0.0, 0.8) / max(base - top, 1.0)
        if all(abs(x - c.x) > 3 * (hw + c.hw) for c in out):
            out.append(_Chimney(x, top, hw, taper))
    return out


def _draw_chimneys(cv: _Canvas, rng: np.random.Generator, chimneys: list[_Chimney],
                   base: int, light: float) -> None:
    """Stacks with cylindrical shading, a dark rim, sometimes red/white bands."""
    side = F32(1 if rng.random() < 0.5 else -1)
    for ch in chimneys:
        kind = rng.random()
        if kind < 0.5:
            colour = _jitter(rng, np.array((165, 162, 156), F32) * F32(light), 18)  # concrete
        elif kind < 0.8:
            colour = _jitter(rng, np.array((80, 78, 78), F32) * F32(light), 15)  # dark steel
        else:
            colour = _jitter(rng, np.array((150, 90, 70), F32) * F32(light), 15)  # brick
        bottom = base + 2
        hw_bottom = ch.hw + ch.taper * (bottom - ch.top)
        a, b, c, d = cv.box(ch.top, bottom, ch.x - hw_bottom - 1, ch.x + hw_bottom + 1)
        if not (a < b and c < d):
            continue
        yy, xx = _grid(a, b, c, d)
        half = F32(ch.hw) + F32(ch.taper) * (yy - F32(ch.top))
        s = (xx - F32(ch.x)) / half
        inside = np.abs(s) <= 1
        s = np.clip(s, -1, 1)
        shade = F32(0.7) + F32(0.35) * np.sqrt(F32(1.0) - s * s) + F32(0.15) * side * s
        rows = np.broadcast_to(colour[:, None, None], (3, b - a, 1)).copy()
        if rng.random() < 0.35:  # red/white warning bands near the top
            band = max(2, int((bottom - ch.top) * rng.uniform(0.04, 0.08)))
            for k in range(int(rng.integers(2, 6))):
                r0 = k * band
                rows[:, r0:r0 + band, 0] = (
                    np.array((178, 52, 44), F32) if k % 2 == 0 else np.array((225, 222, 215), F32)
                )[:, None] * F32(light)
        rows[:, : max(1, int(ch.hw * 0.4)), 0] *= F32(0.55)  # rim
        reg = cv.img[:, a:b, c:d]
        np.copyto(reg, rows * shade[None], where=inside[None])
        cv.struct[a:b, c:d] |= inside
        cv.chimney[a:b, c:d] |= inside


def _foreground(cv: _Canvas, rng: np.random.Generator, bank: _Bank, light: float) -> None:
    """A band of vegetation at the bottom, with a bumpy (tree line) top edge."""
    if rng.random() >= 0.35:
        return
    h, w = cv.h, cv.w
    depth = h * rng.uniform(0.04, 0.12)
    bump = _crop(bank.fractal, rng, 1, w, stride=4)[0]
    edge = F32(h - depth) - (bump - F32(0.3)) * F32(depth * rng.uniform(0.5, 1.5))
    a = max(0, int(edge.min()))
    yy = np.arange(a, h, dtype=F32)[:, None] + F32(0.5)
    inside = yy >= edge[None, :]
    colour = _jitter(rng, np.array((62, 84, 46), F32), 8)
    tex = _crop(bank.fractal, rng, h - a, w, stride=4)
    shade = F32(0.45) + F32(0.9) * tex
    cv.paint(inside, a, 0, _jitter(rng, colour * F32(light), 10), shade)
    cv.chimney[a:] &= ~inside


# ----------------------------------------------------------------------------------- plumes
@dataclass
class _Plume:
    x: float          # source (pixel coordinates)
    y: float
    theta: float      # lean from vertical (radians, + to the right)
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


def _plume_alpha(cv: _Canvas, rng: np.random.Generator, bank: _Bank,
                 p: _Plume) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Opacity of a plume in its bounding box: (y0, x0, alpha, texture) or None if off-frame.

    In plume coordinates (u along the bent axis from the source, v across it) the opacity is
    ``opacity * edge(|v| / half(u) + noise) * tail(u / length + noise) * foot(u) * density``:
    linear ramps (cheap, and the fractal displacement hides their shape), with noise taken from
    the bank at a stride that scales its features to the plume's width.
    """
    sin, cos = math.sin(p.theta), math.cos(p.theta)
    length = max(p.length, 2.0)
    xs, ys = [], []
    for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25):
        u = f * length
        v = p.bend * u * u / length
        xs.append(p.x + u * sin + v * cos)
        ys.append(p.y - (u * cos - v * sin))
    wide = p.w0 + p.spread * length * 1.25
    pad = wide * (1.0 + p.softness + p.edge_amp) + 2.0
    a, b, c, d = cv.box(min(ys) - pad, max(ys) + pad, min(xs) - pad, max(xs) + pad)
    if not (a < b and c < d):
        return None
    h, w = b - a, d - c
    tiles = bank.billow if p.steam else bank.fractal
    side = tiles.shape[1]
    # the coarsest bank features are side / 16 px; aim them at about the plume's mean width
    stride = max(1, min(int(side / 16 / max(p.w0 + p.spread * length * 0.5, 1.0)), 4,
                        side // h, side // w))
    edge_noise = _crop(tiles, rng, h, w, stride)
    tex = _crop(tiles, rng, h, w, max(1, stride // 2) if p.steam else stride)
    yy, xx = _grid(a, b, c, d)
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
    v /= half                                  # v is now |v| / half width
    ramp = F32(1.0 / (2.0 * p.softness))
    edge = edge_noise * F32(-2.0 * p.edge_amp * ramp)
    edge += F32((1.0 + p.softness + p.edge_amp) * ramp)
    v *= ramp
    edge -= v                                  # (1 + s - r - noise) / 2s
    np.clip(edge, F32(0.0), F32(1.0), out=edge)
    # tail: thins out from fade_start to the end, its end frayed by the texture
    k = F32(1.0 / ((1.0 - p.fade_start) * length))
    tail = u * (-k)
    tail -= tex * F32(0.5 * k * length)
    tail += F32(1.25 * k * length)             # (1.25 - u / length - tex / 2) / (1 - fade_start)
    np.clip(tail, F32(0.0), F32(1.0), out=tail)
    edge *= tail
    # foot: opacity rises over ~ a source width above the source
    u *= F32(1.0 / max(p.w0, 1.0))
    u += F32(0.3)
    np.clip(u, F32(0.0), F32(1.0), out=u)
    edge *= u
    density = tex * F32(p.contrast * p.opacity)
    density += F32((1.0 - 0.5 * p.contrast) * p.opacity)
    edge *= density
    np.clip(edge, F32(0.0), F32(1.0), out=edge)
    if p.behind:
        edge[cv.struct[a:b, c:d]] = 0.0
    return a, c, edge, tex


def _composite(cv: _Canvas, y0: int, x0: int, alpha: np.ndarray, colour: np.ndarray,
               shade: np.ndarray) -> None:
    h, w = alpha.shape
    reg = cv.img[:, y0:y0 + h, x0:x0 + w]
    reg += alpha[None] * (colour[:, None, None] * shade[None] - reg)


def _sources_without_chimney(cv: _Canvas, rng: np.random.Generator, n: int,
                             base: int) -> list[tuple[float, float, str]]:
    """Plume feet on a roof or hidden behind the skyline (a scene without chimneys)."""
    out = []
    for _ in range(n):
        x = cv.w * rng.uniform(0.06, 0.94)
        roof = float(min(cv.roof[int(x)], base))
        if rng.random() < 0.5:
            out.append((x, roof, "roof"))
        else:
            out.append((x, roof + cv.h * rng.uniform(0.01, 0.05), "behind"))
    return out


# ------------------------------------------------------------------------------------ render
def render(index: int, seed: int, config: SyntheticConfig | None = None) -> SyntheticImage:
    """Render scene ``index`` of the stream ``seed`` (identical bytes for identical arguments)."""
    cfg = config or SyntheticConfig()
    h, w = cfg.shape
    root = np.random.SeedSequence([int(seed) % 2**64, int(index) % 2**64, _SALT])
    r_label, r_scene, r_chim, r_smoke, r_steam, r_cam = (
        np.random.Generator(np.random.PCG64(s)) for s in root.spawn(6))
    bank = _bank(max(h, w))

    u = r_label.random(3)
    has_smoke = bool(u[0] < cfg.smoke_rate)
    has_steam = bool(u[1] < cfg.steam_rate)
    has_chimney = bool(u[2] < (cfg.chimney_given_smoke if has_smoke
                               else cfg.chimney_given_no_smoke))

    # scene: sky, skylines, structures
    cv = _Canvas(h, w)
    cv.palette = STRUCTURE_COLOURS[r_scene.permutation(len(STRUCTURE_COLOURS))[:3]]
    base = int(h * r_scene.uniform(0.6, 0.9))
    light = float(r_scene.uniform(0.7, 1.15))
    hor, sky_kind = _sky(cv, r_scene, bank, base)
    if r_scene.random() < 0.75:
        _far_skyline(cv, r_scene, base, hor)
    furnace = _furnace(cv, r_scene, base, light)
    _buildings(cv, r_scene, base, light)
    _ground_band(cv, r_scene, base, light)
    _masts(cv, r_scene, base)
    chimneys = _chimney_layout(r_chim, h, w, base)
    if has_chimney:
        _draw_chimneys(cv, r_chim, chimneys, base, light)
    _foreground(cv, r_scene, bank, light)
    r0 = int(cv.struct.any(1).argmax())
    grit = _crop(bank.fractal, r_scene, h - r0, w, stride=2)
    cv.img[:, r0:] += (F32(r_scene.uniform(20, 50)) * (grit - F32(0.5))
                       * cv.struct[r0:])[None]
    haze = float(r_scene.uniform(0.0, 0.35) ** 1.5)  # applied by the camera, after the plumes
    wind = float(r_scene.uniform(-1.0, 1.0))  # shared by every plume of the scene
    tops = [(c.x, c.top, c.hw) for c in chimneys] if has_chimney else []
    sources: list[tuple[float, float, str]] = []

    # steam first, so that smoke is drawn in front of it where they overlap
    steam_alpha = np.zeros((h, w), F32)
    if has_steam:
        n = 1 + int(r_steam.random() < 0.3)
        for k in range(n):
            if tops and r_steam.random() < 0.5:
                x, y, hw = tops[(k + 1) % len(tops)]
                kind = "chimney"
            else:
                x, y, kind = _sources_without_chimney(cv, r_steam, 1, base)[0]
                hw = w * r_steam.uniform(0.01, 0.03)
            sources.append((x, y, "steam"))
            area = h * w * r_steam.uniform(0.015, 0.1)
            spread = r_steam.uniform(0.35, 0.9)
            w0 = hw * r_steam.uniform(1.0, 1.6)
            length = (-w0 + math.sqrt(w0 * w0 + spread * area / 0.75)) / spread
            plume = _Plume(x, y, theta=wind * r_steam.uniform(0.2, 0.8),
                           bend=r_steam.uniform(0.0, 0.3) * wind, length=length, w0=w0,
                           spread=spread, softness=r_steam.uniform(0.15, 0.4),
                           edge_amp=r_steam.uniform(0.45, 0.8),
                           opacity=r_steam.uniform(0.85, 1.0),
                           fade_start=r_steam.uniform(0.3, 0.7),
                           contrast=r_steam.uniform(0.6, 1.2), steam=True,
                           behind=kind == "behind")
            got = _plume_alpha(cv, r_steam, bank, plume)
            if got is None:
                continue
            y0, x0, alpha, tex = got
            colour = _jitter(r_steam, np.array((250, 250, 252), F32), 4)
            colour = colour * F32(0.92) + hor * F32(0.08)
            shade = F32(0.62) + F32(0.5) * tex  # bright puffs, grey creases and undersides
            _composite(cv, y0, x0, alpha, colour * F32(0.85 + 0.15 * light), shade)
            sa = steam_alpha[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
            sa += alpha * (F32(1.0) - sa)

    smoke_alpha = np.zeros((h, w), F32)
    if has_smoke:
        n = 1 + int(r_smoke.random() < 0.35) + int(r_smoke.random() < 0.1)
        if tops:
            feet = [(tops[0][0], tops[0][1], "chimney", tops[0][2])]
            for _ in range(n - 1):
                if r_smoke.random() < 0.6:
                    x, y, hw = tops[int(r_smoke.integers(len(tops)))]
                    feet.append((x, y, "chimney", hw))
                else:
                    x, y, kind = _sources_without_chimney(cv, r_smoke, 1, base)[0]
                    feet.append((x, y, kind, w * r_smoke.uniform(0.008, 0.025)))
        else:
            feet = [(x, y, kind, w * r_smoke.uniform(0.008, 0.025))
                    for x, y, kind in _sources_without_chimney(cv, r_smoke, n, base)]
        spread_z = float(r_smoke.standard_normal())
        total = cfg.smoke_coverage * h * w * math.exp(0.5 * spread_z - 0.125)
        weights = r_smoke.uniform(0.5, 1.5, len(feet))
        weights /= weights.sum()
        softness = 0.04 + 0.9 * cfg.edge_softness
        thr = cfg.alpha_threshold
        for (x, y, kind, hw), share in zip(feet, weights, strict=True):
            sources.append((x, y, kind))
            spread = r_smoke.uniform(0.1, 0.4)
            w0 = hw * r_smoke.uniform(0.9, 1.4)
            area = total * share / 0.55  # nominal plume area -> mask area (calibrated)
            length = (-w0 + math.sqrt(w0 * w0 + spread * area)) / spread
            length = min(max(length, 0.06 * max(h, w)), 2.0 * max(h, w))
            opacity = r_smoke.uniform(0.35, 0.6) if r_smoke.random() < 0.25 else \
                r_smoke.uniform(0.65, 1.0)
            plume = _Plume(x, y, theta=wind * r_smoke.uniform(0.3, 1.1) +
                           r_smoke.uniform(-0.15, 0.15),
                           bend=r_smoke.uniform(0.0, 0.5) * wind, length=length, w0=w0,
                           spread=spread, softness=softness,
                           edge_amp=r_smoke.uniform(0.3, 0.65), opacity=opacity,
                           fade_start=r_smoke.uniform(0.2, 0.7),
                           contrast=r_smoke.uniform(0.6, 1.4), steam=False,
                           behind=kind == "behind")
            got = _plume_alpha(cv, r_smoke, bank, plume)
            if got is None:
                continue
            y0, x0, alpha, tex = got
            peak = float(alpha.max())
            if 0.0 < peak < thr + 0.1:  # too faint to be labelled: make its core visible
                alpha *= F32(min(thr + 0.1, 1.0) / peak)
                np.minimum(alpha, F32(1.0), out=alpha)
            colour = SMOKE_COLOURS[_pick(r_smoke, _SMOKE_WEIGHTS)]
            colour = _jitter(r_smoke, colour * F32(0.6 + 0.4 * light), 12)
            shade = F32(1.15) - F32(0.35) * tex
            _composite(cv, y0, x0, alpha, colour, shade)
            sa = smoke_alpha[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
            sa += alpha * (F32(1.0) - sa)

    image = _camera(cv.img, r_cam, bank, haze, hor)
    mask_bool = smoke_alpha > F32(cfg.alpha_threshold)
    steam = (steam_alpha > F32(cfg.alpha_threshold)) & ~mask_bool
    chimney = cv.chimney & ~mask_bool & ~steam
    return SyntheticImage(
        image=image, mask=mask_bool.view(np.uint8), label=int(mask_bool.any()),
        chimney=chimney, steam=steam, smoke_alpha=smoke_alpha,
        meta={"smoke": has_smoke, "steam": has_steam, "chimney": has_chimney,
              "sky": sky_kind, "furnace": furnace is not None,
              "chimney_tops": [(c.x, c.top) for c in chimneys] if has_chimney else [],
              "sources": sources})


def _camera(img: np.ndarray, rng: np.random.Generator, bank: _Bank, haze: float,
            hor: np.ndarray) -> np.ndarray:
    """Haze, exposure, white balance, contrast, vignetting, blur, grain, tone curve -> uint8 HxWx3.

    Haze (a blend towards the horizon colour), exposure, white balance and contrast are one
    affine map per channel; ``img`` (channels first) is used as scratch space.
    """
    _, h, w = img.shape
    u = rng.random(10)
    gain = F32(0.82 + 0.36 * u[0]) * (F32(0.95) + F32(0.1) * rng.random(3, dtype=F32))
    contrast = F32(0.85 + 0.3 * u[1])
    scale = gain * contrast * F32(1.0 - haze)
    offset = gain * contrast * F32(haze) * hor + F32(128.0) * (F32(1.0) - contrast)
    tone = 0.6 * (u[7] - 0.5) if u[6] < 0.5 else 0.0
    vignette = (F32(1.0) - F32(0.35 * u[3]) * _radius2(h, w)) if u[2] < 0.3 else None
    grain = _crop(bank.grain, rng, h, w) * F32(0.8 + 3.5 * u[5] * u[5])
    out = np.empty((h, w, 3), np.uint8)
    for ch in range(3):
        plane = img[ch]
        if vignette is not None:
            plane *= vignette
        if u[4] < 0.3:  # slight optical / compression blur: [1 2 1] / 4 in both directions
            plane[:, 1:-1] = (plane[:, 1:-1] * F32(2.0) + plane[:, :-2] + plane[:, 2:]) * F32(0.25)
            plane[1:-1] = (plane[1:-1] * F32(2.0) + plane[:-2] + plane[2:]) * F32(0.25)
        plane *= scale[ch]
        plane += offset[ch]
        plane += grain
        np.clip(plane, F32(0.0), F32(255.0), out=plane)
        if tone:  # gamma-like curve x + g x (255 - x) / 255, g in [-0.3, 0.3]
            curve = plane * F32(-tone / 255.0)
            curve += F32(1.0 + tone)
            plane *= curve
        plane += F32(0.5)
        out[:, :, ch] = plane  # truncation of x + 0.5 (x in [0, 255]): rounding
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
    """Scenes side by side with an overlay copy (red smoke, blue steam, green chimney)."""
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


if __name__ == "__main__":
    import argparse

    from PIL import Image

    parser = argparse.ArgumentParser(description="Write a contact sheet of synthetic scenes.")
    parser.add_argument("out", help="PNG path")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    Image.fromarray(contact_sheet(args.n, args.seed, SyntheticConfig(size=args.size))).save(args.out)
