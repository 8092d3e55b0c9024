"""``bench run --executor slurm``: cells as SLURM job arrays through submitit.

- Resources come from a cluster file (`load_cluster`): ``bench/clusters/<name>.toml`` (shipped:
  ``snellius``) or a TOML file of the same schema (``--cluster PATH.toml``; with
  ``base = "snellius"`` it only states what it changes). Its ``profiles`` set partition,
  GPUs per node, CPUs per task, memory, time limit, account and ``setup`` lines; ``gpu`` and
  ``cpu`` name the profile of cells that run networks and of those that need none. Flags
  override any field of the profiles used.
- `submit_cells` submits one array per profile used (one task per unfinished cell,
  ``--max-parallel`` tasks at a time) and returns at once: the logs go to
  ``<out>/slurm/<run-id>/`` on the shared file system, each task writes its state into the run
  log (`bench.status`), and ``bench status`` follows them.
- Each task is a `CellTask`, a ``submitit.helpers.Checkpointable``: when SLURM preempts it or
  its time runs out, submitit requeues it and it continues from the stage cache and the
  training loops' per-epoch checkpoints.

Parallel tasks share upstream stages through the run folder's cache; `bench.locks` has one
task compute each of them while the others wait.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import submitit

from bench.errors import ConfigError
from bench.runner import Cell
from bench.status import RunLog

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: the fields a profile may set (``[defaults]`` and ``[profiles.NAME]`` tables)
FIELDS = ("partition", "gpus_per_node", "cpus_per_task", "mem", "time", "account", "setup")

CLUSTERS_DIR = Path(__file__).resolve().parent / "clusters"


@dataclass
class Resources:
    """What one array's tasks ask SLURM for."""

    profile: str
    partition: str = ""
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem: str = ""
    time: str = "01:00:00"
    account: str = ""
    setup: list[str] = field(default_factory=list)

    @property
    def timeout_min(self) -> int:
        return time_minutes(self.time)

    def executor_parameters(self) -> dict[str, Any]:
        """The parameters of `submitit.AutoExecutor.update_parameters`."""
        params: dict[str, Any] = {"timeout_min": self.timeout_min,
                                  "cpus_per_task": self.cpus_per_task,
                                  "slurm_setup": list(self.setup)}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem:
            params["slurm_mem"] = self.mem
        if self.account:
            params["slurm_account"] = self.account
        return params


@dataclass
class Cluster:
    """A cluster file: its profiles, defaults and which profile GPU and CPU cells use."""

    name: str
    path: Path
    gpu: str
    cpu: str
    defaults: dict[str, Any]
    profiles: dict[str, dict[str, Any]]

    def resources(self, profile: str, overrides: dict[str, Any] | None = None) -> Resources:
        """Profile ``profile`` over the defaults, with ``overrides`` (None values ignored)."""
        if profile not in self.profiles:
            raise ConfigError(f"cluster '{self.name}' ({self.path}) has no profile '{profile}' "
                              f"(profiles: {', '.join(self.profiles)})")
        values = {**self.defaults, **self.profiles[profile]}
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key == "setup":
                values["setup"] = [*values.get("setup", []), *value]
            else:
                values[key] = value
        res = Resources(profile=profile, **{k: v for k, v in values.items() if k in FIELDS})
        time_minutes(res.time, f"cluster '{self.name}', profile '{profile}'")
        return res


def time_minutes(text: str | int, where: str = "--time") -> int:
    """Minutes of a SLURM time limit: ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS`` or ``D-HH``."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ConfigError(f"{where}: time '{text}' is not MM, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else 0 for g in match.groups())
    if match.group(1) and match.group(3) is None:  # D-HH
        return days * 1440 + a * 60
    if match.group(3) is None:  # MM
        return a
    if match.group(4) is None:  # MM:SS, as SLURM reads two fields
        return days * 1440 + a + (1 if b else 0)
    return days * 1440 + a * 60 + b + (1 if c else 0)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cluster file {path}: {exc}") from None


def builtin_clusters() -> list[str]:
    return sorted(p.stem for p in CLUSTERS_DIR.glob("*.toml"))


def load_cluster(spec: str) -> Cluster:
    """A shipped cluster by name (``snellius``) or a cluster TOML file by path."""
    if spec.endswith(".toml") or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"--cluster {spec}: no such file")
    else:
        path = CLUSTERS_DIR / f"{spec}.toml"
        if not path.is_file():
            raise ConfigError(f"--cluster {spec}: no such cluster (shipped: "
                              f"{', '.join(builtin_clusters())}; or give a TOML file)")
    data = _read_toml(path)
    base = data.pop("base", None)
    if base:
        parent = load_cluster(str(base))
        merged_profiles = {k: dict(v) for k, v in parent.profiles.items()}
        for name, prof in data.get("profiles", {}).items():
            merged_profiles.setdefault(name, {}).update(prof)
        data = {"description": data.get("description", parent.name),
                "gpu": data.get("gpu", parent.gpu), "cpu": data.get("cpu", parent.cpu),
                "defaults": {**parent.defaults, **data.get("defaults", {})},
                "profiles": merged_profiles}
    known = {"description", "gpu", "cpu", "defaults", "profiles"}
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"cluster file {path}: unknown key '{extra[0]}' (keys: "
                          f"{', '.join(sorted(known | {'base'}))})")
    profiles = data.get("profiles", {})
    for name, table in [("defaults", data.get("defaults", {})), *profiles.items()]:
        bad = sorted(set(table) - set(FIELDS))
        if bad:
            raise ConfigError(f"cluster file {path}: [{name}] has unknown field '{bad[0]}' "
                              f"(fields: {', '.join(FIELDS)})")
    if not profiles:
        raise ConfigError(f"cluster file {path}: no [profiles.NAME] table")
    gpu = str(data.get("gpu") or next(iter(profiles)))
    cpu = str(data.get("cpu", ""))
    for role, name in (("gpu", gpu), ("cpu", cpu)):
        if name and name not in profiles:
            raise ConfigError(f"cluster file {path}: {role} = '{name}' is not a profile "
                              f"({', '.join(profiles)})")
    return Cluster(str(data.get("description", path.stem)), path, gpu, cpu,
                   dict(data.get("defaults", {})), {k: dict(v) for k, v in profiles.items()})


# --------------------------------------------------------------------------- which cells need a GPU
def needs_gpu(method: str) -> bool:
    """Whether a pipeline runs a network: a stage whose plugin trains, builds on other
    pipelines (``sources``) or lives in a module that imports torch (a class may say so with
    ``needs_gpu = True/False``)."""
    from bench.plugins import METHODS
    from bench.spec import parse_pipeline

    for stage in parse_pipeline(method).stages:
        cls = METHODS.get(stage.name).cls
        said = getattr(cls, "needs_gpu", None)
        if said is not None:
            if said:
                return True
            continue
        if cls.trainable or callable(getattr(cls, "sources", None)):
            return True
        for klass in cls.__mro__:
            module = sys.modules.get(klass.__module__)
            if module is not None and "torch" in vars(module):
                return True
    return False


# --------------------------------------------------------------------------- the task
class CellTask(submitit.helpers.Checkpointable):
    """One cell as a SLURM task; requeued (and resumed) on preemption or timeout."""

    def __call__(self, cell: Cell, n: int, total: int, out: str, run_id: str,
                 stage_data: bool = False) -> str:
        from bench.executors import run_tracked

        log = RunLog(Path(out), run_id)
        log_path = ""
        if os.environ.get("SUBMITIT_EXECUTOR"):
            log_path = str(submitit.JobEnvironment().paths.stderr)
        os.environ.setdefault("BENCH_PROGRESS", "0")  # log files, not terminals
        if stage_data:
            from bench.staging import stage_cell

            cell = stage_cell(cell)
        records = run_tracked(cell, n, total, log, log_path)
        return str(records[-1].get("not_run") or "done")


@dataclass
class Submitted:
    """One submitted array: its profile, resources, job ids (``<array>_<task>``), logs."""

    resources: Resources
    job_ids: list[str]
    logs: list[str]
    cells: list[int]
    jobs: list[Any] = field(default_factory=list, repr=False)


def submit_cells(cells: Sequence[Cell], indices: Sequence[int], log: RunLog,
                 cluster: Cluster, overrides: dict[str, Any], *, gpu_profile: str = "",
                 cpu_profile: str | None = None, max_parallel: int = 0,
                 stage_data: bool = False, gpus: int = 1,
                 backend: str = "slurm") -> list[Submitted]:
    """Submit cells ``indices`` of ``cells`` (indices into the run log) as job arrays.

    GPU cells go to ``gpu_profile`` (default: the cluster's ``gpu``), the others to
    ``cpu_profile`` (default: its ``cpu``; "" or ``none``: with the GPU cells). ``gpus`` GPUs
    per GPU task (DDP training). ``backend``: ``slurm``, or submitit's ``local`` executor
    (real processes on this machine, for tests and trials).
    """
    gpu_name = gpu_profile or cluster.gpu
    cpu_name = cluster.cpu if cpu_profile is None else cpu_profile
    if cpu_name == "none":
        cpu_name = ""
    groups: dict[str, list[int]] = {}
    for n in indices:
        name = gpu_name if (not cpu_name or needs_gpu(cells[n].method)) else cpu_name
        groups.setdefault(name, []).append(n)
    folder = log.out / "slurm" / log.run_id
    submitted = []
    for name, members in groups.items():
        res = cluster.resources(name, overrides)
        if name == gpu_name and gpus > 1:
            res = replace(res, gpus_per_node=gpus)
        executor = submitit.AutoExecutor(folder=folder, cluster=backend)
        params = res.executor_parameters()
        if backend != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
            params.pop("gpus_per_node", None)
        else:
            params["slurm_array_parallelism"] = max_parallel or len(members)
        executor.update_parameters(name=f"bench-{name}", **params)
        task = CellTask()
        with executor.batch():
            jobs = [executor.submit(task, cells[n], n, len(cells), str(log.out), log.run_id,
                                    stage_data) for n in members]
        submitted.append(Submitted(res, [str(j.job_id) for j in jobs],
                                   [str(j.paths.stderr) for j in jobs], list(members), jobs))
    log.update(jobs={str(n): j for s in submitted for n, j in zip(s.cells, s.job_ids,
                                                                   strict=True)},
               logs={str(n): f for s in submitted for n, f in zip(s.cells, s.logs, strict=True)},
               log_folder=str(folder))
    return submitted
