"""The report's charts, drawn with matplotlib (no pyplot: each chart is its own `Figure`).

- `leaderboard_chart`: per data set, mIoU and smoke IoU of each method as bars with their 95%
  interval as whiskers; baselines (``random``, ``all_smoke``, ``all_background``) and the
  supervised upper bound as vertical reference lines instead of bars;
- `ablation_chart`: a pipeline's stages (base, +stage, ...) as bars with whiskers;
- `distractor_chart`: each method's share of map mass on chimney and steam pixels, with the
  share a uniform map would put there as a reference line.

Values are fractions (records' raw floats); axes show percent. `png` renders a figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

#: bar colours of the two metrics
METRIC_COLOURS = {"mIoU": "#4c72b0", "IoU_smoke": "#dd8452"}
METRIC_TITLES = {"mIoU": "mIoU (%)", "IoU_smoke": "smoke IoU (%)"}
UPPER_COLOUR = "#2ca02c"
BASELINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))


@dataclass
class Bar:
    """One bar of a chart: its label and each metric's value with its interval (fractions;
    None where a number is unknown)."""

    label: str
    values: dict[str, float | None]
    intervals: dict[str, tuple[float | None, float | None]]


@dataclass
class Reference:
    """A reference level drawn as a line: a baseline or the upper bound (``kind``)."""

    label: str
    kind: str  # "baseline" or "upper"
    values: dict[str, float | None]


def _pct(value: float | None) -> float:
    return math.nan if value is None else 100.0 * float(value)


def _whiskers(bars: Sequence[Bar], metric: str) -> list[list[float]]:
    lows, highs = [], []
    for bar in bars:
        v = bar.values.get(metric)
        lo, hi = bar.intervals.get(metric, (None, None))
        if v is None or lo is None or hi is None:
            lows.append(0.0)
            highs.append(0.0)
        else:
            lows.append(max(0.0, _pct(v) - _pct(lo)))
            highs.append(max(0.0, _pct(hi) - _pct(v)))
    return [lows, highs]


def _bar_height(n: int) -> float:
    return 0.9 + 0.28 * max(n, 1)


def leaderboard_chart(bars: Sequence[Bar], references: Sequence[Reference], title: str,
                      metrics: Sequence[str] = ("mIoU", "IoU_smoke")) -> Figure:
    """One panel per metric: a horizontal bar per method (first on top) with whiskers, and a
    vertical line per reference level, labelled in the legend."""
    extra = 0.22 * max(1, len(references))  # room for the legend under each panel
    fig = Figure(figsize=(10.0, _bar_height(len(bars)) + 0.9 + extra), layout="tight")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    ys = list(range(len(bars)))[::-1]
    for ax, metric in zip(axes, metrics, strict=True):
        values = [_pct(b.values.get(metric)) for b in bars]
        ax.barh(ys, [0.0 if math.isnan(v) else v for v in values],
                xerr=_whiskers(bars, metric), color=METRIC_COLOURS.get(metric, "#777777"),
                ecolor="#222222", capsize=2.5, height=0.7)
        baseline_n = 0
        for ref in references:
            value = ref.values.get(metric)
            if value is None:
                continue
            if ref.kind == "upper":
                ax.axvline(_pct(value), color=UPPER_COLOUR, linewidth=2.0,
                           label=f"{ref.label} (upper bound) {_pct(value):.1f}")
            else:
                style = BASELINE_STYLES[baseline_n % len(BASELINE_STYLES)]
                baseline_n += 1
                ax.axvline(_pct(value), color="#555555", linestyle=style, linewidth=1.3,
                           label=f"{ref.label} (baseline) {_pct(value):.1f}")
        ax.set_title(METRIC_TITLES.get(metric, metric))
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
        if references:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), fontsize=7, ncol=1,
                      frameon=False)
    axes[0].set_yticks(ys, [b.label for b in bars], fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def ablation_chart(bars: Sequence[Bar], title: str,
                   metrics: Sequence[str] = ("mIoU", "IoU_smoke")) -> Figure:
    """A pipeline's stages top to bottom (base, +stage, ...), grouped bars per metric with
    their 95% whiskers."""
    fig = Figure(figsize=(7.0, _bar_height(len(bars)) + 0.4), layout="tight")
    ax = fig.add_subplot()
    n = len(metrics)
    height = 0.8 / n
    base = list(range(len(bars)))[::-1]
    for k, metric in enumerate(metrics):
        ys = [y + (n - 1 - 2 * k) * height / 2 for y in base]
        values = [_pct(b.values.get(metric)) for b in bars]
        ax.barh(ys, [0.0 if math.isnan(v) else v for v in values], height=height,
                xerr=_whiskers(bars, metric), color=METRIC_COLOURS.get(metric, "#777777"),
                ecolor="#222222", capsize=2.5, label=METRIC_TITLES.get(metric, metric))
        for y, v in zip(ys, values, strict=True):
            if not math.isnan(v):
                ax.text(v + 1, y, f"{v:.1f}", va="center", fontsize=7)
    ax.set_yticks(base, [b.label for b in bars], fontsize=8)
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title, fontsize=10)
    return fig


def distractor_chart(rows: Sequence[tuple[str, dict[str, dict[str, float | None]]]],
                     uniform: dict[str, float], title: str,
                     names: Sequence[str] = ("chimney", "steam"),
                     series: Sequence[str] = ("cam", "final")) -> Figure:
    """One panel per distractor mask: for each method, the share of its maps' mass on that
    mask, one bar per stage in ``series`` (its CAM, its final stage), and the share a uniform
    map would put there (dashed line: a map no better than chance).

    ``rows`` holds (method, {series: {mask name: share}}); a missing share draws no bar.
    """
    fig = Figure(figsize=(10.0, _bar_height(len(rows) * len(series) * 0.6) + 0.6),
                 layout="tight")
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    base = list(range(len(rows)))[::-1]
    height = 0.8 / len(series)
    colours = {"cam": "#6a3d9a", "final": "#b2a0d0"}
    for ax, name in zip(axes, names, strict=True):
        for k, what in enumerate(series):
            ys = [y + (len(series) - 1 - 2 * k) * height / 2 for y in base]
            values = [_pct(shares.get(what, {}).get(name)) for _, shares in rows]
            ax.barh(ys, [0.0 if math.isnan(v) else v for v in values], height=height,
                    color=colours.get(what, "#777777"),
                    label=f"{'CAM' if what == 'cam' else what} stage")
        if name in uniform:
            ax.axvline(100.0 * uniform[name], color="#333333", linestyle="--",
                       label=f"uniform map {100.0 * uniform[name]:.1f}")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(f"share of map mass on {name} pixels (%)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].set_yticks(base, [label for label, _ in rows], fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def png(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
