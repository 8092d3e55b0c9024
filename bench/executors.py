"""Executors run cells; each cell is independent, so any executor may run them anywhere.

- ``local`` (the default) runs cells one after another in this process.
- ``local`` with ``jobs > 1`` runs them in that many worker processes (spawned, so no torch
  state is forked).
- ``slurm`` submits them as one job array through submitit (`bench.slurm`).

Cells share loaded data sets: `run_cells` loads each (data set, split) once for the cells it
runs here, and each worker process once for its cells (`bench.data.splits.shared_loads`);
likewise each stage's map files are decoded once (`bench.cache.shared_maps`).
Cells share upstream stages through the run folder's cache; `bench.locks` makes sure that
parallel cells compute each stage once (a cell that finds a stage being computed waits for it,
then uses it). Every executor reports each cell's state in the run log (`bench.status`), which
``bench status`` reads.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError, one_line
from bench.runner import Cell, run_cell_result
from bench.status import RunLog


class CellFailed(BenchError):
    """A cell that failed in a worker process: its one-line error (the worker's traceback is
    chained for ``--debug``)."""


class _RemoteTraceback(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0])


def describe_error(exc: BaseException) -> str:
    """The one line a failed cell reports (a `BenchError`'s message, else ``Type: message``)."""
    return str(exc).strip().splitlines()[0] if isinstance(exc, BenchError) and str(exc).strip() \
        else one_line(exc)


def run_tracked(cell: Cell, n: int, total: int, log: RunLog | None = None,
                log_path: str = "") -> list[dict[str, Any]]:
    """Run cell ``n`` (0-based) of ``total``, print its summary line, keep its run-log entry.

    Each cell's summary line counts the sanity warnings of its records (`bench.sanity`). A
    cell read entirely from the cache says so (one ``cached:`` line, `bench.runner.
    run_cell_result`) and its run-log entry has ``cached: true``.
    """
    from bench import locks

    label = f"[{n + 1}/{total}]"
    start = time.perf_counter()
    print(f"{label} {cell.method} on {cell.dataset}/{cell.split}", file=sys.stderr, flush=True)

    def waiting(what: str | None) -> None:
        if log is not None:
            log.write_cell(n, "running", log=log_path,
                           **({"waiting_for": what} if what else {}))

    if log is not None:
        log.write_cell(n, "running", log=log_path)
        locks.WAIT_LISTENERS.append(waiting)
    try:
        result = run_cell_result(cell)
        records = result.records
    except BaseException as exc:
        if log is not None:
            error = describe_error(exc) if not isinstance(exc, KeyboardInterrupt) else \
                "interrupted"
            log.write_cell(n, "failed", error=error, log=log_path)
        raise
    finally:
        if log is not None:
            locks.WAIT_LISTENERS.remove(waiting)
    seconds = time.perf_counter() - start
    final = records[-1]
    if final.get("not_run"):
        summary = final["not_run"]
        print(f"{label} {cell.method}: {summary}", file=sys.stderr, flush=True)
    else:
        metrics = final["metrics"]
        warned = sum(len(rec.get("warnings", ())) for rec in records)
        note = f"; {warned} warning{'s' if warned > 1 else ''}" if warned else ""
        summary = (f"mIoU {100 * metrics['mIoU']:.2f}, smoke IoU "
                   f"{100 * metrics['IoU_smoke']:.2f}")
        print(f"{label} {cell.method}: {summary} ({seconds:.1f} s{note})", file=sys.stderr,
              flush=True)
    if log is not None:
        log.write_cell(n, "done", summary=summary, seconds=seconds, log=log_path,
                       **({"cached": True} if result.cached else {}))
    return records


def run_cells(cells: Sequence[Cell], jobs: int = 1,
              log: RunLog | None = None) -> list[list[dict[str, Any]]]:
    """Run cells here: in order in this process (``jobs == 1``), else in ``jobs`` worker
    processes. The first failing cell stops the run (exit 2): with workers, cells not started
    yet are cancelled and the running ones finish, then its error is raised."""
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    if jobs == 1 or len(cells) <= 1:
        from bench.cache import shared_maps
        from bench.data.splits import shared_loads

        # each (data set, split) is loaded, and each map file decoded, once for all cells
        with shared_loads(), shared_maps():
            return [run_tracked(cell, n, len(cells), log) for n, cell in enumerate(cells)]
    return _run_parallel(cells, jobs, log)


def _worker_init() -> None:
    from bench.cache import share_maps_in_this_process
    from bench.data.splits import share_loads_in_this_process

    # several processes on one terminal: no progress bars (their lines would interleave)
    os.environ["BENCH_PROGRESS"] = "0"
    share_loads_in_this_process()  # the cells of a worker share loaded splits
    share_maps_in_this_process()  # and decoded map files


def _worker(cell: Cell, n: int, total: int, log_dir: tuple[str, str] | None
            ) -> tuple[str, Any]:
    """A worker's cell: ("ok", records) or ("error", (one line, exit code, traceback))."""
    log = RunLog(Path(log_dir[0]), log_dir[1]) if log_dir else None
    try:
        return "ok", run_tracked(cell, n, total, log)
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, BenchError) else 1
        return "error", (describe_error(exc), code, traceback.format_exc())


def _run_parallel(cells: Sequence[Cell], jobs: int,
                  log: RunLog | None) -> list[list[dict[str, Any]]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    results: list[list[dict[str, Any]] | None] = [None] * len(cells)
    log_dir = (str(log.out), log.run_id) if log is not None else None
    failure: tuple[str, int, str] | None = None
    with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=context,
                             initializer=_worker_init) as pool:
        pending = {pool.submit(_worker, cell, n, len(cells), log_dir): n
                   for n, cell in enumerate(cells)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                n = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    kind, value = future.result()
                except BrokenProcessPool as exc:  # a worker killed (OOM killer, SIGKILL)
                    kind, value = "error", (f"cell {n + 1} ({cells[n].method} on "
                                            f"{cells[n].dataset}/{cells[n].split}): its worker "
                                            f"process died ({exc}); finished stages are "
                                            "cached, rerun to resume", 1, "")
                    if log is not None:
                        log.write_cell(n, "failed", error="its worker process died")
                if kind == "ok":
                    results[n] = value
                elif failure is None:
                    failure = value
                    for other in pending:
                        other.cancel()
    if failure is not None:
        message, code, text = failure
        error = CellFailed(message)
        error.exit_code = code
        raise error from _RemoteTraceback(text)
    return [r for r in results if r is not None]
