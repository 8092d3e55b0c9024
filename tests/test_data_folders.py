"""Folder layouts: SMOKE5K-style image/mask pairs and one folder per label (IJmond crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data import DATASETS, discover_datasets, load_splits
from bench.data.config import DatasetConfig, parse_dataset_file
from bench.data.loaders import load_class_folders, load_folder_pairs
from bench.errors import ConfigError, InputError
from bench.records import load_records


def dataset(tmp_path: Path, body: str, name: str = "folders_test") -> DatasetConfig:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{body}', encoding="utf-8")
    return parse_dataset_file(path)


SMOKE5K = """loader = "folder_pairs"
[splits]
train = "train"
[masks]
encoding = "binary255"
"""


def smoke5k_train(tmp_path: Path) -> Path:
    """``train/{img,gt}``: jpg images and png masks {0, 255} with the same stems."""
    root = tmp_path / "smoke5k"
    (root / "train" / "img").mkdir(parents=True)
    (root / "train" / "gt").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        mask = np.zeros((48, 64), np.uint8)
        mask[10:10 + 4 * i, 5:25] = 255  # i = 0: no smoke
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            root / "train" / "img" / f"{i}_{i}.jpg")
        Image.fromarray(mask).save(root / "train" / "gt" / f"{i}_{i}.png")
    return root


def test_smoke5k_pairs_masks_and_labels(tmp_path: Path) -> None:
    root = smoke5k_train(tmp_path)
    frames = load_folder_pairs(dataset(tmp_path, SMOKE5K), "train", root, "quick")
    assert [f.id for f in frames] == [f"{i}_{i}" for i in range(6)]
    for i, f in enumerate(frames):
        assert f.mask is not None and set(np.unique(f.mask)) <= {0, 1}
        assert int(f.mask.sum()) == 4 * i * 20
    data = load_splits(dataset(tmp_path, SMOKE5K), root)
    both = {**dict(zip(data["train"].ids, data["train"].labels, strict=True)),
            **dict(zip(data["val"].ids, data["val"].labels, strict=True))}
    assert both == {"0_0": 0, **{f"{i}_{i}": 1 for i in range(1, 6)}}
    assert not set(data["train"].ids) & set(data["val"].ids)


@pytest.mark.parametrize("problem", ["mask size", "mask values", "corrupt image"])
def test_bad_pairs_name_the_file(tmp_path: Path, problem: str) -> None:
    root = smoke5k_train(tmp_path)
    if problem == "mask size":
        bad = root / "train" / "gt" / "2_2.png"
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad)
        expected = "mask is 12x10 but its image is 64x48"
    elif problem == "mask values":
        bad = root / "train" / "gt" / "2_2.png"
        Image.fromarray(np.full((48, 64), 7, np.uint8)).save(bad)
        expected = "mask values 7 are outside encoding 'binary255'"
    else:
        bad = root / "train" / "img" / "2_2.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        expected = "cannot read image"
    with pytest.raises(InputError) as err:
        load_folder_pairs(dataset(tmp_path, SMOKE5K), "train", root, "quick")
    assert err.value.path == str(bad) and expected in err.value.problem


# --------------------------------------------------------------------------- class folders


def class_root(tmp_path: Path, n: int = 10) -> Path:
    """``smoke/`` and ``no_smoke/`` directly under the root (the ijmond-samples layout)."""
    root = tmp_path / "cls"
    rng = np.random.default_rng(1)
    for folder in ("smoke", "no_smoke"):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(
                root / folder / f"{folder}{i}.png")
    return root


CARVED = """loader = "class_folders"
[splits]
train = { folder = ".", range = [0.0, 0.6] }
val = { folder = ".", range = [0.6, 0.8] }
test = { folder = ".", range = [0.8, 1.0] }
"""


def test_carved_class_folder_splits(tmp_path: Path) -> None:
    root = class_root(tmp_path)
    data = load_splits(dataset(tmp_path, CARVED), root)
    sizes = {k: (v.labels.count(1), v.labels.count(0)) for k, v in data.splits.items()}
    assert sizes == {"train": (6, 6), "val": (2, 2), "test": (2, 2)}  # stratified by label
    ids = [set(v.ids) for v in data.splits.values()]
    assert set.union(*ids) == {f"{c}/{c}{i}" for c in ("smoke", "no_smoke") for i in range(10)}
    assert sum(len(s) for s in ids) == 20  # disjoint and complete
    again = load_splits(dataset(tmp_path, CARVED), root)
    assert again["test"].ids == data["test"].ids
    unstratified = CARVED.replace('range = [0.8, 1.0] }', 'range = [0.8, 1.0], '
                                                         'stratify = false }')
    test = load_class_folders(dataset(tmp_path, unstratified, "u"), "test", root, "quick")
    assert test and all(f.label in (0, 1) for f in test)


def test_bad_carve_tables(tmp_path: Path) -> None:
    root = class_root(tmp_path, 2)
    for table in ('{ folder = ".", range = [0.5, 0.2] }', '{ folder = "." }',
                  '{ folder = ".", range = [0, 1], colour = "red" }'):
        config = dataset(tmp_path, f'loader = "class_folders"\n[splits]\ntest = {table}\n')
        with pytest.raises(ConfigError, match=r"splits\.test"):
            load_class_folders(config, "test", root, "quick")


def test_ijmond_cls_dataset_file_reads_the_samples_layout(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = class_root(tmp_path)
    discover_datasets()
    config = DATASETS.get("ijmond_cls")
    assert config.path is not None and config.root_env == "IJMOND_CLS_ROOT"
    data = load_splits(config, root)
    assert set(data.splits) == {"train", "val", "test"}
    assert all(set(v.labels) == {0, 1} for v in data.splits.values())
    out = tmp_path / "results"
    args = ["run", "--methods", "all_smoke", "--datasets", "ijmond_cls", "--data-root",
            f"ijmond_cls={root}", "--out", str(out), "--n-boot", "20", "--no-progress"]
    assert main(args) == 0
    (rec,) = load_records(out)
    assert rec["threshold"]["level"] == "image" and rec["metrics"]["recall"] == 1.0
    before = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    bad = sorted((root / "smoke").iterdir())[0]
    bad.write_bytes(b"\x89PNG broken")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bench: error: {bad}: cannot read image")
    after = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    assert after == before
