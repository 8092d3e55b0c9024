"""``--stage-data``: copy (or extract) data set roots to node-local scratch at the start of a job.

A cell reads its training frames once per epoch; on a cluster's shared file system (GPFS on
Snellius) many small image files read by several jobs at once are slow, while the node's local
disk (``$TMPDIR``, per job) is fast. `stage_cell` copies each data root the cell reads, or
extracts it when the root is an archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``, ...), under
``$TMPDIR/bench-data/`` and points the cell at the copy.

The copy hits the same cache entries as the original: stage keys hash the data's *content*
(`bench.data.file_index`), not its paths. The first run on a copy hashes its files once more
(the file index is keyed by path).

It pays when a cell reads the same many files several times (training epochs, several stages)
and the shared file system is the bottleneck; it does not for a cell that reads a few large
files once, or when the copy takes longer than the cell (a cached cell needs no staging).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.atomic import atomic_dir
from bench.errors import ConfigError
from bench.runner import Cell, RunOptions

ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVES)


def root_source(name: str, overrides: dict[str, str]) -> Path | None:
    """Where data set ``name``'s root is (``--data-root`` > its variable > its file), a folder
    or an archive; None for data sets without a root (synthetic)."""
    from bench.data import DATASETS

    config = DATASETS.get(name)
    if config.loader == "synthetic":
        return None
    text = overrides.get(config.name) or (os.environ.get(config.root_env)
                                          if config.root_env else None) or config.root
    if not text:
        raise ConfigError(f"data set '{config.name}' has no root: use --data-root "
                          f"{config.name}=PATH")
    path = Path(text).expanduser().resolve()
    if not (path.is_dir() or is_archive(path)):
        raise ConfigError(f"data set '{config.name}': root {path} is neither a folder nor an "
                          f"archive ({', '.join(ARCHIVES)}) to stage")
    return path


def scratch_dir() -> Path:
    """Node-local scratch: ``$TMPDIR`` (set per job by SLURM on Snellius), else the system's."""
    import tempfile

    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir())


def stage_root(source: Path, scratch: Path | None = None) -> Path:
    """A copy of ``source`` (a folder, or an archive extracted) under node-local scratch.

    The copy is made once per scratch folder (atomically, under a lock, so tasks sharing a
    node share it) and its root returned: an archive holding one top folder gives that folder.
    """
    from filelock import FileLock

    base = (scratch or scratch_dir()) / "bench-data"
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    target = base / f"{source.name.split('.')[0]}-{digest}"
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f".{target.name}.lock")):
        if not (target / ".staged").is_file():
            with atomic_dir(target) as tmp:
                if source.is_dir():
                    shutil.copytree(source, tmp / "root", dirs_exist_ok=False)
                else:
                    shutil.unpack_archive(str(source), str(tmp / "root"))
                (tmp / ".staged").write_text(str(source), encoding="utf-8")
    root = target / "root"
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not source.is_dir() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


def stage_options(options: RunOptions, names: Sequence[str],
                  scratch: Path | None = None) -> RunOptions:
    """``options`` with the roots of data sets ``names`` pointing at staged copies."""
    import sys

    from bench.data import discover_datasets

    discover_datasets(options.include)
    roots = dict(options.data_roots)
    for name in dict.fromkeys(names):
        source = root_source(name, roots)
        if source is None:
            continue
        staged = stage_root(source, scratch)
        print(f"bench: staged {source} to {staged}", file=sys.stderr, flush=True)
        roots[name] = str(staged)
    return replace(options, data_roots=roots)


def stage_cell(cell: Cell, scratch: Path | None = None) -> Cell:
    """``cell`` with the roots of the data sets it reads pointing at staged copies."""
    names = [cell.dataset, cell.train_dataset or cell.dataset]
    return replace(cell, options=stage_options(cell.options, names, scratch))
