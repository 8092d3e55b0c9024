"""Shared test setup: no hub downloads, no progress bars, tiny data sets built on the fly."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENCH_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_pair(root: Path, split: str, stem: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write one SMOKE5K-style image/mask pair (jpg image, png mask with {0, 255})."""
    from PIL import Image

    (root / split / "img").mkdir(parents=True, exist_ok=True)
    (root / split / "gt").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / split / "img" / f"{stem}.jpg", quality=95)
    Image.fromarray(mask).save(root / split / "gt" / f"{stem}.png")


def smoke_frame(rng: np.random.Generator, h: int, w: int, smoke: bool) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """A frame with a bright blob of 'smoke' (if ``smoke``) and its {0, 255} mask."""
    image = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if smoke:
        cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
        yy, xx = np.mgrid[:h, :w]
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 5) ** 2
        image[blob] = (200, 190, 180)
        mask[blob] = 255
    return image, mask


@pytest.fixture
def smoke5k_root(tmp_path: Path) -> Path:
    """A tiny data set in SMOKE5K's layout: train/{img,gt} (12 frames) and test/{img,gt} (4)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "smoke5k"
    for split, n in (("train", 12), ("test", 4)):
        for i in range(n):
            image, mask = smoke_frame(rng, 48, 64, smoke=i % 3 != 0)
            write_pair(root, split, f"{split}_{i:02d}", image, mask)
    return root


@pytest.fixture
def pair_tools() -> tuple:
    """(smoke_frame, write_pair), for tests that build more folders of their own."""
    return smoke_frame, write_pair


def dataset_file(folder: Path, stem: str, root: Path, extra: str = "") -> tuple[str, Path]:
    """A ``folder_pairs`` data set file ``folder/<stem>.toml`` over ``root`` (SMOKE5K layout,
    splits ``train`` and ``test``); ``extra`` follows the ``[splits]`` table, so it may start with
    ``val_fraction = ...`` and add tables. Returns (name, path); the name is unique per folder
    (data set names are global to the process)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{stem}{abs(hash(str(folder))) % 10**6}"
    path = folder / f"{stem}.toml"
    path.write_text(f'''name = "{name}"
description = "tiny test set"
loader = "folder_pairs"
root = "{root}"
[splits]
train = "train"
test = "test"
{extra}
''', encoding="utf-8")
    return name, path


@pytest.fixture
def write_dataset() -> object:
    """`dataset_file`, for tests that write data set files of their own."""
    return dataset_file


#: SmokeSeg's (FoSp) palette: index 0 black background, index 1 dark red smoke
SMOKESEG_PALETTE = [0, 0, 0, 128, 0, 0]
#: the tiny SmokeSeg fixture's test ids by smoke size (FoSp's test_small/medium/large lists)
SMOKESEG_SIZES = {"small": 3, "medium": 7, "large": 12}


def smokeseg_id(split: str, i: int) -> str:
    """A frame id in SmokeSeg's style (``<date>_<fire>_<camera>__<unix>_+<offset>``)."""
    return f"2020090{len(split)}_Fire_{split}-n-mobo-c__15993{i:05d}_+{60 * i:05d}"


def write_smokeseg(root: Path, n_train: int = 8, n_val: int = 4, seed: int = 3) -> dict:
    """A tiny data set in FoSp's SmokeSeg layout: ``JPEGImages/<id>.jpg``,
    ``SegmentationClass/<id>.png`` (palette PNGs, indices 0 and 1) and
    ``SmokeSeg_ImageSets/Segmentation/{train,val,test,test_small,test_medium,test_large}.txt``.

    Test frames come two per size bucket (a square of smoke with the bucket's half-width), so
    ``test_small/medium/large`` partition ``test`` as FoSp's lists do. Returns {list: ids}.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {}
    for d in ("JPEGImages", "SegmentationClass", "SmokeSeg_ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)

    def frame(frame_id: str, half: int) -> None:
        image = rng.integers(0, 90, size=(40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        cy, cx = int(rng.integers(14, 26)), int(rng.integers(14, 34))
        mask[cy - half:cy + half, cx - half:cx + half] = 1
        image[mask == 1] = (210, 200, 190)
        Image.fromarray(image).save(root / "JPEGImages" / f"{frame_id}.jpg", quality=95)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(SMOKESEG_PALETTE + [0] * (768 - len(SMOKESEG_PALETTE)))
        png.save(root / "SegmentationClass" / f"{frame_id}.png")

    for split, n in (("train", n_train), ("val", n_val)):
        lists[split] = [smokeseg_id(split, i) for i in range(n)]
        for i, frame_id in enumerate(lists[split]):
            frame(frame_id, (3, 7, 12)[i % 3])
    lists["test"] = []
    for b, (size, half) in enumerate(SMOKESEG_SIZES.items()):
        lists[f"test_{size}"] = [smokeseg_id("test", 2 * b + k) for k in range(2)]
        for frame_id in lists[f"test_{size}"]:
            frame(frame_id, half)
        lists["test"] += lists[f"test_{size}"]
    for name, ids in lists.items():
        (root / "SmokeSeg_ImageSets/Segmentation" / f"{name}.txt").write_text(
            "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return lists


@pytest.fixture
def smokeseg_root(tmp_path: Path) -> tuple[Path, dict]:
    """(root, lists) of a tiny SmokeSeg-layout data set (`write_smokeseg`)."""
    root = tmp_path / "SmokeSeg"
    return root, write_smokeseg(root)


@pytest.fixture(scope="session")
def builders() -> SimpleNamespace:
    """This file's data set builders for module-scoped fixtures (which cannot ask for the
    function-scoped ones): ``write_pair``, ``smoke_frame``, ``dataset_file``,
    ``write_smokeseg``."""
    return SimpleNamespace(write_pair=write_pair, smoke_frame=smoke_frame,
                           dataset_file=dataset_file, write_smokeseg=write_smokeseg)
