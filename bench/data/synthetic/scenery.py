"""The background of a scene: sky, skylines, buildings, furnace, masts, chimneys, trees.

Everything here is drawn before the plumes; chimneys come from their own random stream.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from bench.data.synthetic.canvas import _Canvas, _clamp, _grid, _runs, _segment_distance
from bench.data.synthetic.draws import F32, _Draws
from bench.data.synthetic.textures import _Bank, _crop

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
_SKY_CUMULATIVE = np.cumsum([0.32, 0.3, 0.14, 0.1, 0.14]).tolist()


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
