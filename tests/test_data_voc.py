"""The ``voc`` loader kind, the built-in SmokeSeg data set file and named subsets of a split
(issue 17), on a tiny fixture in FoSp's exact SmokeSeg layout (`conftest.write_smokeseg`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data import DATASETS, discover_datasets, load_splits
from bench.data.config import parse_dataset_file
from bench.data.subsets import Subset, SubsetRule, read_id_list
from bench.data.voc import load_voc
from bench.errors import ConfigError, InputError
from bench.metrics import metrics_from_areas
from bench.records import load_areas, load_records

SIZES = ("small", "medium", "large")


def smokeseg():
    discover_datasets()
    return DATASETS.get("smokeseg")


def test_builtin_smokeseg_reads_the_fosp_layout(smokeseg_root: tuple[Path, dict]) -> None:
    root, lists = smokeseg_root
    config = smokeseg()
    assert config.loader == "voc" and config.root_env == "SMOKESEG_ROOT"
    assert "FoSp" in config.raw["citation"] and "10.1609/aaai.v38i7.28484" in config.raw[
        "citation"]
    assert config.raw["license"].startswith("MIT")
    data = load_splits(config, root)
    assert {k: v.ids for k, v in data.splits.items()} == {
        s: lists[s] for s in ("train", "val", "test")}  # ids in list order, no carve-out
    for sample, frame_id in zip(data["test"], lists["test"], strict=True):
        mask = np.asarray(Image.open(root / "SegmentationClass" / f"{frame_id}.png"))
        assert Image.open(root / "SegmentationClass" / f"{frame_id}.png").mode == "P"
        assert np.array_equal(sample.mask, mask)  # palette indices are the classes
        assert set(np.unique(sample.mask)) == {0, 1}
    # the test split's subsets, resolved when it loads; other splits have none
    assert list(data.subsets) == ["test"]
    assert [(s.name, sorted(s.ids or ())) for s in data.subsets["test"]] == [
        (size, sorted(lists[f"test_{size}"])) for size in SIZES]


def test_subsets_do_not_change_the_split_fingerprint(tmp_path: Path,
                                                     smokeseg_root: tuple[Path, dict]) -> None:
    """Declaring subsets must keep every cached stage: they only regroup scored frames."""
    root, _ = smokeseg_root
    text = smokeseg().path.read_text(encoding="utf-8")
    bare = text[:text.index("[subsets.test]")] + text[text.index("[image_labels]"):]
    path = tmp_path / "bare" / "smokeseg.toml"
    path.parent.mkdir()
    path.write_text(bare, encoding="utf-8")
    without = load_splits(parse_dataset_file(path), root).fingerprints
    assert without == load_splits(smokeseg(), root).fingerprints


VOC = """loader = "voc"
[splits]
test = "test"
[masks]
encoding = "binary01"
"""


def voc_file(tmp_path: Path, body: str = VOC, name: str = "voc_test") -> object:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{body}', encoding="utf-8")
    return parse_dataset_file(path)


def test_voc_defaults_are_the_pascal_layout(tmp_path: Path, smokeseg_root: tuple[Path, dict]
                                            ) -> None:
    root, lists = smokeseg_root
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text(
        f"{lists['test'][1]}\n\n  {lists['test'][0]}  1\n", encoding="utf-8")
    frames = load_voc(voc_file(tmp_path), "test", root, "quick")
    assert [f.id for f in frames] == [lists["test"][1], lists["test"][0]]  # first word per line


@pytest.mark.parametrize("problem", ["no list", "twice", "no image", "no mask", "mask value",
                                     "empty list"])
def test_voc_errors_name_the_file(tmp_path: Path, smokeseg_root: tuple[Path, dict],
                                  problem: str) -> None:
    root, lists = smokeseg_root
    listing = root / "SmokeSeg_ImageSets" / "Segmentation" / "test.txt"
    first = lists["test"][0]
    bad, expected = listing, ""
    if problem == "no list":
        listing.unlink()
        expected = "list file of split 'test' not found"
    elif problem == "twice":
        listing.write_text(f"{first}\n{lists['test'][1]}\n{first}\n", encoding="utf-8")
        expected = f"line 3: id '{first}' is listed twice (first on line 1)"
    elif problem == "empty list":
        listing.write_text("\n \n", encoding="utf-8")
        expected = "list file of split 'test' holds no ids"
    elif problem == "no image":
        bad = root / "JPEGImages" / f"{first}.jpg"
        bad.unlink()
        expected = f"image of id '{first}' (listed in test.txt) not found"
    elif problem == "no mask":
        bad = root / "SegmentationClass" / f"{first}.png"
        bad.unlink()
        expected = f"mask of id '{first}' (listed in test.txt) not found"
    else:
        bad = root / "SegmentationClass" / f"{first}.png"
        png = Image.fromarray(np.full((40, 48), 2, np.uint8), mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        png.save(bad)
        expected = "mask values 2 are outside encoding 'binary01'"
    with pytest.raises(InputError) as err:
        load_splits(smokeseg(), root, splits=["test"])
    assert err.value.path == str(bad) and expected in err.value.problem


def test_bad_voc_and_subset_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[voc\] unknown keys \['image'\]"):
        load_voc(voc_file(tmp_path, VOC + '[voc]\nimage = "x"\n'), "test", tmp_path, "quick")
    with pytest.raises(ConfigError, match=r"lists must contain '\{split\}'"):
        load_voc(voc_file(tmp_path, VOC + '[voc]\nlists = "a.txt"\n'), "test", tmp_path,
                 "quick")
    cases = {
        '[subsets.val]\na = "x.txt"\n': "names split 'val', which the file does not have",
        '[subsets.test]\nall = "x.txt"\n': "not 'all'",
        '[subsets.test]\na = { smoke_share = [0.5, 0.1] }\n': "0 <= lo < hi <= 1",
        '[subsets.test]\na = { ids = [] }\n': "ids must be a non-empty list",
        '[subsets.test]\na = { size = 3 }\n': "unknown subset kind 'size'",
        '[subsets]\nmissing = "skip"\n': "missing must be",
    }
    for body, message in cases.items():
        with pytest.raises(ConfigError, match=message) as err:
            voc_file(tmp_path, VOC + body)
        assert str(err.value).startswith(str(tmp_path / "voc_test.toml"))


def test_subset_lists_are_checked_against_the_split(tmp_path: Path,
                                                    smokeseg_root: tuple[Path, dict]) -> None:
    root, lists = smokeseg_root
    small = root / "SmokeSeg_ImageSets" / "Segmentation" / "test_small.txt"
    small.write_text(f"{lists['test'][0]}\nnot_a_frame\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_splits(smokeseg(), root, splits=["test"])
    assert str(err.value).startswith(f"{small}: 1 id(s) of subset 'small' are no frame of "
                                     "split 'test': 'not_a_frame'")
    assert 'missing = "ignore"' in str(err.value)
    text = smokeseg().path.read_text(encoding="utf-8").replace(
        'name = "smokeseg"', 'name = "smokeseg_sample"').replace(
        "[subsets.test]", '[subsets]\nmissing = "ignore"\n\n[subsets.test]')
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "sample.toml").write_text(text, encoding="utf-8")
    data = load_splits(parse_dataset_file(tmp_path / "inc" / "sample.toml"), root,
                       splits=["test"])
    assert data.subsets["test"][0].ids == {lists["test"][0]}
    small.unlink()
    with pytest.raises(InputError, match="id list of subset 'small' not found"):
        load_splits(smokeseg(), root, splits=["test"])


def test_read_id_list(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a\r\nb 1\n\nc\n", encoding="utf-8")
    assert read_id_list(path) == ["a", "b", "c"]


def test_subset_membership_by_ids_tiles_and_smoke_share() -> None:
    # areas rows: intersect, union, pred, label; columns background, smoke
    def areas(smoke: int, background: int) -> np.ndarray:
        return np.array([[0, 0], [0, 0], [0, 0], [background, smoke]])

    rows = np.stack([areas(0, 100), areas(1, 199), areas(5, 95), areas(50, 50)])
    ids = ["a", "b@0_0", "b@0_64", "c"]
    by_ids = Subset(SubsetRule("x", ids=("b", "c")), frozenset({"b", "c"}))
    assert by_ids.members(ids, rows, "pixel").tolist() == [False, True, True, True]
    assert by_ids.members(ids, rows, "image").tolist() == [False, True, True, True]
    faint = Subset(SubsetRule("faint", smoke_share=(0.0, 0.01)))
    # no smoke: in no share rule; 1/200 = 0.5%: in; 5%: out; 50%: out
    assert faint.members(ids, rows, "pixel").tolist() == [False, True, False, False]
    half = Subset(SubsetRule("half", smoke_share=(0.05, 0.5)))
    assert half.members(ids, rows, "pixel").tolist() == [False, False, True, False]  # [lo, hi)
    assert faint.members(ids, rows, "image") is None  # a rule over masks: pixel level only


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def test_records_carry_subset_metrics_and_tables_show_them(
        tmp_path: Path, smokeseg_root: tuple[Path, dict],
        capsys: pytest.CaptureFixture) -> None:
    """A run on the SmokeSeg fixture: each record's subset metrics are its stored per-frame
    areas of the listed frames, summed and divided once; ``bench table --subsets`` shows them
    column by column and row by row."""
    root, lists = smokeseg_root
    out = tmp_path / "results"
    assert main(["run", "--methods", "all_smoke,dark_channel+threshold", "--datasets",
                 "smokeseg", "--data-root", f"smokeseg={root}", "--out", str(out),
                 "--n-boot", "30", "--no-progress"]) == 0
    records = {r["method"]: r for r in load_records(out)}
    for method, rec in records.items():
        areas, ids, _ = load_areas(Path(rec["_path"]))
        assert ids == lists["test"]
        subsets = rec["subsets"]
        assert sorted(subsets, key=lambda n: subsets[n]["order"]) == list(SIZES)
        for size in SIZES:
            keep = np.isin(ids, lists[f"test_{size}"])
            expected = metrics_from_areas(areas[keep].sum(axis=0))
            sub = rec["subsets"][size]
            assert sub["n_images"] == 2
            assert sub["rule"] == f"SmokeSeg_ImageSets/Segmentation/test_{size}.txt"
            for key, value in expected.items():
                assert sub["metrics"][key] == pytest.approx(value, nan_ok=True), (method, key)
            assert set(sub["ci"]) >= {"mIoU", "IoU_smoke", "n_boot"}
    json.dumps(records)  # plain JSON
    capsys.readouterr()
    assert main(["table", "--out", str(out), "--subsets", "--format", "csv"]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert len(rows) == 2
    assert list(rows[0]) == ["method", "dataset", "frames", "IoU_smoke all",
                             "IoU_smoke all 95% CI", *(c for s in SIZES for c in (
                                 f"IoU_smoke {s}", f"IoU_smoke {s} 95% CI"))]
    for row in rows:
        rec = records[row["method"]]
        assert row["frames"] == "6" and row["dataset"] == "smokeseg"
        assert row["IoU_smoke all"] == pct(rec["metrics"]["IoU_smoke"])
        for size in SIZES:
            sub = rec["subsets"][size]
            assert row[f"IoU_smoke {size}"] == pct(sub["metrics"]["IoU_smoke"])
            lo, hi = sub["ci"]["IoU_smoke"]
            assert row[f"IoU_smoke {size} 95% CI"] == f"[{pct(lo)}, {pct(hi)}]"
    assert main(["table", "--out", str(out), "--subsets", "rows", "--format", "csv",
                 "--metric", "recall", "--ci", "none"]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert list(rows[0])[:6] == ["method", "dataset", "subset", "frames", "recall", "mIoU"]
    finals = [m for m, r in records.items() if r["pipeline"] == m]
    assert sorted(finals) == ["all_smoke", "dark_channel+threshold"]
    assert [r["subset"] for r in rows] == [p for p in ("all", *SIZES) for _ in finals]
    for row in rows:
        rec = records[row["method"]]
        score = rec["metrics"] if row["subset"] == "all" else \
            rec["subsets"][row["subset"]]["metrics"]
        assert row["frames"] == ("6" if row["subset"] == "all" else "2")
        for metric in ("recall", "mIoU", "IoU_smoke", "precision", "F1", "accuracy"):
            assert row[metric] == pct(score[metric]), (row, metric)


def test_bench_show_gives_citation_licence_and_subsets(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "smokeseg"]) == 0
    out = capsys.readouterr().out
    assert "  loader:         voc\n" in out
    assert "  subsets:        test: small (SmokeSeg_ImageSets/Segmentation/test_small.txt), " \
           "medium (" in out
    assert "doi:10.1609/aaai.v38i7.28484" in out and "\n  license:        MIT (" in out
