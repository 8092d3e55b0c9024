"""Tiling, image labels derived from masks, the validation carve-out and limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench.data import DATASETS, discover_datasets, load_splits
from bench.data.config import parse_dataset_file
from bench.data.frames import Frame
from bench.data.hashing import hash_unit
from bench.data.splits import derive_label, frames_to_refs
from bench.data.tiling import tile_boxes, tile_starts


def test_tile_starts_cover_the_frame_flush_with_the_end() -> None:
    assert tile_starts(1920, 512) == [0, 512, 1024, 1408]
    assert tile_starts(1280, 512) == [0, 512, 768]
    assert tile_starts(512, 512) == [0]
    assert tile_starts(300, 512) == [0]


def test_tile_boxes_of_a_1920x1280_frame() -> None:
    boxes = tile_boxes(1280, 1920, 512)
    assert len(boxes) == 12
    covered = np.zeros((1280, 1920), bool)
    for y, x, h, w in boxes:
        assert (h, w) == (512, 512)
        covered[y:y + h, x:x + w] = True
    assert covered.all()
    # a frame below the tile size stays whole; a thin one is cut along its long side only
    assert tile_boxes(480, 640, 512) == [(0, 0, 480, 512), (0, 128, 480, 512)]
    assert tile_boxes(256, 256, 512) == [(0, 0, 256, 256)]


def test_derive_label_rules() -> None:
    mask = np.zeros((10, 10), np.uint8)
    assert derive_label(mask, None, True, 0.05) == 0
    mask[0, :3] = 1  # 3% smoke: ambiguous at a 5% threshold
    assert derive_label(mask, None, True, 0.05) is None
    mask[:2, :] = 1  # 20% smoke
    assert derive_label(mask, None, True, 0.05) == 1
    mask[:] = 255  # all ignored: unknown
    assert derive_label(mask, None, True, 0.05) is None
    # without a mask: a negative frame's crops are negative; a positive frame's crops unknown
    assert derive_label(None, 0, False, 0.05) == 0
    assert derive_label(None, 1, False, 0.05) is None
    assert derive_label(None, 1, True, 0.05) == 1


def test_crops_of_an_all_smoke_frame_yield_negatives() -> None:
    mask = np.zeros((256, 256), np.uint8)
    mask[:100, :100] = 1
    frame = Frame("f", (256, 256), image=np.zeros((256, 256, 3), np.uint8), mask=mask, label=1)
    whole = frames_to_refs([frame], tile=512, crop=0, min_fraction=0.01, use_frame_labels=True)
    assert [r.label for r in whole] == [1]
    crops = frames_to_refs([frame], tile=512, crop=128, min_fraction=0.01,
                           use_frame_labels=True)
    assert [r.id for r in crops] == ["f@0_0", "f@0_128", "f@128_0", "f@128_128"]
    assert [r.label for r in crops] == [1, 0, 0, 0]
    assert all(r.source_id == "f" for r in crops)
    sample = crops[1].load()
    assert sample.image.shape == (128, 128, 3) and sample.mask.shape == (128, 128)


def test_hash_unit_is_stable() -> None:
    assert hash_unit("abc") == hash_unit("abc")
    assert 0.0 <= hash_unit("abc", "val") < 1.0
    assert hash_unit("abc", "val") != hash_unit("abc", "other")
    # the documented formula: first 48 bits of sha1(salt + id) over 2**48 (changing it would
    # move every carved-out validation frame)
    digest = hashlib.sha1(b"valframe_0001").hexdigest()
    assert hash_unit("frame_0001", "val") == int(digest[:12], 16) / 2**48


#: [splits] options and tables every data set file of this module sets
OPTIONS = 'val_fraction = 0.25\n[masks]\nencoding = "binary255"\n'


def test_val_is_carved_from_train_by_frame(write_dataset, tmp_path: Path,
                                           smoke5k_root: Path) -> None:
    _, path = write_dataset(tmp_path, "tiny", smoke5k_root, OPTIONS + "[tiles]\nsize = 32\n")
    config = parse_dataset_file(path)
    data = load_splits(config, smoke5k_root)
    train, val, test = data["train"], data["val"], data["test"]
    assert len(test.source_ids) == 4
    assert len(train.source_ids) + len(val.source_ids) == 12
    assert not train.source_ids & val.source_ids  # tiles of one frame stay together
    expected_val = {f"train_{i:02d}" for i in range(12) if hash_unit(f"train_{i:02d}", "val") < .25}
    assert val.source_ids == expected_val
    assert data.derived["val"] == {"carved_from": "train", "fraction": 0.25,
                                   "by": "sha1 of frame id"}
    # 48x64 frames in 32-px tiles: 2 rows x 2 columns each
    assert len(test) == 16 and test.ids[:2] == ["test_00@0_0", "test_00@0_32"]
    again = load_splits(config, smoke5k_root)
    assert again.fingerprints == data.fingerprints


def test_limit_keeps_a_deterministic_subset(write_dataset, tmp_path: Path,
                                            smoke5k_root: Path) -> None:
    config = parse_dataset_file(write_dataset(tmp_path, "tiny", smoke5k_root, OPTIONS)[1])
    a = load_splits(config, smoke5k_root, limit=2, splits=["test"])
    b = load_splits(config, smoke5k_root, limit=2, splits=["test"])
    assert a["test"].ids == b["test"].ids and len(a["test"]) == 2
    assert a.fingerprints["test"] != load_splits(config, smoke5k_root,
                                                 splits=["test"]).fingerprints["test"]


def test_builtin_dataset_files_parse() -> None:
    discover_datasets()
    assert {"synthetic", "smoke5k"} <= set(DATASETS.names())
    smoke5k = DATASETS.get("smoke5k")
    assert smoke5k.tile_size == 512 and smoke5k.image_labels["crop"] == 128
    assert smoke5k.split_names == ["train", "test", "val"]
