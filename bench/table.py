"""Tables are views over records: leaderboards, pivots and ablations (pandas + tabulate).

Numbers stay raw floats in records; only this layer rounds. Metrics are shown in percent with
two decimals (the thesis's convention: 26.10 mIoU).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

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

COLUMN_DOCS = {
    "method": "pipeline spec (plugins joined by +)",
    "dataset": "data set the method was scored on",
    "weights": "initial weights of the learned stages: packaged (shipped in a pip package), hub "
               "(timm / Hugging Face download), file (weights=PATH), random (random "
               f"initialisation, marked {RANDOM_MARK}); '-': nothing learned",
    "frames": "scored frames (tiles stitched back, each pixel counted once; [tiles] score = "
              "\"tile\" data sets count tiles)",
    "n": "image level: scored images with an image label",
    "mIoU": "mean of background and smoke IoU, areas summed over the split (%)",
    "mIoU 95% CI": "95% bootstrap interval over frames (video: clips; --n-boot resamples)",
    "IoU_smoke": "smoke-class IoU (%)",
    "precision": "smoke precision (%)",
    "recall": "smoke recall (%)",
    "F1": "smoke F1 (%)",
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


def _show_not_run(out: pd.DataFrame, final: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows of records that did not run (`not_run`): their reason in ``column`` ("not run:
    needs a SAM checkpoint (checkpoint=PATH)") and "-" in every other number."""
    if "not_run" not in final:
        return out
    reasons = final["not_run"].to_numpy()
    rows = [i for i, r in enumerate(reasons) if isinstance(r, str) and r]
    if not rows:
        return out
    for col in out.columns:
        if col in ("method", "dataset", "weights"):
            continue
        out[col] = out[col].astype(object)
        for i in rows:
            out.iat[i, out.columns.get_loc(col)] = reasons[i] if col == column else "-"
    return out


def _pct(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return f"{100 * float(value):.2f}"


def in_domain(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of methods scored on the data set they were trained on."""
    return df[df["train_dataset"] == df["dataset"]] if not df.empty else df


def _weights_of(final: pd.DataFrame) -> pd.Series:
    if "weights" in final:
        return final["weights"]
    return pd.Series([UNKNOWN_WEIGHTS] * len(final), index=final.index)


def leaderboard(df: pd.DataFrame, metrics: Sequence[str] = METRIC_COLUMNS,
                reference: str | None = None, mark: bool = False) -> pd.DataFrame:
    """Final-stage in-domain rows, best mIoU first, formatted for display.

    ``reference`` (e.g. ``supervised``) adds a column with each method's mIoU gap to it on the
    same data set: the thesis's weakly-supervised-vs-supervised comparison. ``mark`` appends
    `RANDOM_MARK` to methods whose learned stages start from random weights (Markdown; the
    legend line is `random_legend`).
    """
    df = in_domain(df)
    if df.empty:
        return df
    final = df[df["method"] == df["pipeline"]].copy()
    final = _by_name_then(final, "dataset", "mIoU")
    weights = _weights_of(final)
    out = pd.DataFrame({"method": mark_random(final["method"], weights) if mark
                        else final["method"], "dataset": final["dataset"],
                        "weights": weights, "frames": final["n"]})
    for m in metrics:
        if m in final:
            out[m] = final[m].map(_pct)
        if m == "mIoU":
            out["mIoU 95% CI"] = [f"[{_pct(lo)}, {_pct(hi)}]"
                                  for lo, hi in zip(final["ci_lo"], final["ci_hi"], strict=True)]
    if reference is not None:
        ref = final[final["method"] == reference].set_index("dataset")["mIoU"]
        if ref.empty:
            raise ConfigError(f"--reference {reference}: no record of it among these rows")
        out[f"Δ mIoU vs {reference}"] = [
            "-" if d not in ref else f"{100 * (v - ref[d]):+.2f}"
            for v, d in zip(final["mIoU"], final["dataset"], strict=True)]
    out["thr"] = final["thr"].map(lambda t: "-" if t is None or pd.isna(t) else f"{t:.2f}")
    for aux in ("chimney", "steam"):
        if aux in final and final[aux].notna().any():
            out[aux] = final[aux].map(_pct)
    return _show_not_run(out.reset_index(drop=True), final, "mIoU")


def ood_table(df: pd.DataFrame, metric: str = "mIoU") -> pd.DataFrame:
    """Out-of-distribution view: per method and training set, the in-domain score, then each
    other data set's score with its difference to in-domain."""
    if df.empty:
        return df
    final = df[df["method"] == df["pipeline"]]
    rows = []
    for (method, train), sub in final.groupby(["method", "train_dataset"], sort=False):
        home = sub[sub["dataset"] == train]
        base = float(home[metric].iloc[-1]) if not home.empty else None
        row: dict[str, Any] = {"method": method, "trained on": train,
                               f"in-domain {metric}": _pct(base)}
        for _, r in sub[sub["dataset"] != train].iterrows():
            row[f"{r['dataset']} {metric}"] = _pct(r[metric])
            row[f"Δ {r['dataset']}"] = ("-" if base is None or pd.isna(r[metric])
                                        else f"{100 * (r[metric] - base):+.2f}")
        rows.append(row)
    return pd.DataFrame(rows).fillna("-")


IMAGE_LEVEL_COLUMNS = ("precision", "recall", "F1", "accuracy", "fp_pixel_rate_neg")


def image_leaderboard(df: pd.DataFrame, mark: bool = False) -> pd.DataFrame:
    """Final-stage rows scored at image level (no masks), best F1 first (``mark``: as in
    `leaderboard`)."""
    final = _by_name_then(df[df["method"] == df["pipeline"]], "dataset", "F1")
    weights = _weights_of(final)
    out = pd.DataFrame({"method": mark_random(final["method"], weights) if mark
                        else final["method"], "dataset": final["dataset"],
                        "weights": weights, "n": final["n"]})
    for m in IMAGE_LEVEL_COLUMNS:
        if m in final:
            out[m] = final[m].map(_pct)
        if m == "F1":
            out["F1 95% CI"] = [f"[{_pct(lo)}, {_pct(hi)}]"
                                for lo, hi in zip(final["f1_lo"], final["f1_hi"], strict=True)]
    return _show_not_run(out.reset_index(drop=True), final, "F1")


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
    rows = []
    for n in range(1, len(spec.stages) + 1):
        prefix = spec.prefix(n).text
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
    return pd.DataFrame(rows)


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


def render(table: pd.DataFrame, fmt: str) -> str:
    """Render a formatted table as Markdown, LaTeX (booktabs) or CSV."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if table.empty:
        return "(no records)\n"
    if fmt == "csv":
        return table.to_csv(index=False)
    from tabulate import tabulate

    tablefmt = "github" if fmt == "md" else "latex_booktabs"
    return tabulate(table, headers="keys", tablefmt=tablefmt, showindex=False,
                    disable_numparse=True) + "\n"


def render_marked(table: pd.DataFrame, fmt: str) -> str:
    """`render`, then the legend of `RANDOM_MARK` under the table when a row carries it (after
    a blank line, so Markdown does not read it as a row)."""
    text = render(table, fmt)
    legend = random_legend(table)
    return f"{text}\n{legend}\n" if legend else text


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """The ``results/leaderboard.md`` document: one section per split, profile and seed."""
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
            lines += [f"## out of distribution: split `{split}`, profile `{profile}`, seed "
                      f"{seed}", "", render(ood_table(sub), "md")]
    lines += ["### Columns", ""]
    lines += [f"- **{k}**: {v}" for k, v in COLUMN_DOCS.items()]
    return "\n".join(lines) + "\n"
