"""Frames known by content: leakage errors that name the files, ``[exclude]``, and a cache that
survives moving the data set (content fingerprints memoised by a file index)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.data import file_index as fi
from bench.data import load_splits
from bench.data.config import parse_dataset_file
from bench.data.hashing import hash_unit
from bench.errors import ConfigError
from bench.records import load_records

#: the public SMOKE5K's cross-split duplicate: this training photo is that test photo
#: what every data set file of this module sets after [splits]
OPTIONS = 'val_fraction = 0.3\n[masks]\nencoding = "binary255"\n'

TRAIN_COPY, TEST_ORIGINAL = "ckb3uv42hu2cw0797ivwaxexz", "ckb3w841muf6l0797ng4sea57"
#: a cheap trainable method: a resnet18 classifier CAM from scratch, one short epoch
TRAINED = "classifier[backbone=resnet18,weights=none,input_size=32,epochs=1,batch_size=4," \
          "epoch_size=0]"
PAST = time.time() - 86400  # modification times older than the index's racy window




@pytest.fixture
def duplicated(tmp_path: Path, pair_tools: tuple) -> Path:
    """SMOKE5K's layout (``{train,test}/{img,gt}``, jpg + png {0, 255}) with its flaw: one
    training image is byte for byte a test image under another name."""
    smoke_frame, write_pair = pair_tools
    rng = np.random.default_rng(5)
    root = tmp_path / "smoke5k"
    for split, n in (("train", 8), ("test", 3)):
        for i in range(n):
            write_pair(root, split, f"{split}_{i:02d}", *smoke_frame(rng, 48, 64, i % 3 != 0))
    write_pair(root, "test", TEST_ORIGINAL, *smoke_frame(rng, 48, 64, True))
    for sub, ext in (("img", "jpg"), ("gt", "png")):
        shutil.copy(root / "test" / sub / f"{TEST_ORIGINAL}.{ext}",
                    root / "train" / sub / f"{TRAIN_COPY}.{ext}")
    assert hash_unit(TRAIN_COPY, "val") >= 0.3  # the copy stays in train, not in carved val
    return root


# --------------------------------------------------------------------------- leakage, [exclude]


def test_cross_split_duplicate_is_refused_naming_both_files_then_excluded(write_dataset,
        tmp_path: Path, duplicated: Path, capsys: pytest.CaptureFixture) -> None:
    include = tmp_path / "datasets"
    name, toml = write_dataset(include, "dup", tmp_path / "nowhere", OPTIONS)
    out = tmp_path / "results"
    run = ["run", "--include", str(include), "--datasets", name, "--data-root",
           f"{name}={duplicated}", "--methods", TRAINED, "--out", str(out), "--n-boot", "20",
           "--device", "cpu"]
    assert main(run) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after "bench run: ..." lines
    assert err.startswith("bench: error: test-set leakage: ")
    assert f"1 frame(s) of split 'test' of {name} are also in 'train' of {name}" in err
    assert (f"train/img/{TRAIN_COPY}.jpg = test/img/{TEST_ORIGINAL}.jpg (same image content)"
            in err)
    assert f"(paths under {duplicated.resolve()})" in err
    assert f'add to {toml}: [exclude] train = ["{TRAIN_COPY}"]' in err
    assert not (out / "records").exists()

    # the file with that entry added (a copy in another folder: this process has read the
    # first one already, and data set names are global to it)
    fixed = tmp_path / "fixed"
    fixed_name, _ = write_dataset(fixed, "dup", tmp_path / "nowhere",
                                  OPTIONS + f'[exclude]\ntrain = ["{TRAIN_COPY}"]\n')
    run = [fixed_name if a == name else str(fixed) if a == str(include)
           else f"{fixed_name}={duplicated}" if a.startswith(f"{name}=") else a for a in run]
    assert main(run) == 0
    records = load_records(out)
    assert records and all(r["n_images"] == 4 for r in records)
    assert all(np.isfinite(r["metrics"]["mIoU"]) for r in records)
    excluded = {"train": {"ids": [TRAIN_COPY], "count": 1}}
    assert all(r["config"]["data"]["derived"]["excluded"] == excluded for r in records)


def test_leak_into_carved_val_is_excluded_from_train(write_dataset, tmp_path: Path,
                                                     duplicated: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A copy that lands in the carved val split leaks into calibration even for a method
    that does not train; the remedy still names ``train``, where val comes from."""
    copy = next(s for s in (f"copy{i}" for i in range(100)) if hash_unit(s, "val") < 0.3)
    for sub, ext in (("img", "jpg"), ("gt", "png")):
        shutil.copy(duplicated / "test" / sub / f"test_01.{ext}",
                    duplicated / "train" / sub / f"{copy}.{ext}")
    include = tmp_path / "datasets"
    name, _ = write_dataset(include, "dup", duplicated,
                            OPTIONS + f'[exclude]\ntrain = ["{TRAIN_COPY}"]\n')
    assert main(["run", "--include", str(include), "--datasets", name, "--methods", "all_smoke",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"also in 'val' of {name}: train/img/{copy}.jpg = test/img/test_01.jpg" in err
    assert f'[exclude] train = ["{TRAIN_COPY}", "{copy}"]' in err  # merged with the entry


def test_exclusions_apply_before_the_val_carve_out_and_limit(write_dataset, tmp_path: Path,
                                                             duplicated: Path) -> None:
    _, plain = write_dataset(tmp_path / "a", "plain", duplicated, OPTIONS)
    _, excl = write_dataset(tmp_path / "b", "excl", duplicated,
                            OPTIONS + '[exclude]\ntrain = ["train_02", "train_05"]\n'
                            'test = ["test_01"]\n')
    before = load_splits(parse_dataset_file(plain), duplicated)
    after = load_splits(parse_dataset_file(excl), duplicated)
    for split in ("train", "val"):  # the others keep their side of the carve-out
        assert after[split].source_ids == before[split].source_ids - {"train_02", "train_05"}
    assert "train_05" in before["val"].source_ids  # hash 0.146 < 0.3: carved into val
    assert after["test"].source_ids == before["test"].source_ids - {"test_01"}
    assert after.derived["excluded"] == {"train": {"ids": ["train_02", "train_05"], "count": 2},
                                         "test": {"ids": ["test_01"], "count": 1}}
    assert "excluded" not in before.derived
    limited = load_splits(parse_dataset_file(excl), duplicated, limit=3)
    assert len(limited["train"].source_ids) == 3
    assert not limited["train"].source_ids & {"train_02", "train_05"}


@pytest.mark.parametrize(("extra", "message"), [
    ('train = ["train_0"]', "1 id(s) match no frame of split 'train': 'train_0' (did you mean"),
    ('val = ["train_01"]', "names split 'val', which [splits] does not declare (splits: train, "
                           "test) (val is carved from train: exclude from train)"),
    ('train = "train_01"', "[exclude] train must be a list of frame ids"),
    ('missing = "skip"', "[exclude] missing must be \"error\" or \"ignore\""),
])
def test_bad_exclusions_name_the_file(write_dataset, tmp_path: Path, duplicated: Path, extra: str,
                                      message: str) -> None:
    _, path = write_dataset(tmp_path, "bad", duplicated, OPTIONS + f"[exclude]\n{extra}\n")
    with pytest.raises(ConfigError) as err:
        load_splits(parse_dataset_file(path), duplicated)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_ignore_records_absent_ids(write_dataset, tmp_path: Path, duplicated: Path) -> None:
    _, path = write_dataset(tmp_path, "subset", duplicated,
                            OPTIONS + '[exclude]\ntrain = ["train_01", "gone"]\n'
                            'missing = "ignore"\n')
    data = load_splits(parse_dataset_file(path), duplicated, splits=["train", "val"])
    assert data.derived["excluded"] == {"train": {"ids": ["train_01"], "count": 1,
                                                  "absent": ["gone"]}}


def test_in_memory_frames_are_named_by_id(write_dataset, tmp_path: Path, duplicated: Path) -> None:
    from bench.data.frames import Frame, SampleList, SampleRef
    from bench.data.leakage import find_leaks, leakage_message

    def samples(*frames: Frame) -> SampleList:
        return SampleList([SampleRef(f.id, f, (0, 0, 4, 4), None) for f in frames])

    pixels = np.full((4, 4, 3), 7, np.uint8)
    seen = samples(Frame("a", (4, 4), image=pixels), Frame("b", (4, 4), image=pixels + 1))
    scored = samples(Frame("c", (4, 4), image=pixels.copy()), Frame("b", (4, 4), image=pixels))
    leaks = find_leaks(seen, scored)
    assert [(x.seen.id, x.scored.id, x.why) for x in leaks] == [
        ("a", "b", "same image content"), ("b", "b", "same frame id"),
        ("a", "c", "same image content")]
    _, path = write_dataset(tmp_path, "mem", duplicated, OPTIONS)
    message = leakage_message(leaks, scored_split="test", scored_name="mem", seen_split="val",
                              seen_config=parse_dataset_file(path), scored_root=None,
                              seen_root=None)
    assert "2 frame(s) of split 'test'" in message
    assert "frame 'a' = frame 'c' (same image content)" in message
    assert f'add to {path}: [exclude] train = ["a", "b"]' in message  # val is carved from train


def test_shipped_smoke5k_file_excludes_its_duplicate() -> None:
    config = parse_dataset_file(Path(__file__).parents[1] / "datasets" / "smoke5k.toml")
    assert config.exclude == {"train": [TRAIN_COPY]}
    assert config.exclude_missing == "ignore"  # subsets (smoke5k-dev, fixtures) may lack it


# --------------------------------------------------------------------------- content fingerprints


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file `bench.data.file_index` hashes."""
    calls: list[str] = []
    real = fi.hash_file

    def counting(path: str | os.PathLike[str]) -> str:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(fi, "hash_file", counting)
    return calls


def age(root: Path, when: float = PAST) -> None:
    """Give every file under ``root`` the modification time ``when``."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def test_index_avoids_rehashing_and_follows_content(write_dataset, tmp_path: Path, duplicated: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = write_dataset(tmp_path / "ds", "idx", duplicated, OPTIONS)
    config = parse_dataset_file(path)
    age(duplicated)
    run = tmp_path / "run"
    calls = count_hashes(monkeypatch)
    first = load_splits(config, duplicated, index=run)
    assert len(calls) == 13 and (run / "cache" / "file-index.json").is_file()
    calls.clear()
    second = load_splits(config, duplicated, index=run)  # a new process: the index on disk
    assert calls == [] and second.fingerprints == first.fingerprints
    # the leakage check reads the same memoised digests: still no file is read
    assert second["train"].content_keys() & second["test"].content_keys()
    assert calls == []
    # a byte-identical copy elsewhere, with other times: hashed once, same fingerprints
    copy = tmp_path / "copy"
    shutil.copytree(duplicated, copy)
    age(copy, PAST - 3600)
    moved = load_splits(config, copy, index=run)
    assert len(calls) == 13 and moved.fingerprints == first.fingerprints
    # new bytes (same size, new time) are hashed again and change the fingerprint
    calls.clear()
    image = copy / "test" / "img" / "test_00.jpg"
    data = bytearray(image.read_bytes())
    data[-3] ^= 1  # inside the entropy-coded data: still a decodable jpg of the same size
    image.write_bytes(bytes(data))
    os.utime(image, (PAST, PAST))
    changed = load_splits(config, copy, index=run)
    assert calls == [str(image)]
    assert changed.fingerprints["test"] != first.fingerprints["test"]
    assert changed.fingerprints["train"] == first.fingerprints["train"]


def test_default_index_is_in_memory(write_dataset, tmp_path: Path, duplicated: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = write_dataset(tmp_path / "ds", "mem", duplicated, OPTIONS)
    config = parse_dataset_file(path)
    age(duplicated)
    calls = count_hashes(monkeypatch)
    load_splits(config, duplicated, splits=["test"])
    assert len(calls) == 4
    load_splits(config, duplicated, splits=["test"])
    assert len(calls) == 4
    assert not list(tmp_path.rglob("file-index.json"))


def test_racy_entries_are_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like git's index: a file modified just before it was hashed may change again within
    one clock tick at the same size, so its entry is trusted only once the file has aged."""
    calls = count_hashes(monkeypatch)
    path = tmp_path / "a.bin"
    path.write_bytes(b"one")
    index = fi.FileIndex(tmp_path / "index.json")
    first = index.digest(path)
    assert index.digest(path) == first and len(calls) == 2  # fresh: hashed again
    os.utime(path, (PAST, PAST))
    index.digest(path)
    index.digest(path)
    assert len(calls) == 3
    index.save()
    assert fi.FileIndex(tmp_path / "index.json").digest(path) == first and len(calls) == 3


def test_a_broken_index_file_is_only_a_cache_miss(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"content")
    index_file = tmp_path / "cache" / "file-index.json"
    index_file.parent.mkdir()
    for text in ("{not json", json.dumps({"version": 99, "files": {}}), "[]"):
        index_file.write_text(text)
        index = fi.FileIndex.for_run(tmp_path)
        assert index.digest(path) == fi.hash_file(path)
        index.save()
        assert json.loads(index_file.read_text())["version"] == fi.VERSION


def cache_state(out: Path) -> dict[str, int]:
    """Every file under ``<out>/cache`` but the file index, with its mtime."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "cache").rglob("*")
            if p.is_file() and p.name != "file-index.json"}


def test_moved_data_set_keeps_its_cache(write_dataset, tmp_path: Path, duplicated: Path) -> None:
    for sub, ext in (("img", "jpg"), ("gt", "png")):  # no leak: all_smoke calibrates on val
        (duplicated / "train" / sub / f"{TRAIN_COPY}.{ext}").unlink()
    include = tmp_path / "datasets"
    name, _ = write_dataset(include, "moved", tmp_path / "nowhere", OPTIONS)
    out = tmp_path / "results"

    def run(root: Path) -> dict[str, dict]:
        assert main(["run", "--include", str(include), "--datasets", name, "--data-root",
                     f"{name}={root}", "--methods", "all_smoke,dark_channel", "--out", str(out),
                     "--n-boot", "20"]) == 0
        return {r["method"]: r for r in load_records(out)}

    first = run(duplicated)
    state = cache_state(out)
    assert any(p.endswith(".npz") for p in state)
    copy = tmp_path / "elsewhere" / "smoke5k"
    shutil.copytree(duplicated, copy)
    age(copy)
    moved = run(copy)
    assert cache_state(out) == state  # nothing recomputed, nothing rewritten
    for method, rec in first.items():
        assert moved[method]["metrics"] == rec["metrics"] and moved[method]["ci"] == rec["ci"]
        assert moved[method]["config"]["cache_key"] == rec["config"]["cache_key"]
        assert moved[method]["config"]["data"]["fingerprints"] == \
            rec["config"]["data"]["fingerprints"]
    # one pixel of one test mask: that split's scores are recomputed
    mask_path = copy / "test" / "gt" / "test_00.png"
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 255 - mask[0, 0]
    Image.fromarray(mask).save(mask_path)
    changed = run(copy)
    assert set(cache_state(out)) > set(state)
    for method, rec in first.items():
        assert changed[method]["metrics"] != rec["metrics"]
