"""RISE / deep-smoke-machine clips: label rule, sampling, splits, errors, image-level scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import av  # the video extra is part of the test extra: no skip
import numpy as np
import pytest

from bench.cli import main
from bench.data import load_splits
from bench.data.config import DatasetConfig, parse_dataset_file
from bench.data.rise import clip_label, load_rise, sample_indices, video_backend
from bench.errors import ConfigError, InputError
from bench.evaluate_image import (
    area_cuts,
    choose_thresholds,
    image_areas_table,
    score_image_level,
)
from bench.metrics import image_areas
from bench.records import load_records

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (128, 128, 128), (255, 255, 255)]


def write_clip(path: Path, colours: list[tuple[int, int, int]] = COLOURS, w: int = 64,
               h: int = 48) -> None:
    """An mp4 whose frame i is a solid ``colours[i]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for colour in colours:
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), colour, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def colour_of(image: np.ndarray) -> int:
    """Index of the fixture colour nearest to an image's mean colour."""
    mean = image.reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in COLOURS]))


def clip(camera: int, view: int, day: int, n: int, admin: int = -1,
         citizen: int = 23) -> dict[str, Any]:
    """A metadata entry in RISE's format."""
    start = 1550000000 + 100 * n
    name = f"{camera}-{view}-2019-0{day}-15-1000-500-1200-700-180-180-{n}-{start}-{start + 14}"
    return {"camera_id": camera, "view_id": view, "id": 1000 * camera + 100 * view + 10 * day + n,
            "label_state": citizen, "label_state_admin": admin, "file_name": name,
            "url_root": "https://example.org/", "url_part": name, "start_time": start}


def rise_root(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Metadata with 3 views x 2 days x 2 clips (one smoke, one not), clips, published splits."""
    root = tmp_path / "rise"
    entries = []
    for camera, view in ((0, 0), (0, 1), (1, 0)):
        for day in (1, 2):
            for n in range(2):
                entries.append(clip(camera, view, day, n, citizen=23 if n else 16))
    entries.append(clip(2, 0, 1, 9, admin=-1, citizen=3))  # discord: unlabelled, no video needed
    for i, entry in enumerate(entries[:-1]):
        write_clip(root / "videos" / f"{entry['file_name']}.mp4",
                   COLOURS[i % 8:] + COLOURS[:i % 8])
    (root / "metadata.json").write_text(json.dumps(entries))
    split = root / "split"
    split.mkdir()
    for name, views in (("train", {"0-0"}), ("validation", {"0-1"}), ("test", {"1-0", "2-0"})):
        part = [e for e in entries if f"{e['camera_id']}-{e['view_id']}" in views]
        (split / f"metadata_{name}_split_0_by_camera.json").write_text(json.dumps(part))
    return root, entries


def dataset(tmp_path: Path, body: str, name: str = "rise_test") -> DatasetConfig:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nloader = "rise"\n{body}', encoding="utf-8")
    return parse_dataset_file(path)


PUBLISHED = """
[splits]
train = "split/metadata_train_split_0_by_camera.json"
val = "split/metadata_validation_split_0_by_camera.json"
test = "split/metadata_test_split_0_by_camera.json"
"""


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(("admin", "citizen", "label"), [
    (47, -1, 1), (32, -1, 0), (23, -1, 1), (16, -1, 0),  # researchers decide
    (23, 16, 1), (16, 23, 0),  # ... even against the volunteers
    (-1, 23, 1), (-1, 16, 0), (-1, 19, 1), (-1, 20, 0),  # else volunteers' strong/weak
    (-1, 5, None), (-1, 4, None), (-1, 3, None), (-1, -1, None),
    (-2, 23, None), (23, -2, None), (-2, -2, None),  # bad videos are never used
])
def test_label_rule_of_deep_smoke_machine(admin: int, citizen: int, label: int | None) -> None:
    assert clip_label({"label_state_admin": admin, "label_state": citizen})[0] == label


def test_label_weights_and_published_labels() -> None:
    assert clip_label({"label_state_admin": 23, "label_state": 16}) == (1, 0.5)
    assert clip_label({"label_state_admin": -1, "label_state": 19}) == (1, 0.66)
    assert clip_label({"label": 0, "weight": 0.83}) == (0, 0.83)
    assert clip_label({"file_name": "x"}) == (None, None)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(("sample", "every", "expected"), [
    ("first", 1, [0]), ("middle", 1, [4]), ("every", 3, [0, 3, 6]), ("every", 1, list(range(8))),
])
@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_frame_sampling_picks_the_right_frames(tmp_path: Path, sample: str, every: int,
                                               expected: list[int], backend: str) -> None:
    if backend == "opencv":
        pytest.importorskip("cv2", reason="opencv is an optional fallback, not in the test extra")
    root = tmp_path / "one"
    entry = clip(0, 0, 1, 1)
    write_clip(root / "videos" / f"{entry['file_name']}.mp4")
    (root / "m.json").write_text(json.dumps([entry]))
    config = dataset(tmp_path, f'[splits]\ntest = "m.json"\n[rise]\nsample = "{sample}"\n'
                               f'every = {every}\nbackend = "{backend}"\n')
    frames = load_rise(config, "test", root, "quick")
    assert [f.id for f in frames] == [f"{entry['file_name']}#{i}" for i in expected]
    assert [colour_of(f.pixels()) for f in frames] == expected
    assert all(f.size == (48, 64) and f.label == 1 and f.mask is None for f in frames)
    assert sample_indices(36, "middle", 1) == [18]


def test_opencv_is_the_fallback_and_neither_names_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2", reason="opencv is an optional fallback, not in the test extra")
    monkeypatch.setitem(sys.modules, "av", None)
    assert video_backend("auto") == "opencv"
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ConfigError, match=r"pip install 'smoke-wsss-bench\[video\]'"):
        video_backend("auto")


# --------------------------------------------------------------------------- splits


def _views(samples: Any) -> set[object]:
    return {r.frame.meta["view"] for r in samples.refs}


def test_published_split_files(tmp_path: Path) -> None:
    root, _ = rise_root(tmp_path)
    data = load_splits(dataset(tmp_path, PUBLISHED), root)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 4, "test": 4}
    assert _views(data["test"]) == {"1-0"}  # the discordant 2-0 clip is dropped
    assert data["train"].labels == [0, 1, 0, 1]
    assert data["test"][0].image.shape == (48, 64, 3)


def test_split_by_camera_view(tmp_path: Path) -> None:
    root, _ = rise_root(tmp_path)
    config = dataset(tmp_path, """
[splits]
train = "*"
val = "*"
test = "*"
[rise]
split_by = "camera"
test_views = ["1-*"]
val_views = ["0-1"]
""")
    data = load_splits(config, root)
    assert (_views(data["train"]), _views(data["val"]), _views(data["test"])) == (
        {"0-0"}, {"0-1"}, {"1-0"})


def test_split_by_time_and_by_hash(tmp_path: Path) -> None:
    root, _ = rise_root(tmp_path)
    config = dataset(tmp_path, """
[splits]
train = "*"
test = "*"
[rise]
split_by = "time"
test_from = 2019-02-01
""")
    data = load_splits(config, root)
    assert all("-2019-02-" in i for i in data["test"].ids) and len(data["test"]) == 6
    early = data["train"].ids + data["val"].ids  # val: carved from train by the harness
    assert all("-2019-01-" in i for i in early) and len(early) == 6
    config = dataset(tmp_path, '[splits]\ntrain = "*"\ntest = "*"\n[rise]\nsplit_by = "hash"\n'
                               'test_fraction = 0.5\n', "h")
    first, second = load_splits(config, root), load_splits(config, root)
    assert first["test"].ids == second["test"].ids
    assert not set(first["test"].ids) & set(first["train"].ids)
    # clips of one view and day stay together
    days = {k: {(r.frame.meta["view"], r.id.split("-")[3]) for r in v.refs}
            for k, v in first.splits.items()}
    assert not days["test"] & days["train"]


# --------------------------------------------------------------------------- bad input


def test_broken_metadata_and_missing_and_undecodable_clips(tmp_path: Path) -> None:
    root, entries = rise_root(tmp_path)
    config = dataset(tmp_path, '[splits]\ntest = "metadata.json"\n')
    meta = root / "metadata.json"
    meta.write_text(meta.read_text()[:-5])
    with pytest.raises(InputError) as err:
        load_rise(config, "test", root, "quick")
    assert err.value.path == str(meta) and "not valid JSON" in err.value.problem
    meta.write_text(json.dumps(entries))
    bad = root / "videos" / f"{entries[0]['file_name']}.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(InputError) as err:
        load_rise(config, "test", root, "quick")
    assert err.value.path == str(bad) and "cannot decode video" in err.value.problem
    bad.unlink()
    with pytest.raises(InputError) as err:
        load_rise(config, "test", root, "quick")
    assert err.value.path == str(bad) and "not found" in err.value.problem
    skip = dataset(tmp_path, '[splits]\ntest = "metadata.json"\n[rise]\n'
                             'missing_videos = "skip"\n', "skip")
    assert len(load_rise(skip, "test", root, "quick")) == 11


def test_cli_scores_rise_at_image_level_and_reports_bad_clips(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, entries = rise_root(tmp_path)
    out = tmp_path / "results"
    args = ["run", "--methods", "all_smoke,random", "--datasets", "rise", "--data-root",
            f"rise={root}", "--out", str(out), "--n-boot", "50", "--no-progress"]
    assert main(args) == 0
    records = {r["method"]: r for r in load_records(out)}
    rec = records["all_smoke"]
    assert rec["threshold"]["level"] == "image" and rec["threshold"]["chosen_on"] == "val"
    assert rec["metrics"]["recall"] == 1.0 and rec["metrics"]["precision"] == 0.5
    assert rec["metrics"]["fp_pixel_rate_neg"] == 1.0 and rec["metrics"]["mIoU"] is None
    assert rec["n_images"] == 4 and len(rec["ci"]["F1"]) == 2
    before = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    bad = root / "videos" / f"{entries[8]['file_name']}.mp4"  # a test clip (view 1-0)
    bad.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bench: error: {bad}: cannot decode video")
    assert sum(line.startswith("bench: error:") for line in err) == 1
    after = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    assert after == before


# --------------------------------------------------------------------------- scoring


def test_one_pixel_areas_are_image_decisions() -> None:
    pred = np.array([1, 1, 0, 0, 1], bool)
    label = np.array([1, 0, 1, 0, 1], bool)
    table = image_areas_table(pred, label)
    for i in range(5):
        expected = image_areas(np.array([[pred[i]]], np.uint8), np.array([[label[i]]], np.uint8))
        assert np.array_equal(table[i], expected)


def test_area_cuts_count_every_partition() -> None:
    cuts = area_cuts(np.array([0.0, 0.1, 0.3, 0.3, 0.9]), np.array([0, 0, 1, 1, 1]))
    assert cuts["a"].tolist() == [0.05, 0.2, 0.6, 0.9]
    assert cuts["tp"].tolist() == [3, 3, 1, 0] and cuts["fp"].tolist() == [1, 0, 0, 0]
    assert cuts["F1"][1] == 1.0


def _maps(fractions: list[float], size: int = 100) -> list[np.ndarray]:
    """Soft maps whose share of pixels >= 0.6 is the given fraction (the rest at 0.3)."""
    out = []
    for f in fractions:
        m = np.full(size, 0.3, np.float32)
        m[: round(f * size)] = 0.8
        out.append(m.reshape(10, 10))
    return out


def test_thresholds_come_from_calibration_only() -> None:
    calib = _maps([0.0, 0.02, 0.3, 0.5])
    chosen = choose_thresholds(calib, [0, 0, 1, 1], "soft")
    assert chosen.calibration["F1"] == 1.0 and 0.3 < chosen.pixel <= 0.8
    assert 0.02 <= chosen.area < 0.3
    score_a = score_image_level(["a", "b"], [1, 0], _maps([0.4, 0.0]), "soft", [0, 0, 1, 1],
                                calib, n_boot=20)
    score_b = score_image_level(["a", "b"], [1, 0], _maps([0.0, 0.9]), "soft", [0, 0, 1, 1],
                                calib, n_boot=20)
    assert score_a.threshold == score_b.threshold
    assert score_a.threshold_info["area_fraction"] == score_b.threshold_info["area_fraction"]
    assert score_a.metrics["F1"] == 1.0 and score_b.metrics["F1"] == 0.0
    assert score_b.metrics["fp_pixel_rate_neg"] == 0.9


def test_fixed_pixel_threshold_label_maps_and_unlabelled_samples() -> None:
    calib = _maps([0.0, 0.4])
    fixed = score_image_level(["a", "b", "c"], [1, 0, None], _maps([0.4, 0.0, 0.5]), "soft",
                              [0, 1], calib, pixel_threshold=0.5, n_boot=20)
    assert fixed.threshold == 0.5 and fixed.threshold_info["pixel_threshold"] == "fixed"
    assert fixed.n_images == 2 and fixed.threshold_info["skipped_unlabelled"] == 1
    labels = [np.array([[1, 0], [255, 0]], np.uint8), np.zeros((2, 2), np.uint8)]
    res = score_image_level(["a", "b"], [1, 0], labels, "labels", [1, 0], labels, n_boot=20)
    assert res.threshold is None and res.metrics["accuracy"] == 1.0
    assert res.metrics["fp_pixel_rate_neg"] == 0.0 and res.metrics["smoke_fraction_pos"] == 0.25
