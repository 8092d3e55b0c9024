"""Out-of-distribution tables (issue 17): a method trained on one tiny data set is scored on
another (pixel masks, SmokeSeg layout) and on an image-level set through the CLI, and the CSV
and LaTeX OOD tables are checked cell by cell against the records."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.records import load_records

PLUGIN = '''
"""A trainable brightness CAM for the OOD tests (NumPy only)."""
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method


@register_method("ood_cam")
class OodCam(CamSource):
    """Brightness, mixed with a left-to-right ramp (``mix``) to make a worse method; it
    learns the mean brightness of its training images (unused: training is what counts)."""

    trainable = True

    @dataclass
    class Params:
        mix: float = 0.0

    def fit(self, train, val):
        self.scale = float(np.mean([s.image.mean() for s in train])) / 255.0

    def save(self, directory):
        (directory / "scale.txt").write_text(repr(self.scale))

    def load(self, directory):
        self.scale = float((directory / "scale.txt").read_text())

    def compute(self, images):
        mix = self.params.mix
        return [((1 - mix) * im.mean(axis=2) / 255.0
                 + mix * np.linspace(0, 1, im.shape[1])[None, :]).astype(np.float32)
                for im in images]
'''

METHODS = "ood_cam,ood_cam[mix=0.6],all_smoke,all_background"
PIXEL = ("IoU_smoke", "mIoU", "precision", "recall", "F1", "accuracy")
IMAGE = ("F1", "precision", "recall", "accuracy", "fp_pixel_rate_neg")


def class_root(root: Path) -> Path:
    """``smoke/`` and ``no_smoke/`` (the IJmond crops layout): bright blobs are smoke."""
    rng = np.random.default_rng(5)
    for folder, smoke in (("smoke", True), ("no_smoke", False)):
        (root / folder).mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            if smoke:
                image[8:20, 6:22] = 220
            Image.fromarray(image).save(root / folder / f"{folder}{i}.png")
    return root


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory: pytest.TempPathFactory, builders: SimpleNamespace) -> dict:
    """Train on a SMOKE5K-layout set, score it in domain, then score SmokeSeg-layout and
    class-folder sets out of distribution (split test, profile quick, seed 0)."""
    tmp = tmp_path_factory.mktemp("ood")
    smoke_frame, write_pair = builders.smoke_frame, builders.write_pair
    dataset_file, write_smokeseg = builders.dataset_file, builders.write_smokeseg
    rng = np.random.default_rng(0)
    home_root = tmp / "home"
    for split, n in (("train", 12), ("test", 4)):
        for i in range(n):
            write_pair(home_root, split, f"{split}_{i:02d}", *smoke_frame(rng, 48, 64,
                                                                          i % 3 != 0))
    include = tmp / "include"
    home, _ = dataset_file(include, "home", home_root, "val_fraction = 0.3\n")
    (include / "ood_cam.py").write_text(PLUGIN, encoding="utf-8")
    seg_root = tmp / "SmokeSeg"
    lists = write_smokeseg(seg_root)
    cls_root = class_root(tmp / "cls")
    out = tmp / "results"
    base = ["run", "--include", str(include), "--methods", METHODS, "--out", str(out),
            "--n-boot", "40", "--no-progress", "--data-root", f"smokeseg={seg_root}",
            "--data-root", f"ijmond_cls={cls_root}"]
    assert main([*base, "--datasets", home]) == 0
    assert main([*base, "--datasets", "smokeseg,ijmond_cls", "--train-on", home]) == 0
    finals = [r for r in load_records(out) if r["method"] == r["pipeline"]]
    return {"out": out, "home": home, "lists": lists, "include": include,
            "records": {(r["method"], r["dataset"]): r for r in finals}}


def table(run: dict, *args: str) -> str:
    import contextlib

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["table", "--out", str(run["out"]), "--include", str(run["include"]),
                     *args])
    assert code == 0
    return buffer.getvalue()


def pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def interval(ci: list | None) -> str:
    lo, hi = ci if ci else (None, None)
    return f"[{pct(lo)}, {pct(hi)}]"


def expected_row(run: dict, method: str, dataset: str) -> dict[str, str]:
    """The OOD table row of (method, dataset) computed from the records alone."""
    rec = run["records"][(method, dataset)]
    home = run["records"][(method, run["home"])]
    row = {"method": method, "trained on": run["home"], "dataset": dataset,
           "frames": str(rec["n_images"])}
    m = rec["metrics"]
    if rec["level"] == "pixel":
        row["level"] = "pixel"
        for k in PIXEL:
            row[k] = pct(m[k])
            base = home["metrics"][k]
            row[f"Δ {k}"] = "-" if dataset == run["home"] or None in (m[k], base) else \
                pct(m[k] - base, sign=True)
        row["IoU_smoke 95% CI"] = interval(rec["ci"].get("IoU_smoke"))
    else:
        row["level"] = "image"
        for k in IMAGE:
            name = k if k == "fp_pixel_rate_neg" else f"image {k}"
            row[name] = pct(m[k])
        row["image F1 95% CI"] = interval(rec["ci"].get("F1"))
    return row


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_records_of_the_run(ood_run: dict) -> None:
    recs = ood_run["records"]
    home = ood_run["home"]
    assert {d for _, d in recs} == {home, "smokeseg", "ijmond_cls"}
    assert all(r["train_dataset"] == home for r in recs.values())
    assert recs[("ood_cam", "smokeseg")]["level"] == "pixel"
    assert recs[("ood_cam", "ijmond_cls")]["level"] == "image"
    # the SmokeSeg test split's size buckets ride along out of distribution too
    assert recs[("ood_cam", "smokeseg")]["subsets"]["small"]["n_images"] == 2


def test_ood_csv_cell_by_cell(ood_run: dict) -> None:
    rows = read_csv(table(ood_run, "--ood", "--format", "csv"))
    home = ood_run["home"]
    header = list(rows[0])
    pixel_cols = [c for k in PIXEL for c in ([k, "IoU_smoke 95% CI", f"Δ {k}"]
                                             if k == "IoU_smoke" else [k, f"Δ {k}"])]
    image_cols = [c for k in IMAGE for c in (
        [f"image {k}", "image F1 95% CI"] if k == "F1" else
        [k if k == "fp_pixel_rate_neg" else f"image {k}"])]
    # every metric, the headline (smoke IoU) first with its interval, Δ after each metric;
    # image-level Δ columns are left out: no image-level in-domain row to compare with
    assert header == ["method", "trained on", "dataset", "level", "frames", *pixel_cols,
                      *image_cols]
    methods = ["ood_cam", "ood_cam[mix=0.6]", "all_smoke", "all_background"]
    shown = {(r["method"], r["dataset"]) for r in rows}
    assert shown == {(m, d) for m in methods for d in (home, "smokeseg", "ijmond_cls")}
    # blocks: in domain first, then each scored set by name; the best headline first
    blocks = [r["dataset"] for r in rows]
    assert blocks == [home] * 4 + ["ijmond_cls"] * 4 + ["smokeseg"] * 4
    recs = ood_run["records"]
    for block in (home, "smokeseg"):
        heads = [recs[(r["method"], block)]["metrics"]["IoU_smoke"] for r in rows
                 if r["dataset"] == block]
        assert heads == sorted(heads, reverse=True)
    for row in rows:
        want = expected_row(ood_run, row["method"], row["dataset"])
        for column, cell in row.items():
            assert cell == want.get(column, "-"), (row["method"], row["dataset"], column)
    # --datasets selects out-of-distribution rows alone, keeping their differences; with
    # only OOD records selected, the OOD view is the default table
    only = read_csv(table(ood_run, "--datasets", "smokeseg", "--methods", "ood_cam*",
                          "--format", "csv"))
    assert [(r["method"], r["dataset"]) for r in only] == [
        (r["method"], r["dataset"]) for r in rows
        if r["dataset"] == "smokeseg" and r["method"].startswith("ood_cam")]
    assert "level" not in only[0] and "image F1" not in only[0]
    for row in only:
        want = expected_row(ood_run, row["method"], "smokeseg")
        assert {k: v for k, v in row.items()} == {k: want[k] for k in row}


def latex_rows(text: str) -> tuple[str, list[list[str]], list[int]]:
    """(column spec, body rows split into cells, indices of rows a \\midrule precedes)."""
    lines = text.strip().splitlines()
    spec = re.match(r"\\begin\{tabular\}\{(.*)\}$", next(
        line for line in lines if line.startswith(r"\begin{tabular}"))).group(1)
    start = lines.index(r"\midrule") + 1
    end = lines.index(r"\bottomrule")
    rows, rules = [], []
    for line in lines[start:end]:
        if line == r"\midrule":
            rules.append(len(rows))
            continue
        assert line.endswith(r" \\")
        rows.append(line[:-3].split(" & "))
    return spec, rows, rules


def test_ood_latex_cell_by_cell(ood_run: dict) -> None:
    home = ood_run["home"]
    recs = ood_run["records"]
    text = table(ood_run, "--ood", "--format", "latex", "--datasets", f"{home},smokeseg",
                 "--columns", "method,dataset,IoU_smoke,delta IoU_smoke,mIoU,recall",
                 "--ci", "inline", "--label", "ood_cam[mix=0.6]=Brightness + ramp$^*$",
                 "--label", "IoU_smoke=IoU\\textsubscript{smoke}")
    assert text.startswith("% generated by 'bench table'")
    spec, rows, rules = latex_rows(text)
    assert spec == "llrrrr"  # text left, numbers right-aligned
    header = next(line for line in text.splitlines() if line.startswith("method &"))
    assert header == r"method & dataset & IoU\textsubscript{smoke} & $\Delta$ IoU\_smoke & " \
                     r"mIoU & recall \\"
    # per block: baselines, then methods (a rule between), best method in bold
    order = []
    for block in (home, "smokeseg"):
        rows_of = sorted(((m, d) for m, d in recs if d == block),  # ties: by name
                         key=lambda k: (-(recs[k]["metrics"]["IoU_smoke"]), k[0]))
        order += [k for k in rows_of if k[0].startswith("all_")]
        order += [k for k in rows_of if not k[0].startswith("all_")]
    assert rules == [2, 4, 6]  # baselines | methods | baselines | methods
    label = {"ood_cam[mix=0.6]": "Brightness + ramp$^*$", "ood_cam": "ood\\_cam",
             "all_smoke": "all\\_smoke", "all_background": "all\\_background"}
    for (method, dataset), cells in zip(order, rows, strict=True):
        rec = recs[(method, dataset)]
        m = rec["metrics"]
        methods = [k for k in recs if k[1] == dataset and not k[0].startswith("all_")]

        def shown(key: str, value: str, *, method: str = method,
                  methods: list = methods) -> str:
            best = max(recs[k]["metrics"][key] for k in methods)
            is_best = not method.startswith("all_") and f"{100 * best:.2f}" == value
            return rf"\textbf{{{value}}}" if is_best else value

        lo, hi = rec["ci"]["IoU_smoke"]
        head = shown("IoU_smoke", pct(m["IoU_smoke"]))
        assert cells[0] == label[method] and cells[1] == dataset.replace("_", "\\_")
        assert cells[2] == f"{head} {{\\scriptsize [{pct(lo)}, {pct(hi)}]}}"
        delta = "--" if dataset == home else \
            f"${pct(m['IoU_smoke'] - recs[(method, home)]['metrics']['IoU_smoke'], True)}$"
        assert cells[3] == delta
        assert cells[4] == shown("mIoU", pct(m["mIoU"]))
        assert cells[5] == shown("recall", pct(m["recall"]))
    # siunitx: S columns sized to the numbers, bold as \bfseries, missing values braced
    text = table(ood_run, "--ood", "--format", "latex", "--datasets", f"{home},smokeseg",
                 "--columns", "method,frames,IoU_smoke,delta IoU_smoke", "--siunitx")
    spec, rows, _ = latex_rows(text)
    shown = [k for k in recs if k[1] in (home, "smokeseg")]
    whole = max(len(str(int(100 * recs[k]["metrics"]["IoU_smoke"]))) for k in shown)
    diffs = [recs[k]["metrics"]["IoU_smoke"] - recs[(k[0], home)]["metrics"]["IoU_smoke"]
             for k in shown if k[1] == "smokeseg"]
    whole_diff = max(len(f"{abs(100 * d):.2f}".partition(".")[0]) for d in diffs)
    assert spec == (f"lS[table-format=1.0]S[table-format={whole}.2]"
                    f"S[table-format=+{whole_diff}.2]")
    assert r"\sisetup{detect-weight=true}" in text
    assert sum(r"\bfseries" in c for row in rows for c in row) >= 2
    assert all(row[3] == "{--}" for row in rows[:4])  # in domain: no difference


def test_ood_image_level_rows_and_pm_intervals(ood_run: dict) -> None:
    rows = read_csv(table(ood_run, "--ood", "--format", "csv", "--datasets", "ijmond_cls",
                          "--ci", "pm", "--metric", "fp_pixel_rate_neg"))
    recs = ood_run["records"]
    assert list(rows[0])[:6] == ["method", "trained on", "dataset", "frames",
                                 "fp_pixel_rate_neg", "fp_pixel_rate_neg ±"]
    values = [recs[(r["method"], "ijmond_cls")]["metrics"]["fp_pixel_rate_neg"] for r in rows]
    assert values == sorted(values)  # lower is better: the lowest first
    for row in rows:
        rec = recs[(row["method"], "ijmond_cls")]
        lo, hi = rec["ci"]["fp_pixel_rate_neg"]
        assert row["fp_pixel_rate_neg ±"] == f"±{100 * (hi - lo) / 2:.2f}"
        assert row["image accuracy"] == pct(rec["metrics"]["accuracy"])


def test_leaderboard_has_every_metric_out_of_distribution(ood_run: dict) -> None:
    board = (ood_run["out"] / "leaderboard.md").read_text(encoding="utf-8")
    section = board[board.index("## out of distribution"):board.index("### Columns")]
    for column in ("trained on", "IoU_smoke 95% CI", "Δ IoU_smoke", "Δ recall", "image F1",
                   "fp_pixel_rate_neg"):
        assert f"| {column} " in section or f"| {column}" in section, column


def test_errors_are_one_line(ood_run: dict, capsys: pytest.CaptureFixture) -> None:
    args = ["table", "--out", str(ood_run["out"]), "--include", str(ood_run["include"])]
    for extra, message in (
            (["--ood", "--columns", "method,nope"], "--columns: this table has no column "
                                                    "'nope' (columns: method, trained on"),
            (["--ood", "--metric", "Dice"], "--metric Dice: not a metric of these tables"),
            (["--label", "effnet"], "--label expects SPEC=NAME"),
            (["--subsets", "--datasets", "ijmond_cls"], "--subsets: no record among these")):
        capsys.readouterr()
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


def test_the_readme_section_commands_fit_the_code(ood_run: dict, tmp_path: Path) -> None:
    """docs/tables.md's README section: its data set file parses, and its table command's
    columns exist in an OOD view with pixel and image-level rows."""
    from bench.data.config import parse_dataset_file

    doc = (Path(__file__).resolve().parents[1] / "docs" / "tables.md").read_text(
        encoding="utf-8")
    section = doc[doc.index("<!-- README section -->"):doc.index("<!-- /README section -->")]
    toml = re.search(r"<<'TOML'\n(.*?)TOML\n", section, re.S).group(1)
    (tmp_path / "ijmond_samples.toml").write_text(toml, encoding="utf-8")
    config = parse_dataset_file(tmp_path / "ijmond_samples.toml")
    assert (config.loader, config.split_names) == ("class_folders", ["val"])
    columns = re.search(r"--ood --split val --columns \\\n +'([^']+)'", section).group(1)
    rows = read_csv(table(ood_run, "--ood", "--format", "csv", "--columns", columns))
    assert list(rows[0]) == columns.split(",")
    assert "| effnet+crf     | smoke5k        | pixel   | 71       | 33.49 " in section
