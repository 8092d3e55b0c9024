"""``bench report``: one self-contained HTML page (``<out>/report.html``) over a run folder.

Per data set, split, profile and seed (a *group*), in this order:

- a **leaderboard** (`bench.table.leaderboard`, plus the smoke IoU interval), sortable by any
  column (a click on its header);
- a **bar chart** of mIoU and smoke IoU with their 95% intervals as whiskers, baselines and the
  supervised upper bound as reference lines (`bench.figures.leaderboard_chart`);
- **ablations**: every leaderboard pipeline with more than one stage as a chart (base, +stage,
  ...) and its `bench.table.ablation` table;
- **spurious correlations**: the share of CAM and final-map mass on chimney and steam pixels
  where records measured it (the synthetic set), against a uniform map's share;
- **qualitative grids**: each method's best, median and worst frame by smoke IoU, then a fixed
  set of frames shared by every method; columns image, ground truth, CAM heat map, pseudo
  labels and final mask as overlays, with the chimney and steam masks outlined where frames
  have them (`bench.overlays`).

Each section ends with the provenance of the records it shows (file, seed, profile, commit,
date). Images are embedded as ``data:`` URIs, so the file opens offline; a map that is not in
the cache is recomputed from the cached trained state (`bench.record_maps`), or shown as a
"missing" box that says why, never as a blank picture.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ConfigError
from bench.record_maps import (
    Missing,
    RunMaps,
    per_frame_iou,
    pick_best_median_worst,
    prefix_text,
)

#: longest side of a picture in the qualitative grids (pixels)
GRID_SIDE = 224
#: frames shared by every method in the side-by-side grids
SHARED_FRAMES = 4
COLUMNS = (("image", "image"), ("gt", "ground truth"), ("cam", "CAM heat map"),
           ("pseudo", "pseudo labels"), ("final", "final mask"))


@dataclass
class ReportStats:
    """What `build_report` put in the page (for the command's summary line and tests)."""

    images: int = 0
    missing: int = 0
    groups: int = 0
    rows: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- plugin facts
def _plugin_attr(name: str, attr: str, default: Any) -> Any:
    """A plugin class attribute read from its source file (no import, so no torch)."""
    from bench.plugins import METHODS, _registered_name
    from bench.source_scan import Unresolved, file_classes, read_attr

    try:
        entry = METHODS.entry(name)
    except ConfigError:
        return default
    origin = Path(entry.origin) if entry.origin else None
    if origin is not None and origin.suffix == ".py" and origin.is_file():
        try:
            for cls in file_classes(origin).values():
                if any(_registered_name(d) == name for d in cls.node.decorator_list):
                    return read_attr(cls, attr, default)
        except (Unresolved, SyntaxError):
            pass
    return getattr(METHODS.get(name).cls, attr, default)


def is_baseline(rec: dict[str, Any]) -> bool:
    """A record of a one-stage reference level (``baseline = True``: random, all_smoke, ...)."""
    stages = (rec.get("config") or {}).get("stages") or []
    return len(stages) == 1 and bool(_plugin_attr(stages[0]["name"], "baseline", False))


def is_upper_bound(rec: dict[str, Any]) -> bool:
    """A segmenter that runs alone: trained on ground-truth masks (``supervised``)."""
    stages = (rec.get("config") or {}).get("stages") or []
    return len(stages) == 1 and stages[0].get("kind") == "segmenter"


def stage_label(name: str) -> str:
    """How ablation rows name a plugin (its ``label``, else its name)."""
    from bench.plugins import METHODS

    try:
        return METHODS.entry(name).meta.get("label") or name
    except ConfigError:
        return name


# --------------------------------------------------------------------------- provenance
def provenance_line(rec: dict[str, Any], out: Path) -> str:
    """One line: the record's file (relative to the run folder), seed, profile, commit, date."""
    prov = rec.get("provenance") or {}
    git = prov.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    path = Path(rec.get("_path", ""))
    try:
        where = path.relative_to(out)
    except ValueError:
        where = path
    return (f"{where}: seed {rec['seed']}, profile {rec['profile']}, commit {commit}, "
            f"date {prov.get('date', 'unknown')}")


def provenance_html(records: Sequence[dict[str, Any]], out: Path) -> str:
    """The provenance block of a section: a summary line and every record's line."""
    if not records:
        return ""
    commits = sorted({((r.get("provenance") or {}).get("git") or {}).get("commit") or "unknown"
                      for r in records})
    dates = sorted((r.get("provenance") or {}).get("date", "") for r in records)
    seeds = sorted({str(r["seed"]) for r in records})
    profiles = sorted({str(r["profile"]) for r in records})
    summary = (f"Provenance: {len(records)} record(s); seed {', '.join(seeds)}; profile "
               f"{', '.join(profiles)}; commit {', '.join(c[:10] for c in commits)}; date "
               f"{dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""))
    lines = "".join(f"<li>{html.escape(provenance_line(r, out))}</li>" for r in records)
    return (f'<details class="prov"><summary>{html.escape(summary)}</summary>'
            f"<ul>{lines}</ul></details>")


# --------------------------------------------------------------------------- tables
def _html_table(table: Any, table_id: str, caption: str = "") -> str:
    """A pandas table as a sortable HTML table (every cell escaped)."""
    head = "".join(f'<th title="click to sort">{html.escape(str(c))}</th>'
                   for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="sortable" id="{table_id}">{cap}<thead><tr>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def leaderboard_table(df: Any, records: dict[str, dict[str, Any]]) -> Any:
    """`bench.table.leaderboard` of one group with a ``IoU_smoke 95% CI`` column after
    ``IoU_smoke`` and methods with a random-initialised stage marked ``†``."""
    from bench.table import _pct, leaderboard, mark_random

    table = leaderboard(df)
    if table.empty:
        return table
    ci = []
    for method in table["method"]:
        rec = records.get(method, {})
        lo, hi = (rec.get("ci") or {}).get("IoU_smoke", [None, None])
        ci.append("-" if rec.get("not_run") or lo is None else f"[{_pct(lo)}, {_pct(hi)}]")
    at = list(table.columns).index("IoU_smoke") + 1 if "IoU_smoke" in table else len(table.columns)
    table.insert(at, "IoU_smoke 95% CI", ci)
    table["method"] = mark_random(table["method"], table["weights"])
    return table


# --------------------------------------------------------------------------- pictures
class Pictures:
    """Encodes the pictures of the grids, counting them (and the missing ones)."""

    def __init__(self, maps: RunMaps, stats: ReportStats, side: int = GRID_SIDE) -> None:
        self.maps = maps
        self.stats = stats
        self.side = side
        self._base: dict[tuple[str, str, str], Any] = {}

    def img(self, picture: np.ndarray, alt: str) -> str:
        from bench.overlays import data_uri, encode

        self.stats.images += 1
        uri = data_uri(encode(picture, "JPEG", quality=82), "JPEG")
        return f'<img src="{uri}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'

    def missing(self, reason: str) -> str:
        self.stats.missing += 1
        return f'<div class="missing">missing: {html.escape(reason)}</div>'

    @staticmethod
    def not_applicable(reason: str) -> str:
        return f'<div class="na">{html.escape(reason)}</div>'

    def base(self, rec: dict[str, Any], frame_id: str) -> tuple[np.ndarray, Any, dict[str, Any],
                                                                 tuple[int, int]] | Missing:
        """The frame's display-sized image (outlined), mask and aux masks."""
        from bench.overlays import fit_size, shrink_image, shrink_map, shrink_mask

        frames = self.maps.frames(rec)
        if isinstance(frames, Missing):
            return frames
        memo = (rec["dataset"], rec["split"], frame_id)
        if memo not in self._base:
            view = frames.view(frame_id)
            size = fit_size(view.size, self.side)
            image = shrink_image(frames.image(frame_id), size)
            mask = None if view.mask is None else shrink_map(view.mask, size, labels=True)
            aux = {k: shrink_mask(v, size) for k, v in view.aux.items()}
            self._base[memo] = (image, mask, aux, size)
        return self._base[memo]

    def cell(self, rec: dict[str, Any], frame_id: str, column: str,
             roles: dict[str, Any]) -> str:
        """One picture of the grid: ``column`` of `COLUMNS` for frame ``frame_id``."""
        from bench.overlays import heat_overlay, label_overlay, outline, shrink_map

        base = self.base(rec, frame_id)
        if isinstance(base, Missing):
            return self.missing(base.reason)
        image, mask, aux, size = base
        if column == "image":
            return self.img(outline(image, aux), f"{frame_id}: image")
        if column == "gt":
            if mask is None:
                return self.not_applicable("no ground-truth mask")
            return self.img(outline(label_overlay(image, mask), aux), f"{frame_id}: ground truth")
        role = roles.get(column)
        if role is None:
            what = "no CAM" if column == "cam" else "no pseudo labels"
            return self.not_applicable(f"{what}: trained on ground-truth masks")
        if isinstance(role, Missing):
            return self.missing(role.reason)
        if column == "cam":
            soft = self.maps.frame_map(role, frame_id)
            if isinstance(soft, Missing):
                return self.missing(soft.reason)
            if role.get("output") == "labels":
                return self.img(outline(label_overlay(image, shrink_map(soft, size, True)), aux),
                                f"{frame_id}: {role['method']} (labels)")
            picture = heat_overlay(image, shrink_map(soft, size, labels=False))
            return self.img(outline(picture, aux), f"{frame_id}: CAM of {role['method']}")
        labels = self.maps.frame_labels(role, frame_id)
        if isinstance(labels, Missing):
            return self.missing(labels.reason)
        picture = label_overlay(image, shrink_map(labels, size, labels=True))
        return self.img(outline(picture, aux), f"{frame_id}: {column} of {role['method']}")


def _stage_note(role: Any) -> str:
    if role is None:
        return "-"
    if isinstance(role, Missing):
        return f"missing ({role.reason})"
    thr = (role.get("threshold") or {}).get("value")
    how = f"at threshold {thr:.2f}" if thr is not None and role.get("output") == "soft" \
        else "labels"
    return f"{role['method']} ({how}; cache key {role['config'].get('cache_key')})"


# --------------------------------------------------------------------------- the report
class ReportBuilder:
    """Builds the page section by section (see the module docstring)."""

    def __init__(self, out: Path, maps: RunMaps, methods: Sequence[str] = (),
                 datasets: Sequence[str] = (), shared: int = SHARED_FRAMES,
                 side: int = GRID_SIDE) -> None:
        self.out = Path(out)
        self.maps = maps
        self.methods = list(methods)
        self.datasets = list(datasets)
        self.shared = shared
        self.stats = ReportStats()
        self.pictures = Pictures(maps, self.stats, side)
        self._ids = 0

    def uid(self, stem: str) -> str:
        self._ids += 1
        return f"{stem}-{self._ids}"

    def selected(self, rec: dict[str, Any]) -> bool:
        if self.datasets and rec["dataset"] not in self.datasets:
            return False
        return not self.methods or any(fnmatch.fnmatch(rec["pipeline"], p)
                                       or fnmatch.fnmatch(rec["method"], p)
                                       for p in self.methods)

    # ------------------------------------------------------------- page
    def build(self) -> str:
        from bench.table import frame

        start = time.perf_counter()
        records = [r for r in self.maps.records if self.selected(r)]
        if not records:
            raise ConfigError(f"no records under {self.out / 'records'}"
                              + (" match --methods/--datasets" if self.maps.records else
                                 "; run 'bench run' first"))
        df = frame(records)
        keep = set(zip(df["method"], df["dataset"], df["train_dataset"], df["split"],
                       df["profile"], df["seed"], strict=True))
        records = [r for r in records if (r["method"], r["dataset"],
                   r.get("train_dataset", r["dataset"]), r["split"], r["profile"],
                   r["seed"]) in keep]  # the newest of duplicates, as tables do
        sections, toc = [], []
        in_domain = [r for r in records if r.get("train_dataset", r["dataset"]) == r["dataset"]]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for rec in in_domain:
            key = (rec["dataset"], rec["split"], rec["profile"], rec["seed"],
                   rec.get("level", "pixel"))
            groups.setdefault(key, []).append(rec)
        for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], int(k[3]), k[4])):
            anchor = self.uid("group")
            title = (f"{key[0]} / {key[1]} (profile {key[2]}, seed {key[3]}"
                     + (", image level)" if key[4] == "image" else ")"))
            toc.append(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>')
            sections.append(f'<section class="group" id="{anchor}"><h2>{html.escape(title)}'
                            f"</h2>{self.group(groups[key], image_level=key[4] == 'image')}"
                            "</section>")
            self.stats.groups += 1
        ood = [r for r in records if r.get("train_dataset", r["dataset"]) != r["dataset"]]
        if ood:
            anchor = self.uid("ood")
            toc.append(f'<li><a href="#{anchor}">out of distribution</a></li>')
            sections.append(f'<section id="{anchor}"><h2>Out of distribution</h2>'
                            f"{self.ood_section(records, ood)}</section>")
        self.stats.notes = list(self.maps.notes)
        self.stats.seconds = time.perf_counter() - start
        return page(self.out, "".join(toc), "".join(sections), self.stats)

    # ------------------------------------------------------------- a group
    def group(self, recs: list[dict[str, Any]], image_level: bool) -> str:
        from bench.table import frame, image_leaderboard, random_legend

        finals = [r for r in recs if r["method"] == r["pipeline"]]
        by_method = {r["method"]: r for r in recs}
        df = frame(recs)
        parts = ['<h3>Leaderboard</h3>']
        if image_level:
            table = image_leaderboard(df, mark=True)
            parts.append(_html_table(table, self.uid("leaderboard"), "image-level scores (%)"))
        else:
            table = leaderboard_table(df, by_method)
            parts.append(_html_table(table, self.uid("leaderboard"),
                                     "scores in %, best mIoU first; click a column to sort"))
        self.stats.rows += len(table)
        legend = random_legend(table)
        if legend:
            parts.append(f'<p class="legend">{html.escape(legend)}</p>')
        parts.append(provenance_html(finals, self.out))
        if image_level:
            return "".join(parts)
        parts.append(self.chart_section(finals))
        parts.append(self.ablation_section(finals))
        parts.append(self.distractor_section(finals))
        parts.append(self.grid_section(finals))
        return "".join(parts)

    def chart_section(self, finals: list[dict[str, Any]]) -> str:
        from bench.figures import Reference, leaderboard_chart, png

        ran = [r for r in finals if not r.get("not_run")]
        refs = [Reference(r["method"], "upper" if is_upper_bound(r) else "baseline",
                          dict(r["metrics"])) for r in ran
                if is_upper_bound(r) or is_baseline(r)]
        ref_names = {ref.label for ref in refs}
        bars = [_bar(r, r["method"]) for r in sorted(ran, key=lambda r: -_metric(r, "mIoU"))
                if r["method"] not in ref_names]
        if not bars and not refs:
            return ""
        rec0 = ran[0]
        fig = leaderboard_chart(bars, refs, f"{rec0['dataset']} / {rec0['split']}: mIoU and "
                                "smoke IoU with 95% intervals")
        return (f'<h3>Bar chart</h3><figure>{self._figure(png(fig), "bar chart")}<figcaption>'
                "Bars: methods; whiskers: 95% bootstrap intervals over frames; lines: baselines "
                "(grey) and the supervised upper bound (green).</figcaption></figure>"
                + provenance_html(ran, self.out))

    def _figure(self, payload: bytes, alt: str) -> str:
        from bench.overlays import data_uri

        self.stats.images += 1
        return f'<img class="chart" src="{data_uri(payload, "PNG")}" alt="{html.escape(alt)}">'

    def ablation_section(self, finals: list[dict[str, Any]]) -> str:
        from bench.figures import ablation_chart, png

        parts = []
        for rec in finals:
            stages = (rec.get("config") or {}).get("stages") or []
            if len(stages) < 2 or rec.get("not_run"):
                continue
            bars, rows, used = [], [], []
            for n in range(1, len(stages) + 1):
                sub = self.maps.stage_record(rec, n - 1)
                label = prefix_text(rec["method"], 1) if n == 1 else \
                    f"+{stage_label(stages[n - 1]['name'])}"
                rows.append(ablation_row(label, sub))
                if sub is None or sub.get("not_run"):
                    bars.append(_bar({}, f"{label} (not run)" if sub else
                                     f"{label} (no record)"))
                    continue
                bars.append(_bar(sub, label))
                used.append(sub)
            fig = ablation_chart(bars, rec["method"])
            table = pd.DataFrame(rows)
            parts.append(f'<div class="ablation"><h4>{html.escape(rec["method"])}</h4>'
                         f'{self._figure(png(fig), "ablation of " + rec["method"])}'
                         f'{_html_table(table, self.uid("ablation"))}'
                         f"{provenance_html(used, self.out)}</div>")
        if not parts:
            return ""
        return ("<h3>Ablations</h3><p>Each pipeline with more than one stage: its base, then "
                "one row per added stage (in %), as <code>bench table --ablation</code> shows "
                "it.</p>" + "".join(parts))

    def distractor_section(self, finals: list[dict[str, Any]]) -> str:
        from bench.figures import distractor_chart, png

        rows, used = [], []
        for rec in finals:
            if rec.get("not_run"):
                continue
            cam = self.maps.roles(rec).get("cam")
            shares = {"final": dict(rec.get("distractors") or {})}
            if isinstance(cam, dict):
                shares["cam"] = dict(cam.get("distractors") or {})
                used.append(cam)
            if any(shares.values()):
                rows.append((rec["method"], shares))
                used.append(rec)
        if not rows:
            return ""
        names = sorted({k for _, s in rows for d in s.values() for k in d})
        uniform = self.uniform_shares(finals[0], names)
        fig = distractor_chart(rows, uniform, f"{finals[0]['dataset']} / {finals[0]['split']}: "
                               "map mass on distractors (lower is better)", names=names)
        return ("<h3>Spurious correlations</h3><p>Share of each method's map mass on chimney "
                "and steam pixels: a CAM that learned “chimney” instead of “smoke” puts its "
                "mass there. Dashed: the share a uniform map would have (the pixel share of "
                f"the mask).</p>{self._figure(png(fig), 'distractor shares')}"
                + provenance_html(used, self.out))

    def uniform_shares(self, rec: dict[str, Any], names: Sequence[str]) -> dict[str, float]:
        """Each aux mask's share of the scored frames' pixels (a uniform map's share)."""
        frames = self.maps.frames(rec)
        if isinstance(frames, Missing):
            return {}
        total = 0
        counts = dict.fromkeys(names, 0)
        for view in frames.views:
            total += view.size[0] * view.size[1]
            for name in names:
                if name in view.aux:
                    counts[name] += int(np.count_nonzero(view.aux[name]))
        return {k: v / total for k, v in counts.items()} if total else {}

    # ------------------------------------------------------------- grids
    def grid_section(self, finals: list[dict[str, Any]]) -> str:
        ran = [r for r in finals if not r.get("not_run")]
        if not ran:
            return ""
        frames = self.maps.frames(ran[0])
        if isinstance(frames, Missing):
            return ("<h3>Qualitative</h3>" + self.pictures.missing(frames.reason))
        parts = ["<h3>Qualitative: best, median and worst frame of each method</h3>",
                 LEGEND]
        for rec in sorted(ran, key=lambda r: -_metric(r, "mIoU")):
            parts.append(self.method_grid(rec))
        parts.append(self.shared_grid(ran, frames))
        return "".join(parts)

    def method_grid(self, rec: dict[str, Any]) -> str:
        ids, iou, union = per_frame_iou(Path(rec["_path"]))
        picks = pick_best_median_worst(ids, iou, union)
        roles = self.maps.roles(rec)
        head = "".join(f"<th>{html.escape(t)}</th>" for _, t in COLUMNS)
        rows = []
        score = dict(zip(ids, iou, strict=True))
        for which, frame_id in picks.items():
            cells = "".join(f"<td>{self.pictures.cell(rec, frame_id, c, roles)}</td>"
                            for c, _ in COLUMNS)
            rows.append(f'<tr><th class="rowhead">{which}<br><code>{html.escape(frame_id)}'
                        f"</code><br>smoke IoU {100 * score[frame_id]:.1f}</th>{cells}</tr>")
        if not rows:
            rows.append(f'<tr><td colspan="{len(COLUMNS) + 1}">no frame has smoke in its mask '
                        "or its prediction: smoke IoU is undefined on every frame</td></tr>")
        notes = "".join(f"<li>{c}: {html.escape(_stage_note(roles.get(c)))}</li>"
                        for c in ("cam", "pseudo", "final"))
        return (f'<div class="method"><h4>{html.escape(rec["method"])}</h4>'
                f'<table class="grid"><thead><tr><th></th>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table><ul class=\"stages\">{notes}</ul>"
                f"{provenance_html([r for r in roles.values() if isinstance(r, dict)], self.out)}"
                "</div>")

    def shared_grid(self, recs: list[dict[str, Any]], frames: Any) -> str:
        chosen = shared_frames(frames, self.shared)
        parts = [f"<h3>Qualitative: {len(chosen)} frames shared by every method</h3>"]
        for frame_id in chosen:
            first = recs[0]
            head = (f"<tr><td>{self.pictures.cell(first, frame_id, 'image', {})}</td>"
                    f"<td>{self.pictures.cell(first, frame_id, 'gt', {})}</td></tr>")
            rows = []
            for rec in recs:
                roles = self.maps.roles(rec)
                cells = "".join(f"<td>{self.pictures.cell(rec, frame_id, c, roles)}</td>"
                                for c in ("cam", "pseudo", "final"))
                rows.append(f'<tr><th class="rowhead">{html.escape(rec["method"])}</th>{cells}'
                            "</tr>")
            parts.append(f'<div class="shared"><h4><code>{html.escape(frame_id)}</code></h4>'
                         f'<table class="grid"><thead><tr><th>image</th><th>ground truth</th>'
                         f"</tr></thead><tbody>{head}</tbody></table>"
                         '<table class="grid"><thead><tr><th></th><th>CAM heat map</th>'
                         "<th>pseudo labels</th><th>final mask</th></tr></thead>"
                         f"<tbody>{''.join(rows)}</tbody></table></div>")
        parts.append(provenance_html(recs, self.out))
        return "".join(parts)

    # ------------------------------------------------------------- OOD
    def ood_section(self, records: list[dict[str, Any]], ood: list[dict[str, Any]]) -> str:
        from bench.table import frame, ood_table

        trains = {r["train_dataset"] for r in ood}
        df = frame([r for r in records if r.get("train_dataset", r["dataset"]) in trains])
        parts = []
        for (profile, seed, split), sub in df.groupby(["profile", "seed", "split"]):
            table = ood_table(sub)
            self.stats.rows += len(table)
            parts.append(_html_table(table, self.uid("ood"), f"split {split}, profile "
                                     f"{profile}, seed {seed}: in-domain score, then each "
                                     "other data set with its difference (%)"))
        return "".join(parts) + provenance_html(ood, self.out)


def shared_frames(frames: Any, n: int) -> list[str]:
    """``n`` frames every method is shown on: half with smoke in their mask, half without,
    evenly spaced through each half in frame-id order (the same frames on every run of the
    same data)."""
    with_smoke = sorted(v.id for v in frames.views if v.mask is not None and (v.mask == 1).any())
    without = sorted(v.id for v in frames.views if v.id not in set(with_smoke))
    want_smoke = min(len(with_smoke), max(n - len(without), (n + 1) // 2))
    want_none = min(len(without), n - want_smoke)

    def spaced(ids: list[str], k: int) -> list[str]:
        return [ids[(2 * j + 1) * len(ids) // (2 * k)] for j in range(k)] if k else []

    return spaced(with_smoke, want_smoke) + spaced(without, want_none)


def _metric(rec: dict[str, Any], name: str) -> float:
    value = (rec.get("metrics") or {}).get(name)
    return -math.inf if value is None else float(value)


def ablation_row(label: str, rec: dict[str, Any] | None,
                 metrics: Sequence[str] = ("mIoU", "IoU_smoke", "precision", "recall")
                 ) -> dict[str, str]:
    """One row of an ablation table (`bench.table.ablation`'s columns, with the mIoU and smoke
    IoU intervals): a stage's scores in %, or why it has none."""
    from bench.table import _pct

    row = {"pipeline": label}
    ci = (rec or {}).get("ci") or {}
    for j, m in enumerate(metrics):
        if rec is None:
            row[m] = "no record" if j == 0 else "-"
        elif rec.get("not_run"):
            row[m] = str(rec["not_run"]) if j == 0 else "-"
        else:
            row[m] = _pct((rec.get("metrics") or {}).get(m))
        if m in ("mIoU", "IoU_smoke"):
            lo, hi = ci.get(m, (None, None))
            row[f"{m} 95% CI"] = "-" if lo is None else f"[{_pct(lo)}, {_pct(hi)}]"
    return row


def _bar(rec: dict[str, Any], label: str) -> Any:
    from bench.figures import Bar

    metrics = rec.get("metrics") or {}
    ci = rec.get("ci") or {}
    return Bar(label, {m: metrics.get(m) for m in ("mIoU", "IoU_smoke")},
               {m: tuple(ci.get(m, (None, None))) for m in ("mIoU", "IoU_smoke")})


LEGEND = ('<p class="legend">Overlays: <span class="sw smoke"></span> smoke, '
          '<span class="sw ignore"></span> ignore (255), heat map: matplotlib “turbo” (blue 0 → '
          'red 1); outlines: <span class="sw chimney"></span> chimney, '
          '<span class="sw steam"></span> steam (synthetic set). Soft maps are binarised at '
          "the threshold their record reports.</p>")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;
max-width:1400px}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #4c72b0;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
table.sortable th{cursor:pointer;background:#eef2f8;position:sticky;top:0}
table.sortable th:hover{background:#dde5f2}
caption{caption-side:top;text-align:left;color:#555;font-size:12px;padding:2px 0}
table.grid td{padding:2px} table.grid img{display:block}
.rowhead{font-weight:normal;font-size:12px;max-width:14em;word-break:break-all}
.missing,.na{width:180px;min-height:60px;padding:6px;font-size:11px;box-sizing:border-box}
.missing{border:2px dashed #c00;color:#900;background:#fff0f0}
.na{border:1px dashed #999;color:#666;background:#f6f6f6}
img.chart{max-width:100%;height:auto} div.scroll{overflow-x:auto;max-width:100%}
details.prov{font-size:12px;color:#555;margin:.3em 0 1em}
.legend{font-size:12px;color:#444}
.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;border:1px solid #888}
.sw.smoke{background:rgb(255,48,48)} .sw.ignore{background:rgb(255,214,0)}
.sw.chimney{background:rgb(0,229,255)} .sw.steam{background:rgb(255,0,255)}
ul.stages{font-size:12px;color:#444;margin:.2em 0}
.method,.shared,.ablation{margin-bottom:1.5em}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('thead th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var down = th.getAttribute('data-dir') !== 'desc';
      table.querySelectorAll('thead th').forEach(function(o){o.removeAttribute('data-dir');});
      th.setAttribute('data-dir', down ? 'desc' : 'asc');
      function key(row){
        var text = row.cells[col].textContent.trim();
        var m = text.match(/^[\\[(]?\\s*([+-]?\\d+(?:\\.\\d+)?)/);
        return m ? [0, parseFloat(m[1])] : [1, text.toLowerCase()];
      }
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (x[0] !== y[0]) return x[0] - y[0];
        var c = x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
        return (x[0] === 0 && down) ? -c : c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def page(out: Path, toc: str, body: str, stats: ReportStats) -> str:
    """The whole HTML document."""
    from bench import __version__
    from bench.provenance import git_state

    git = git_state()
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in stats.notes)
    notes_html = f'<details class="prov"><summary>Notes ({len(stats.notes)})</summary>' \
        f"<ul>{notes}</ul></details>" if notes else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>smoke-wsss-bench report: {html.escape(str(out))}</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>smoke-wsss-bench report</h1>"
            f"<p>Run folder <code>{html.escape(str(out))}</code>; written {now} by bench "
            f"{html.escape(__version__)} at commit {html.escape(commit)}. Numbers come from "
            "the records under <code>records/</code>, maps from <code>cache/</code>.</p>"
            f"{notes_html}<nav><ul>{toc}</ul></nav>{body}"
            f"<script>{SCRIPT}</script></body></html>")


def write_report(out: Path, output: Path | None = None, methods: Sequence[str] = (),
                 datasets: Sequence[str] = (), data_roots: dict[str, str] | None = None,
                 regenerate: bool = True, shared: int = SHARED_FRAMES) -> tuple[Path, ReportStats]:
    """Build the report of run folder ``out`` and write it (atomically) to ``output``
    (default ``<out>/report.html``); returns the path and what it holds."""
    from bench.atomic import atomic_path

    output = Path(output) if output else Path(out) / "report.html"
    with RunMaps(Path(out), data_roots, regenerate) as maps:
        builder = ReportBuilder(Path(out), maps, methods, datasets, shared)
        text = builder.build()
        maps.print_notes()
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return output, builder.stats


def summary_line(path: Path, stats: ReportStats) -> str:
    """What ``bench report`` prints when done."""
    size = path.stat().st_size / 2**20
    missing = f", {stats.missing} missing map(s) marked" if stats.missing else ""
    return (f"bench report: wrote {path} ({size:.1f} MiB; {stats.groups} group(s), "
            f"{stats.rows} table row(s), {stats.images} image(s){missing}) in "
            f"{stats.seconds:.1f} s")

