"""Scoring counts each pixel of a frame once: tile maps are stitched back into frames, the
bootstrap resamples frames (or clips), and a data set may opt into per-tile scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data.frames import Frame, SampleList, SampleRef
from bench.evaluate import score_stage
from bench.metrics import bootstrap_ci, group_areas, image_areas, paired_bootstrap
from bench.records import load_records
from bench.stitch import FrameView, cut_edge_depth, stitch_labels, stitch_soft


def two_tiles() -> tuple[FrameView, list[np.ndarray], list[np.ndarray]]:
    """A 2x6 frame cut into two 2x4 tiles at x = 0 and x = 2 (overlap: columns 2 and 3)."""
    mask = np.array([[1, 1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0, 0]], np.uint8)
    view = FrameView("f", (2, 6), mask, {}, [(0, (0, 0, 2, 4)), (1, (0, 2, 2, 4))], "f")
    soft = [np.full((2, 4), 0.8, np.float32), np.full((2, 4), 0.2, np.float32)]
    labels = [np.ones((2, 4), np.uint8), np.zeros((2, 4), np.uint8)]
    return view, soft, labels


def test_soft_maps_average_where_tiles_overlap() -> None:
    view, soft, _ = two_tiles()
    out = stitch_soft(view, soft)
    expected = np.array([[0.8, 0.8, 0.5, 0.5, 0.2, 0.2]] * 2, np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_label_maps_take_the_tile_a_pixel_lies_deepest_in() -> None:
    view, _, labels = two_tiles()
    # tile A's cut edge is its right side (x = 3), tile B's its left side (x = 2): column 2 lies
    # 1 px deep in A and 0 px in B, column 3 the other way round
    np.testing.assert_array_equal(cut_edge_depth((0, 0, 2, 4), (2, 6))[0], [3, 2, 1, 0])
    np.testing.assert_array_equal(cut_edge_depth((0, 2, 2, 4), (2, 6))[0], [0, 1, 2, 3])
    out = stitch_labels(view, labels)
    np.testing.assert_array_equal(out, [[1, 1, 1, 0, 0, 0]] * 2)


def test_label_ties_go_to_the_earlier_tile() -> None:
    # 1x5 frame, tiles of 4 at x = 0 and x = 1: column 2 is 1 px deep in both
    view = FrameView("t", (1, 5), None, {}, [(0, (0, 0, 1, 4)), (1, (0, 1, 1, 4))])
    out = stitch_labels(view, [np.full((1, 4), 1, np.uint8), np.zeros((1, 4), np.uint8)])
    np.testing.assert_array_equal(out, [[1, 1, 1, 0, 0]])
    out = stitch_labels(view, [np.zeros((1, 4), np.uint8), np.full((1, 4), 1, np.uint8)])
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1]])


def test_a_tile_map_of_the_wrong_size_is_named() -> None:
    view, soft, _ = two_tiles()
    with pytest.raises(ValueError, match=r"frame f: the map of the tile at \(0, 2\) is 2x3"):
        stitch_soft(view, [soft[0], soft[1][:, :3]])


def test_stitched_frame_areas_by_hand() -> None:
    view, soft, labels = two_tiles()
    # labels: prediction [1 1 1 0 0 0] against mask [1 1 1 1 0 0], two rows
    score = score_stage([view], labels, "labels", n_boot=10)
    # background: I = 2 cols, U = 3 cols; smoke: I = 3 cols, U = 4 cols; x2 rows
    expected = np.array([[4, 6], [6, 8], [6, 6], [4, 8]])
    np.testing.assert_array_equal(score.per_image_areas[0], expected)
    assert score.metrics["IoU_smoke"] == pytest.approx(6 / 8)
    assert score.metrics["precision"] == 1.0 and score.metrics["recall"] == pytest.approx(6 / 8)
    assert score.n_images == 1 and score.image_ids == ["f"]
    # soft: threshold chosen on the same frame as calibration; 0.5 in columns 2-3 is smoke at
    # any threshold <= 0.5, and the best mIoU keeps columns 0-3 (the mask exactly)
    score = score_stage([view], soft, "soft", [view], soft, n_boot=10)
    assert 0.2 < score.threshold <= 0.5
    assert score.metrics["mIoU"] == 1.0
    # per-tile scoring (the old way) counts the 4 overlap pixels twice
    tiles = [FrameView("a", (2, 4), view.mask[:, :4], {}, [(0, (0, 0, 2, 4))], "f"),
             FrameView("b", (2, 4), view.mask[:, 2:], {}, [(1, (0, 0, 2, 4))], "f")]
    per_tile = score_stage(tiles, labels, "labels", n_boot=10)
    assert per_tile.per_image_areas.sum(axis=0)[3].sum() == 16  # 12 frame pixels + 4 twice


def test_frame_views_group_tiles_and_keep_order() -> None:
    mask = np.zeros((4, 6), np.uint8)
    big = Frame("big", (4, 6), image=np.zeros((4, 6, 3), np.uint8), mask=mask)
    small = Frame("small", (4, 4), image=np.zeros((4, 4, 3), np.uint8), mask=mask[:, :4])
    refs = [SampleRef("big@0_0", big, (0, 0, 4, 4), None),
            SampleRef("small", small, (0, 0, 4, 4), None),
            SampleRef("big@0_2", big, (0, 2, 4, 4), None)]
    views = SampleList(refs).frame_views()
    assert [(v.id, v.size, v.parts) for v in views] == [
        ("big", (4, 6), [(0, (0, 0, 4, 4)), (2, (0, 2, 4, 4))]),
        ("small", (4, 4), [(1, (0, 0, 4, 4))])]
    per_tile = SampleList(refs).frame_views(per_tile=True)
    assert [(v.id, v.size, v.unit) for v in per_tile] == [
        ("big@0_0", (4, 4), "big"), ("small", (4, 4), "small"), ("big@0_2", (4, 4), "big")]


# --------------------------------------------------------------------------- bootstrap


def test_group_areas_sums_rows_of_a_group() -> None:
    rows = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    out = group_areas(rows, ["x", "y", "x"])
    np.testing.assert_array_equal(out, [rows[0] + rows[2], rows[1]])
    assert group_areas(rows, None) is rows
    with pytest.raises(ValueError, match="2 groups for 3 rows"):
        group_areas(rows, ["x", "y"])


def _random_areas(rng: np.random.Generator, n: int) -> np.ndarray:
    out = []
    for _ in range(n):
        label = (rng.random((8, 8)) < rng.random()).astype(np.uint8)
        pred = (rng.random((8, 8)) < 0.4).astype(np.uint8)
        out.append(image_areas(pred, label))
    return np.stack(out)


def test_identical_tiles_give_the_interval_of_their_frames() -> None:
    rng = np.random.default_rng(3)
    frames = _random_areas(rng, 20)
    tiles = np.repeat(frames, 3, axis=0)  # every frame cut into three identical tiles
    units = [f"f{i}" for i in range(20) for _ in range(3)]
    alone = bootstrap_ci(frames, "IoU_smoke", n_boot=500, seed=1)
    grouped = bootstrap_ci(tiles, "IoU_smoke", n_boot=500, seed=1, groups=units)
    assert grouped == pytest.approx(alone, abs=1e-12)
    # resampling the tiles as if independent gives another (narrower) interval
    naive = bootstrap_ci(tiles, "IoU_smoke", n_boot=500, seed=1)
    assert naive[1] - naive[0] < alone[1] - alone[0]
    paired = paired_bootstrap(tiles, tiles[::-1].copy()[::-1], n_boot=200, seed=0, groups=units)
    assert paired["n_images"] == 20 and paired["delta"] == 0.0


# --------------------------------------------------------------------------- through the CLI


def _write_mixed(root: Path, write_pair, rng: np.random.Generator) -> None:
    """Frames of mixed sizes; with 32-px tiles, 40- and 48-px sides overlap."""
    sizes = [(40, 48), (32, 32), (48, 40), (24, 56), (40, 40), (32, 72)]
    for split in ("train", "test"):
        for i, (h, w) in enumerate(sizes):
            image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
            mask = np.where(rng.random((h, w)) < 0.15 + 0.1 * i, 255, 0).astype(np.uint8)
            write_pair(root, split, f"{split}{i}", image, mask)


def _dataset(write_dataset, folder: Path, stem: str, root: Path, tiles: str) -> str:
    return write_dataset(folder, stem, root, f"[tiles]\n{tiles}")[0]


def test_all_smoke_precision_is_the_smoke_share_of_the_mask_files(write_dataset, tmp_path: Path,
                                                                   pair_tools: tuple) -> None:
    from PIL import Image

    _, write_pair = pair_tools
    root = tmp_path / "data"
    _write_mixed(root, write_pair, np.random.default_rng(0))
    name = _dataset(write_dataset, tmp_path / "ds", "mixed", root, "size = 32")
    out = tmp_path / "results"
    assert main(["run", "--include", str(tmp_path / "ds"), "--methods", "all_smoke",
                 "--datasets", name, "--out", str(out), "--n-boot", "50"]) == 0
    masks = [np.asarray(Image.open(p)) for p in sorted((root / "test" / "gt").glob("*.png"))]
    share = sum(int((m == 255).sum()) for m in masks) / sum(m.size for m in masks)
    (rec,) = [r for r in load_records(out) if r["split"] == "test"]
    assert rec["metrics"]["precision"] == pytest.approx(share, abs=1e-9)
    assert rec["metrics"]["recall"] == 1.0
    assert rec["n_images"] == 6 and rec["n_tiles"] > 6 and rec["scored_per"] == "frame"
    board = (out / "leaderboard.md").read_text()
    assert re.search(r"\| dataset\s+\| weights\s+\| frames\s+\|", board)

    # the same data scored per tile (an explicit option, marked in the record) counts overlaps
    name = _dataset(write_dataset, tmp_path / "ds2", "mixedtiles", root,
                    'size = 32\nscore = "tile"')
    out2 = tmp_path / "results2"
    assert main(["run", "--include", str(tmp_path / "ds2"), "--methods", "all_smoke",
                 "--datasets", name, "--out", str(out2), "--n-boot", "50"]) == 0
    (rec2,) = load_records(out2)
    assert rec2["scored_per"] == "tile" and rec2["n_images"] == rec["n_tiles"]
    assert rec2["metrics"]["precision"] != pytest.approx(share, abs=1e-6)


def test_a_bad_tiles_option_is_one_line(write_dataset, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    _dataset(write_dataset, tmp_path / "ds", "badtiles", root, 'size = 32\nscore = "crops"')
    assert main(["list", "--include", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert 'badtiles.toml: [tiles] score must be "frame" or "tile"' in err


def test_frames_made_of_identical_tiles_score_like_the_tiles_alone(write_dataset, tmp_path: Path,
                                                                   pair_tools: tuple) -> None:
    smoke_frame, write_pair = pair_tools
    rng = np.random.default_rng(5)
    single, double = tmp_path / "single", tmp_path / "double"
    for split, n in (("train", 10), ("test", 12)):
        for i in range(n):
            image, mask = smoke_frame(rng, 32, 32, smoke=i % 4 != 0)
            write_pair(single, split, f"{split}{i}", image, mask)
            write_pair(double, split, f"{split}{i}", np.concatenate([image, image], axis=1),
                       np.concatenate([mask, mask], axis=1))
    a = _dataset(write_dataset, tmp_path / "dsa", "single", single, "size = 32")
    b = _dataset(write_dataset, tmp_path / "dsb", "double", double, "size = 32")
    out = tmp_path / "results"
    assert main(["run", "--include", str(tmp_path / "dsa"), "--include", str(tmp_path / "dsb"),
                 "--methods", "all_smoke", "--datasets", f"{a},{b}", "--out", str(out),
                 "--n-boot", "300"]) == 0
    recs = {r["dataset"]: r for r in load_records(out)}
    assert recs[b]["n_tiles"] == 24 and recs[b]["n_images"] == 12
    for key in ("mIoU", "IoU_smoke"):
        assert recs[a]["ci"][key] == pytest.approx(recs[b]["ci"][key], abs=1e-12)
        assert recs[a]["metrics"][key] == pytest.approx(recs[b]["metrics"][key], abs=1e-12)
    areas = json.loads(json.dumps(recs[b]["ci"]))
    assert areas["unit"] == "frame" and areas["n_units"] == 12
