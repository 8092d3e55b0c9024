"""IJmond segmentation as a Roboflow COCO export: polygons to masks, ids, splits, tiles, errors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data import load_splits
from bench.data.coco import load_coco, parse_frame_name
from bench.data.config import parse_dataset_file
from bench.data.geometry import rasterize_polygon, rle_counts
from bench.errors import ConfigError, InputError

CATEGORIES = [{"id": 0, "name": "smoke", "supercategory": "none"},
              {"id": 1, "name": "high-opacity-smoke", "supercategory": "smoke"},
              {"id": 2, "name": "low-opacity-smoke", "supercategory": "smoke"}]
RECT = [10.0, 8.0, 30.0, 8.0, 30.0, 20.0, 10.0, 20.0]  # 20 x 12 = 240 px
TRI = [40.0, 10.0, 60.0, 10.0, 40.0, 40.0]  # 20 * 30 / 2 = 300 px


def rf_name(camera: str, when: str, n: int, digest: str = "0a1b2c3d") -> str:
    """A Roboflow-renamed IJmond frame name."""
    return f"{camera}__{when}_frame_{n}_jpg.rf.{digest}.jpg"


def write_export(folder: Path, images: list[dict[str, Any]], size: tuple[int, int] = (64, 48),
                 categories: list[dict[str, Any]] | None = None) -> Path:
    """Write images (grey jpgs of ``size`` = (w, h)) and an ``_annotations.coco.json``.

    Each item of ``images`` has ``file_name`` and ``anns``: a list of (category id, polygon).
    """
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    coco: dict[str, Any] = {"info": {}, "categories": categories or CATEGORIES, "images": [],
                            "annotations": []}
    ann_id = 0
    for image_id, item in enumerate(images):
        rng = np.random.default_rng(zlib.crc32(item["file_name"].encode()))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            folder / item["file_name"])
        coco["images"].append({"id": image_id, "file_name": item["file_name"], "width": w,
                               "height": h})
        for cat, poly in item.get("anns", []):
            coco["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": cat,
                                        "segmentation": [poly], "bbox": [0, 0, 1, 1],
                                        "area": 1.0, "iscrowd": 0})
            ann_id += 1
    path = folder / "_annotations.coco.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def dataset_file(tmp_path: Path, body: str, name: str = "ijmond_test") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nloader = "coco"\n{body}', encoding="utf-8")
    return path


def roboflow_root(tmp_path: Path) -> Path:
    """train/valid/test folders with a few frames each, polygons in both categories."""
    root = tmp_path / "ijmond"
    for split, n, day in (("train", 4, 1), ("valid", 2, 5), ("test", 2, 7)):
        images = []
        for i in range(n):
            anns = [(1, RECT), (2, TRI)] if i % 2 == 0 else []
            images.append({"file_name": rf_name("kooks_1", f"2024-03-0{day + i}T10-15-00", i,
                                                f"{split}{i}ff"), "anns": anns})
        write_export(root / split, images)
    return root


# --------------------------------------------------------------------------- rasterising


def test_polygon_areas_match_the_analytic_areas() -> None:
    rect = rasterize_polygon(np.array(RECT), 48, 64)
    assert rect.sum() == 240  # pixel centres inside: exactly the rectangle's area
    assert rect[8:20, 10:30].all() and rect.sum() == rect[8:20, 10:30].size
    tri = rasterize_polygon(np.array(TRI), 48, 64)
    assert abs(int(tri.sum()) - 300) <= 0.05 * 300
    big = rasterize_polygon(np.array([5.3, 2.7, 250.1, 30.2, 120.6, 190.9]), 200, 256)
    x = np.array([5.3, 250.1, 120.6])
    y = np.array([2.7, 30.2, 190.9])
    analytic = 0.5 * abs(x[0] * (y[1] - y[2]) + x[1] * (y[2] - y[0]) + x[2] * (y[0] - y[1]))
    assert abs(big.sum() - analytic) / analytic < 0.01


def _rle_string(counts: list[int]) -> str:
    """pycocotools' rleToString, to check the decoder against."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_compressed_rle_decodes() -> None:
    counts = [5, 3, 200, 1, 40, 0, 7, 1000, 2]
    assert rle_counts(_rle_string(counts)) == counts


def test_rle_segmentation_in_an_export(tmp_path: Path) -> None:
    root = tmp_path / "rle"
    write_export(root, [{"file_name": rf_name("kooks_2", "2024-01-01T00-00-00", 1)}])
    path = root / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    mask = np.zeros((48, 64), bool)
    mask[4:9, 2:6] = True  # 5 x 4 = 20 px
    flat = mask.T.ravel()  # runs go down columns
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0, *counts]
    coco["annotations"] = [{"id": 0, "image_id": 0, "category_id": 1, "iscrowd": 1,
                            "segmentation": {"size": [48, 64], "counts": _rle_string(counts)}}]
    path.write_text(json.dumps(coco))
    config = parse_dataset_file(dataset_file(tmp_path, '[splits]\ntrain = "."\n'))
    (frame,) = load_coco(config, "train", root, "quick")
    assert np.array_equal(frame.mask == 1, mask)


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize(("options", "low_is"), [
    ("", "smoke"),
    ('smoke = "high"\n', "ignore"),
    ('smoke = "high"\nlow_opacity_as = "background"\n', "background"),
])
def test_categories_to_binary(tmp_path: Path, options: str, low_is: str) -> None:
    root = tmp_path / "one"
    write_export(root, [{"file_name": rf_name("kooks_1", "2024-03-05T10-15-00", 12),
                         "anns": [(1, RECT), (2, TRI)]}])
    config = parse_dataset_file(dataset_file(tmp_path, f'[splits]\ntrain = "."\n[coco]\n'
                                                       f'{options}'))
    (frame,) = load_coco(config, "train", root, "quick")
    assert frame.mask is not None and frame.mask.shape == (48, 64)
    rect = rasterize_polygon(np.array(RECT), 48, 64)
    tri = rasterize_polygon(np.array(TRI), 48, 64)
    expected = np.zeros((48, 64), np.uint8)
    expected[tri] = {"smoke": 1, "ignore": 255, "background": 0}[low_is]
    expected[rect] = 1
    assert np.array_equal(frame.mask, expected)
    assert int((frame.mask == 1).sum()) == 240 + (int(tri.sum()) if low_is == "smoke" else 0)


def test_high_opacity_wins_where_regions_overlap(tmp_path: Path) -> None:
    root = tmp_path / "overlap"
    write_export(root, [{"file_name": "a.jpg", "anns": [(2, RECT), (1, RECT)]}])
    config = parse_dataset_file(dataset_file(tmp_path, '[splits]\ntrain = "."\n[coco]\n'
                                                       'smoke = "high"\n'))
    (frame,) = load_coco(config, "train", root, "quick")
    assert int((frame.mask == 1).sum()) == 240 and not (frame.mask == 255).any()


def test_unknown_category_is_an_error_unless_mapped(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    path = write_export(root, [{"file_name": "a.jpg", "anns": [(0, RECT)]}])
    config = parse_dataset_file(dataset_file(tmp_path, '[splits]\ntrain = "."\n'))
    with pytest.raises(InputError) as err:
        load_coco(config, "train", root, "quick")
    assert err.value.path == str(path) and "category 'smoke'" in err.value.problem
    config = parse_dataset_file(dataset_file(tmp_path, '[splits]\ntrain = "."\n[coco]\n'
                                                       'other_categories = "smoke"\n', "o"))
    (frame,) = load_coco(config, "train", root, "quick")
    assert int((frame.mask == 1).sum()) == 240


# --------------------------------------------------------------------------- ids


def test_frame_names_drop_the_roboflow_hash() -> None:
    name = parse_frame_name("hoogovens_6_7__2024-03-05T10-15-30_frame_12_jpg.rf.9f8e7d6c5b.jpg")
    assert name.id == "hoogovens_6_7__2024-03-05T10-15-30_frame_12"
    assert name.camera == "hoogovens_6_7" and name.frame == 12
    assert name.roboflow_hash == "9f8e7d6c5b"
    assert name.time is not None and name.time.isoformat() == "2024-03-05T10:15:30"
    other = parse_frame_name("ck0001_png.rf.abc.png")
    assert other.id == "ck0001" and other.camera is None
    assert parse_frame_name("plain.jpg").id == "plain"


@pytest.mark.parametrize("policy", ["first", "keep", "error"])
def test_two_exports_of_one_frame(tmp_path: Path, policy: str) -> None:
    root = tmp_path / "dup"
    a = rf_name("kooks_1", "2024-03-05T10-15-00", 3, "aaaa")
    b = rf_name("kooks_1", "2024-03-05T10-15-00", 3, "bbbb")
    path = write_export(root, [{"file_name": a, "anns": [(1, RECT)]}, {"file_name": b}])
    config = parse_dataset_file(dataset_file(tmp_path, f'[splits]\ntrain = "."\n[coco]\n'
                                                       f'duplicates = "{policy}"\n'))
    fid = "kooks_1__2024-03-05T10-15-00_frame_3"
    if policy == "error":
        with pytest.raises(InputError) as err:
            load_coco(config, "train", root, "quick")
        assert err.value.path == str(path) and fid in err.value.problem
        return
    frames = load_coco(config, "train", root, "quick")
    if policy == "first":
        assert [f.id for f in frames] == [fid] and frames[0].meta["copies"] == 2
        assert frames[0].image_path is not None and frames[0].image_path.name == a
    else:
        assert [f.id for f in frames] == [fid, f"{fid}~2"]


def test_roboflow_folders_are_splits(tmp_path: Path) -> None:
    root = roboflow_root(tmp_path)
    config = parse_dataset_file(dataset_file(
        tmp_path, '[splits]\ntrain = "train"\nval = "valid"\ntest = "test"\n'))
    data = load_splits(config, root)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert data["test"].labels == [1, 0]
    assert all("rf" not in i for i in data["train"].ids)


def test_same_frame_in_train_and_test_folders(tmp_path: Path) -> None:
    root = roboflow_root(tmp_path)
    train_json = json.loads((root / "train" / "_annotations.coco.json").read_text())
    test_path = root / "test" / "_annotations.coco.json"
    test_json = json.loads(test_path.read_text())
    # the first test frame is exported again (new hash) into train
    copy = rf_name("kooks_1", "2024-03-07T10-15-00", 0, "feedbeef")
    Image.new("RGB", (64, 48)).save(root / "train" / copy)
    train_json["images"].append({"id": 99, "file_name": copy, "width": 64, "height": 48})
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(train_json))
    assert test_json["images"][0]["file_name"].startswith("kooks_1__2024-03-07T10-15-00_frame_0")
    body = '[splits]\ntrain = "train"\ntest = "test"\n'
    config = parse_dataset_file(dataset_file(tmp_path, body))
    with pytest.raises(InputError) as err:
        load_coco(config, "test", root, "quick")
    assert err.value.path == str(test_path) and "also in 'train'" in err.value.problem
    config = parse_dataset_file(dataset_file(
        tmp_path, body + '[coco]\ncross_split_duplicates = "drop"\n', "drop"))
    assert len(load_coco(config, "test", root, "quick")) == 1


# --------------------------------------------------------------------------- rule splits


def pooled_root(tmp_path: Path) -> Path:
    """One export with 3 cameras x 4 days x 2 frames."""
    images = []
    for camera in ("kooks_1", "kooks_2", "hoogovens_6_7"):
        for day in range(1, 5):
            for n in range(2):
                images.append({"file_name": rf_name(camera, f"2024-03-0{day}T1{n}-00-00", n,
                                                    f"{camera[:2]}{day}{n}"),
                               "anns": [(1, RECT)] if n else []})
    root = tmp_path / "pooled"
    write_export(root / "train", images[:12])
    write_export(root / "valid", images[12:])
    return root


def test_split_by_camera(tmp_path: Path) -> None:
    root = pooled_root(tmp_path)
    config = parse_dataset_file(dataset_file(tmp_path, """
[splits]
train = "*"
val = "*"
test = "*"
val_fraction = 0.5
[coco]
split_by = "camera"
folders = ["train", "valid"]
test_cameras = ["hoogovens_6_7"]
"""))
    data = load_splits(config, root)
    cams = {k: {f.meta["camera"] for f in {id(r.frame): r.frame for r in v.refs}.values()}
            for k, v in data.splits.items()}
    assert cams["test"] == {"hoogovens_6_7"} and len(data["test"]) == 8
    assert "hoogovens_6_7" not in cams["train"] | cams["val"]
    assert len(data["train"]) + len(data["val"]) == 16 and len(data["val"]) > 0

    def days(split: str) -> set[tuple[object, str]]:
        return {(r.frame.meta["camera"], str(r.frame.meta["time"])[:10])
                for r in data[split].refs}

    assert not days("train") & days("val")  # a camera-day never straddles train and val
    again = load_splits(config, root)
    assert again["val"].ids == data["val"].ids  # deterministic


def test_split_by_camera_with_patterns_and_val_cameras(tmp_path: Path) -> None:
    root = pooled_root(tmp_path)
    config = parse_dataset_file(dataset_file(tmp_path, """
[splits]
train = "*"
val = "*"
test = "*"
[coco]
split_by = "camera"
folders = ["train", "valid"]
test_cameras = ["hoogovens_*"]
val_cameras = ["kooks_2"]
"""))
    data = load_splits(config, root)
    assert {r.frame.meta["camera"] for r in data["val"].refs} == {"kooks_2"}
    assert {r.frame.meta["camera"] for r in data["train"].refs} == {"kooks_1"}


def test_split_by_time(tmp_path: Path) -> None:
    root = pooled_root(tmp_path)
    config = parse_dataset_file(dataset_file(tmp_path, """
[splits]
train = "*"
val = "*"
test = "*"
[coco]
split_by = "time"
folders = ["train", "valid"]
test_from = 2024-03-04T00:00:00
val_from = "2024-03-03"
"""))
    data = load_splits(config, root)
    for split, days in (("train", {"01", "02"}), ("val", {"03"}), ("test", {"04"})):
        got = {str(r.frame.meta["time"])[8:10] for r in data[split].refs}
        assert got == days, split
        assert len(data[split]) == 6 * len(days)


def test_rule_split_needs_its_keys(tmp_path: Path) -> None:
    root = pooled_root(tmp_path)
    config = parse_dataset_file(dataset_file(
        tmp_path, '[splits]\ntrain = "*"\ntest = "*"\n[coco]\nsplit_by = "camera"\n'))
    with pytest.raises(ConfigError, match="needs test_cameras"):
        load_coco(config, "test", root, "quick")
    config = parse_dataset_file(dataset_file(
        tmp_path, '[splits]\ntrain = "*"\n[coco]\nsplit_by = "sideways"\n', "b"))
    with pytest.raises(ConfigError, match="split_by must be one of"):
        load_coco(config, "train", root, "quick")


# --------------------------------------------------------------------------- tiles


def test_full_frames_are_cut_into_512_tiles(tmp_path: Path) -> None:
    root = tmp_path / "big"
    poly = [100.0, 100.0, 400.0, 100.0, 400.0, 300.0, 100.0, 300.0]
    write_export(root, [{"file_name": rf_name("kooks_2", "2024-03-05T10-15-00", 7),
                         "anns": [(1, poly)]}], size=(1920, 1280))
    config = parse_dataset_file(dataset_file(
        tmp_path, '[splits]\ntest = "."\n[tiles]\nsize = 512\n'))
    data = load_splits(config, root, splits=["test"])
    fid = "kooks_2__2024-03-05T10-15-00_frame_7"
    expected = [f"{fid}@{y}_{x}" for y in (0, 512, 768) for x in (0, 512, 1024, 1408)]
    assert data["test"].ids == expected
    assert data["test"].labels == [1] + [0] * 11
    sample = data["test"][0]
    assert sample.image.shape == (512, 512, 3) and sample.mask is not None
    assert int(sample.mask.sum()) == 300 * 200


# --------------------------------------------------------------------------- bad input


def _break(root: Path, problem: str) -> Path:
    """Damage the ``test`` folder of a Roboflow root; return the file the error must name."""
    folder = root / "test"
    path = folder / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    if problem == "broken json":
        path.write_text(path.read_text()[:-20])
        return path
    if problem == "polygon outside":
        coco["annotations"][0]["segmentation"] = [[10.0, 10.0, 90.0, 10.0, 10.0, 30.0]]
    elif problem == "missing image id":
        coco["annotations"][0]["image_id"] = 42
    elif problem == "missing image file":
        missing = folder / coco["images"][1]["file_name"]
        missing.unlink()
        return missing
    elif problem == "corrupt image":
        bad = folder / coco["images"][0]["file_name"]
        bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return bad
    elif problem == "size mismatch":
        bad = folder / coco["images"][0]["file_name"]
        Image.new("RGB", (32, 32)).save(bad)
        return bad
    path.write_text(json.dumps(coco))
    return path


PROBLEMS = {
    "broken json": "not valid JSON",
    "polygon outside": "polygon point (90, 10) is outside the 64x48 image",
    "missing image id": "annotation 0 refers to image id 42",
    "missing image file": "image listed in",
    "corrupt image": "cannot read image",
    "size mismatch": "image is 32x32 but _annotations.coco.json says 64x48",
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_bad_exports_name_the_file(tmp_path: Path, problem: str) -> None:
    root = roboflow_root(tmp_path)
    bad = _break(root, problem)
    config = parse_dataset_file(dataset_file(tmp_path, '[splits]\ntest = "test"\n'))
    with pytest.raises(InputError) as err:
        load_coco(config, "test", root, "quick")
    assert err.value.path == str(bad)
    assert PROBLEMS[problem] in err.value.problem


@pytest.mark.parametrize("problem", ["broken json", "polygon outside", "missing image id",
                                     "corrupt image"])
def test_cli_reports_one_line_and_keeps_records(tmp_path: Path, problem: str,
                                                capsys: pytest.CaptureFixture) -> None:
    root = roboflow_root(tmp_path)
    out = tmp_path / "results"
    args = ["run", "--methods", "all_smoke", "--datasets", "ijmond", "--data-root",
            f"ijmond={root}", "--out", str(out), "--n-boot", "20", "--no-progress"]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    assert before
    bad = _break(root, problem)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bench: error:")]
    assert errors == [err[-1]] and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"bench: error: {bad}: ") and PROBLEMS[problem] in err[-1]
    after = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    assert after == before
