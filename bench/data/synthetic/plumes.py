"""Smoke and steam plumes: sources, sizes, opacity, texture and compositing onto the scene.

The plume-size calibration (``_COVERAGE_TABLE``) and the smoke colours live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.data.synthetic.canvas import _Canvas, _clamp, _grid
from bench.data.synthetic.config import SyntheticConfig
from bench.data.synthetic.draws import F32, _Draws
from bench.data.synthetic.textures import _Bank

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
# Measured mean mask coverage of smoky images (first row) for the plume-size parameter (second
# row), at 128 and 256 px (they agree within a few percent); render inverts it. Overlapping
# plumes and frame borders make it concave; plumes fill the sky at about 0.3.
_COVERAGE_TABLE = (
    (0.0, 0.0081, 0.015, 0.0277, 0.0425, 0.055, 0.0729, 0.0889, 0.1183, 0.1429, 0.1815, 0.226,
     0.2585, 0.291, 0.315),
    (0.0, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0),
)


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
