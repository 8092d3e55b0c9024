"""What a stage's cache key knows of its code: a digest of the plugin's source files.

A stage's cached model and maps are reused only while the code that made them is unchanged.
The digest of a plugin class covers:

- ``bench.__version__`` (the harness version);
- the source file of every class in the plugin's MRO that is defined in ``bench`` (its base
  classes hold much of a method's machinery) and the ``bench`` modules those files import;
- the plugin's own file and, transitively, every module it imports that lives beside it, in the
  built-in ``methods/`` folder or in an ``--include`` folder, and every ``bench`` module it (or
  they) import (``from bench import X`` counts as the module that defines ``X``).

``bench`` modules count one import level deep (a subpackage's ``__init__`` stands for the
modules it re-exports): what a plugin's code calls is hashed, not the whole harness (the
runner, tables and CLI do not change maps, nor do the modules in `NOT_COMPUTATION`).

Unchanged code keeps its cache; editing any of these files recomputes that stage and
everything downstream (keys chain). Files are read once per process.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
from functools import cache
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent

#: ``bench`` modules every plugin imports that cannot change what a plugin computes (they
#: register, list, describe, report errors and draw progress bars): left out, so that editing
#: them does not recompute every cache
NOT_COMPUTATION = frozenset(_BENCH_DIR / name for name in (
    "__init__.py", "plugins.py", "registry.py", "source_scan.py", "progress.py", "errors.py"))


#: ``bench`` modules compiled from ``ext/`` (C++): a plugin whose code imports one depends on
#: the built library's bytes, so rebuilding it with other code recomputes that plugin's stages
EXTENSIONS = ("_bilateral",)


@cache
def extension_file(name: str) -> Path | None:
    """The built library of the compiled module ``bench.<name>`` (None if it is not built),
    found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(f"bench.{name}")
    origin = getattr(spec, "origin", None)
    return Path(origin).resolve() if origin and Path(origin).is_file() else None


def _is_bench(path: Path) -> bool:
    return _BENCH_DIR in path.parents


@cache
def _file_bytes_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, memoised by path, size and modification time."""
    st = path.stat()
    return _file_bytes_digest(path, st.st_mtime_ns, st.st_size)


def _module_file(module: str) -> Path | None:
    mod = sys.modules.get(module)
    name = getattr(mod, "__file__", None)
    return Path(name).resolve() if name else None


def _bench_module_path(dotted: str) -> Path | None:
    """The source file of a ``bench.x.y`` module (or ``bench.Name`` export), not importing it."""
    parts = dotted.split(".")
    if parts[0] != "bench":
        return None
    if len(parts) == 2:
        import bench

        exported = bench._EXPORTS.get(parts[1])
        if exported is not None:
            parts = exported.split(".")
    if len(parts) == 2 and parts[1] in EXTENSIONS:
        return extension_file(parts[1])
    base = _BENCH_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(module, level)`` of every import statement in a file (top level and lazy)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            out.append((base, node.level))
            out.extend((f"{base}.{alias.name}" if base else alias.name, node.level)
                       for alias in node.names)
    return out


def _local_module(name: str, level: int, here: Path, folders: tuple[Path, ...]) -> Path | None:
    """A plugin-side module: a file beside ``here``, in ``methods/`` or an include folder."""
    roots = [here.parent] if level else [here.parent, *folders]
    rel = Path(*name.split(".")) if name else None
    for root in roots:
        if rel is None:
            continue
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _bench_imports(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """The ``bench`` modules a ``bench`` file imports (absolute or relative, lazy or not).

    A subpackage's ``__init__.py`` stands for the modules it re-exports (``from bench.metrics
    import X`` depends on ``bench/metrics/areas.py``), so its own imports count too.
    """
    seen = set() if seen is None else seen
    seen.add(path)
    if path.suffix != ".py":  # a compiled extension imports nothing we follow
        return set()
    package = path.relative_to(_BENCH_DIR.parent).with_suffix("").parts
    package = package if path.name == "__init__.py" else package[:-1]
    out = set()
    for name, level in _imports(path):
        if level:
            up = list(package[: len(package) - (level - 1)])
            name = ".".join(up + ([name] if name else []))
        found = _bench_module_path(name)
        if found is None or found in seen:
            continue
        out.add(found)
        if found.name == "__init__.py" and found.parent != _BENCH_DIR:
            out.update(_bench_imports(found, seen))
    return out


def source_files(cls: type, plugin_folders: tuple[Path, ...] = ()) -> list[Path]:
    """The files whose content a plugin class's cached outputs depend on (see module doc)."""
    files: set[Path] = set()
    plugin_side: list[Path] = []
    for klass in inspect.getmro(cls):
        path = _module_file(klass.__module__)
        if path is None or not path.is_file():
            continue
        if _is_bench(path):
            files.add(path)
            files.update(_bench_imports(path))
        elif (klass is cls  # an entry-point plugin from another package: its own module
              or klass.__module__.startswith("smoke_wsss_bench_plugins")
              or any(folder in path.parents for folder in plugin_folders)):
            plugin_side.append(path)
    seen: set[Path] = set()
    while plugin_side:
        path = plugin_side.pop()
        if path in seen:
            continue
        seen.add(path)
        files.add(path)
        for name, level in _imports(path):
            bench_file = _bench_module_path(name) if not level else None
            if bench_file is not None:
                files.add(bench_file)
                files.update(_bench_imports(bench_file))
                continue
            local = _local_module(name, level, path, plugin_folders)
            if local is not None:
                plugin_side.append(local)
    # a compiled extension counts wherever a counted file imports it, however deep
    for path in [f for f in files if f.suffix == ".py"]:
        for name, _level in _imports(path):
            ext = name[len("bench."):] if name.startswith("bench.") else ""
            if ext in EXTENSIONS and (built := extension_file(ext)) is not None:
                files.add(built)
    return sorted(files - NOT_COMPUTATION)


def code_digest(cls: type, plugin_folders: tuple[Path, ...] = ()) -> str:
    """A short digest of a plugin's code and the harness version (part of stage cache keys)."""
    from bench import __version__

    h = hashlib.sha256(f"bench {__version__}\n".encode())
    for path in source_files(cls, plugin_folders):
        # names relative to their root, so a moved checkout keeps its cache
        root = _BENCH_DIR.parent if _is_bench(path) else path.parent
        h.update(f"{path.relative_to(root).as_posix()}:{file_digest(path)}\n".encode())
    return h.hexdigest()[:16]


def folder_digest(folder: Path, pattern: str = "*.py") -> str:
    """A short digest of the files of ``folder`` (and its sub-folders) matching ``pattern``:
    their names relative to it and their bytes (`file_digest`, memoised by size and mtime).

    For code that is hashed as a whole rather than followed through its imports (the synthetic
    generator, `bench.data.synthetic_cache`).
    """
    h = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(f"{path.relative_to(folder).as_posix()}:{file_digest(path)}\n".encode())
    return h.hexdigest()[:16]
