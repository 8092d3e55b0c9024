"""Reading plugin classes from their source files, without importing them.

``bench list`` (a plugin's kind, demo, label, requirements) and ``bench show`` (its parameters)
must not import torch, but plugin classes derive from bases in ``bench`` modules that do
(``ClassifierCam``). So the files are parsed with `ast` and class attributes followed through
base classes: in the same file, in ``bench`` modules (``from bench import X`` resolves through
``bench._EXPORTS``) and in sibling files of an include folder. What cannot be followed this way
raises `Unresolved`, and callers fall back to importing the class.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import operator
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


class Unresolved(Exception):
    """The source cannot be followed (a base from another package, a computed value)."""


class SourceModule:
    """One parsed source file: its classes, imports and module-level constants."""

    cache: ClassVar[dict[tuple[Path, int, int], SourceModule]] = {}

    def __init__(self, path: Path, modname: str = "") -> None:
        self.path = path
        self.modname = modname
        self.source = path.read_text(encoding="utf-8")
        self.lines = self.source.splitlines()
        self.tree = ast.parse(self.source, filename=str(path))
        self.classes: dict[str, ast.ClassDef] = {}
        self.imports: dict[str, tuple[str, str]] = {}
        self.constants: dict[str, ast.expr] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                base = modname.rsplit(".", node.level)[0] if "." in modname else ""
                module = f"{base}.{node.module}" if node.module else base
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (module, alias.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.constants[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                self.constants[node.target.id] = node.value

    @classmethod
    def load(cls, path: Path, modname: str = "") -> SourceModule:
        path = path.resolve()
        try:
            stat = path.stat()
            key = (path, stat.st_mtime_ns, stat.st_size)  # an edited file is read again
            if key not in cls.cache:
                cls.cache[key] = cls(path, modname)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            raise Unresolved(f"{path}: {exc}") from None
        return cls.cache[key]

    def comment(self, node: ast.AST) -> str:
        """The trailing ``# comment`` of a one-line statement, else the ``#:`` lines above."""
        line = self.lines[node.lineno - 1] if node.lineno <= len(self.lines) else ""
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
            trailing = [t.string for t in tokens if t.type == tokenize.COMMENT]
        except (tokenize.TokenError, IndentationError, SyntaxError):
            trailing = []
        if trailing and getattr(node, "end_lineno", node.lineno) == node.lineno:
            return trailing[-1].lstrip("#:").strip()
        above = []
        i = node.lineno - 2
        while i >= 0 and self.lines[i].strip().startswith("#:"):
            above.insert(0, self.lines[i].strip()[2:].strip())
            i -= 1
        return " ".join(above)


def bench_module_path(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)  # imports the parent package only (bench)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


@dataclass
class SourceClass:
    module: SourceModule
    node: ast.ClassDef


def lookup(module: SourceModule, name: str, depth: int = 0) -> tuple[SourceModule, Any]:
    """What ``name`` means in ``module``: a class (`SourceClass`) or a constant expression."""
    if depth > 20:
        raise Unresolved(name)
    if name in module.classes:
        return module, SourceClass(module, module.classes[name])
    if name in module.constants:
        return module, module.constants[name]
    if name in module.imports:
        source, attr = module.imports[name]
        if source == "bench":
            import bench

            source = bench._EXPORTS.get(attr, "")
        path = None
        if source.startswith("bench.") or source == "bench":
            path = bench_module_path(source)
        elif source:  # a sibling file of an include folder
            candidate = module.path.parent / (source.replace(".", "/") + ".py")
            path = candidate if candidate.is_file() else None
        if path is None:
            raise Unresolved(f"{name} from {source}")
        return lookup(SourceModule.load(path, source), attr, depth + 1)
    raise Unresolved(name)


def base_classes(cls: SourceClass) -> list[SourceClass]:
    out = []
    for base in cls.node.bases:
        out.append(class_of(cls.module, base))
    return out


def class_of(module: SourceModule, expr: ast.expr) -> SourceClass:
    if isinstance(expr, ast.Name):
        _, found = lookup(module, expr.id)
        if isinstance(found, SourceClass):
            return found
    if isinstance(expr, ast.Attribute):
        if isinstance(expr.value, ast.Name) and expr.value.id == "bench":  # bench.CamSource
            import bench

            target = bench._EXPORTS.get(expr.attr, "")
            path = bench_module_path(target) if target else None
            if path is None:
                raise Unresolved(ast.unparse(expr))
            _, found = lookup(SourceModule.load(path, target), expr.attr)
            if isinstance(found, SourceClass):
                return found
            raise Unresolved(ast.unparse(expr))
        owner = class_of(module, expr.value)  # Outer.Params: a class nested in a class
        for stmt in owner.node.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == expr.attr:
                return SourceClass(owner.module, stmt)
        for base in base_classes(owner):
            try:
                return class_of(base.module, ast.Attribute(ast.Name(base.node.name), expr.attr))
            except Unresolved:
                continue
    raise Unresolved(ast.unparse(expr))


def mro(cls: SourceClass) -> list[SourceClass]:
    """The class and its bases, depth first, each once (enough for single inheritance)."""
    out: list[SourceClass] = []

    def walk(c: SourceClass) -> None:
        if any(o.node is c.node for o in out):
            return
        out.append(c)
        for base in base_classes(c):
            walk(base)

    walk(cls)
    return out


def class_attr(cls: SourceClass, attr: str) -> tuple[SourceClass, ast.expr] | None:
    """The expression assigned to ``attr`` in the class or its nearest base that sets it."""
    for c in mro(cls):
        for stmt in c.node.body:
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == attr for t in stmt.targets):
                return c, stmt.value
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                    and stmt.target.id == attr and stmt.value is not None:
                return c, stmt.value
    return None


def nested_params(cls: SourceClass) -> SourceClass | None:
    for c in mro(cls):
        for stmt in c.node.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == "Params":
                return SourceClass(c.module, stmt)
        found = class_attr(c, "Params")
        if found is not None and found[0].node is c.node:
            return class_of(c.module, found[1])
    return None


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
        ast.Mod: operator.mod}


def evaluate(module: SourceModule, expr: ast.expr, depth: int = 0) -> Any:
    """Evaluate a literal-ish expression: constants, containers, arithmetic, module constants,
    ``Other.profiles["quick"]`` and ``{**a, "k": v}``; anything else is `Unresolved`."""
    if depth > 30:
        raise Unresolved("too deep")
    ev = lambda e: evaluate(module, e, depth + 1)  # noqa: E731
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Tuple):
        return tuple(ev(e) for e in expr.elts)
    if isinstance(expr, ast.List):
        return [ev(e) for e in expr.elts]
    if isinstance(expr, ast.Set):
        return {ev(e) for e in expr.elts}
    if isinstance(expr, ast.Dict):
        out: dict[Any, Any] = {}
        for key, value in zip(expr.keys, expr.values, strict=True):
            if key is None:
                spread = ev(value)
                if not isinstance(spread, dict):
                    raise Unresolved("** of a non-dict")
                out.update(spread)
            else:
                out[ev(key)] = ev(value)
        return out
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.USub, ast.UAdd, ast.Not)):
        value = ev(expr.operand)
        return -value if isinstance(expr.op, ast.USub) else (
            +value if isinstance(expr.op, ast.UAdd) else not value)
    if isinstance(expr, ast.BinOp) and type(expr.op) in _OPS:
        return _OPS[type(expr.op)](ev(expr.left), ev(expr.right))
    if isinstance(expr, ast.Name):
        owner, found = lookup(module, expr.id)
        if isinstance(found, SourceClass):
            return found
        return evaluate(owner, found, depth + 1)
    if isinstance(expr, ast.Attribute):
        owner = ev(expr.value)
        if isinstance(owner, SourceClass):
            found = class_attr(owner, expr.attr)
            if found is None:
                raise Unresolved(ast.unparse(expr))
            return evaluate(found[0].module, found[1], depth + 1)
        raise Unresolved(ast.unparse(expr))
    if isinstance(expr, ast.Call) and not expr.keywords and is_path(module, expr.func):
        return Path(*(ev(a) for a in expr.args))
    if isinstance(expr, ast.Subscript):
        container = ev(expr.value)
        try:
            return container[ev(expr.slice)]
        except (KeyError, IndexError, TypeError):
            raise Unresolved(ast.unparse(expr)) from None
    raise Unresolved(ast.unparse(expr))


def is_path(module: SourceModule, func: ast.expr) -> bool:
    """``Path`` (imported from pathlib) or ``pathlib.Path``."""
    if isinstance(func, ast.Name):
        return module.imports.get(func.id) == ("pathlib", "Path")
    return isinstance(func, ast.Attribute) and func.attr == "Path" and \
        isinstance(func.value, ast.Name) and func.value.id == "pathlib"


def read_attr(cls: SourceClass, attr: str, default: Any = None) -> Any:
    """The value of class attribute ``attr`` (set in the class or a base), or ``default`` when
    no class sets it or its value cannot be read from the source."""
    try:
        found = class_attr(cls, attr)
        return default if found is None else evaluate(found[0].module, found[1])
    except Unresolved:
        return default


def file_classes(path: Path) -> dict[str, SourceClass]:
    """The top-level classes of a source file (the file is parsed once per version)."""
    module = SourceModule.load(path)
    return {name: SourceClass(module, node) for name, node in module.classes.items()}
