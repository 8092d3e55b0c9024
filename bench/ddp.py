"""Data-parallel training over several processes (``bench run --gpus N``), torchrun style.

`launch` runs a training function in ``N`` processes inside one job: this process is rank 0
and keeps the trained module; ranks 1..N-1 are spawned with torchrun's environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and on
CUDA each sees one GPU of its own (``CUDA_VISIBLE_DEVICES``). The backend is NCCL on CUDA and
gloo on CPU (``BENCH_DDP_BACKEND`` overrides it).

The training loops (`bench.nn.train.train`, the segmenter engine through its hooks) split each
global batch into one contiguous shard per rank, scale each rank's loss by its share of the
batch and average the gradients over ranks after the backward pass (`all_reduce_grads`): the
gradient of the global batch's mean loss, as DistributedDataParallel computes it, so the
weights follow those of one process training on the global batch. (One all-reduce of the
flattened gradients per step; the plugins' own forward functions need no wrapper.) On CUDA,
BatchNorm layers become `torch.nn.SyncBatchNorm`, whose statistics cover the global batch;
gloo on CPU has no synchronised BatchNorm, so there a network with BatchNorm sees per-shard
statistics. Random layers (dropout) draw per rank.

The arguments reach the other ranks as one ``torch.save`` file beside the checkpoint;
plugin classes from plugin files are imported there under the same private module names.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

#: the variables torchrun sets for each process
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT")


def active() -> bool:
    """Whether this process is one rank of a running process group."""
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    if not active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def announce(device_type: str) -> None:
    """One stderr line per rank: which rank of how many, on which backend and device."""
    rank, world = rank_world()
    if world > 1:
        print(f"bench: DDP rank {rank} of {world} ({dist.get_backend()}, {device_type})",
              file=sys.stderr, flush=True)


def shard(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous part of a batch of ``n`` (the first ``n % world`` get one
    more; a rank may get none)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks (losses are pre-scaled, see `loss_scale`), in one collective.

    A parameter without a gradient on this rank (an empty shard) contributes zeros."""
    params = [p for p in params if p.requires_grad]
    if not params or not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def local_rows(n: int) -> slice | None:
    """This rank's `shard` of a batch of ``n``; None outside a process group."""
    rank, world = rank_world()
    return shard(n, rank, world) if world > 1 else None


def share(local: int, total: int) -> float:
    """`loss_scale` inside a process group; 1 outside."""
    return loss_scale(local, total) if active() else 1.0


def loss_scale(local: int, total: int) -> float:
    """The factor on a rank's mean loss over ``local`` of ``total`` samples that makes the
    summed gradients those of the mean over all ``total``."""
    return local / total if total else 0.0


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over ranks (the values themselves outside a group)."""
    if not active():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> None:
    """Make BatchNorm layers synchronised across ranks (CUDA only), in place."""
    if not active() or device.type != "cuda":
        return
    for name, child in list(module.named_children()):
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plugin_files() -> list[str]:
    """The plugin files imported here (under private module names, `bench.plugins`); their
    parent packages are put into ``sys.modules`` so that pickle finds their classes."""
    import types

    from bench.plugins import MODULE_PREFIX

    files = []
    for name, module in list(sys.modules.items()):
        if name.startswith(MODULE_PREFIX + ".") and getattr(module, "__file__", None):
            files.append(str(module.__file__))
            parts = name.split(".")
            for i in range(1, len(parts)):
                sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    return files


def _child(payload: str, backend: str, device_type: str, plugin_files: list[str]) -> None:
    from bench.plugins import discover, import_plugin_file

    discover(sorted({str(Path(f).parent) for f in plugin_files}))
    for path in plugin_files:
        import_plugin_file(Path(path))
    _plugin_files()
    dist.init_process_group(backend, init_method="env://")
    announce(device_type)
    try:
        location = "cuda:0" if device_type == "cuda" else "cpu"
        fn, args, kwargs = torch.load(payload, map_location=location, weights_only=False)
        fn(*args, **kwargs)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], world: int, device_type: str, payload_dir: Path,
           *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on ``world`` ranks; returns rank 0's (this process's) result.

    Raises RuntimeError when another rank fails.
    """
    import multiprocessing

    if world < 2:
        return fn(*args, **kwargs)
    if device_type == "cuda" and torch.cuda.device_count() < world:
        from bench.errors import ConfigError

        raise ConfigError(f"--gpus {world}: this job sees {torch.cuda.device_count()} GPU(s)")
    backend = os.environ.get("BENCH_DDP_BACKEND") or ("nccl" if device_type == "cuda"
                                                      else "gloo")
    payload_dir.mkdir(parents=True, exist_ok=True)
    payload = payload_dir / f"ddp-payload-{os.getpid()}.pt"
    plugin_files = _plugin_files()
    torch.save((fn, args, kwargs), payload)
    port = _free_port()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(max(world, 1))]
    context = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in (*TORCHRUN_VARS, "CUDA_VISIBLE_DEVICES")}
    procs = []
    try:
        for rank in range(1, world):
            os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank),
                               "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
            if device_type == "cuda":
                os.environ["CUDA_VISIBLE_DEVICES"] = devices[rank]
            proc = context.Process(target=_child, args=(str(payload), backend, device_type,
                                                        plugin_files))
            proc.start()
            procs.append(proc)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=world)
    announce(device_type)
    try:
        result = fn(*args, **kwargs)
    except BaseException:
        for proc in procs:  # they would wait for this rank's collectives forever
            proc.terminate()
        raise
    finally:
        dist.destroy_process_group()
        for proc in procs:
            proc.join()
        payload.unlink(missing_ok=True)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {world - 1} other DDP ranks failed "
                           f"(exit codes {failed})")
    return result
