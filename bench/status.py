"""What ``bench status`` shows: each cell of the last ``bench run`` in a run folder.

Every ``bench run`` writes a run log under ``<out>/runs/<run-id>/``::

    run.json          the cells (method, data set, split), the executor, job ids, log folder
    cells/<n>.json    one cell's state, written (atomically) by whatever runs it:
                      running (pid, host, started; "waiting for" while it waits on a stage
                      another cell computes), done (mIoU, seconds), failed (one-line error)

and ``<out>/runs/last.json`` names the last run. A cell is shown as

- ``done``: its records are written;
- ``running``: it is computing (or, as ``running, waiting for ...``, waiting for a stage that
  another cell computes);
- ``waiting``: not started yet (queued, or a SLURM task still pending);
- ``failed``: its one-line error and where its log is. A cell whose process died without a
  word (SIGKILL, out of memory, a SLURM time limit) counts as failed too: a local one when its
  process is gone, a SLURM one when ``sacct`` (through submitit) says the job ended.

`cell_done` decides what a rerun submits: a cell is done when its final record exists and was
written under the stage key the cell would compute now (same code, configuration and data).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.atomic import write_json
from bench.errors import ConfigError

if TYPE_CHECKING:
    from bench.runner import Cell

STATES = ("done", "running", "waiting", "failed")


@dataclass
class CellStatus:
    """One row of ``bench status``."""

    index: int
    method: str
    dataset: str
    split: str
    state: str
    detail: str = ""
    log: str = ""
    job_id: str = ""


class RunLog:
    """The run log of one ``bench run`` under ``<out>/runs/<run_id>/``."""

    def __init__(self, out: Path, run_id: str) -> None:
        self.out = Path(out)
        self.run_id = run_id
        self.dir = self.out / "runs" / run_id

    # ----------------------------------------------------------------- writing
    @classmethod
    def create(cls, out: Path, cells: Sequence[Cell], executor: str,
               **info: Any) -> RunLog:
        """A new run log for ``cells``, made the folder's last run."""
        # unique even for two runs of one process within a second (cell files are per run)
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        log = cls(out, run_id)
        write_json(log.dir / "run.json", {
            "run_id": run_id, "executor": executor, "created": time.time(),
            "cells": [{"index": n, "method": c.method, "dataset": c.dataset, "split": c.split,
                       "train_dataset": c.train_dataset} for n, c in enumerate(cells)],
            **info})
        write_json(log.out / "runs" / "last.json", {"run_id": run_id})
        return log

    def update(self, **info: Any) -> None:
        """Add fields to ``run.json`` (job ids, the log folder)."""
        data = self.read()
        data.update(info)
        write_json(self.dir / "run.json", data)

    def cell_file(self, n: int) -> Path:
        return self.dir / "cells" / f"{n}.json"

    def write_cell(self, n: int, state: str, **info: Any) -> None:
        """Record cell ``n``'s state (``running``, ``done`` or ``failed``) with details."""
        if state not in STATES:
            raise ValueError(f"unknown cell state '{state}'")
        write_json(self.cell_file(n), {"state": state, "time": time.time(),
                                       "host": socket.gethostname(), "pid": os.getpid(),
                                       **info})

    # ----------------------------------------------------------------- reading
    @classmethod
    def last(cls, out: Path) -> RunLog:
        """The last run of run folder ``out`` (a `ConfigError` when it has none)."""
        marker = Path(out) / "runs" / "last.json"
        if not marker.is_file():
            raise ConfigError(f"no run log in {Path(out) / 'runs'}: 'bench run --out {out}' "
                              "writes one")
        try:
            run_id = json.loads(marker.read_text(encoding="utf-8"))["run_id"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"{marker}: unreadable run marker ({exc})") from None
        return cls(out, run_id)

    def read(self) -> dict[str, Any]:
        path = self.dir / "run.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable run log ({exc})") from None

    def cell_info(self, n: int) -> dict[str, Any] | None:
        path = self.cell_file(n)
        if not path.is_file():
            return None
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None  # being replaced right now: atomic writes make this rare

    def statuses(self, slurm_states: dict[str, str] | None = None) -> list[CellStatus]:
        """Each cell's `CellStatus`; ``slurm_states`` maps job ids to SLURM states (None: ask
        ``sacct`` through submitit when the run went to SLURM)."""
        run = self.read()
        jobs: dict[str, str] = dict(run.get("jobs", {}))  # cell index -> SLURM job id
        logs: dict[str, str] = dict(run.get("logs", {}))
        if jobs and slurm_states is None and run.get("executor") == "slurm":
            slurm_states = slurm_job_states(Path(run.get("log_folder", self.dir)),
                                            list(jobs.values()))
        out = []
        for cell in run["cells"]:
            n = int(cell["index"])
            job = jobs.get(str(n), "")
            log = logs.get(str(n), "")
            info = self.cell_info(n)
            state, detail = _state_of(info, job, (slurm_states or {}).get(job, ""))
            log = (info or {}).get("log") or log
            out.append(CellStatus(n, cell["method"], cell["dataset"], cell["split"], state,
                                  detail, log, job))
        return out


def _state_of(info: dict[str, Any] | None, job: str, slurm: str) -> tuple[str, str]:
    """(state, detail) of a cell from its status file and, under SLURM, its job state."""
    ended = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE"}
    slurm = slurm.split()[0] if slurm else ""
    if info is None:
        if slurm in ended:
            return "failed", f"SLURM job {job} ended {slurm} before the cell started"
        return "waiting", "pending in SLURM" if slurm == "PENDING" else ""
    state = str(info.get("state"))
    if state == "done":
        return "done", str(info.get("summary", ""))
    if state == "failed":
        return "failed", str(info.get("error", ""))
    # running: is its process still there?
    if slurm in ended:
        return "failed", f"SLURM job {job} ended {slurm} while the cell ran"
    if not slurm and info.get("host") == socket.gethostname() and not _alive(int(info["pid"])):
        return "failed", f"its process {info['pid']} ended without a result (killed?)"
    waiting = info.get("waiting_for")
    return "running", f"waiting for {waiting}" if waiting else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_job_states(folder: Path, job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM states of job ids (``sacct`` through submitit's watcher)."""
    from submitit.slurm.slurm import SlurmJob

    states = {}
    for job_id in job_ids:
        states[job_id] = SlurmJob(folder, job_id).state
    return states


def render(rows: Sequence[CellStatus], run_id: str) -> str:
    """The text ``bench status`` prints: one line per cell, then the counts."""
    lines = [f"run {run_id}:"]
    width = max((len(f"{r.method} on {r.dataset}/{r.split}") for r in rows), default=0)
    for r in rows:
        what = f"{r.method} on {r.dataset}/{r.split}"
        line = f"  [{r.index + 1}] {what:<{width}}  {r.state}"
        if r.detail:
            line += f": {r.detail}"
        if r.state == "failed" and r.log:
            line += f" (log: {r.log})"
        elif r.job_id and r.state != "done":
            line += f" (job {r.job_id})"
        lines.append(line)
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append("  " + ", ".join(f"{counts[s]} {s}" for s in STATES))
    return "\n".join(lines) + "\n"


def as_dicts(rows: Sequence[CellStatus]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


# --------------------------------------------------------------------------- what is done
def cell_done(cell: Cell, data_cache: dict[tuple[Any, ...], Any] | None = None) -> bool:
    """Whether ``cell``'s final record exists under the stage key it would compute now.

    Loads the cell's data (fingerprints are memoised in the run folder's file index) and
    computes its stage keys, without running any stage (from the pipeline's plan when it has
    a valid one, `bench.plans`: no plugin imported). ``data_cache`` shares loaded data between
    cells of the same data set and split.
    """
    from bench.records import record_path
    from bench.runner import CellRunner

    runner = CellRunner(cell, plan=True)
    memo = {} if data_cache is None else data_cache
    key = (cell.dataset, cell.train_dataset, cell.split, runner.trains,
           cell.options.limit, cell.options.profile, tuple(sorted(cell.options.data_roots.items())))
    if key not in memo:
        memo[key] = runner.load_data()
    states = runner.stage_states(memo[key])
    path = record_path(cell.options.out, {
        "method": runner.spec.text, "dataset": runner.dataset.name,
        "train_dataset": runner.train_name, "profile": cell.options.profile,
        "seed": cell.options.seed, "split": cell.split})
    if not path.is_file():
        return False
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(rec.get("config", {}).get("cache_key") == states[-1].key)
