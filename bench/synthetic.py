"""Synthetic industrial smoke scenes: the embedded default data set (no download needed).

Each image is a pure function of ``(index, seed, config)``: sky, a skyline of halls and
blast-furnace structures, chimneys, semi-transparent smoke plumes (brown, orange, grey) with
fractal texture rising from chimney tops (or from behind the skyline), and white steam plumes that
count as *no smoke*, as in IJmond's labelling. Every image comes with its smoke mask, image label
and auxiliary masks of chimneys and steam, so a CAM's mass on distractors can be measured.

The spurious-correlation knob is a pair of probabilities: ``chimney_given_smoke`` (a smoky image
shows chimneys, the plume rising from one) and ``chimney_given_no_smoke`` (a smoke-free image
still shows chimneys). Training data with 0.95 / 0.2 teaches "chimney means smoke"; test data
with 0.5 / 0.9 punishes a method that learned it (false positives on smoke-free chimneys, misses
on plumes without a visible chimney).

Speed: textures come from a bank of fractal-noise tiles built once per image size, and plumes
are rendered inside their bounding boxes only (> 200 images/s at 256x256 on one core).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from bench.sample import Sample

SMOKE_COLOURS = np.array([
    (118, 92, 66),    # brown
    (150, 104, 62),   # light brown
    (186, 112, 52),   # orange (iron-oxide plume)
    (112, 110, 108),  # grey
    (78, 72, 66),     # dark grey-brown
], np.float32)
STEAM_COLOUR = np.array((238, 238, 242), np.float32)
_BANK_SIZE = 24


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults: the benchmark's synthetic data set).

    Attributes:
        size: images are ``size`` x ``size``.
        smoke_rate: fraction of images with smoke.
        smoke_coverage: target mean fraction of smoke pixels in smoky images.
        edge_softness: 0 gives crisp plume edges, 1 very diffuse ones.
        steam_rate: fraction of images with white steam plumes (steam is *not* smoke).
        chimney_given_smoke: P(chimneys are visible | smoke); the plume then rises from one.
        chimney_given_no_smoke: P(chimneys are visible | no smoke).
        alpha_threshold: smoke opacity above which a pixel is labelled smoke.
    """

    size: int = 256
    smoke_rate: float = 0.5
    smoke_coverage: float = 0.05
    edge_softness: float = 0.5
    steam_rate: float = 0.3
    chimney_given_smoke: float = 0.9
    chimney_given_no_smoke: float = 0.5
    alpha_threshold: float = 0.15

    def __post_init__(self) -> None:
        for name in ("smoke_rate", "edge_softness", "steam_rate", "chimney_given_smoke",
                     "chimney_given_no_smoke", "alpha_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 < self.smoke_coverage < 0.6:
            raise ValueError(f"smoke_coverage must be in (0, 0.6), got {self.smoke_coverage}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32, got {self.size}")


@dataclass
class SyntheticImage:
    """One rendered scene with everything known about it."""

    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # uint8 HxW, 1 smoke
    label: int
    chimney: np.ndarray  # bool HxW
    steam: np.ndarray  # bool HxW
    smoke_alpha: np.ndarray  # float32 HxW, smoke opacity in [0, 1]
    meta: dict[str, object] = field(default_factory=dict)


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Fractal (1/f) noise tiles, zero mean, unit std, shape (_BANK_SIZE, 2 size, 2 size).

    FFT noise is periodic, so each tile is repeated 2x2: any size x size window of it is a
    seamless texture and can be taken as a view, without copying.
    """
    rng = np.random.default_rng(20240611)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freq = np.sqrt(fy**2 + fx**2)
    freq[0, 0] = 1.0
    bank = np.empty((_BANK_SIZE, size, size), np.float32)
    for i in range(_BANK_SIZE):
        beta = 1.6 + 0.8 * (i % 3) / 2  # 1.6 .. 2.4: from grainy to cloudy
        spectrum = np.fft.rfft2(rng.standard_normal((size, size))) / freq**(beta / 1.0)
        spectrum[0, 0] = 0.0
        tile = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
        bank[i] = (tile - tile.mean()) / (tile.std() + 1e-8)
    return np.tile(bank, (1, 2, 2))


def _texture(rng: np.random.Generator, bank: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random (h, w) view of a random bank tile (rolled and maybe flipped)."""
    tile = bank[rng.integers(len(bank))]
    n = tile.shape[0] // 2
    y, x = int(rng.integers(n)), int(rng.integers(n))
    view = tile[y:y + h, x:x + w]
    return view[:, ::-1] if rng.random() < 0.5 else view


def _sky(rng: np.random.Generator, bank: np.ndarray, s: int) -> np.ndarray:
    kind = rng.choice(4, p=[0.35, 0.35, 0.15, 0.15])
    if kind == 0:    # clear blue
        top, bottom = np.array((70, 120, 190)), np.array((165, 195, 225))
    elif kind == 1:  # overcast grey: the hard case for grey smoke
        g = rng.uniform(140, 200)
        top, bottom = np.array((g - 10, g - 5, g)), np.array((g + 15, g + 15, g + 18))
    elif kind == 2:  # haze
        top, bottom = np.array((150, 160, 170)), np.array((200, 200, 195))
    else:            # low sun
        top, bottom = np.array((90, 110, 160)), np.array((230, 180, 130))
    top = (top + rng.normal(0, 12, 3)).astype(np.float32)
    bottom = (bottom + rng.normal(0, 12, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[None, :, None]
    amount = np.float32(rng.uniform(0, 14) if kind != 0 else rng.uniform(0, 8))
    clouds = _texture(rng, bank, s, s) * amount
    # channels first: a 2D layer broadcasts over channels with contiguous inner loops
    return (top[:, None, None] * (1 - t) + bottom[:, None, None] * t) + clouds[None]


def _skyline(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column skyline height (row of the roof) and a per-column shade factor."""
    base = rng.uniform(0.55, 0.8) * s
    roof = np.full(s, base, np.float32)
    shade = np.ones(s, np.float32)
    x = 0
    while x < s:
        width = int(rng.integers(max(4, s // 20), max(6, s // 4)))
        kind = rng.random()
        height = rng.uniform(0.02, 0.22) * s
        top = base - height
        if kind < 0.2:  # blast furnace: a tall tapered tower
            width = max(6, width // 2)
            xs = np.arange(width)
            taper = np.abs(xs - width / 2) / (width / 2)
            seg = top - 0.12 * s * (1 - taper**2)
        elif kind < 0.35:  # gas holder / tank: a dome
            xs = np.arange(width)
            seg = top + 0.06 * s * ((xs - width / 2) / (width / 2 + 1e-6)) ** 2
        else:  # hall with a flat or pitched roof
            seg = np.full(width, top, np.float32)
            if rng.random() < 0.4:
                seg = seg - np.minimum(np.arange(width), np.arange(width)[::-1]) * 0.15
        end = min(s, x + width)
        roof[x:end] = np.minimum(roof[x:end], seg[: end - x])
        shade[x:end] = rng.uniform(0.7, 1.15)
        x = end + int(rng.integers(0, max(1, s // 30)))
    return roof, shade


def _plume(rng: np.random.Generator, bank: np.ndarray, s: int, x0: float, y0: float,
           length: float, width0: float, softness: float, density: float,
           lean: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Opacity of a plume rising from (x0, y0), inside its bounding box."""
    spread = width0 * rng.uniform(1.2, 2.4)
    y_top = max(0.0, y0 - length)
    x_shift = lean * length
    x_lo = int(max(0, min(x0, x0 + x_shift) - (width0 + spread) * 1.6 - 2))
    x_hi = int(min(s, max(x0, x0 + x_shift) + (width0 + spread) * 1.6 + 3))
    y_lo, y_hi = int(y_top), int(min(s, y0 + 2))
    if x_hi - x_lo < 2 or y_hi - y_lo < 2:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    yy = np.arange(y_lo, y_hi, dtype=np.float32)[:, None]
    xx = np.arange(x_lo, x_hi, dtype=np.float32)[None, :]
    t = np.clip((y0 - yy) / max(length, 1.0), 0.0, 1.0)  # 0 at the source, 1 at the top
    centre = x0 + x_shift * t**1.4 + 0.15 * width0 * np.sin(6.0 * t + rng.uniform(0, 6.3))
    half = width0 * 0.5 + spread * t
    r = np.abs(xx - centre) / half
    h, w = r.shape
    tex = _texture(rng, bank, h, w)
    r = r * np.maximum(1.0 + 0.25 * tex, 0.2)  # ragged, fractal edges
    sharp = 2.0 + 10.0 * (1.0 - softness)  # profile exponent: high = crisp edge
    profile = np.exp(-(r**sharp))
    fade = (1.0 - t**2) * np.clip((y0 - yy) / 3.0 + 0.3, 0.0, 1.0)
    alpha = density * profile * fade * np.clip(1.0 + 0.35 * _texture(rng, bank, h, w), 0, 1.6)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32), (slice(y_lo, y_hi), slice(x_lo, x_hi))


def render(index: int, seed: int, config: SyntheticConfig | None = None) -> SyntheticImage:
    """Render scene ``index`` of the stream ``seed`` (deterministic on any machine)."""
    cfg = config or SyntheticConfig()
    s = cfg.size
    rng = np.random.default_rng([seed, index, 0x5EED])
    bank = _noise_bank(s)
    has_smoke = rng.random() < cfg.smoke_rate
    has_steam = rng.random() < cfg.steam_rate
    p_chimney = cfg.chimney_given_smoke if has_smoke else cfg.chimney_given_no_smoke
    has_chimney = rng.random() < p_chimney

    image = _sky(rng, bank, s)
    roof, shade = _skyline(rng, s)
    rows = np.arange(s, dtype=np.float32)[:, None]
    ground = rows >= roof[None, :]
    tint = (np.array((70, 66, 62)) + rng.normal(0, 10, 3)).astype(np.float32)
    wall = shade[None, :] * (1.0 - 0.25 / s * rows) + _texture(rng, bank, s, s) * 0.14
    image = np.where(ground[None], wall[None] * tint[:, None, None], image)  # (3, s, s)

    chimney = np.zeros((s, s), bool)
    tops: list[tuple[float, float, float]] = []  # (x, y, width) of chimney tops
    if has_chimney:
        for _ in range(int(rng.integers(1, 4))):
            cw = max(2.0, rng.uniform(0.012, 0.03) * s)
            cx = rng.uniform(0.1, 0.9) * s
            x_lo, x_hi = int(cx - cw / 2), int(cx + cw / 2) + 1
            base = float(roof[int(np.clip(cx, 0, s - 1))])
            top = max(2.0, base - rng.uniform(0.12, 0.4) * s)
            chimney[int(top):int(base) + 1, max(0, x_lo):min(s, x_hi)] = True
            tops.append((cx, top, cw))
        colour = np.array((95, 85, 80), np.float32) + rng.normal(0, 12, 3)
        image[:, chimney] = colour[:, None]
        if rng.random() < 0.5:  # red-white bands near the top
            top_row = int(min(t[1] for t in tops))
            rows_int = np.arange(s)[:, None]
            striped = ((rows_int // max(2, s // 40)) % 2 == 0) & (rows_int < top_row + 0.08 * s)
            image[:, chimney & striped] = np.array((170, 60, 50), np.float32)[:, None]

    def sources(n: int) -> list[tuple[float, float, float]]:
        if tops:
            return [tops[int(rng.integers(len(tops)))] for _ in range(n)]
        out = []
        for _ in range(n):  # a plume rising from behind the skyline, no chimney in sight
            x = rng.uniform(0.1, 0.9) * s
            out.append((x, float(roof[int(x)]) + 2.0, rng.uniform(0.015, 0.035) * s))
        return out

    steam_alpha = np.zeros((s, s), np.float32)
    if has_steam:
        for x, y, w in sources(int(rng.integers(1, 3))):
            a, box = _plume(rng, bank, s, x, y, rng.uniform(0.2, 0.45) * s, w * 2.5,
                            softness=0.35, density=rng.uniform(0.8, 1.0),
                            lean=rng.uniform(-0.3, 0.3))
            region = image[(slice(None), *box)]
            region += (STEAM_COLOUR[:, None, None] - region) * a[None]
            steam_alpha[box] = np.maximum(steam_alpha[box], a)

    smoke_alpha = np.zeros((s, s), np.float32)
    if has_smoke:
        n = int(rng.integers(1, 3))
        target = cfg.smoke_coverage * s * s / n
        for x, y, w in sources(n):
            # area of a plume ~ length x its mean width (~1.6 width at the source)
            aspect = rng.uniform(1.5, 4.5)
            length = float(np.clip(np.sqrt(target * aspect / 1.6), 0.12 * s, 0.95 * s))
            width = float(np.clip(target / (1.6 * length), max(2.0, w), 0.3 * s))
            a, box = _plume(rng, bank, s, x, y, length, width, cfg.edge_softness,
                            density=rng.uniform(0.55, 0.9), lean=rng.uniform(-1.2, 1.2))
            colour = SMOKE_COLOURS[rng.integers(len(SMOKE_COLOURS))] + rng.normal(0, 8, 3)
            region = image[(slice(None), *box)]
            region += (colour.astype(np.float32)[:, None, None] - region) * a[None]
            smoke_alpha[box] = np.maximum(smoke_alpha[box], a)

    # camera: exposure, contrast, sensor noise
    contrast = np.float32(rng.uniform(0.85, 1.1))
    offset = np.float32(128.0 * (rng.uniform(0.85, 1.15) - contrast))
    noise = _texture(rng, bank, s, s) * np.float32(rng.uniform(1.0, 4.0)) + offset
    image *= contrast
    image += noise[None]
    image_u8 = np.ascontiguousarray(np.clip(image, 0, 255, out=image).astype(np.uint8)
                                    .transpose(1, 2, 0))

    mask = (smoke_alpha > cfg.alpha_threshold).astype(np.uint8)
    steam = (steam_alpha > cfg.alpha_threshold) & (mask == 0)
    return SyntheticImage(image=image_u8, mask=mask, label=int(mask.any()), chimney=chimney,
                          steam=steam, smoke_alpha=smoke_alpha,
                          meta={"smoke": has_smoke, "steam": has_steam, "chimney": has_chimney})


def generate(n: int, seed: int, config: SyntheticConfig | None = None,
             start: int = 0) -> list[Sample]:
    """``n`` scenes (indices ``start`` ... ``start + n - 1``) as `Sample` objects."""
    out = []
    for index in range(start, start + n):
        item = render(index, seed, config)
        out.append(Sample(f"syn-{seed}-{index:05d}", item.image, item.label, item.mask,
                          {"chimney": item.chimney, "steam": item.steam}))
    return out
