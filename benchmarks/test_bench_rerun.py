"""A cached rerun of the README's main command (``bench run``) against ``python -c "import torch"``.

Issue 18.1: a rerun whose every stage is cached should take under 5 s on 2 cores. This suite
runs the README's main command once into a fresh run folder (every registered method on the
synthetic set, quick profile: minutes), then times the same command again, now fully cached,
as a whole process, ``rounds`` times; before each round it times ``python -c "import torch"``
in the same interpreter environment, so both numbers see the same machine load. It reports the
seconds of each (best round and median) and their ratio, how many cells said ``cached:``, and
the machine's load average. Nothing is asserted about time.

Run::

    python -m pytest benchmarks/test_bench_rerun.py --benchmark-only -p no:cacheprovider -s
    python benchmarks/test_bench_rerun.py            # the same, as a plain script

Environment:

- ``BENCH_RERUN_OUT=DIR``: use (and keep) this run folder; a folder from an earlier run makes
  the first run itself a cached one (skips the minutes of training).
- ``BENCH_RERUN_ARGS="--limit 8"``: extra ``bench run`` arguments for both runs (then the
  number is not the README's command; the report says so).
- ``BENCH_RERUN_ROUNDS=N``: timed rounds (default 3).
- ``BENCH_RERUN=0``: skip this suite (``tox -e perf`` runs it otherwise: the first run takes
  minutes).
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_RERUN_ROUNDS", "3"))
EXTRA = shlex.split(os.environ.get("BENCH_RERUN_ARGS", ""))
GOAL_S = 5.0


def bench_command() -> list[str]:
    """The ``bench`` console script beside this interpreter (else ``python -m bench.cli``)."""
    script = Path(sys.executable).parent / "bench"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bench.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "BENCH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def run_bench(out: Path) -> tuple[float, str]:
    """``bench run --out OUT`` (plus ``BENCH_RERUN_ARGS``): seconds and its stderr."""
    start = time.perf_counter()
    done = subprocess.run([*bench_command(), "run", "--out", str(out), *EXTRA],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=_env(), check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bench run failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stderr


def import_torch() -> float:
    """Seconds of ``python -c "import torch"`` (a fresh interpreter, like the rerun)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=_env())
    return time.perf_counter() - start


def cached_cells(stderr: str) -> tuple[int, int]:
    """(cells that said ``cached:``, cells) of one run's stderr."""
    cells = sum(1 for line in stderr.splitlines() if line.startswith("[")
                and " on " in line and line.rstrip().endswith(("/test", "/val", "/train")))
    cached = sum(1 for line in stderr.splitlines() if line.startswith("cached: "))
    return cached, cells


def summary(first_s: float, reruns: list[float], torch_s: list[float], cached: tuple[int, int],
            ) -> list[str]:
    """The report's lines: seconds, ratio, cached cells, load, goal."""
    best, med = min(reruns), statistics.median(reruns)
    tbest, tmed = min(torch_s), statistics.median(torch_s)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "bench run" + (f" {' '.join(EXTRA)}" if EXTRA else "")
    note = "" if not EXTRA else " (not the README's command: BENCH_RERUN_ARGS is set)"
    lines = [
        f"cached rerun of `{command}`{note}: {best:.2f} s best of {len(reruns)}, "
        f"{med:.2f} s median; `python -c \"import torch\"`: {tbest:.2f} s best, {tmed:.2f} s "
        f"median; ratio rerun / import torch {best / tbest:.2f}x best, {med / tmed:.2f}x median",
        f"  first run {first_s:.1f} s; cells read from the cache on rerun: {cached[0]}/"
        f"{cached[1]}; load average {load} on {os.cpu_count()} CPUs; goal under "
        f"{GOAL_S:.0f} s: {'met' if med < GOAL_S else 'NOT met'} (median)",
    ]
    if cached[0] < cached[1]:
        lines.append("  not every cell was cached: the rerun computed something (edited code?)")
    return lines


Timer = Callable[[Callable[[], None], Callable[[], None]], None]


def measure(out: Path, rounds: int, timed: Timer | None = None) -> list[str]:
    """First run into ``out``, then ``rounds`` timed cached reruns, each after a timed
    ``import torch``; ``timed`` (pytest-benchmark's) runs the rerun rounds when given."""
    first_s, _ = run_bench(out)
    run_bench(out)  # warm-up round (page cache, .pyc files), not timed
    import_torch()
    reruns: list[float] = []
    torch_s: list[float] = []
    last = [""]

    def one_round() -> None:
        seconds, stderr = run_bench(out)
        reruns.append(seconds)
        last[0] = stderr

    if timed is None:
        for _ in range(rounds):
            torch_s.append(import_torch())
            one_round()
    else:
        def setup() -> None:
            torch_s.append(import_torch())

        timed(one_round, setup)
    return summary(first_s, reruns, torch_s, cached_cells(last[0]))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``BENCH_RERUN_OUT`` or a fresh folder."""
    given = os.environ.get("BENCH_RERUN_OUT")
    return Path(given) if given else tmp_path_factory.mktemp("rerun") / "results"


@pytest.mark.skipif(os.environ.get("BENCH_RERUN") == "0", reason="BENCH_RERUN=0")
def test_cached_rerun_against_import_torch(benchmark, report, run_folder: Path) -> None:
    def timed(target: Callable[[], None], setup: Callable[[], None]) -> None:
        benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)

    for line in measure(run_folder, ROUNDS, timed):
        report(line)


def main() -> None:
    """Run the measurement as a plain script and print the report lines."""
    given = os.environ.get("BENCH_RERUN_OUT")
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    try:
        for line in measure(folder if given else folder / "results", ROUNDS):
            print(line)
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
