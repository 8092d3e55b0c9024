"""One lock per cache artifact, so that parallel cells never compute a stage twice.

Cells run in parallel (``bench run --jobs N``, SLURM array tasks) share upstream stages: the
``effnet``, ``effnet+crf`` and ``effnet+crf+deeplabv3plus`` cells all need one trained
``effnet``. Before a cell computes a cache artifact (a stage's trained state, a split's maps, a
record), it takes that artifact's lock; having it, it looks again whether another process has
written the artifact meanwhile and, if so, uses it instead of computing it. A cell that finds
the lock taken says so on stderr and waits.

The locks are `filelock.FileLock` files (``fcntl.flock`` on Unix) under ``<out>/.locks/``
(beside the cache, which holds only cache entries): the kernel (or the cluster file system:
GPFS on Snellius, NFS through its lock manager) releases them when their process dies, even by
SIGKILL, so a killed cell never leaves a stale lock. Deadlock is impossible because a process
holding the lock of an artifact only asks for the locks of what that artifact is computed from
(upstream stages), and that relation has no cycles. A lock already held by this process is
re-entered.

Why locks and not SLURM ``afterok`` dependencies: a lock also serves local worker processes,
needs no plan of the shared prefixes before submission, and a cell whose upstream stage is
cached already starts at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: called with a description of the artifact a cell waits for, then with None once it has it
#: (`bench.executors` writes it into the cell's status file for ``bench status``)
WAIT_LISTENERS: list[Callable[[str | None], None]] = []

_held: dict[str, int] = {}
_guard = threading.Lock()


def lock_path(cache_root: Path, artifact: Path) -> Path:
    """The lock file of ``artifact`` (a path under the run folder, whose ``cache/`` is
    ``cache_root``)."""
    try:
        name = str(artifact.resolve().relative_to(cache_root.resolve().parent))
    except ValueError:
        name = str(artifact.resolve())
    readable = name.replace(os.sep, "_")[-80:]
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return cache_root.parent / ".locks" / f"{readable}.{digest}.lock"


@contextmanager
def artifact_lock(cache_root: Path, artifact: Path, what: str) -> Iterator[None]:
    """Hold the lock of ``artifact`` (``what`` names it in the waiting message).

    The caller checks again, inside the lock, whether the artifact exists before computing it.
    """
    from filelock import FileLock, Timeout

    path = lock_path(cache_root, artifact)
    key = str(path)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"bench: waiting for {what}: another process is computing it", file=sys.stderr,
              flush=True)
        for listener in WAIT_LISTENERS:
            listener(what)
        lock.acquire()
        for listener in WAIT_LISTENERS:
            listener(None)
    with _guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        lock.release()
