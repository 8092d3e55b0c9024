"""The runner: caching, reuse across methods, resume after SIGKILL, leakage checks, records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records

PLUGINS = '''
"""Counting plugins for runner tests: each call appends a line to $BENCH_TEST_LOG."""
import os
import time
from dataclasses import dataclass

import numpy as np

from bench import CamSource, Refiner, register_method


def log(what):
    with open(os.environ["BENCH_TEST_LOG"], "a") as fh:
        fh.write(what + "\\n")


@register_method("counting_cam")
class CountingCam(CamSource):
    """Brightness as smoke map; logs every batch."""

    @dataclass
    class Params:
        gain: float = 1.0

    def compute(self, images):
        log("cam")
        return [np.clip(im.mean(axis=2) / 255.0 * self.params.gain, 0, 1).astype(np.float32)
                for im in images]


@register_method("trained_cam")
class TrainedCam(CountingCam):
    """Learns a gain from labelled images; logs fits."""

    trainable = True

    def fit(self, train, val):
        log(f"fit {len(train)}")
        self.gain = 1.0

    def save(self, directory):
        (directory / "gain.txt").write_text("1.0")

    def load(self, directory):
        log("load")
        self.gain = float((directory / "gain.txt").read_text())


@register_method("sleepy")
class Sleepy(Refiner):
    """Logs, then sleeps forever if $BENCH_TEST_SLEEP is set (to be killed)."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        log("refine")
        if os.environ.get("BENCH_TEST_SLEEP"):
            time.sleep(600)
        return cam


@register_method("reads_threshold")
class ReadsThreshold(Refiner):
    """Logs the input threshold the runner hands it."""

    uses_input_threshold = True

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        log(f"input={self.input_threshold}")
        return cam
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of test plugins for the whole module (plugin names are global)."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "counting.py").write_text(PLUGINS)
    return folder




@pytest.fixture
def workspace(write_dataset, tmp_path: Path, smoke5k_root: Path, plugin_dir: Path,
              monkeypatch: pytest.MonkeyPatch) -> dict:
    plugins = tmp_path / "datasets"
    name, _ = write_dataset(plugins, "tiny", smoke5k_root, "val_fraction = 0.3\n")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("BENCH_TEST_LOG", str(log))
    out = tmp_path / "results"
    base = ["run", "--include", str(plugin_dir), "--include", str(plugins), "--datasets", name,
            "--out", str(out), "--n-boot", "50"]
    return {"base": base, "log": log, "out": out, "plugins": plugins, "name": name}


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_second_run_reuses_every_stage(workspace: dict) -> None:
    base, log = workspace["base"], workspace["log"]
    assert main([*base, "--methods", "counting_cam+sleepy"]) == 0
    first = calls(log)
    assert "cam" in first and "refine" in first
    records = load_records(workspace["out"])
    assert {r["method"] for r in records} == {"counting_cam", "counting_cam+sleepy"}
    log.unlink()
    assert main([*base, "--methods", "counting_cam+sleepy"]) == 0
    assert calls(log) == []  # nothing recomputed
    # adding a method computes only the new one
    assert main([*base, "--methods", "counting_cam+sleepy,counting_cam[gain=2]"]) == 0
    assert set(calls(log)) == {"cam"}
    board = (workspace["out"] / "leaderboard.md").read_text()
    assert "counting_cam[gain=2]" in board and "counting_cam+sleepy" in board


def test_trained_stage_is_fit_once_and_shared(workspace: dict) -> None:
    base, log = workspace["base"], workspace["log"]
    assert main([*base, "--methods", "trained_cam"]) == 0
    assert [c for c in calls(log) if c.startswith("fit")] == ["fit"]
    log.unlink()
    assert main([*base, "--methods", "trained_cam+sleepy"]) == 0
    assert "fit" not in calls(log) and "load" not in calls(log)  # maps cached: no model needed
    assert calls(log).count("refine") > 0


def test_record_contents(workspace: dict) -> None:
    assert main([*workspace["base"], "--methods", "counting_cam", "--seed", "3"]) == 0
    (rec,) = load_records(workspace["out"])
    assert rec["seed"] == 3 and rec["split"] == "test" and rec["profile"] == "quick"
    assert rec["threshold"]["chosen_on"] == "val"
    assert 0 < rec["threshold"]["value"] <= 1
    lo, hi = rec["ci"]["mIoU"]
    assert lo <= rec["metrics"]["mIoU"] <= hi
    assert rec["config"]["stages"] == [{"name": "counting_cam", "kind": "cam",
                                        "params": {"gain": 1.0}}]
    prov = rec["provenance"]
    assert prov["versions"]["numpy"] and prov["date"] and "commit" in prov["git"]
    # learned stages' last digits depend on torch's thread count: the record says it
    assert set(prov["threads"]) == {"torch", "OMP_NUM_THREADS", "cpus"}
    assert prov["threads"]["cpus"] == os.cpu_count()
    assert rec["n_images"] == 4


def test_same_seed_same_numbers(workspace: dict, tmp_path: Path) -> None:
    base = workspace["base"]
    assert main([*base, "--methods", "counting_cam"]) == 0
    other = [*base[:-4], "--out", str(tmp_path / "again"), "--n-boot", "50"]
    assert main([*other, "--methods", "counting_cam"]) == 0
    (a,) = load_records(workspace["out"])
    (b,) = load_records(tmp_path / "again")
    assert a["metrics"] == b["metrics"] and a["ci"] == b["ci"]


def test_training_on_the_scored_split_is_refused(workspace: dict,
                                                 capsys: pytest.CaptureFixture) -> None:
    code = main([*workspace["base"], "--methods", "trained_cam", "--split", "train"])
    assert code == 2
    assert "trains on split 'train'" in capsys.readouterr().err


@pytest.mark.parametrize("stem", ["test_00", "renamed_copy"])
def test_leakage_between_train_and_test_is_detected(workspace: dict, smoke5k_root: Path,
                                                    stem: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    import shutil

    # a test frame copied into train (under its own name, or renamed) lands in train or in the
    # carved-out val split: either way the run must refuse to score test
    for sub, ext in (("img", "jpg"), ("gt", "png")):
        shutil.copy(smoke5k_root / "test" / sub / f"test_00.{ext}",
                    smoke5k_root / "train" / sub / f"{stem}.{ext}")
    code = main([*workspace["base"], "--methods", "trained_cam"])
    assert code == 2
    err = capsys.readouterr().err
    assert "test-set leakage" in err
    assert ("frame id" in err and "test_00" in err) if stem == "test_00" else "content" in err
    assert not (workspace["out"] / "records").exists()


def test_resume_after_sigkill(workspace: dict, tmp_path: Path) -> None:
    log = workspace["log"]
    env = {**os.environ, "BENCH_TEST_SLEEP": "1", "BENCH_TEST_LOG": str(log)}
    cmd = [sys.executable, "-c", "import sys; from bench.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *workspace["base"], "--methods",
           "counting_cam+sleepy"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while "refine" not in calls(log):
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = calls(log)
    assert "cam" in before
    # the first stage's record and maps survived, with no partial files passing for real ones
    records = load_records(workspace["out"])
    assert [r["method"] for r in records] == ["counting_cam"]
    assert not list(workspace["out"].rglob("*.json.tmp"))
    log.unlink()
    assert main([*workspace["base"], "--methods", "counting_cam+sleepy"]) == 0
    after = calls(log)
    assert "cam" not in after and "refine" in after  # stage 1 resumed, stage 0 not redone
    methods = sorted(r["method"] for r in load_records(workspace["out"]))
    assert methods == ["counting_cam", "counting_cam+sleepy"]
    for path in (workspace["out"] / "records").rglob("*.json"):
        json.loads(path.read_text())


def test_out_of_distribution_cells(write_dataset, workspace: dict, tmp_path: Path,
                                   pair_tools: tuple,
                                   capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    smoke_frame, write_pair = pair_tools

    rng = np.random.default_rng(42)
    other_root = tmp_path / "other"
    for split, n in (("train", 4), ("test", 4)):
        for i in range(n):
            write_pair(other_root, split, f"o{split}{i}", *smoke_frame(rng, 40, 40, i % 2 == 0))
    extra = tmp_path / "other_ds"
    other, _ = write_dataset(extra, "other", other_root, '[exclude]\ntest = ["otest3"]\n')
    base = [*workspace["base"], "--include", str(extra)]
    home = workspace["name"]
    assert main([*base, "--methods", "trained_cam"]) == 0
    log = workspace["log"]
    log.unlink()
    ood = [a if a != home else f"{home},{other}" for a in base]
    assert main([*ood, "--methods", "trained_cam", "--train-on", home]) == 0
    assert "fit" not in calls(log)  # the classifier trained on `home` is reused
    recs = {(r["dataset"], r["train_dataset"]): r for r in load_records(workspace["out"])}
    assert set(recs) == {(home, home), (other, home)}
    assert recs[(other, home)]["threshold"]["chosen_on"] == "val"
    assert recs[(other, home)]["n_images"] == 3
    # the scored set's exclusions are recorded, apart from the training data's
    data = recs[(other, home)]["config"]["data"]
    assert data["scored_excluded"] == {"test": {"ids": ["otest3"], "count": 1}}
    capsys.readouterr()
    assert main(["table", "--out", str(workspace["out"]), "--ood"]) == 0
    table = capsys.readouterr().out
    # one row per (method, trained on, scored on), every metric with its difference (issue 17)
    assert f"| {other} " in table and "| trained on " in table and "| Δ mIoU " in table
    delta = 100 * (recs[(other, home)]["metrics"]["mIoU"] - recs[(home, home)]["metrics"]["mIoU"])
    assert f"{delta:+.2f}" in table
    board = (workspace["out"] / "leaderboard.md").read_text()
    assert "out of distribution" in board


def test_prefix_of_a_longer_pipeline_keeps_its_own_leaderboard_row(workspace: dict) -> None:
    base = workspace["base"]
    # the longer pipeline rewrites the prefix record (new provenance), not its place on the board
    assert main([*base, "--methods", "counting_cam[gain=3]"]) == 0
    assert main([*base, "--methods", "counting_cam[gain=3]+sleepy"]) == 0
    board = (workspace["out"] / "leaderboard.md").read_text()
    assert "| counting_cam[gain=3] " in board and "| counting_cam[gain=3]+sleepy " in board


def test_refiner_gets_the_input_stage_threshold_of_its_calibration_split(workspace: dict) -> None:
    base, log, out = workspace["base"], workspace["log"], workspace["out"]
    for split, calibrated_on in (("test", "val"), ("val", "train")):
        if log.exists():
            log.unlink()
        assert main([*base, "--methods", "counting_cam+reads_threshold", "--split", split]) == 0
        cam = next(r for r in load_records(out)
                   if r["method"] == "counting_cam" and r["split"] == split)
        assert cam["threshold"]["chosen_on"] == calibrated_on
        seen = {c for c in calls(log) if c.startswith("input=")}
        # recomputed for the new calibration split, never with a missing threshold
        assert seen == {f"input={cam['threshold']['value']}"}, (split, seen)
