"""Paper-ready tables (issue 17) on hand-made records: roles, bold best values, rules between
baselines / methods / the upper bound, labels, columns, interval styles, siunitx, escaping."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import latex
from bench.errors import ConfigError
from bench.table import (
    TableStyle,
    frame,
    leaderboard,
    leaderboard_view,
    method_role,
    parse_labels,
    render,
)


def record(method: str, miou: float, smoke: float, recall: float, dataset: str = "set_a",
           not_run: str | None = None, weights: dict | None = None) -> dict:
    return {"method": method, "pipeline": method, "stage": 0, "stage_kind": "cam",
            "dataset": dataset, "split": "test", "profile": "quick", "seed": 0, "n_images": 8,
            "metrics": {} if not_run else {"mIoU": miou, "IoU_smoke": smoke, "precision": 0.5,
                                           "recall": recall, "F1": 0.4, "accuracy": 0.9},
            "ci": {} if not_run else {"mIoU": [miou - 0.02, miou + 0.03]},
            "threshold": {"value": 0.25}, "weights": weights or {},
            "provenance": {"date": "2026-01-01"}, **({"not_run": not_run} if not_run else {})}


RECORDS = [
    record("all_background", 0.4966, 0.0, 0.0),
    record("supervised", 0.80, 0.62, 0.70, weights={"supervised": "packaged"}),
    record("effnet+crf", 0.5812, 0.2031, 0.40, weights={"effnet": "packaged"}),
    record("effnet", 0.5338, 0.1480, 0.40, weights={"effnet": "packaged"}),
    record("all_smoke", 0.0148, 0.0297, 1.0),
    record("effnet+crf+sam", 0.0, 0.0, 0.0, not_run="not run: needs a SAM checkpoint"),
]


def body(text: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header cells, body rows as cells, indices of rows a \\midrule precedes)."""
    lines = text.strip().splitlines()
    start = lines.index(r"\midrule")
    header = lines[start - 1][:-3].split(" & ")
    rows, rules = [], []
    for line in lines[start + 1:lines.index(r"\bottomrule")]:
        if line == r"\midrule":
            rules.append(len(rows))
        else:
            rows.append(line[:-3].split(" & "))
    return header, rows, rules


def test_roles_come_from_the_plugin_registry() -> None:
    assert method_role("supervised") == "upper bound"
    assert method_role("all_smoke") == "baseline"
    assert method_role("random+crf") == "baseline"  # a baseline source, refined
    assert method_role("effnet+crf+deeplabv3plus") == "method"
    assert method_role("effnet[normalize=sigmoid]+crf") == "method"
    assert method_role("no_such_plugin") == "method"


def test_markdown_leaderboard_is_unchanged_by_the_table_layer() -> None:
    board = leaderboard(frame(RECORDS))
    assert list(board.columns) == ["method", "dataset", "weights", "frames", "mIoU",
                                   "mIoU 95% CI", "IoU_smoke", "precision", "recall", "F1",
                                   "accuracy", "thr"]
    assert list(board["method"]) == ["supervised", "effnet+crf", "effnet", "all_background",
                                     "all_smoke", "effnet+crf+sam"]
    effnet = board[board["method"] == "effnet"].iloc[0]
    assert (effnet["weights"], effnet["frames"], effnet["mIoU"], effnet["mIoU 95% CI"],
            effnet["thr"]) == ("packaged", "8", "53.38", "[51.38, 56.38]", "0.25")
    sam = board[board["method"] == "effnet+crf+sam"].iloc[0]
    assert sam["mIoU"] == "not run: needs a SAM checkpoint" and sam["IoU_smoke"] == "-"
    assert sam["frames"] == "-" and sam["weights"] == "-"


def test_latex_groups_rows_by_role_and_bolds_the_best_method() -> None:
    text = render(leaderboard_view(frame(RECORDS)), "latex", TableStyle(
        columns=("method", "mIoU", "IoU_smoke", "recall"),
        labels={"effnet+crf": "EffNet + CRF", "IoU_smoke": "smoke IoU"}))
    assert r"\begin{tabular}{lrrr}" in text and r"\usepackage{booktabs}" in text
    header, rows, rules = body(text)
    assert header == ["method", "mIoU", "smoke IoU", "recall"]
    assert [r[0] for r in rows] == ["all\\_background", "all\\_smoke", "EffNet + CRF",
                                    "effnet", "effnet+crf+sam", "supervised"]
    assert rules == [2, 5]  # baselines | methods | upper bound
    # the best method per column is bold; baselines (recall 100) and the upper bound never
    assert rows[2][1:] == [r"\textbf{58.12}", r"\textbf{20.31}", r"\textbf{40.00}"]
    assert rows[3][1:] == ["53.38", "14.80", r"\textbf{40.00}"]  # a tie is bold too
    assert rows[1][3] == "100.00" and rows[5][1] == "80.00"
    assert rows[4][1:] == ["not run: needs a SAM checkpoint", "--", "--"]


def test_interval_styles_and_decimals() -> None:
    view = leaderboard_view(frame(RECORDS[:4]))
    columns = ("method", "mIoU", "mIoU 95% CI")
    shown = view.frame(TableStyle(columns=columns, decimals=1))
    assert shown.iloc[0].tolist() == ["supervised", "80.0", "[78.0, 83.0]"]
    inline = view.frame(TableStyle(ci="inline", columns=("method", "mIoU")))
    assert inline.iloc[0].tolist() == ["supervised", "80.00 [78.00, 83.00]"]
    pm = view.frame(TableStyle(ci="pm", columns=("method", "mIoU", "mIoU ±")))
    assert pm.iloc[0].tolist() == ["supervised", "80.00", "±2.50"]
    assert "mIoU 95% CI" not in view.frame(TableStyle(ci="none")).columns
    text = render(view, "latex", TableStyle(ci="inline", decimals=1,
                                            columns=("method", "mIoU")))
    _, rows, _ = body(text)
    assert rows[1] == ["effnet+crf", r"\textbf{58.1} {\scriptsize [56.1, 61.1]}"]
    text = render(view, "latex", TableStyle(ci="pm", columns=("method", "mIoU", "mIoU ±")))
    assert [r[2] for r in body(text)[1]] == [r"$\pm$2.50"] * 4


def test_siunitx_columns() -> None:
    text = render(leaderboard_view(frame(RECORDS)), "latex", TableStyle(
        siunitx=True, columns=("method", "frames", "mIoU", "thr")))
    assert r"\begin{tabular}{lS[table-format=1.0]S[table-format=2.2]S[table-format=1.2]}" \
        in text
    header, rows, _ = body(text)
    assert header == ["method", "{frames}", "{mIoU}", "{thr}"]
    assert rows[2] == ["effnet+crf", "8", r"\bfseries 58.12", "0.25"]
    assert rows[4] == ["effnet+crf+sam", "{--}", "{not run: needs a SAM checkpoint}", "{--}"]


def test_lower_is_better_metrics_bold_the_lowest() -> None:
    recs = [record(m, 0.5, 0.2, 0.3) for m in ("effnet", "effnet+crf")]
    recs[0]["distractors"], recs[1]["distractors"] = {"chimney": 0.3}, {"chimney": 0.1}
    _, rows, _ = body(render(leaderboard_view(frame(recs)), "latex",
                             TableStyle(columns=("method", "chimney"))))
    assert rows == [["effnet", "30.00"], ["effnet+crf", r"\textbf{10.00}"]]


def test_labels_and_columns_are_checked() -> None:
    spec = "effnet[normalize=sigmoid]+sliding_window[tile=160,stride=96]"
    assert parse_labels([f"{spec}=EffNet + sliding window", "a=b=c"]) == {
        spec: "EffNet + sliding window", "a": "b=c"}
    for bad in ("effnet", "=x", "effnet[a=1]"):
        with pytest.raises(ConfigError, match="--label expects SPEC=NAME"):
            parse_labels([bad])
    with pytest.raises(ConfigError, match="--columns: this table has no column 'delta x'"):
        leaderboard_view(frame(RECORDS)).frame(TableStyle(columns=("delta x",)))
    with pytest.raises(ConfigError, match="--ci must be one of"):
        TableStyle(ci="brackets")


def test_escaping_and_plain_frames() -> None:
    assert latex.escape("a_b & 50% #1 {x} Δ ±") == \
        r"a\_b \& 50\% \#1 \{x\} $\Delta$ $\pm$"
    ablation = pd.DataFrame({"pipeline": ["resnet50", "+CRF"], "mIoU": ["40.00", "-"],
                             "note": ["x_y", "1.0 z"]})
    text = render(ablation, "latex")
    assert r"\begin{tabular}{lrl}" in text
    assert body(text)[1] == [["resnet50", "40.00", "x\\_y"], ["+CRF", "--", "1.0 z"]]


def test_leaderboard_markdown_has_ood_sections_only_where_there_are_ood_records() -> None:
    from bench.table import leaderboard_markdown

    home = record("effnet", 0.5, 0.2, 0.3)
    other_seed = {**record("effnet", 0.6, 0.3, 0.4), "seed": 1}
    ood = {**record("effnet", 0.45, 0.1, 0.2, dataset="set_b"), "train_dataset": "set_a"}
    text = leaderboard_markdown(frame([home, other_seed, ood]))
    assert text.count("## out of distribution") == 1
    assert "## out of distribution: split `test`, profile `quick`, seed 0" in text
    section = text[text.index("## out of distribution"):text.index("### Columns")]
    assert "| effnet   | set_a        | set_b     |" in section
    assert "| -10.00 " in section  # Δ IoU_smoke: 10.00 - 20.00


@pytest.mark.parametrize("siunitx", [False, True], ids=["plain", "siunitx"])
def test_latex_compiles_with_pdflatex(tmp_path, siunitx: bool) -> None:
    """The LaTeX `bench table --format latex` writes compiles in a document with the packages
    its header comment names (skipped where TeX Live is not installed)."""
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex on PATH: compiling the LaTeX tables needs TeX Live "
                    "(Debian: apt-get install texlive-latex-recommended)")
    if siunitx and subprocess.run(["kpsewhich", "siunitx.sty"], capture_output=True,
                                  text=True).stdout.strip() == "":
        pytest.skip("siunitx.sty is not installed (Debian: apt-get install texlive-science)")
    table = render(leaderboard_view(frame(RECORDS)), "latex",
                   TableStyle(siunitx=siunitx, ci="inline",
                              labels={"effnet+crf": "EffNet + CRF (50% Δ ±)"}))
    pm = render(leaderboard_view(frame(RECORDS)), "latex",
                TableStyle(siunitx=siunitx, ci="pm", columns=("method", "mIoU", "mIoU ±")))
    preamble = [r"\documentclass{article}", r"\usepackage{booktabs}",
                r"\usepackage[margin=1cm,landscape]{geometry}"]
    if siunitx:
        preamble += [r"\usepackage{siunitx}", r"\sisetup{detect-weight=true}"]
    doc = "\n".join([*preamble, r"\begin{document}", r"\scriptsize", table, "", pm,
                     r"\end{document}", ""])
    (tmp_path / "t.tex").write_text(doc, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stdout.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and not errors, errors or done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0
