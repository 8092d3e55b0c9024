"""``bench export``: label maps as palette PNGs (0, 1, 255), CAMs as 16-bit grayscale, whole
frames stitched from tiles, named as the data set names its files; read back, they equal the
run's cached maps (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.records import load_records

LABELS = "dark_channel+threshold[threshold=0.3,band=0.2]"  # labels with an ignore band (255)
SOFT = "dark_channel+crf"


def write_frames(root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    """SMOKE5K-style pairs: ``{split}/img/<stem>.jpg`` and ``{split}/gt/<stem>.png`` (0/255),
    48x64 frames with a bright blob of smoke in two of three."""
    (root / split / "img").mkdir(parents=True, exist_ok=True)
    (root / split / "gt").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:48, :64]
    for i in range(n):
        image = rng.integers(0, 90, size=(48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        if i % 3:
            cy, cx = rng.integers(12, 36), rng.integers(16, 48)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < 100
            image[blob] = (200, 190, 180)
            mask[blob] = 255
        Image.fromarray(image).save(root / split / "img" / f"{split}_{i:02d}.jpg", quality=95)
        Image.fromarray(mask).save(root / split / "gt" / f"{split}_{i:02d}.png")


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run on a folder-pairs data set whose 48x64 frames are cut into four overlapping
    32x32 tiles."""
    base = tmp_path_factory.mktemp("export")
    root = base / "data"
    rng = np.random.default_rng(3)
    write_frames(root, "train", 12, rng)
    write_frames(root, "test", 5, rng)
    name = f"tiles{abs(hash(str(base))) % 10**6}"
    include = base / "include"
    include.mkdir()
    (include / f"{name}.toml").write_text(f'''name = "{name}"
description = "tiny tiled set for the export tests"
loader = "folder_pairs"
root = "{root}"
[splits]
train = "train"
test = "test"
val_fraction = 0.3
[tiles]
size = 32
''', encoding="utf-8")
    out = base / "results"
    assert main(["run", "--include", str(include), "--methods", f"{LABELS},{SOFT}",
                 "--datasets", name, "--out", str(out), "--n-boot", "10", "--no-progress"]) == 0
    return {"out": out, "include": include, "name": name, "root": root}


def export(run: dict, method: str, split: str, stage: str, to: Path) -> int:
    return main(["export", "--method", method, "--dataset", run["name"], "--split", split,
                 "--stage", stage, "--to", str(to), "--out", str(run["out"]), "--include",
                 str(run["include"])])


def cached_frames(run: dict, method: str, split: str) -> dict[str, np.ndarray]:
    """The record's cached tile maps of ``split``, stitched per frame (tile ids ``stem@y_x``;
    the tiles are 32x32)."""
    from bench.stitch import FrameView, stitch

    rec = next(r for r in load_records(run["out"]) if r["method"] == method)
    path = next((run["out"] / "cache" / rec["config"]["cache_key"]).glob(f"maps-{split}-*.npz"))
    tiles: dict[str, list[tuple[tuple[int, int, int, int], np.ndarray]]] = {}
    with np.load(path) as npz:
        for entry in npz.files:
            if entry == "__timing__":
                continue
            stem, y, x = re.fullmatch(r"(.+)@(\d+)_(\d+)", entry).groups()
            tiles.setdefault(stem, []).append(((int(y), int(x), 32, 32), npz[entry]))
    out = {}
    for stem, parts in tiles.items():
        view = FrameView(stem, (48, 64), None, {}, [(k, box) for k, (box, _) in
                                                     enumerate(parts)])
        maps = [m.astype(np.float32) if m.dtype == np.float16 else m for _, m in parts]
        out[stem] = stitch(view, maps, rec["output"])
    return out


def test_label_maps_are_palette_pngs_of_whole_frames(tiled_run: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    to = tmp_path / "final"
    assert export(tiled_run, LABELS, "test", "final", to) == 0
    assert "wrote 5 PNG(s)" in capsys.readouterr().err
    # names: the data set's own mask files
    assert sorted(p.name for p in to.iterdir()) == \
        sorted(p.name for p in (tiled_run["root"] / "test" / "gt").iterdir())
    expected = cached_frames(tiled_run, LABELS, "test")
    assert len(expected) == 5 and all(len(v) for v in expected.values())
    seen: set[int] = set()
    for path in sorted(to.iterdir()):
        with Image.open(path) as im:
            assert im.mode == "P" and im.size == (64, 48)
            assert im.getpalette()[3:6] == [128, 0, 0]  # VOC's colour of label 1
            labels = np.asarray(im)
        np.testing.assert_array_equal(labels, expected[path.stem])
        seen |= set(np.unique(labels).tolist())
    assert seen == {0, 1, 255}


def test_cams_are_16_bit_and_soft_maps_become_labels_at_their_threshold(
        tiled_run: dict, tmp_path: Path) -> None:
    cams = tmp_path / "cam"
    assert export(tiled_run, SOFT, "test", "cam", cams) == 0
    expected = cached_frames(tiled_run, "dark_channel", "test")
    for path in sorted(cams.iterdir()):
        with Image.open(path) as im:
            values = np.asarray(im)
        assert values.dtype == np.uint16 and values.shape == (48, 64)
        np.testing.assert_array_equal(values, np.round(expected[path.stem].astype(float) * 65535))
    final = tmp_path / "final"
    assert export(tiled_run, SOFT, "test", "final", final) == 0
    rec = next(r for r in load_records(tiled_run["out"]) if r["method"] == SOFT)
    threshold = rec["threshold"]["value"]
    soft = cached_frames(tiled_run, SOFT, "test")
    for path in sorted(final.iterdir()):
        with Image.open(path) as im:
            labels = np.asarray(im)
        want = (soft[path.stem].astype(np.float64) >= threshold).astype(np.uint8)
        np.testing.assert_array_equal(labels, want)


def test_pseudo_labels_of_the_training_split_are_computed_from_the_cache(
        tiled_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The run never computed these maps (nothing trained on them): export computes them with
    the run's stages, as the run would have, and writes the training frames' names."""
    from bench.data.hashing import hash_unit
    from bench.plugins import METHODS

    rec = next(r for r in load_records(tiled_run["out"]) if r["method"] == "dark_channel")
    cache = tiled_run["out"] / "cache" / rec["config"]["cache_key"]
    assert not list(cache.glob("maps-train-*.npz"))
    cams = tmp_path / "cam"
    assert export(tiled_run, SOFT, "train", "cam", cams) == 0
    assert "recomputed the maps of 'dark_channel'" in capsys.readouterr().err
    assert list(cache.glob("maps-train-*.npz"))
    train = sorted(p.stem for p in (tiled_run["root"] / "train" / "gt").iterdir()
                   if hash_unit(p.stem, "val") >= 0.3)  # val is carved from train
    assert sorted(p.stem for p in cams.iterdir()) == train
    # the plugin itself on each tile, stitched: the same CAM (to float16 and 16-bit rounding)
    plugin = METHODS.get("dark_channel").cls()
    for stem in train:
        with Image.open(tiled_run["root"] / "train" / "img" / f"{stem}.jpg") as im:
            image = np.asarray(im.convert("RGB"))
        total = np.zeros((48, 64))
        count = np.zeros((48, 64))
        for y in (0, 16):
            for x in (0, 32):
                total[y:y + 32, x:x + 32] += plugin.compute([image[y:y + 32, x:x + 32]])[0]
                count[y:y + 32, x:x + 32] += 1
        with Image.open(cams / f"{stem}.png") as im:
            exported = np.asarray(im) / 65535.0
        np.testing.assert_allclose(exported, total / count, atol=1e-3)
    pseudo = tmp_path / "pseudo"
    assert export(tiled_run, SOFT, "train", "pseudo", pseudo) == 0
    assert sorted(p.stem for p in pseudo.iterdir()) == train
    for path in pseudo.iterdir():
        with Image.open(path) as im:
            assert set(np.unique(np.asarray(im)).tolist()) <= {0, 1}


def test_export_errors_are_one_line(tiled_run: dict, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    assert export(tiled_run, "all_smoke", "test", "final", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no record of 'all_smoke'" in err
    assert "recorded there: dark_channel, dark_channel+crf" in err
    assert export(tiled_run, "all_smok", "test", "final", tmp_path / "x") == 2
    assert "Did you mean 'all_smoke'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
