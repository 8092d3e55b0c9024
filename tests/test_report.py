"""``bench report``: the HTML page over a small synthetic run, its charts, its choice of frames,
recomputed and missing maps, and a runner that never trains (issue 16).

The checks in a real browser are in ``test_report_browser.py``; this file reads the page's HTML.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cli import main
from bench.records import load_records

#: cheap pipelines (nothing trains): a baseline of each kind, soft and label maps, prefixes
METHODS = "all_smoke,all_background,random,dark_channel+threshold[threshold=0.3,band=0.2]," \
          "dark_channel+crf"

TINY_SYNTHETIC = '''name = "{name}"
description = "a tiny synthetic set for the report tests"
loader = "synthetic"
[synthetic]
size = 64
smoke_rate = 0.6
smoke_coverage = 0.15
steam_rate = 0.5
[synthetic.quick]
train = 12
val = 8
test = 8
[splits.train]
seed = 1
chimney_given_smoke = 0.95
chimney_given_no_smoke = 0.2
[splits.val]
seed = 2
chimney_given_smoke = 0.5
chimney_given_no_smoke = 0.9
[splits.test]
seed = 3
chimney_given_smoke = 0.5
chimney_given_no_smoke = 0.9
'''


def tiny_synthetic_run(base: Path, methods: str = METHODS) -> tuple[Path, Path, str]:
    """A run of ``methods`` on a tiny synthetic data set (64 px, 8 test frames, chimney and
    steam masks); returns (run folder, include folder, data set name)."""
    include = base / "include"
    include.mkdir(parents=True, exist_ok=True)
    name = f"tinysyn{abs(hash(str(base))) % 10**6}"  # data set names are global to the process
    (include / f"{name}.toml").write_text(TINY_SYNTHETIC.format(name=name), encoding="utf-8")
    out = base / "results"
    assert main(["run", "--include", str(include), "--methods", methods, "--datasets", name,
                 "--out", str(out), "--n-boot", "20", "--no-progress"]) == 0
    return out, include, name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return tiny_synthetic_run(tmp_path_factory.mktemp("report"))


class Page(HTMLParser):
    """What the tests read from a report: tables (rows of cell texts), images, missing boxes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self.missing: list[str] = []
        self._cell: list[str] | None = None
        self._div: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "div" and a.get("class") == "missing":
            self._div = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "div" and self._div is not None:
            self.missing.append("".join(self._div))
            self._div = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._div is not None:
            self._div.append(data)


def decode(src: str) -> np.ndarray:
    """The pixels of a ``data:`` URI image."""
    from PIL import Image

    head, payload = src.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64"), head
    with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
        return np.asarray(im.convert("RGB"))


def report(out: Path, include: Path, *extra: str) -> tuple[str, Page]:
    code = main(["report", "--out", str(out), "--include", str(include), *extra])
    assert code == 0
    target = Path(extra[extra.index("--output") + 1]) if "--output" in extra \
        else out / "report.html"
    text = target.read_text(encoding="utf-8")
    return text, Page(text)


# --------------------------------------------------------------------------- the page
def test_report_shows_every_record_and_decodable_pictures(tiny_run: tuple[Path, Path, str],
                                                         capsys: pytest.CaptureFixture) -> None:
    out, include, _ = tiny_run
    text, page = report(out, include)
    summary = capsys.readouterr().err
    assert f"bench report: wrote {out / 'report.html'}" in summary
    records = load_records(out)
    finals = [r for r in records if r["method"] == r["pipeline"]]
    assert len(finals) == 5 and len(records) == 6  # + dark_channel, shared by two pipelines
    # every final record is a leaderboard row with its own numbers
    board = next(t for t in page.tables if t and t[0][:2] == ["method", "dataset"])
    header, rows = board[0], {r[0].removesuffix(" †"): r for r in board[1:]}
    assert set(rows) == {r["method"] for r in finals}
    for rec in finals:
        row = rows[rec["method"]]
        assert row[header.index("mIoU")] == f"{100 * rec['metrics']['mIoU']:.2f}"
        lo, hi = rec["ci"]["IoU_smoke"]
        assert row[header.index("IoU_smoke 95% CI")] == f"[{100 * lo:.2f}, {100 * hi:.2f}]"
        assert row[header.index("recall")] == f"{100 * rec['metrics']['recall']:.2f}"
    # every prefix record is a row of its pipeline's ablation table
    ablations = [t for t in page.tables if t and t[0][0] == "pipeline"]
    assert len(ablations) == 2
    prefix = next(r for r in records if r["method"] == "dark_channel")
    table = next(t for t in ablations if t[2][0] == "+threshold")
    assert table[1][0] == "dark_channel"
    assert table[1][1] == f"{100 * prefix['metrics']['mIoU']:.2f}"
    # provenance: every record's file is named
    for rec in records:
        assert str(Path(rec["_path"]).relative_to(out)) in text
    assert "commit" in text and "profile quick" in text
    # pictures: all embedded, all decodable, none missing; charts are PNG, grids JPEG
    assert page.images and not page.missing
    assert all(img["src"].startswith("data:image/") for img in page.images)
    shapes = {decode(img["src"]).shape for img in page.images}
    assert (64, 64, 3) in shapes  # grid pictures keep the 64-px frames' size
    charts = [img for img in page.images if img.get("class") == "chart"]
    assert len(charts) == 1 + 2 + 1  # bar chart, two ablations, spurious correlations
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text


def test_grids_show_the_best_median_and_worst_frames(tiny_run: tuple[Path, Path, str]) -> None:
    out, include, _ = tiny_run
    _, page = report(out, include)
    rec = next(r for r in load_records(out) if r["method"] == "dark_channel+crf")
    with np.load(Path(rec["_path"]).with_suffix(".areas.npz")) as npz:
        areas, ids = npz["areas"].astype(float), [str(i) for i in npz["ids"]]
    union = areas[:, 1, 1]
    iou = {i: areas[k, 0, 1] / union[k] for k, i in enumerate(ids) if union[k] > 0}
    best = max(iou, key=lambda i: (iou[i], union[ids.index(i)]))
    alts = [img["alt"] for img in page.images]
    assert f"{best}: CAM of dark_channel" in alts  # the CAM column of the best frame
    assert f"{best}: final of dark_channel+crf" in alts
    # outlines of the chimney / steam masks: cyan or magenta pixels on the image column
    frames = [img for img in page.images if img["alt"].endswith(": image")]
    coloured = 0
    for img in frames:
        px = decode(img["src"]).astype(int)
        cyan = (px[..., 0] < 60) & (px[..., 1] > 180) & (px[..., 2] > 200)
        magenta = (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] > 200)
        coloured += int((cyan | magenta).sum() > 0)
    assert coloured > 0


def test_a_missing_map_is_recomputed_or_marked(tiny_run: tuple[Path, Path, str],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    src, include, _ = tiny_run
    out = tmp_path / "results"
    shutil.copytree(src, out)
    rec = next(r for r in load_records(out) if r["method"] == "dark_channel+crf")
    maps_file = next((out / "cache" / rec["config"]["cache_key"]).glob("maps-test-*.npz"))
    with np.load(maps_file) as npz:
        before = {k: npz[k] for k in npz.files if k != "__timing__"}
    maps_file.unlink()
    _, page = report(out, include)
    assert "recomputed the maps of 'dark_channel+crf'" in capsys.readouterr().err
    assert maps_file.is_file() and not page.missing
    with np.load(maps_file) as npz:
        after = {k: npz[k] for k in npz.files if k != "__timing__"}
    assert after.keys() == before.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)
    # --no-regenerate: marked as missing, with the file it looked for, never a blank picture
    maps_file.unlink()
    _, page = report(out, include, "--no-regenerate", "--output", str(tmp_path / "r.html"))
    assert page.missing and all("maps not cached" in m for m in page.missing)
    assert maps_file.name in page.missing[0]
    assert "missing map(s) marked" in capsys.readouterr().err
    assert not any(img["alt"].endswith("final of dark_channel+crf") for img in page.images)
    # the data root of a record that cannot be loaded: every picture of it marked, exit 0
    for path in (out / "records").rglob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["config"]["data"]["fingerprints"]["test"] = "0000000000000000"
        path.write_text(json.dumps(data), encoding="utf-8")
    _, page = report(out, include, "--output", str(tmp_path / "r2.html"))
    assert page.missing and all("changed since the run" in m for m in page.missing)


def test_report_errors_are_one_line(tmp_path: Path, tiny_run: tuple[Path, Path, str],
                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--out", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no records under" in err and "bench run" in err
    out, include, _ = tiny_run
    assert main(["report", "--out", str(out), "--include", str(include), "--methods",
                 "nosuch*", "--output", str(tmp_path / "r.html")]) == 2
    assert "match --methods/--datasets" in capsys.readouterr().err


def test_report_filters_methods(tiny_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, include, _ = tiny_run
    _, page = report(out, include, "--methods", "dark_channel*,all_smoke", "--output",
                     str(tmp_path / "r.html"))
    board = next(t for t in page.tables if t and t[0][:2] == ["method", "dataset"])
    assert sorted(r[0] for r in board[1:]) == ["all_smoke", "dark_channel+crf",
                                               "dark_channel+threshold[threshold=0.3,band=0.2]"]


# --------------------------------------------------------------------------- pieces
def test_leaderboard_chart_draws_references_as_lines() -> None:
    from bench.figures import Bar, Reference, leaderboard_chart

    bars = [Bar("a", {"mIoU": 0.6, "IoU_smoke": 0.3},
                {"mIoU": (0.5, 0.7), "IoU_smoke": (0.2, 0.35)}),
            Bar("b", {"mIoU": 0.55, "IoU_smoke": 0.1},
                {"mIoU": (0.54, 0.58), "IoU_smoke": (0.05, 0.2)})]
    refs = [Reference("supervised", "upper", {"mIoU": 0.77, "IoU_smoke": 0.56}),
            Reference("all_smoke", "baseline", {"mIoU": 0.015, "IoU_smoke": 0.03})]
    fig = leaderboard_chart(bars, refs, "t")
    miou, smoke = fig.axes
    ys = dict(zip([t.get_text() for t in miou.get_yticklabels()], miou.get_yticks(),
                  strict=True))
    assert ys["a"] > ys["b"]  # the first bar on top
    widths = sorted(p.get_width() for p in miou.patches)
    assert widths == pytest.approx([55.0, 60.0])
    lines = {line.get_label().split(" (")[0]: line.get_xdata()[0] for line in miou.get_lines()
             if not line.get_label().startswith("_")}
    assert lines == pytest.approx({"supervised": 77.0, "all_smoke": 1.5})
    upper = next(line for line in smoke.get_lines() if line.get_label().startswith("supervised"))
    assert upper.get_xdata()[0] == pytest.approx(56.0) and upper.get_linestyle() == "-"
    # whiskers: the interval of bar a on the smoke panel spans 20 .. 35
    segments = [seg for coll in smoke.collections for seg in coll.get_segments()]
    spans = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in segments)
    assert (20.0, 35.0) in spans


def test_picks_and_shared_frames() -> None:
    from bench.record_maps import pick_best_median_worst
    from bench.report import shared_frames
    from bench.stitch import FrameView

    ids = ["f0", "f1", "f2", "f3", "f4"]
    iou = np.array([0.2, np.nan, 0.9, 0.0, 0.0])
    union = np.array([10.0, 0.0, 50.0, 30.0, 5.0])
    assert pick_best_median_worst(ids, iou, union) == {"best": "f2", "median": "f4",
                                                       "worst": "f3"}
    assert pick_best_median_worst(["a"], np.array([0.5]), np.array([1.0])) == {"best": "a"}
    assert pick_best_median_worst(["a"], np.array([np.nan]), np.array([0.0])) == {}

    class Frames:
        def __init__(self, views: list[FrameView]) -> None:
            self.views = views

    smoke = np.ones((2, 2), np.uint8)
    none = np.zeros((2, 2), np.uint8)
    views = [FrameView(f"s{i}", (2, 2), smoke) for i in range(6)] + \
        [FrameView(f"n{i}", (2, 2), none) for i in range(4)]
    assert shared_frames(Frames(views), 4) == ["s1", "s4", "n1", "n3"]
    assert shared_frames(Frames(views[:6]), 3) == ["s1", "s3", "s5"]
    assert shared_frames(Frames(views), 0) == []


def test_stage_roles() -> None:
    from bench.record_maps import stage_roles

    def rec(*kinds: str) -> dict[str, Any]:
        return {"config": {"stages": [{"kind": k, "name": k} for k in kinds]}}

    assert stage_roles(rec("cam")) == {"cam": 0, "pseudo": 0, "final": 0}
    assert stage_roles(rec("cam", "wrapper", "refiner")) == {"cam": 1, "pseudo": 2, "final": 2}
    assert stage_roles(rec("cam", "refiner", "segmenter")) == {"cam": 0, "pseudo": 1,
                                                               "final": 2}
    assert stage_roles(rec("segmenter")) == {"cam": None, "pseudo": None, "final": 0}


def test_the_cached_runner_never_trains(tiny_run: tuple[Path, Path, str]) -> None:
    """A trainable stage without trained state in the cache stops with NeedsTraining before any
    training, and leaves no trained state behind."""
    from bench.cached_pipeline import NeedsTraining, record_runner

    out, include, name = tiny_run
    rec = {"method": "effnet[input_size=32,epochs=1,batch_size=4,epoch_size=0]",
           "dataset": name, "split": "test", "profile": "quick", "seed": 0,
           "config": {"options": {"include": [str(include)]}}}
    runner = record_runner(rec, out)
    data = runner.load_data()
    states = runner.stage_states(data)
    with pytest.raises(NeedsTraining, match=r"has no trained state .* never trains"):
        runner.maps(states, 0, "test", data)
    assert not (out / "cache" / states[0].model_key / "model" / "DONE").exists()


# --------------------------------------------------------------------------- in a real browser
def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium`` package), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Any:
    """A headless system Chromium driven by Playwright (skipped, saying why, without one)."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on PATH: the report's browser checks need Debian's chromium "
                    "package (apt-get update && apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is missing: pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: Chromium refuses its sandbox as root (containers, CI)
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


def check_in_browser(browser: Any, path: Path, finals: list[dict[str, Any]],
                     screenshot: Path) -> int:
    """Load a report in Chromium and check it as a reader would see it: every ``<img>``
    decoded, every final record's leaderboard row present, the page not blank (text, and a
    screenshot with contrast). Returns the number of images; fails with an AssertionError."""
    from PIL import Image

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(path.as_uri(), wait_until="load")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && "
                               "i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40))")
        assert not broken, f"{len(broken)} image(s) did not decode: {broken[:5]}"
        images = int(page.evaluate("document.images.length"))
        rows = page.evaluate("Array.from(document.querySelectorAll('table.sortable tbody tr'))"
                             ".map(r => r.cells[0].innerText.trim())")
        shown = {str(m).removesuffix(" †") for m in rows}
        absent = [r["method"] for r in finals if r["method"] not in shown]
        assert not absent, f"leaderboard rows missing: {absent}"
        assert int(page.evaluate("document.body.innerText.length")) > 500, "the page is blank"
        page.screenshot(path=str(screenshot))
    finally:
        page.close()
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("RGB"))
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, \
        "the page is blank"
    return images


def test_report_in_a_real_browser(browser: Any, tiny_run: tuple[Path, Path, str],
                                  tmp_path: Path) -> None:
    out, include, _ = tiny_run
    target = tmp_path / "report.html"
    _, page = report(out, include, "--output", str(target))
    finals = [r for r in load_records(out) if r["method"] == r["pipeline"]]
    images = check_in_browser(browser, target, finals, tmp_path / "shot.png")
    assert images == len(page.images) > 50
    # the leaderboard sorts by a column in the browser: mIoU descending, then ascending
    tab = browser.new_page()
    try:
        tab.goto(target.as_uri(), wait_until="load")
        board = tab.locator("table.sortable").first
        header = board.locator("thead th", has_text="mIoU").first
        column = [t.strip() for t in board.locator("thead th").all_inner_texts()].index("mIoU")

        def values() -> list[float]:
            cells = board.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
            return [float(c) for c in cells]

        header.click()
        assert values() == sorted(values(), reverse=True)
        header.click()
        assert values() == sorted(values())
        wanted = sorted(round(100 * r["metrics"]["mIoU"], 2) for r in finals)
        assert values() == pytest.approx(wanted, abs=0.006)
    finally:
        tab.close()


def test_the_browser_check_fails_on_a_broken_image_or_a_blank_page(
        browser: Any, tiny_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    out, include, _ = tiny_run
    text, _ = report(out, include, "--output", str(tmp_path / "good.html"))
    finals = [r for r in load_records(out) if r["method"] == r["pipeline"]]
    marker = "data:image/jpeg;base64,"
    start = text.index(marker) + len(marker)
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "bm90IGFuIGltYWdl" + text[text.index('"', start):],
                      encoding="utf-8")
    with pytest.raises(AssertionError, match=r"1 image\(s\) did not decode"):
        check_in_browser(browser, broken, finals, tmp_path / "broken.png")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    with pytest.raises(AssertionError, match="the page is blank"):  # no rows asked for
        check_in_browser(browser, blank, [], tmp_path / "blank.png")
    empty_tables = tmp_path / "rows.html"
    empty_tables.write_text(text.replace("<td>all_smoke</td>", "<td>someone else</td>"),
                            encoding="utf-8")
    with pytest.raises(AssertionError, match=r"leaderboard rows missing: \['all_smoke'\]"):
        check_in_browser(browser, empty_tables, finals, tmp_path / "rows.png")


def test_out_of_distribution_records_get_their_table(tiny_run: tuple[Path, Path, str],
                                                     tmp_path: Path) -> None:
    src, include, name = tiny_run
    out = tmp_path / "results"
    shutil.copytree(src, out)
    other = tmp_path / "other"
    other.mkdir()
    scored = f"{name}b"
    (other / f"{scored}.toml").write_text(TINY_SYNTHETIC.format(name=scored)
                                          .replace("seed = 3", "seed = 4"), encoding="utf-8")
    assert main(["run", "--include", str(include), "--include", str(other), "--methods",
                 "dark_channel+crf", "--datasets", scored, "--train-on", name, "--out",
                 str(out), "--n-boot", "10", "--no-progress"]) == 0
    _, page = report(out, include, "--include", str(other))
    table = next(t for t in page.tables if t and t[0][:3] == ["method", "trained on",
                                                              "dataset"])
    rows = {(r[0], r[2]): r for r in table[1:]}
    ood = next(r for r in load_records(out) if r["dataset"] == scored
               and r["method"] == "dark_channel+crf")
    row = rows[("dark_channel+crf", scored)]
    assert row[1] == name
    assert row[table[0].index("mIoU")] == f"{100 * ood['metrics']['mIoU']:.2f}"
    # the in-domain group is unchanged: out-of-distribution rows stay out of its leaderboard
    board = next(t for t in page.tables if t and t[0][:2] == ["method", "dataset"])
    assert {r[1] for r in board[1:]} == {name}
