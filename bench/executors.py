"""Executors run cells; each cell is independent, so any executor may run them anywhere.

``local`` runs cells one after another in this process. A SLURM executor (submitit) only needs
to map `bench.runner.run_cell` over the same `Cell` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.runner import Cell, run_cell


def run_cells(cells: Sequence[Cell]) -> list[list[dict[str, Any]]]:
    """Run cells in order in this process; the first bad input stops the run (exit 2).

    Each cell's summary line counts the sanity warnings of its records (`bench.sanity`).
    """
    import sys
    import time

    results = []
    for n, cell in enumerate(cells, 1):
        start = time.perf_counter()
        print(f"[{n}/{len(cells)}] {cell.method} on {cell.dataset}/{cell.split}",
              file=sys.stderr, flush=True)
        records = run_cell(cell)
        final = records[-1]["metrics"]
        if records[-1].get("not_run"):
            print(f"[{n}/{len(cells)}] {cell.method}: {records[-1]['not_run']}",
                  file=sys.stderr, flush=True)
            results.append(records)
            continue
        warned = sum(len(rec.get("warnings", ())) for rec in records)
        note = f"; {warned} warning{'s' if warned > 1 else ''}" if warned else ""
        print(f"[{n}/{len(cells)}] {cell.method}: mIoU {100 * final['mIoU']:.2f}, smoke IoU "
              f"{100 * final['IoU_smoke']:.2f} ({time.perf_counter() - start:.1f} s{note})",
              file=sys.stderr, flush=True)
        results.append(records)
    return results
