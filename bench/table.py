"""Tables are views over records: leaderboards, the out-of-distribution view, subsets, pivots
and ablations (pandas + tabulate; LaTeX by `bench.latex`).

Numbers stay raw floats in records and in a `Table`; only rendering rounds. Metrics are shown
in percent with two decimals by default (the thesis's convention: 26.10 mIoU).

A view (`leaderboard_view`, `image_leaderboard_view`, `ood_view`, `subsets_view`) builds a
`Table`: typed columns of raw values, and per row its role (`method_role`: baseline, method or
the supervised upper bound) and its block (the rows compared with each other: one data set, or
one training set and scored set). `render` writes it as Markdown, CSV or LaTeX under a
`TableStyle` (``bench table --columns/--label/--ci/--decimals/--siunitx``). In LaTeX the best
method per metric column and block is bold, and baselines and the upper bound are set apart by
rules. `leaderboard`, `image_leaderboard` and `ood_table` return the same tables as display
strings (a `pandas.DataFrame`), for ``results/leaderboard.md`` and callers that want text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from bench import latex
from bench.errors import ConfigError
from bench.registry import natural_key
from bench.weights import is_random, join_origins

METRIC_COLUMNS = ("mIoU", "IoU_smoke", "precision", "recall", "F1", "accuracy")
PERCENT = {"mIoU", "IoU_smoke", "IoU_background", "precision", "recall", "F1", "accuracy",
           "Dice"}
FORMATS = ("md", "latex", "csv")
#: what ``bench table --weights`` keeps: rows without a randomly initialised learned stage, or
#: only those
WEIGHTS_FILTERS = ("pretrained", "random")
#: the Markdown leaderboard's mark on rows whose learned stages start from random weights
RANDOM_MARK = "†"
RANDOM_LEGEND = (f"{RANDOM_MARK} random initialisation: not a result for this backbone "
                 "(weights=hub or weights=PATH give one)")
#: a record written before records named their initial weights
UNKNOWN_WEIGHTS = "?"
#: image-level metrics (splits without masks), in the image leaderboard's order
IMAGE_LEVEL_COLUMNS = ("precision", "recall", "F1", "accuracy", "fp_pixel_rate_neg")
#: metrics where lower is better (LaTeX bolds the lowest)
LOWER_IS_BETTER = frozenset({"fp_pixel_rate_neg", "chimney", "steam"})
#: row roles, in the order LaTeX tables list them (a rule between groups)
ROLES = ("baseline", "method", "upper bound")
#: ``bench table --ci``: the 95% interval as its own ``[lo, hi]`` column, in the metric's cell
#: (LaTeX: ``54.60 {\scriptsize [51.80, 57.50]}``), as a ``±`` half-width column, or not at all
CI_STYLES = ("column", "inline", "pm", "none")
#: ``bench table --subsets``: one column per subset, or one row per (method, subset)
SUBSET_LAYOUTS = ("columns", "rows")
#: the headline metric of the out-of-distribution and subset views (``--metric`` changes it)
PIXEL_HEADLINE = "IoU_smoke"
IMAGE_HEADLINE = "F1"
#: the record fields that pair an out-of-distribution row with its in-domain row
HOME_KEY = ("method", "train_dataset", "split", "profile", "seed", "level")

COLUMN_DOCS = {
    "method": "pipeline spec (plugins joined by +)",
    "dataset": "data set the method was scored on",
    "trained on": "data set the method was trained (and its thresholds chosen) on; another "
                  "'dataset' is out of distribution",
    "weights": "initial weights of the learned stages: packaged (shipped in a pip package), hub "
               "(timm / Hugging Face download), file (weights=PATH), random (random "
               f"initialisation, marked {RANDOM_MARK}); '-': nothing learned",
    "frames": "scored frames (tiles stitched back, each pixel counted once; [tiles] score = "
              "\"tile\" data sets count tiles; image level: scored images with a label)",
    "n": "image level: scored images with an image label",
    "mIoU": "mean of background and smoke IoU, areas summed over the split (%)",
    "mIoU 95% CI": "95% bootstrap interval over frames (video: clips; --n-boot resamples)",
    "IoU_smoke": "smoke-class IoU (%)",
    "precision": "smoke precision (%)",
    "recall": "smoke recall (%)",
    "F1": "smoke F1 (%)",
    "accuracy": "pixel accuracy (%)",
    "Δ <metric>": "out of distribution: the metric minus the same method's in-domain value "
                  "(same split, profile and seed; points of %)",
    "image <metric>": "out-of-distribution view: the image-level metric of a split without "
                      "masks (%)",
    "thr": "threshold applied to soft maps, chosen on the calibration split ('-': label maps)",
    "chimney": "share of map mass on chimney pixels (synthetic only; lower is better)",
    "steam": "share of map mass on steam pixels (synthetic only; lower is better)",
    "fp_pixel_rate_neg": "image level: mean predicted smoke fraction on no-smoke frames (%)",
}


def frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per record with the fields tables need."""
    rows = []
    for rec in records:
        row = {
            "method": rec["method"], "pipeline": rec["pipeline"], "stage": rec["stage"],
            "stage_kind": rec["stage_kind"], "dataset": rec["dataset"], "split": rec["split"],
            "train_dataset": rec.get("train_dataset", rec["dataset"]),
            "profile": rec["profile"], "seed": rec["seed"], "n": rec["n_images"],
            "level": rec.get("level", "pixel"),
            "date": rec.get("provenance", {}).get("date", ""),
            "thr": (rec.get("threshold") or {}).get("value"),
            "ci_lo": rec.get("ci", {}).get("mIoU", [None, None])[0],
            "ci_hi": rec.get("ci", {}).get("mIoU", [None, None])[1],
            "f1_lo": rec.get("ci", {}).get("F1", [None, None])[0],
            "f1_hi": rec.get("ci", {}).get("F1", [None, None])[1],
            "ci": rec.get("ci") or {},
            "subsets": rec.get("subsets") or {},
            "stages": (rec.get("config") or {}).get("stages", []),
            "weights": record_weights(rec),
            "not_run": rec.get("not_run"),
        }
        row.update({k: v for k, v in rec.get("metrics", {}).items()})
        row.update({k: v for k, v in (rec.get("distractors") or {}).items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the newest record wins when a (method, dataset, split, profile, seed) was recorded twice
    df = df.sort_values("date").drop_duplicates(
        ["method", "dataset", "train_dataset", "split", "profile", "seed"], keep="last")
    return df.reset_index(drop=True)


def record_weights(rec: dict[str, Any]) -> str:
    """A record's initial weights in one word: its learned stages' origins joined by ``+``
    (``packaged``, ``random+packaged``), ``-`` when nothing learned, `UNKNOWN_WEIGHTS` for a
    record written before records said."""
    if not isinstance(rec.get("weights"), dict):
        return UNKNOWN_WEIGHTS
    return join_origins(rec["weights"].values()) or "-"


def filter_weights(df: pd.DataFrame, which: str) -> pd.DataFrame:
    """Rows by initial weights: ``pretrained`` drops rows with a randomly initialised learned
    stage, ``random`` keeps only those; rows recorded without weights are dropped by both."""
    if which not in WEIGHTS_FILTERS:
        raise ConfigError(f"--weights must be one of {', '.join(WEIGHTS_FILTERS)}, not '{which}'")
    if df.empty:
        return df
    known = df["weights"] != UNKNOWN_WEIGHTS
    random = df["weights"].map(is_random)
    return df[known & (random if which == "random" else ~random)]


def mark_random(methods: pd.Series, weights: pd.Series) -> pd.Series:
    """Method names with `RANDOM_MARK` where their learned stages start from random weights."""
    return pd.Series([f"{m} {RANDOM_MARK}" if is_random(w) else m
                      for m, w in zip(methods, weights, strict=True)], index=methods.index)


def random_legend(table: pd.DataFrame) -> str:
    """The legend line for a table that marks rows with `RANDOM_MARK` ("" when none is)."""
    if table.empty or "method" not in table:
        return ""
    marked = table["method"].astype(str).str.endswith(f" {RANDOM_MARK}").any()
    return RANDOM_LEGEND if marked else ""


def natural_rank(values: pd.Series) -> pd.Series:
    """Each value's rank in natural order: numbers by value, names by `natural_key`
    (``resnet50`` before ``resnet101``); a sort key for `pandas.DataFrame.sort_values`."""
    def key(value: Any) -> tuple[Any, ...]:
        if value is None:  # missing values last
            return (2, ())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value))
        text = ":".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return (1, natural_key(text))

    order = {v: i for i, v in enumerate(sorted({_hashable(v) for v in values}, key=key))}
    return values.map(lambda v: order[_hashable(v)])


def _hashable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _by_name_then(df: pd.DataFrame, name: str, metric: str) -> pd.DataFrame:
    """Rows grouped by ``name`` in natural order, best ``metric`` first, ties by method name."""
    return df.sort_values([name, metric, "method"], ascending=[True, False, True],
                          kind="stable", key=lambda col: col if col.name == metric
                          else natural_rank(col))


def _missing(value: Any) -> bool:
    """Whether a raw value is absent: None, NaN, or an interval with both ends absent."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (tuple, list)):
        return all(_missing(v) for v in value)
    return False


def _pct(value: Any, decimals: int = 2) -> str:
    if _missing(value):
        return "-"
    return f"{100 * float(value):.{decimals}f}"


def _better(metric: str) -> str:
    return "min" if metric in LOWER_IS_BETTER else "max"


@dataclass
class Column:
    """One column of a `Table`: its header and what its raw values are.

    ``kind``: ``text``; ``count`` (an integer); ``pct`` (a fraction shown in percent); ``delta``
    (a signed difference of fractions); ``thr`` (a threshold); ``ci`` (an interval ``(lo, hi)``
    of the ``pct`` column named by ``of``); ``pm`` (half an interval's width, ``--ci pm``).
    ``better`` (``max``/``min``) marks a metric whose best value LaTeX puts in bold.
    """

    name: str
    kind: str = "text"
    better: str | None = None
    of: str = ""
    #: ``--ci inline``: the ``ci`` column whose interval is written into this column's cells
    interval: str = ""


@dataclass
class TableStyle:
    """How a `Table` is rendered: ``bench table``'s presentation flags."""

    #: decimals of percentages and differences (``--decimals``)
    decimals: int = 2
    #: how 95% intervals are shown (`CI_STYLES`, ``--ci``)
    ci: str = "column"
    #: the columns to show, in this order (``--columns``; empty: all)
    columns: tuple[str, ...] = ()
    #: display names for methods and column headers (``--label SPEC=NAME``); LaTeX writes them
    #: verbatim, so they may hold markup
    labels: dict[str, str] = field(default_factory=dict)
    #: LaTeX: ``siunitx`` ``S`` columns instead of right-aligned ``r`` ones (``--siunitx``)
    siunitx: bool = False

    def __post_init__(self) -> None:
        if self.ci not in CI_STYLES:
            raise ConfigError(f"--ci must be one of {', '.join(CI_STYLES)}, not '{self.ci}'")
        if not 0 <= self.decimals <= 6:
            raise ConfigError(f"--decimals must be between 0 and 6, not {self.decimals}")


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``--label SPEC=NAME`` items as {spec: name}; the ``=`` that separates them is the first
    one outside square brackets, so specs keep their parameters
    (``effnet[normalize=sigmoid]=EffNet``)."""
    out = {}
    for item in items:
        depth, cut = 0, -1
        for i, ch in enumerate(item):
            depth += {"[": 1, "]": -1}.get(ch, 0)
            if ch == "=" and depth == 0:
                cut = i
                break
        key, name = (item[:cut].strip(), item[cut + 1:].strip()) if cut >= 0 else ("", "")
        if not key or not name:
            raise ConfigError(f"--label expects SPEC=NAME (a method spec or column header, "
                              f"then its display name), got '{item}'")
        out[key] = name
    return out


def parse_columns(text: str | None) -> tuple[str, ...]:
    """``--columns a,b,c`` as a tuple of column headers (empty: all columns)."""
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


@dataclass
class Table:
    """A view over records before rendering: columns of raw values and per-row context.

    ``rows`` map column names to raw values (they may hold more keys than ``columns`` show);
    ``roles`` (`ROLES`) and ``blocks`` (rows compared with each other) drive LaTeX's bold and
    rules; ``random`` flags rows whose learned stages start from random weights (marked
    `RANDOM_MARK` in Markdown when ``mark``); ``reasons`` hold a not-run record's reason, shown
    in ``reason_column`` with "-" in every other number.
    """

    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    blocks: list[Hashable] = field(default_factory=list)
    random: list[bool] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    reason_column: str = ""
    mark: bool = False

    @property
    def empty(self) -> bool:
        return not self.rows

    def add(self, row: dict[str, Any], role: str, block: Hashable, random: bool = False,
            reason: str | None = None) -> None:
        """Append one row with its context."""
        self.rows.append(row)
        self.roles.append(role)
        self.blocks.append(block)
        self.random.append(random)
        self.reasons.append(reason if isinstance(reason, str) and reason else None)

    def drop_empty(self) -> Table:
        """Without the value columns (metrics, differences, intervals) that no row fills."""
        keep = [c for c in self.columns if c.kind in ("text", "count")
                or any(not _missing(r.get(c.name)) for r in self.rows)]
        return replace(self, columns=keep)

    def styled(self, style: TableStyle) -> Table:
        """The table as ``style`` shows it: intervals per ``style.ci``, then ``style.columns``."""
        columns, rows = list(self.columns), self.rows
        for ci in [c for c in columns if c.kind == "ci"]:
            at = columns.index(ci)
            owner = next((c for c in columns if c.name == ci.of), None)
            if style.ci == "none" or (style.ci == "inline" and owner is None):
                columns.remove(ci)
            elif style.ci == "inline":
                assert owner is not None
                columns[columns.index(owner)] = replace(owner, interval=ci.name)
                columns.remove(ci)
            elif style.ci == "pm":
                name = f"{ci.of} ±"
                columns[at] = Column(name, "pm", of=ci.of)
                rows = [{**r, name: _half_width(r.get(ci.name))} for r in rows]
        if style.columns:
            by_name = {c.name: c for c in columns}
            chosen = []
            for wanted in style.columns:
                name = f"Δ {wanted[6:]}" if wanted.startswith("delta ") else wanted
                if name not in by_name:
                    raise ConfigError(f"--columns: this table has no column '{wanted}' "
                                      f"(columns: {', '.join(by_name)})")
                chosen.append(by_name[name])
            columns = chosen
        return replace(self, columns=columns, rows=rows)

    def cell(self, i: int, column: Column, decimals: int = 2) -> str:
        """Row ``i``'s cell of ``column`` as plain text (Markdown and CSV)."""
        value = self.rows[i].get(column.name)
        reason = self.reasons[i]
        if reason is not None and column.kind != "text":
            return reason if column.name == self.reason_column else "-"
        text = _plain(column, value, decimals)
        if column.interval:
            lo, hi = _interval(self.rows[i].get(column.interval))
            text = f"{text} [{_pct(lo, decimals)}, {_pct(hi, decimals)}]"
        return text

    def frame(self, style: TableStyle | None = None) -> pd.DataFrame:
        """The table as display strings (Markdown/CSV cells), after ``style``."""
        style = style or TableStyle()
        table = self.styled(style)
        if table.empty:
            return pd.DataFrame()
        data = {}
        for column in table.columns:
            cells = [table.cell(i, column, style.decimals) for i in range(len(table.rows))]
            if column.name == "method":
                cells = [style.labels.get(c, c) + (f" {RANDOM_MARK}" if table.mark and r
                                                   else "")
                         for c, r in zip(cells, table.random, strict=True)]
            data[style.labels.get(column.name, column.name)] = cells
        return pd.DataFrame(data)

    def legend(self) -> str:
        """The `RANDOM_MARK` legend line when a marked row is shown ("" otherwise)."""
        return RANDOM_LEGEND if self.mark and any(self.random) else ""


def _interval(value: Any) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    return None, None


def _half_width(value: Any) -> float | None:
    lo, hi = _interval(value)
    return None if _missing(lo) or _missing(hi) else (float(hi) - float(lo)) / 2


def _plain(column: Column, value: Any, decimals: int) -> str:
    kind = column.kind
    if kind == "ci":
        if value is None:  # no interval recorded (another level's metric)
            return "-"
        lo, hi = _interval(value)
        return f"[{_pct(lo, decimals)}, {_pct(hi, decimals)}]"
    if _missing(value):
        return "-"
    if kind == "count":
        return str(int(value))
    if kind == "pct":
        return _pct(value, decimals)
    if kind == "delta":
        return f"{100 * float(value):+.{decimals}f}"
    if kind == "thr":
        return f"{float(value):.2f}"
    if kind == "pm":
        return f"±{100 * float(value):.{decimals}f}"
    return str(value)


def method_role(method: str) -> str:
    """A pipeline's role in a table (`ROLES`): ``upper bound`` when a stage is a segmenter
    trained on ground truth (``supervised``), ``baseline`` when its first stage is a baseline
    plugin (``random``, ``all_smoke``, ``all_background``), else ``method``. Read from the
    plugin registry without importing plugins; an unknown plugin is a method."""
    from bench.plugins import METHODS, discover
    from bench.spec import split_top_level

    discover()  # the built-in plugins (each file is scanned once per process)
    try:
        names = [part.partition("[")[0].strip() for part in split_top_level(method, "+")]
    except ConfigError:  # not a pipeline spec: an ordinary row
        return "method"

    def flag(name: str, key: str) -> bool:
        if name not in METHODS:
            return False
        entry = METHODS.entry(name)
        if key in entry.meta:
            return bool(entry.meta[key])
        cls = getattr(entry.obj, "cls", None)  # registered without a source scan
        if key == "baseline":
            return bool(getattr(cls, "baseline", False))
        return getattr(cls, "needs_pseudo_labels", True) is False

    if any(flag(n, "upper_bound") for n in names):
        return "upper bound"
    return "baseline" if names and flag(names[0], "baseline") else "method"


def _roles(methods: Iterable[str]) -> dict[str, str]:
    return {m: method_role(m) for m in dict.fromkeys(methods)}


def _final(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose record is its pipeline's own last stage."""
    return df[df["method"] == df["pipeline"]] if not df.empty else df


def _shown_context(rows: pd.DataFrame) -> list[str]:
    """Of split, profile and seed, those that differ between ``rows`` (shown as columns)."""
    return [k for k in ("split", "profile", "seed") if rows[k].nunique() > 1]


def in_domain(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of methods scored on the data set they were trained on."""
    return df[df["train_dataset"] == df["dataset"]] if not df.empty else df


def _weights_of(final: pd.DataFrame) -> pd.Series:
    if "weights" in final:
        return final["weights"]
    return pd.Series([UNKNOWN_WEIGHTS] * len(final), index=final.index)


def _ci_of(rec: dict[str, Any], metric: str) -> tuple[Any, Any] | None:
    value = (rec.get("ci") or {}).get(metric) if isinstance(rec.get("ci"), dict) else None
    return (value[0], value[1]) if isinstance(value, list) and len(value) == 2 else None


def leaderboard_view(df: pd.DataFrame, metrics: Sequence[str] = METRIC_COLUMNS,
                     reference: str | None = None, mark: bool = False) -> Table:
    """Final-stage in-domain rows, best mIoU first, one block per data set.

    ``reference`` (e.g. ``supervised``) adds a column with each method's mIoU gap to it on the
    same data set: the thesis's weakly-supervised-vs-supervised comparison. ``mark`` appends
    `RANDOM_MARK` to methods whose learned stages start from random weights (Markdown; the
    legend line is `Table.legend`).
    """
    df = in_domain(df)
    if df.empty:
        return Table([])
    final = _by_name_then(_final(df), "dataset", "mIoU")
    final = final.assign(weights=_weights_of(final))
    columns = [Column("method"), Column("dataset"), Column("weights"), Column("frames", "count")]
    for m in metrics:
        if m in final:
            columns.append(Column(m, "pct", _better(m)))
        if m == "mIoU":
            columns.append(Column("mIoU 95% CI", "ci", of="mIoU"))
    ref: dict[str, float] = {}
    delta = f"Δ mIoU vs {reference}"
    if reference is not None:
        ref = dict(zip(*(final[final["method"] == reference][k] for k in ("dataset", "mIoU")),
                       strict=True))
        if not ref:
            raise ConfigError(f"--reference {reference}: no record of it among these rows")
        columns.append(Column(delta, "delta"))
    columns.append(Column("thr", "thr"))
    aux = [a for a in ("chimney", "steam") if a in final and final[a].notna().any()]
    columns += [Column(a, "pct", "min") for a in aux]
    table = Table(columns, reason_column="mIoU", mark=mark)
    roles = _roles(final["method"])
    for rec in final.to_dict("records"):
        row = {"method": rec["method"], "dataset": rec["dataset"], "weights": rec["weights"],
               "frames": rec["n"], "mIoU 95% CI": (rec["ci_lo"], rec["ci_hi"]),
               "thr": rec["thr"], **{m: rec.get(m) for m in [*metrics, *aux]}}
        if reference is not None:
            home = ref.get(rec["dataset"])
            row[delta] = None if home is None or _missing(rec.get("mIoU")) else \
                rec["mIoU"] - home
        table.add(row, roles[rec["method"]], rec["dataset"], is_random(rec["weights"]),
                  rec.get("not_run"))
    return table


def leaderboard(df: pd.DataFrame, metrics: Sequence[str] = METRIC_COLUMNS,
                reference: str | None = None, mark: bool = False) -> pd.DataFrame:
    """`leaderboard_view` as display strings."""
    return leaderboard_view(df, metrics, reference, mark).frame()


def image_leaderboard_view(df: pd.DataFrame, mark: bool = False) -> Table:
    """Final-stage rows scored at image level (no masks), best F1 first (``mark``: as in
    `leaderboard_view`)."""
    final = _final(df)
    if final.empty:
        return Table([])
    final = _by_name_then(final, "dataset", "F1")
    final = final.assign(weights=_weights_of(final))
    columns = [Column("method"), Column("dataset"), Column("weights"), Column("n", "count")]
    for m in IMAGE_LEVEL_COLUMNS:
        if m in final:
            columns.append(Column(m, "pct", _better(m)))
        if m == "F1":
            columns.append(Column("F1 95% CI", "ci", of="F1"))
    table = Table(columns, reason_column="F1", mark=mark)
    roles = _roles(final["method"])
    for rec in final.to_dict("records"):
        row = {"method": rec["method"], "dataset": rec["dataset"], "weights": rec["weights"],
               "n": rec["n"], "F1 95% CI": (rec["f1_lo"], rec["f1_hi"]),
               **{m: rec.get(m) for m in IMAGE_LEVEL_COLUMNS}}
        table.add(row, roles[rec["method"]], rec["dataset"], is_random(rec["weights"]),
                  rec.get("not_run"))
    return table


def image_leaderboard(df: pd.DataFrame, mark: bool = False) -> pd.DataFrame:
    """`image_leaderboard_view` as display strings."""
    return image_leaderboard_view(df, mark).frame()


def headline_metrics(metric: str | None) -> tuple[str, str]:
    """The headline metric of pixel-level and of image-level rows for ``--metric``.

    A pixel metric (`METRIC_COLUMNS`) leads pixel rows, an image-level one
    (`IMAGE_LEVEL_COLUMNS`, also written ``image F1``) image rows; a name that is both (F1)
    leads both. The defaults are smoke IoU (beside mIoU) and image F1.
    """
    if metric is None:
        return PIXEL_HEADLINE, IMAGE_HEADLINE
    plain = metric[6:] if metric.startswith("image ") else metric
    pixel = metric if metric in METRIC_COLUMNS else PIXEL_HEADLINE
    image = plain if plain in IMAGE_LEVEL_COLUMNS else IMAGE_HEADLINE
    if metric not in METRIC_COLUMNS and plain not in IMAGE_LEVEL_COLUMNS:
        raise ConfigError(f"--metric {metric}: not a metric of these tables (pixel level: "
                          f"{', '.join(METRIC_COLUMNS)}; image level: "
                          f"{', '.join(IMAGE_LEVEL_COLUMNS)})")
    return pixel, image


def _headline_first(metrics: Sequence[str], head: str) -> list[str]:
    return [head, *(m for m in metrics if m != head)]


def _image_name(metric: str) -> str:
    """An image-level metric's column in views that mix levels (``image F1``)."""
    return metric if metric == "fp_pixel_rate_neg" else f"image {metric}"


def _sort_value(value: Any, metric: str) -> float:
    """A sort key that puts the best value first and missing values last."""
    if _missing(value):
        return math.inf
    return float(value) if metric in LOWER_IS_BETTER else -float(value)


def _metric_columns(metrics: Sequence[str], head: str, name: Any, deltas: bool) -> list[Column]:
    """Each metric's column (``name(metric)`` is its header), the headline's interval after
    the headline, and with ``deltas`` each metric's in-domain difference after it."""
    out = []
    for m in _headline_first(metrics, head):
        out.append(Column(name(m), "pct", _better(m)))
        if m == head:
            out.append(Column(f"{name(m)} 95% CI", "ci", of=name(m)))
        if deltas:
            out.append(Column(f"Δ {name(m)}", "delta"))
    return out


def ood_view(df: pd.DataFrame, metric: str | None = None,
             reference: pd.DataFrame | None = None, mark: bool = False) -> Table:
    """Out-of-distribution view: one row per method, training set and scored set.

    Rows: each method scored on another data set than it was trained on, after its in-domain
    row (the same method, training set, split, profile and seed, when ``df`` holds it), one
    block per (training set, scored set). Columns: every metric of the in-domain leaderboard,
    the headline metric first (``metric``, default smoke IoU, then mIoU) with its 95% interval,
    and after each metric its difference to the in-domain value (``Δ``). Image-level rows
    (splits without masks: RISE, IJmond video, class folders) show the image-level metrics
    (``image F1``, ..., ``fp_pixel_rate_neg``) in the same table; a difference needs an
    in-domain value at the same level. Columns no row fills are left out.

    ``reference``: the records in-domain values are looked up in (default ``df``), so that
    ``--datasets`` and ``--methods`` can select rows without losing their differences.
    """
    if df.empty:
        return Table([])
    final = _final(df)
    ood = final[final["train_dataset"] != final["dataset"]]
    if ood.empty:
        return Table([])
    pixel_head, image_head = headline_metrics(metric)
    home_key = list(HOME_KEY[:-1])
    keys = set(ood[home_key].itertuples(index=False, name=None))
    paired = pd.Series([k in keys for k in final[home_key].itertuples(index=False, name=None)],
                       index=final.index, dtype=bool)
    at_home = final[(final["train_dataset"] == final["dataset"]) & paired]
    shown = pd.concat([at_home, ood])
    ref = _final(reference) if reference is not None and not reference.empty else final
    ref = ref[ref["train_dataset"] == ref["dataset"]]
    homes = {tuple(r[k] for k in HOME_KEY): r for r in ref.to_dict("records")}
    levels = set(shown["level"])
    context = _shown_context(shown)
    columns = [Column("method"), Column("trained on"), Column("dataset"),
               *(Column(k) for k in context)]
    if len(levels) > 1:
        columns.append(Column("level"))
    columns.append(Column("frames", "count"))
    if "pixel" in levels:
        columns += _metric_columns(METRIC_COLUMNS, pixel_head, str, True)
    if "image" in levels:
        columns += _metric_columns(IMAGE_LEVEL_COLUMNS, image_head, _image_name, True)
    table = Table(columns, reason_column=pixel_head if "pixel" in levels
                  else _image_name(image_head), mark=mark)
    roles = _roles(shown["method"])

    def order(rec: dict[str, Any]) -> tuple[Any, ...]:
        head = pixel_head if rec["level"] == "pixel" else image_head
        return (natural_key(rec["train_dataset"]), rec["dataset"] != rec["train_dataset"],
                natural_key(rec["dataset"]), *(natural_key(str(rec[k])) for k in context),
                _sort_value(rec.get(head), head), natural_key(rec["method"]))

    for rec in sorted(shown.to_dict("records"), key=order):
        pixel = rec["level"] == "pixel"
        home = homes.get(tuple(rec[k] for k in HOME_KEY)) \
            if rec["dataset"] != rec["train_dataset"] else None
        row: dict[str, Any] = {"method": rec["method"], "trained on": rec["train_dataset"],
                               "dataset": rec["dataset"], "level": rec["level"],
                               "frames": rec["n"], **{k: rec[k] for k in context}}
        metrics = METRIC_COLUMNS if pixel else IMAGE_LEVEL_COLUMNS
        head = pixel_head if pixel else image_head
        name = str if pixel else _image_name
        for m in metrics:
            value = rec.get(m)
            row[name(m)] = value
            base = None if home is None or home.get("not_run") else home.get(m)
            row[f"Δ {name(m)}"] = None if _missing(value) or _missing(base) else value - base
        row[f"{name(head)} 95% CI"] = _ci_of(rec, head)
        table.add(row, roles[rec["method"]],
                  (rec["train_dataset"], rec["dataset"], *(rec[k] for k in context)),
                  is_random(rec.get("weights")), rec.get("not_run"))
    return table.drop_empty()


def ood_table(df: pd.DataFrame, metric: str | None = None,
              reference: pd.DataFrame | None = None, mark: bool = False) -> pd.DataFrame:
    """`ood_view` as display strings."""
    return ood_view(df, metric, reference, mark).frame()


def subsets_view(df: pd.DataFrame, layout: str = "columns", metric: str | None = None,
                 mark: bool = False) -> Table:
    """The named subsets of the scored splits (``[subsets.<split>]``: SmokeSeg's small,
    medium and large smoke), from the per-subset metrics records carry.

    ``layout="columns"``: one row per record, the headline metric (``metric``, default smoke
    IoU; image level: F1) on the whole split (``all``) and on each subset, with intervals.
    ``layout="rows"``: one row per record and subset (``all`` first) with every metric.
    Pixel-level rows are shown when there are any, else image-level ones. A ``trained on``
    column appears when a row is out of distribution.
    """
    if layout not in SUBSET_LAYOUTS:
        raise ConfigError(f"--subsets must be one of {', '.join(SUBSET_LAYOUTS)}, not "
                          f"'{layout}'")
    final = _final(df)
    if not final.empty:
        final = final[final["subsets"].map(lambda s: isinstance(s, dict) and bool(s))]
    if final.empty:
        raise ConfigError("--subsets: no record among these has subsets; declare "
                          "[subsets.<split>] in the data set file (datasets/README.md) and run "
                          "again")
    level = "pixel" if (final["level"] == "pixel").any() else "image"
    final = final[final["level"] == level]
    pixel_head, image_head = headline_metrics(metric)
    head = pixel_head if level == "pixel" else image_head
    metrics = METRIC_COLUMNS if level == "pixel" else IMAGE_LEVEL_COLUMNS
    found = {n: (v or {}).get("order", math.inf) for s in final["subsets"] for n, v in s.items()}
    names = sorted(found, key=lambda n: (found[n], natural_key(n)))  # the data set file's order
    ood = bool((final["train_dataset"] != final["dataset"]).any())
    context = _shown_context(final)
    columns = [Column("method"), *([Column("trained on")] if ood else []), Column("dataset"),
               *(Column(k) for k in context)]
    if layout == "columns":
        columns.append(Column("frames", "count"))
        for part in ["all", *names]:
            columns += _metric_columns([head], head, lambda m, p=part: f"{m} {p}", False)
    else:
        columns += [Column("subset"), Column("frames", "count"),
                    *_metric_columns(metrics, head, str, False)]
    table = Table(columns, reason_column=f"{head} all" if layout == "columns" else head,
                  mark=mark)
    roles = _roles(final["method"])
    records = sorted(final.to_dict("records"), key=lambda r: (
        natural_key(r["train_dataset"]), natural_key(r["dataset"]),
        *(natural_key(str(r[k])) for k in context), _sort_value(r.get(head), head),
        natural_key(r["method"])))
    if layout == "rows":  # rows of one subset together, "all" first
        records = [(p, r) for p in ["all", *names] for r in records]
    else:
        records = [(None, r) for r in records]
    for part, rec in records:
        key = (rec["train_dataset"], rec["dataset"], *(rec[k] for k in context))
        row: dict[str, Any] = {"method": rec["method"], "trained on": rec["train_dataset"],
                               "dataset": rec["dataset"], "frames": rec["n"],
                               **{k: rec[k] for k in context}}
        if layout == "columns":
            for p in ["all", *names]:
                score = _subset_score(rec, p)
                row[f"{head} {p}"] = score["metrics"].get(head)
                row[f"{head} {p} 95% CI"] = _ci_of(score, head)
        else:
            score = _subset_score(rec, part)
            if part != "all" and not score["metrics"] and not score["n"]:
                continue  # this record's split has no such subset
            row.update({"subset": part, "frames": score["n"],
                        **{m: score["metrics"].get(m) for m in metrics},
                        f"{head} 95% CI": _ci_of(score, head)})
            key = (*key, part)
        table.add(row, roles[rec["method"]], key, is_random(rec.get("weights")),
                  rec.get("not_run"))
    return table.drop_empty()


def _subset_score(rec: dict[str, Any], part: str) -> dict[str, Any]:
    """``{"metrics", "ci", "n"}`` of a record's whole split (``all``) or one of its subsets."""
    if part == "all":
        return {"metrics": rec, "ci": rec.get("ci") or {}, "n": rec["n"]}
    sub = (rec.get("subsets") or {}).get(part) or {}
    return {"metrics": sub.get("metrics") or {}, "ci": sub.get("ci") or {},
            "n": sub.get("n_images", 0)}


def pivot(df: pd.DataFrame, by: str, metric: str = "mIoU",
          metrics: Sequence[str] = METRIC_COLUMNS) -> pd.DataFrame:
    """Methods as rows; ``by="datasets"``: one column per data set (``metric``);
    ``by="metrics"``: one column per metric (one row per method and data set)."""
    df = in_domain(df)
    if df.empty:
        return df
    final = df[df["method"] == df["pipeline"]]
    if by == "datasets":
        table = final.pivot_table(index="method", columns="dataset", values=metric,
                                  aggfunc="first")
        table = table[sorted(table.columns, key=natural_key)]
        table = table.iloc[natural_rank(pd.Series(table.index)).argsort().to_numpy()]
        table = table.sort_values(table.columns[0], ascending=False, kind="stable")
        return table.map(_pct).reset_index()
    if by == "metrics":
        cols = [m for m in metrics if m in final]
        final = _by_name_then(final, "dataset", "mIoU").sort_values(
            "mIoU", ascending=False, kind="stable")
        table = final.set_index(["method", "dataset"])[cols]
        return table.map(_pct).reset_index()
    raise ConfigError(f"--pivot must be 'datasets' or 'metrics', not '{by}'")


def ablation(df: pd.DataFrame, base: str, labels: dict[str, str] | None = None,
             metrics: Sequence[str] = ("mIoU", "IoU_smoke", "precision", "recall")) -> pd.DataFrame:
    """The thesis's ablation shape: the base CAM source, then one row per added stage.

    ``base`` is a full pipeline (``resnet50+multiscale+crf``); its prefixes' records give the
    rows ``resnet50``, ``+Multi scale``, ``+CRF``. ``labels`` maps plugin names to row labels.
    """
    from bench.spec import parse_pipeline

    spec = parse_pipeline(base)
    labels = labels or {}
    prefixes = [spec.prefix(n).text for n in range(1, len(spec.stages) + 1)]
    methods = set(df["method"]) if "method" in df else set()
    missing = [p for p in prefixes if p not in methods]
    if missing:
        raise ConfigError(f"--ablation '{base}': no records of {', '.join(map(repr, missing))} "
                          f"(bench run --methods '{base}' with the same options writes them)")
    rows = []
    for n, prefix in enumerate(prefixes, start=1):
        match = df[df["method"] == prefix]
        stage = spec.stages[n - 1]
        name = labels.get(stage.name) or stage.name
        row: dict[str, Any] = {"pipeline": prefix if n == 1 else f"+{name}"}
        for dataset, sub in match.groupby("dataset"):
            reason = sub.iloc[-1].get("not_run")
            for j, m in enumerate(metrics):
                key = m if match["dataset"].nunique() == 1 else f"{dataset} {m}"
                if isinstance(reason, str) and reason:  # the stage did not run: say why
                    row[key] = reason if j == 0 else "-"
                else:
                    row[key] = _pct(sub.iloc[-1].get(m))
        rows.append(row)
    # a data set where some prefix has no record: say so instead of NaN
    return pd.DataFrame(rows).fillna("no record")


def grid(df: pd.DataFrame, plugin: str, params: Sequence[str] = (),
         metrics: Sequence[str] = ("mIoU", "IoU_smoke", "precision", "recall")) -> pd.DataFrame:
    """One row per parameter combination of a plugin: a parameter-grid ablation.

    Rows are the records whose own (last) stage is a plugin matching ``plugin`` (fnmatch), e.g.
    every ``consistency[metric=...,level=...]`` run. Columns: ``params`` first (in that order),
    then every other parameter that differs between the rows, the upstream pipeline and the
    data set if they differ, then ``metrics`` and the distractor shares when recorded. The
    thesis's consistency ablation is ``grid(df, "consistency", ["metric", "level",
    "paradigm", "lam"])``.
    """
    import fnmatch

    from bench.spec import split_top_level

    rows, settings = [], []
    for _, rec in df.iterrows():
        stages = rec.get("stages")
        if not isinstance(stages, list) or not stages:
            continue
        own = stages[-1]
        if not fnmatch.fnmatch(own.get("name", ""), plugin):
            continue
        values = {k: v for k, v in (own.get("params") or {}).items()}
        values["(plugin)"] = own.get("name", "")
        values["(upstream)"] = "+".join(split_top_level(rec["method"], "+")[:-1])
        values["(dataset)"] = rec["dataset"]
        settings.append(values)
        rows.append(rec)
    if not rows:
        raise ConfigError(f"--grid {plugin}: no records of a plugin named '{plugin}'")
    keys = list(dict.fromkeys(k for s in settings for k in s))
    missing = [p for p in params if p not in keys]
    if missing:
        raise ConfigError(f"--grid {plugin}: no parameter {', '.join(missing)} (parameters: "
                          f"{', '.join(k for k in keys if not k.startswith('('))})")

    def varies(key: str) -> bool:
        return len({json.dumps(s.get(key), sort_keys=True, default=str) for s in settings}) > 1
    shown = list(params) + [k for k in keys if k not in params and varies(k)]
    out_rows = []
    for rec, values in zip(rows, settings, strict=True):
        row: dict[str, Any] = {}
        for key in shown:
            value = values.get(key, "-")
            row[key.strip("()")] = ":".join(map(str, value)) if isinstance(value, list) \
                else value
        for m in metrics:
            row[m] = rec.get(m)
        for aux in ("chimney", "steam"):
            if aux in rec and pd.notna(rec.get(aux)):
                row[aux] = rec.get(aux)
        out_rows.append(row)
    table = pd.DataFrame(out_rows)
    order = [k.strip("()") for k in shown]
    if order:
        table = table.sort_values(order, kind="stable", key=natural_rank)
    for col in [*metrics, "chimney", "steam"]:
        if col in table:
            table[col] = table[col].map(_pct)
    return table.reset_index(drop=True)


def render(table: pd.DataFrame | Table, fmt: str, style: TableStyle | None = None) -> str:
    """Render a table as Markdown, LaTeX (booktabs, `bench.latex`) or CSV.

    A `Table` is shown under ``style`` (columns, labels, intervals, decimals; LaTeX: bold best
    method per metric, rules between row groups, ``siunitx`` columns); a `pandas.DataFrame` of
    display strings (ablations, grids, pivots) as it is, numbers right-aligned in LaTeX.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    style = style or TableStyle()
    if isinstance(table, Table):
        if fmt == "latex":
            return table_latex(table, style) if not table.empty else "(no records)\n"
        table = table.frame(style)
    if table.empty:
        return "(no records)\n"
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return frame_latex(table)
    from tabulate import tabulate

    return tabulate(table, headers="keys", tablefmt="github", showindex=False,
                    disable_numparse=True) + "\n"


def render_marked(table: pd.DataFrame | Table, fmt: str, style: TableStyle | None = None) -> str:
    """`render`, then the legend of `RANDOM_MARK` under the table when a row carries it (after
    a blank line, so Markdown does not read it as a row)."""
    text = render(table, fmt, style)
    if isinstance(table, Table):
        legend = table.legend() if fmt == "md" else ""
    else:
        legend = random_legend(table)
    return f"{text}\n{legend}\n" if legend else text


_LATEX_NOTE = ("generated by 'bench table' (smoke-wsss-bench); needs \\usepackage{booktabs}")
_SIUNITX_NOTE = ("S columns need \\usepackage{siunitx} and, for bold numbers, "
                 "\\sisetup{detect-weight=true} (siunitx v2: also \\robustify\\bfseries)")


def frame_latex(table: pd.DataFrame) -> str:
    """A DataFrame of display strings as a booktabs tabular: columns of numbers right-aligned,
    the rest left-aligned, every cell escaped."""
    columns = []
    for name in table.columns:
        values = [str(v) for v in table[name]]
        numeric = any(latex.is_number(v) for v in values) and all(
            latex.is_number(v) or v == "-" for v in values)
        columns.append(latex.LatexColumn(latex.escape(str(name)), "r" if numeric else "l"))
    rows = [[latex.number(str(v), False, c) if c.align == "r" else latex.escape(str(v))
             for v, c in zip(values, columns, strict=True)]
            for values in table.itertuples(index=False, name=None)]
    return latex.tabular(columns, rows, comment=_LATEX_NOTE)


def bold_cells(table: Table, decimals: int = 2) -> set[tuple[int, str]]:
    """(row, column) of the best method per metric column and block: the highest value (the
    lowest for `LOWER_IS_BETTER` metrics) among the block's ``method`` rows, ties at the shown
    precision included. Baselines and the upper bound are references, never bold; a block
    without a method row has no bold cell."""
    out = set()
    for column in table.columns:
        if column.kind != "pct" or column.better is None:
            continue
        blocks: dict[Hashable, list[int]] = {}
        for i, block in enumerate(table.blocks):
            value = table.rows[i].get(column.name)
            if table.roles[i] == "method" and table.reasons[i] is None and not _missing(value):
                blocks.setdefault(block, []).append(i)
        for rows in blocks.values():
            values = [float(table.rows[i][column.name]) for i in rows]
            best = _pct(max(values) if column.better == "max" else min(values), decimals)
            out |= {(i, column.name) for i in rows
                    if _pct(table.rows[i][column.name], decimals) == best}
    return out


def table_latex(table: Table, style: TableStyle) -> str:
    """A `Table` as a booktabs tabular for a paper (see `render`).

    Rows are grouped by block (in the view's order) and, within a block, by role: baselines,
    methods, the supervised upper bound, with a ``\\midrule`` between groups. Numeric columns
    are ``r`` (``S`` with ``style.siunitx``); intervals are ``[lo, hi]`` columns, ``{\\scriptsize
    [lo, hi]}`` after the number (``--ci inline``) or ``$\\pm$`` columns (``--ci pm``).
    Labels are written verbatim (they may hold LaTeX); everything else is escaped.
    """
    table = table.styled(style)
    bold = bold_cells(table, style.decimals)
    first_seen = {b: n for n, b in reversed(list(enumerate(table.blocks)))}
    order = sorted(range(len(table.rows)), key=lambda i: (
        first_seen[table.blocks[i]], ROLES.index(table.roles[i])))
    columns = []
    for column in table.columns:
        header = style.labels.get(column.name) or latex.escape(column.name)
        if column.kind in ("count", "pct", "delta", "thr") and not column.interval:
            numbers = [table.cell(i, column, style.decimals) for i in order]
            numbers = [n for n in numbers if latex.is_number(n)]
            align = "S" if style.siunitx and numbers else "r"
            columns.append(latex.LatexColumn(header, align, latex.table_format(numbers)))
        else:
            columns.append(latex.LatexColumn(header, "r" if column.kind != "text" else "l"))
    body = []
    for i in order:
        cells = []
        for column, out in zip(table.columns, columns, strict=True):
            text = table.cell(i, column, style.decimals)
            if column.kind == "text":
                label = style.labels.get(text) if column.name == "method" else None
                cells.append(label or latex.escape(text))
            elif table.reasons[i] is not None or not (latex.is_number(text) or text == "-"
                                                       or column.interval):
                if column.kind == "pm" and text.startswith("±"):
                    cells.append(r"$\pm$" + text[1:])
                elif text == "-":
                    cells.append(latex.number(text, False, out))
                else:
                    cells.append(latex.text_cell(latex.escape(text), out))
            elif column.interval:
                number, _, rest = text.partition(" ")
                cell = latex.number(number, (i, column.name) in bold, out)
                shown = rest and number != "-"
                cells.append(f"{cell} {{\\scriptsize {rest}}}" if shown else cell)
            else:
                cells.append(latex.number(text, (i, column.name) in bold, out))
        body.append(cells)
    rules = [n for n in range(1, len(order)) if
             (table.blocks[order[n]], table.roles[order[n]])
             != (table.blocks[order[n - 1]], table.roles[order[n - 1]])]
    notes = [_LATEX_NOTE] + ([_SIUNITX_NOTE] if any(c.align == "S" for c in columns) else [])
    return latex.tabular(columns, body, rules, "\n".join(notes))


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """The ``results/leaderboard.md`` document: one section per split, profile and seed, then
    the out-of-distribution view (every metric, differences to in-domain) per split, profile
    and seed."""
    lines = ["# Leaderboard", "",
             "Written by `bench run` from the records under `records/`; do not edit by hand.",
             ""]
    if df.empty:
        return "\n".join([*lines, "(no records)", ""])
    ood = df[df["train_dataset"] != df["dataset"]]
    for (profile, seed, split, level), sub in in_domain(df).groupby(
            ["profile", "seed", "split", "level"]):
        if level == "image":
            table = image_leaderboard(sub, mark=True)
            lines += [f"## split `{split}`, profile `{profile}`, seed {seed}: image level "
                      "(no masks)", "", render_marked(table, "md")]
            continue
        table = leaderboard(sub, mark=True)
        lines += [f"## split `{split}`, profile `{profile}`, seed {seed}", ""]
        lines.append(render_marked(table, "md"))
    if not ood.empty:
        for (profile, seed, split), sub in df[df["train_dataset"].isin(
                set(ood["train_dataset"]))].groupby(["profile", "seed", "split"]):
            if (sub["train_dataset"] == sub["dataset"]).all():
                continue  # in-domain records only: no out-of-distribution section
            lines += [f"## out of distribution: split `{split}`, profile `{profile}`, seed "
                      f"{seed}", "", render_marked(ood_view(sub, mark=True), "md")]
    lines += ["### Columns", ""]
    lines += [f"- **{k}**: {v}" for k, v in COLUMN_DOCS.items()]
    return "\n".join(lines) + "\n"
