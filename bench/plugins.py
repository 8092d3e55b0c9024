"""Plugin discovery and registration.

Plugins are found three ways, all without importing torch:

1. the built-in ``methods/`` folder (the repository's, or the copy installed with the package);
2. folders named by ``--include PATH`` / ``BENCH_INCLUDE`` (like lm-eval's ``--include_path``);
3. the entry-point group ``smoke_wsss_bench.plugins`` of other installed packages, each entry
   ``name = "package.module:Class"``.

Files are read with `ast`: every class decorated with ``@register_method("name", ...)`` becomes
a lazy registry entry with its kind and docstring summary. The file is imported only when one
of its plugins is used; importing it runs the decorator, which registers the real class.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import BenchError, ConfigError, PluginError, one_line
from bench.registry import Registry

ENTRY_POINT_GROUP = "smoke_wsss_bench.plugins"
MODULE_PREFIX = "smoke_wsss_bench_plugins"

@dataclass
class MethodInfo:
    """A registered plugin class plus the parameter defaults its name implies."""

    cls: type
    defaults: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.cls.kind


METHODS: Registry[MethodInfo] = Registry("method")

C = TypeVar("C", bound=type)


def register_method(name: str, **defaults: Any) -> Callable[[C], C]:
    """Class decorator registering a plugin under ``name``.

    ``defaults`` preset parameters, so one class can be registered under several names
    (``@register_method("resnet101", backbone="resnet101")``). Decorators stack.
    """

    def decorate(cls: C) -> C:
        from bench.stages import Plugin

        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise TypeError(f"@register_method('{name}') must decorate a bench plugin class")
        if not getattr(cls, "name", "") or cls.__dict__.get("name") is None:
            cls.name = name
        origin = _origin_of(cls)
        METHODS.register(name, MethodInfo(cls, dict(defaults)), summary=_summary(cls.__doc__),
                         origin=origin, kind=cls.kind)
        return cls

    return decorate


def _origin_of(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    return str(Path(path).resolve()) if path else cls.__module__


def _summary(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


# --------------------------------------------------------------------------- discovery
def builtin_dir(kind: str) -> Path:
    """The built-in ``methods`` or ``datasets`` folder (source tree first, else installed)."""
    package = Path(__file__).resolve().parent
    source = package.parent / kind
    if (package.parent / "pyproject.toml").is_file() and source.is_dir():
        return source
    return package / "_builtin" / kind


def include_dirs(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Folders named by ``--include`` plus those in ``BENCH_INCLUDE`` (``os.pathsep``-separated)."""
    env = [p for p in os.environ.get("BENCH_INCLUDE", "").split(os.pathsep) if p]
    dirs = []
    for item in [*env, *extra]:
        path = Path(item).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--include {item}: not a folder")
        dirs.append(path.resolve())
    return dirs


_scanned: set[Path] = set()


def discover(include: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Announce every plugin from the built-in folder, include folders and entry points."""
    extra = include_dirs(include)
    for folder in extra:
        _allow_sibling_imports(folder)
    for folder in [builtin_dir("methods"), *extra]:
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            if path.name.startswith("_") or path.resolve() in _scanned:
                continue
            scan_file(path)
            _scanned.add(path.resolve())
    _discover_entry_points()


def scan_file(path: Path) -> list[str]:
    """Register lazy entries for the plugins a file declares; returns their names.

    A plugin's kind, demo, label and requirements are read from the source (`bench.source_scan`
    follows its base classes into ``bench`` and sibling include files), so nothing is imported.
    """
    from bench.source_scan import file_classes, read_attr

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: syntax error in plugin file: {exc.msg}") from None
    names = []
    for cls in file_classes(path).values():
        for deco in cls.node.decorator_list:
            name = _registered_name(deco)
            if name is None:
                continue
            requires = read_attr(cls, "requires", ())
            meta: dict[str, Any] = {
                "kind": str(read_attr(cls, "kind", "?") or "?"),
                "demo": str(read_attr(cls, "demo", "") or ""),
                "label": str(read_attr(cls, "label", "") or ""),
                "requires": tuple(requires) if isinstance(requires, (tuple, list)) else (),
                # table roles (`bench.table.method_role`): a baseline, or a segmenter trained
                # on ground truth (the supervised upper bound)
                "baseline": read_attr(cls, "baseline", False) is True,
                "upper_bound": read_attr(cls, "needs_pseudo_labels", True) is False}
            METHODS.register_lazy(name, _file_loader(path), summary=_summary(
                ast.get_docstring(cls.node)), origin=str(path.resolve()), **meta)
            names.append(name)
    _scan_merges(path, tree)
    return names


def _scan_merges(path: Path, tree: ast.Module) -> None:
    """Lazy `bench.mask_merge.MERGES` entries for the module-level functions of a plugin file
    decorated with ``@register_merge("name")`` (imported when ``merge=name`` is used)."""
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            name = _registered_name(deco, "register_merge")
            if name is not None:
                from bench.mask_merge import MERGES

                MERGES.register_lazy(name, _file_loader(path), origin=str(path.resolve()),
                                     summary=_summary(ast.get_docstring(node)))


def _registered_name(deco: ast.expr, decorator: str = "register_method") -> str | None:
    if not isinstance(deco, ast.Call):
        return None
    func = deco.func
    fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if fname != decorator or not deco.args:
        return None
    arg = deco.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def missing_requirements(name: str) -> list[str]:
    """``pip install`` hints for the optional modules plugin ``name`` needs but cannot find."""
    import importlib.util

    entry = METHODS.entry(name)
    requires = entry.meta.get("requires") or (
        getattr(entry.obj.cls, "requires", ()) if entry.obj is not None else ())
    missing = []
    for item in requires:
        module, _, extra = item.partition(":")
        hint = f"pip install 'smoke-wsss-bench[{extra or module}]'"
        if importlib.util.find_spec(module) is None and hint not in missing:
            missing.append(hint)  # several modules of one extra: one hint
    return missing


def _file_loader(path: Path) -> Callable[[], None]:
    def load() -> None:
        try:
            import_plugin_file(path)
        except BenchError:
            raise
        except Exception as exc:
            raise PluginError(f"{path}: importing the plugin file failed: "
                              f"{one_line(exc)}") from exc

    return load


def plugin_module_name(path: Path) -> str:
    """The private module name a plugin file is imported under (stable across processes)."""
    import hashlib

    path = path.resolve()
    folder = hashlib.sha1(str(path.parent).encode()).hexdigest()[:8]
    return f"{MODULE_PREFIX}.{path.parent.name}_{folder}.{path.stem}"


def import_plugin_file(path: Path) -> Any:
    """Import a plugin file by path (once) under a private module name."""
    path = path.resolve()
    module_name = plugin_module_name(path)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import plugin file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


class _SiblingLoader(importlib.abc.Loader):
    """Loads ``name`` as the plugin-folder file it names, imported once under its private name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create_module(self, spec: Any) -> Any:
        return import_plugin_file(self.path)

    def exec_module(self, module: Any) -> None:
        """Nothing to do: `create_module` returned the executed module."""


class _SiblingFinder(importlib.abc.MetaPathFinder):
    """Lets a file of an include folder import another one by its stem (``from base import
    BaseCam``): the other file is imported once, under its private plugin name, so a subclass
    and the plugins of the file it imports share one class object and register once.

    It sits last on ``sys.meta_path``: installed packages win over a file of the same name.
    """

    def __init__(self) -> None:
        self.folders: list[Path] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if "." in fullname:
            return None
        for folder in self.folders:
            candidate = folder / f"{fullname}.py"
            if candidate.is_file():
                return importlib.util.spec_from_loader(fullname, _SiblingLoader(candidate))
        return None


_SIBLINGS = _SiblingFinder()


def _allow_sibling_imports(folder: Path) -> None:
    if folder not in _SIBLINGS.folders:
        _SIBLINGS.folders.append(folder)
    if _SIBLINGS not in sys.meta_path:
        sys.meta_path.append(_SIBLINGS)


#: the group's entry points, read for one ``sys.path`` (reading them scans every installed
#: distribution: tenths of a second, and every cell discovers plugins)
_ENTRY_POINTS: dict[tuple[str, ...], list[Any]] = {}


def _group_entry_points() -> list[Any]:
    """The entry points of `ENTRY_POINT_GROUP`, read again when ``sys.path`` changed."""
    from importlib.metadata import entry_points

    key = tuple(sys.path)
    if key not in _ENTRY_POINTS:
        _ENTRY_POINTS.clear()
        _ENTRY_POINTS[key] = list(entry_points(group=ENTRY_POINT_GROUP))
    return _ENTRY_POINTS[key]


def _discover_entry_points() -> None:
    for ep in _group_entry_points():
        if ep.name in METHODS:
            continue

        def load(ep: Any = ep) -> None:
            obj = ep.load()
            registered = ep.name in METHODS and METHODS.entry(ep.name).obj is not None
            if not registered and isinstance(obj, type):
                register_method(ep.name)(obj)

        # no origin: the module may register the name itself when imported (replacing this)
        METHODS.register_lazy(ep.name, load, summary=f"(from entry point {ep.value})",
                              origin="", kind="?", demo="", entry_point=ep.value)


def method_kind(name: str) -> str:
    """The kind of plugin ``name`` (loading the plugin only when the scan could not tell)."""
    entry = METHODS.entry(name)
    kind = entry.meta.get("kind", "?")
    if kind == "?":
        kind = METHODS.get(name).kind
    return kind
