"""``bench status`` states from a run log: waiting for a stage, a process that died."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.runner import Cell, RunOptions
from bench.status import RunLog, render


def test_states_from_the_run_log(tmp_path: Path) -> None:
    cells = [Cell(m, "synthetic", "test", RunOptions(out=tmp_path))
             for m in ("effnet", "effnet+crf", "effnet+crf+deeplabv3plus", "random")]
    log = RunLog.create(tmp_path, cells, "local")
    log.write_cell(0, "running")  # this process: alive
    log.write_cell(1, "running", waiting_for="the training of effnet")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    log.write_cell(2, "running")
    info = log.cell_info(2)
    assert info is not None
    info["pid"] = int(dead.stdout)  # a process that has ended without writing a result
    (log.cell_file(2)).write_text(__import__("json").dumps(info))
    rows = RunLog.last(tmp_path).statuses()
    assert [(r.state, r.detail) for r in rows] == [
        ("running", ""), ("running", "waiting for the training of effnet"),
        ("failed", f"its process {int(dead.stdout)} ended without a result (killed?)"),
        ("waiting", "")]
    text = render(rows, log.run_id)
    assert "effnet+crf on synthetic/test" in text
    assert text.splitlines()[-1] == "  0 done, 2 running, 1 waiting, 1 failed"


def test_two_runs_within_a_second_keep_apart(tmp_path: Path) -> None:
    cells = [Cell("random", "synthetic", "test", RunOptions(out=tmp_path))]
    first = RunLog.create(tmp_path, cells, "local")
    first.write_cell(0, "done", summary="mIoU 1.00")
    second = RunLog.create(tmp_path, cells, "slurm")
    assert second.run_id != first.run_id
    assert RunLog.last(tmp_path).statuses()[0].state == "waiting"
