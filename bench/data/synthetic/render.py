"""Rendering: one scene from its streams, and `generate` / `contact_sheet` over many.

`render` draws the scenery, the chimneys, steam, smoke, then passes the canvas through the
camera (haze, exposure, white balance, vignetting, blur, grain, tone curve) to uint8 RGB.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.data.synthetic.canvas import _Canvas, _clamp
from bench.data.synthetic.config import SyntheticConfig, SyntheticImage
from bench.data.synthetic.draws import F32, _Draws
from bench.data.synthetic.plumes import _smoke, _steam
from bench.data.synthetic.scenery import (
    STRUCTURE_COLOURS,
    _block_rows,
    _buildings,
    _Chimney,
    _chimney_layout,
    _draw_chimneys,
    _far_skyline,
    _foreground,
    _furnace,
    _ground_band,
    _masts,
    _sky,
)
from bench.data.synthetic.textures import _Bank, _bank, _crop
from bench.sample import Sample


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


@lru_cache(maxsize=4)
def _radius2(h: int, w: int) -> np.ndarray:
    """Squared distance from the image centre, 1 at the corners (for vignetting)."""
    y = (np.arange(h, dtype=F32) + F32(0.5)) / F32(h) - F32(0.5)
    x = (np.arange(w, dtype=F32) + F32(0.5)) / F32(w) - F32(0.5)
    return (y[:, None] * y[:, None] + x[None, :] * x[None, :]) * F32(2.0)


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
