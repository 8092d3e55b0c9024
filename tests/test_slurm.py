"""``bench run --executor slurm`` against stand-in ``sbatch``/``squeue``/``sacct``/``srun`` on
``PATH`` (small scripts that record their arguments and answer like SLURM), as submitit's own
tests do: the batch scripts carry the profile's resources and setup lines, the arrays hold one
task per unfinished cell, a missing hub weight stops the run before anything is submitted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main


def _executor_plugins() -> str:
    """test_executors.py's plugins, renamed ``sl_*`` (plugin names are global to a process)."""
    import ast

    tree = ast.parse((Path(__file__).parent / "test_executors.py").read_text())
    text = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "PLUGINS")
    return text.replace('"ex_', '"sl_')


PLUGINS = _executor_plugins()

SBATCH = """#!/bin/bash
# stand-in sbatch: keep the script and the arguments, answer like SLURM
rec="$SLURM_STANDIN"
n=$(ls "$rec"/script_*.sh 2>/dev/null | wc -l)
cp "$1" "$rec/script_$n.sh"
echo "$@" >> "$rec/sbatch.args"
echo "Submitted batch job $((4200 + n))"
"""

SACCT = """#!/bin/bash
# stand-in sacct: the states the test wrote, in sacct --parsable2 form
echo "$@" >> "$SLURM_STANDIN/sacct.args"
echo "JobID|State|NodeList"
cat "$SLURM_STANDIN/states" 2>/dev/null
"""

NOOP = """#!/bin/bash
echo "$@" >> "$SLURM_STANDIN/$(basename "$0").args"
"""

HUB_PLUGIN = '''
"""A CAM source that needs a hub weight (a file:// URL from $EX_HUB_URL)."""
import os
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method


@register_method("sl_hub")
class ExHub(CamSource):
    """Needs weights from a URL."""

    @dataclass
    class Params:
        gain: float = 1.0

    @classmethod
    def hub_weights(cls, params, profile):
        return [{"kind": "url", "name": "sl_hub_tiny.pth", "url": os.environ["EX_HUB_URL"]}]

    def compute(self, images):
        return [im.mean(axis=2).astype(np.float32) / 255.0 for im in images]
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sl_plugins")
    (folder / "sl_plugins.py").write_text(PLUGINS)
    (folder / "sl_hub.py").write_text(HUB_PLUGIN)
    return folder


@pytest.fixture
def cluster(write_dataset, tmp_path: Path, smoke5k_root: Path, plugin_dir: Path,
            monkeypatch: pytest.MonkeyPatch) -> dict:
    bin_dir, rec = tmp_path / "bin", tmp_path / "standin"
    bin_dir.mkdir()
    rec.mkdir()
    for name, text in (("sbatch", SBATCH), ("sacct", SACCT), ("squeue", NOOP), ("srun", NOOP),
                       ("scontrol", NOOP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("SLURM_STANDIN", str(rec))
    monkeypatch.setenv("BENCH_TEST_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    name, _ = write_dataset(tmp_path / "datasets", "tiny", smoke5k_root, "val_fraction = 0.3\n")
    out = tmp_path / "results"
    args = ["--include", str(plugin_dir), "--include", str(tmp_path / "datasets"),
            "--datasets", name, "--n-boot", "20", "--out", str(out)]
    return {"args": args, "rec": rec, "out": out, "tmp": tmp_path}


def scripts(rec: Path) -> list[str]:
    return [p.read_text() for p in sorted(rec.glob("script_*.sh"))]


def test_batch_scripts_carry_the_profiles(cluster: dict, capsys: pytest.CaptureFixture) -> None:
    methods = "sl_trained,sl_trained+sl_square,sl_cam+sl_square"
    code = main(["run", *cluster["args"], "--methods", methods, "--executor", "slurm",
                 "--account", "proj123", "--time", "02:00:00", "--max-parallel", "1",
                 "--setup", "source /project/venv/bin/activate"])
    assert code == 0
    out = capsys.readouterr().out
    gpu, cpu = scripts(cluster["rec"])
    # the two networks' cells: one array of two tasks on a quarter A100 node
    for line in ("#SBATCH --partition=gpu_a100", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=18", "#SBATCH --mem=120G", "#SBATCH --time=120",
                 "#SBATCH --account=proj123", "#SBATCH --array=0-1%1", "module load 2023",
                 "source /project/venv/bin/activate"):
        assert line in gpu.splitlines(), line
    assert gpu.index("module load 2023") < gpu.index("source /project/venv") < gpu.index("srun")
    # the CPU-only cell goes to genoa, without a GPU
    assert "#SBATCH --partition=genoa" in cpu and "#SBATCH --cpus-per-task=16" in cpu
    assert "gpus-per-node" not in cpu and "#SBATCH --array" not in cpu  # a single task
    logs = cluster["out"] / "slurm"
    assert re.search(r"submitted job array 4200: 2 task\(s\) on gpu_a100", out)
    assert "submitted job array 4201: 1 task(s) on genoa" in out
    assert f"logs: {logs}" in out
    assert "#SBATCH --output=" + str(logs) in gpu
    # nothing ran here: the tasks are pickled for the compute nodes
    assert not (cluster["out"] / "records").exists()


def test_rerun_submits_only_unfinished_cells(cluster: dict,
                                             capsys: pytest.CaptureFixture) -> None:
    args = cluster["args"]
    assert main(["run", *args, "--methods", "sl_cam+sl_square"]) == 0  # done here, locally
    methods = "sl_trained,sl_trained+sl_square,sl_cam+sl_square"
    assert main(["run", *args, "--methods", methods, "--executor", "slurm"]) == 0
    (script,) = scripts(cluster["rec"])
    assert "#SBATCH --array=0-1%2" in script  # two unfinished cells, one task each
    assert "1 of 3 cells are done already" in capsys.readouterr().err
    # bench status: sacct says the array's tasks are pending, then that one ran out of memory
    (cluster["rec"] / "states").write_text("4200_0|PENDING|None\n4200_1|PENDING|None\n")
    assert main(["status", "--out", str(cluster["out"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].rstrip().endswith("waiting: pending in SLURM (job 4200_0)")
    assert lines[2].rstrip().endswith("waiting: pending in SLURM (job 4200_1)")
    assert " done: done in an earlier run" in lines[3]
    (cluster["rec"] / "states").write_text("4200_0|OUT_OF_MEMORY|node1\n4200_1|PENDING|None\n")
    assert main(["status", "--out", str(cluster["out"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "failed: SLURM job 4200_0 ended OUT_OF_MEMORY before the cell started" in lines[1]
    assert "(log: " + str(cluster["out"] / "slurm") in lines[1]
    assert lines[-1].strip() == "1 done, 0 running, 1 waiting, 1 failed"
    # everything done: nothing is submitted
    assert main(["run", *args, "--methods", "sl_cam+sl_square", "--executor", "slurm"]) == 0
    assert len(scripts(cluster["rec"])) == 1
    assert "nothing to submit" in capsys.readouterr().err


def test_cluster_file_overrides_and_errors(cluster: dict, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('base = "snellius"\ngpu = "gpu_h100"\n[profiles.gpu_h100]\n'
                    'partition = "gpu_test"\n[defaults]\nsetup = ["module load 2024"]\n')
    assert main(["run", *cluster["args"], "--methods", "sl_trained,sl_trained+sl_square",
                 "--executor", "slurm", "--cluster", str(mine), "--cpus-per-task", "8"]) == 0
    (script,) = scripts(cluster["rec"])
    assert "#SBATCH --partition=gpu_test" in script and "#SBATCH --cpus-per-task=8" in script
    assert "module load 2024" in script and "module load 2023" not in script
    assert "#SBATCH --mem" not in script  # gpu_h100: memory follows the cores
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles.x]\npartition = "x"\ngpus = 2\n')
    capsys.readouterr()
    assert main(["run", *cluster["args"], "--methods", "sl_trained", "--executor", "slurm",
                 "--cluster", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"cluster file {bad}: [x] has unknown field 'gpus'" in err
    assert main(["run", *cluster["args"], "--methods", "sl_trained", "--executor", "slurm",
                 "--time", "two hours"]) == 2
    assert "time 'two hours' is not" in capsys.readouterr().err
    assert len(scripts(cluster["rec"])) == 1


def test_missing_weight_fails_before_submission(cluster: dict, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    import torch

    source = tmp_path / "tiny.pth"
    torch.save({"w": torch.arange(4.0)}, source)
    monkeypatch.setenv("EX_HUB_URL", source.as_uri())
    run = ["run", *cluster["args"], "--methods", "sl_hub", "--executor", "slurm"]
    assert main(run) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "url:sl_hub_tiny.pth" in err and "bench fetch-weights --methods sl_hub" in err
    assert scripts(cluster["rec"]) == []  # nothing submitted
    assert main(["fetch-weights", "--include", cluster["args"][1], "--methods", "sl_hub"]) == 0
    assert main(run) == 0
    assert len(scripts(cluster["rec"])) == 1


def test_the_task_requeues_itself() -> None:
    from submitit.core.utils import DelayedSubmission

    from bench.runner import Cell, RunOptions
    from bench.slurm import CellTask

    task = CellTask()
    cell = Cell("sl_trained", "tiny", "test", RunOptions())
    again = task.checkpoint(cell, 0, 1, "out", "run", False)
    assert isinstance(again, DelayedSubmission)
    assert again.function is task and again.args == (cell, 0, 1, "out", "run", False)
