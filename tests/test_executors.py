"""Parallel cells (``--jobs 2``, submitit's local executor): shared stages trained once, the
same records as a serial run, and ``bench status`` over what happened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records

PLUGINS = '''
"""Plugins for executor tests: each fit appends a line to $BENCH_TEST_LOG."""
import os
import time
from dataclasses import dataclass

import numpy as np

from bench import CamSource, Refiner, register_method


def log(what):
    with open(os.environ["BENCH_TEST_LOG"], "a") as fh:
        fh.write(what + "\\n")


@register_method("ex_cam")
class ExCam(CamSource):
    """Brightness as the smoke map."""

    @dataclass
    class Params:
        gain: float = 1.0

    def compute(self, images):
        return [np.clip(im.mean(axis=2) / 255.0 * self.params.gain, 0, 1).astype(np.float32)
                for im in images]


@register_method("ex_trained")
class ExTrained(ExCam):
    """Learns a gain (the mean brightness of smoke images); slow to fit, logs every fit."""

    trainable = True

    def fit(self, train, val):
        log(f"fit-{os.getpid()}")
        time.sleep(1.0)  # long enough for a second process to want it meanwhile
        smoke = [s.image.mean() / 255.0 for s in train if s.label]
        self.gain = 0.5 / max(float(np.mean(smoke)), 1e-3)

    def compute(self, images):
        return [np.clip(im.mean(axis=2) / 255.0 * self.gain, 0, 1).astype(np.float32)
                for im in images]

    def save(self, directory):
        (directory / "gain.txt").write_text(repr(self.gain))

    def load(self, directory):
        self.gain = float((directory / "gain.txt").read_text())


@register_method("ex_square")
class ExSquare(Refiner):
    """Squares the map."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        return cam ** 2


@register_method("ex_die")
class ExDie(Refiner):
    """Kills its own process (the OOM killer's way)."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@register_method("ex_boom")
class ExBoom(Refiner):
    """Fails on purpose."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        raise RuntimeError("boom on purpose\\nsecond line")
'''

SHARED = "ex_trained,ex_trained+ex_square,ex_trained+ex_square+ex_square"
COMPARED = ("metrics", "ci", "threshold", "n_images", "config")


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ex_plugins")
    (folder / "ex_plugins.py").write_text(PLUGINS)
    return folder


@pytest.fixture
def space(write_dataset, tmp_path: Path, smoke5k_root: Path, plugin_dir: Path,
          monkeypatch: pytest.MonkeyPatch) -> dict:
    name, _ = write_dataset(tmp_path / "datasets", "tiny", smoke5k_root, "val_fraction = 0.3\n")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("BENCH_TEST_LOG", str(log))
    monkeypatch.setenv("BENCH_INCLUDE", "")
    args = ["--include", str(plugin_dir), "--include", str(tmp_path / "datasets"),
            "--datasets", name, "--n-boot", "20"]
    return {"args": args, "log": log, "name": name, "tmp": tmp_path}


def fits(log: Path) -> list[str]:
    return [line for line in log.read_text().split() if line.startswith("fit")] \
        if log.exists() else []


def comparable(out: Path) -> dict[str, dict]:
    """Records by method without what legitimately differs between runs (times, paths)."""
    recs = {}
    for rec in load_records(out):
        kept = {k: rec[k] for k in COMPARED}
        kept["config"] = {k: v for k, v in rec["config"].items() if k != "options"}
        recs[rec["method"]] = kept
    return recs


def test_jobs_two_trains_a_shared_stage_once_and_matches_serial(space: dict) -> None:
    serial, parallel = space["tmp"] / "serial", space["tmp"] / "parallel"
    assert main(["run", *space["args"], "--methods", SHARED, "--out", str(serial)]) == 0
    assert len(fits(space["log"])) == 1
    space["log"].unlink()
    assert main(["run", *space["args"], "--methods", SHARED, "--out", str(parallel),
                 "--jobs", "2"]) == 0
    found = fits(space["log"])
    assert len(found) == 1, found  # three cells, one fit
    assert found[0] != f"fit-{os.getpid()}"  # it ran in a worker process
    assert comparable(parallel) == comparable(serial)
    assert (parallel / "leaderboard.md").read_text() == (serial / "leaderboard.md").read_text()


def test_submitit_local_executor_real_processes(space: dict,
                                                capsys: pytest.CaptureFixture) -> None:
    from bench.data import DATASETS
    from bench.runner import Cell, RunOptions
    from bench.slurm import load_cluster, submit_cells
    from bench.status import RunLog

    serial, out = space["tmp"] / "serial", space["tmp"] / "submitit"
    assert main(["run", *space["args"], "--methods", SHARED, "--out", str(serial)]) == 0
    space["log"].unlink()
    plugins, datasets = space["args"][1], space["args"][3]
    options = RunOptions(out=out, include=[plugins, datasets], n_boot=20, progress=False)
    name = DATASETS.get(space["name"]).name
    methods = [*SHARED.split(","), "ex_trained+ex_boom"]
    cells = [Cell(m, name, "test", options) for m in methods]
    log = RunLog.create(out, cells, "submitit-local")
    submitted = submit_cells(cells, range(len(cells)), log, load_cluster("snellius"), {},
                             backend="local")
    jobs = [job for s in submitted for job in s.jobs]
    assert len(jobs) == 4
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result())
        except Exception as exc:  # submitit re-raises the task's failure here
            outcomes.append(f"failed: {exc}")
    assert outcomes[:3] == ["done"] * 3 and "boom on purpose" in outcomes[3]
    assert len(fits(space["log"])) == 1  # four cells in four processes, one fit
    assert comparable(out) == {k: v for k, v in comparable(serial).items()}
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert all(" done: mIoU " in line for line in text[1:4]), text
    failed = text[4]
    assert "ex_trained+ex_boom" in failed and " failed: " in failed
    assert "plugin 'ex_boom'" in failed and "RuntimeError: boom on purpose" in failed
    assert "second line" not in failed
    log_path = failed.rsplit("(log: ", 1)[1].rstrip(")")
    assert Path(log_path).is_file() and "boom on purpose" in Path(log_path).read_text()
    assert text[-1].strip() == "3 done, 0 running, 0 waiting, 1 failed"


def test_status_of_a_local_run_that_failed(space: dict, capsys: pytest.CaptureFixture) -> None:
    out = space["tmp"] / "out"
    code = main(["run", *space["args"], "--out", str(out), "--methods",
                 "ex_cam,ex_cam+ex_boom,ex_cam+ex_square"])
    assert code == 2
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ex_cam on" in lines[1] and " done: mIoU " in lines[1], lines
    assert " failed: plugin 'ex_boom'" in lines[2] and "boom on purpose" in lines[2]
    assert lines[3].endswith("waiting")
    assert lines[-1].strip() == "1 done, 0 running, 1 waiting, 1 failed"


def test_status_without_a_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no run log in" in err


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_staged_data_hits_the_same_cache_entries(space: dict, smoke5k_root: Path, kind: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    import shutil

    out = space["tmp"] / "out"
    methods = "ex_trained,ex_trained+ex_square"
    assert main(["run", *space["args"], "--out", str(out), "--methods", methods]) == 0
    assert len(fits(space["log"])) == 1
    before = comparable(out)
    space["log"].unlink()
    shutil.rmtree(out / "records")
    root = smoke5k_root
    if kind == "archive":  # a root given as an archive with one top folder
        root = Path(shutil.make_archive(str(space["tmp"] / "smoke5k"), "gztar",
                                        smoke5k_root.parent, smoke5k_root.name))
    scratch = space["tmp"] / "scratch"
    monkeypatch.setenv("TMPDIR", str(scratch))
    capsys.readouterr()
    assert main(["run", *space["args"], "--out", str(out), "--methods", methods,
                 "--data-root", f"{space['name']}={root}", "--stage-data"]) == 0
    assert f"bench: staged {root} to {scratch}" in capsys.readouterr().err
    staged = next(scratch.glob("bench-data/*/root"))
    assert sorted(p.name for p in staged.rglob("*.jpg")) == \
        sorted(p.name for p in smoke5k_root.rglob("*.jpg"))
    assert fits(space["log"]) == []  # the copy's content keys found the trained stage
    after = comparable(out)
    for rec in after.values():  # the data's fingerprints are the original's
        rec["config"].pop("data_roots", None)
    assert after == before


def test_a_worker_killed_mid_cell_is_one_line(space: dict, capsys: pytest.CaptureFixture) -> None:
    out = space["tmp"] / "out"
    code = main(["run", *space["args"], "--out", str(out), "--methods", "ex_cam,ex_cam+ex_die",
                 "--jobs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("bench: error: cell 2 (ex_cam+ex_die on ")
    assert "its worker process died" in err[-1] and "rerun to resume" in err[-1]
