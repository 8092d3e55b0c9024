"""What ``bench show NAME`` prints: a plugin's kind, documentation and parameters.

For each parameter: its type, its default, and its value under each profile (class default <
``profiles[profile]`` < the defaults the plugin was registered with, as `bench.pipeline` builds
them), with the help text of the ``Params`` docstring or the field's comment.

Like ``bench list``, this must not import torch. Plugins are not imported: their files, and the
``bench`` modules their classes derive from (``ClassifierCam`` lives in ``bench.cam``, which
imports torch), are read with `ast` and the parameters' defaults and profiles evaluated from
literals. A plugin whose classes cannot be followed that way (a base class from another
package, a default computed by a call) is described from its imported class instead.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import io
import operator
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.plugins import METHODS

PROFILES = ("quick", "full")


@dataclass
class ParamInfo:
    """One parameter: ``default`` is the value without a profile (registered defaults applied);
    ``profiles`` maps each profile to the value a run with it gets."""

    name: str
    type: str
    default: Any
    profiles: dict[str, Any]
    help: str = ""


@dataclass
class PluginInfo:
    name: str
    kind: str
    doc: str
    origin: str
    trainable: bool | None
    registered: dict[str, Any]
    params: list[ParamInfo] = field(default_factory=list)
    profiles: tuple[str, ...] = PROFILES
    source: str = "ast"  # "ast": read from the files; "class": from the imported class


class Required:
    """The default of a field that has none (the spec must set it)."""

    def __repr__(self) -> str:
        return "(required)"


class Source:
    """A default that is not a literal (a call, a lambda): shown as its source text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Source) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class _Unresolved(Exception):
    """The AST route cannot follow this plugin; describe it from its class."""


# --------------------------------------------------------------------------- entry point
def describe(name: str) -> PluginInfo:
    """Describe registered plugin ``name`` (unknown names raise with "did you mean")."""
    entry = METHODS.entry(name)
    origin = Path(entry.origin) if entry.origin else None
    if origin is not None and origin.suffix == ".py" and origin.is_file():
        try:
            return _from_ast(name, origin, entry.meta.get("kind", "?"))
        except _Unresolved:
            pass
    return _from_class(name)


def format_value(value: Any) -> str:
    """A value as a spec writes it: ``true``, ``none``, ``0.5:1:1.5``, ``""`` for empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ":".join(format_value(v) for v in value) if value else '""'
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "name") and hasattr(value, "value") and not isinstance(value, type):
        return str(value.name)  # an Enum member
    return repr(value)


def render(info: PluginInfo) -> str:
    """The text ``bench show`` prints for one plugin."""
    lines = [f"{info.name}: {info.kind}" + (", trainable" if info.trainable else ""),
             f"  file: {info.origin}" if info.origin else ""]
    if info.registered:
        regs = ", ".join(f"{k}={format_value(v)}" for k, v in info.registered.items())
        lines.append(f"  registered with: {regs}")
    lines = [line for line in lines if line]
    if info.doc:
        lines += ["", *("  " + line if line else "" for line in info.doc.splitlines())]
    lines.append("")
    if not info.params:
        lines.append("parameters: none")
        return "\n".join(lines) + "\n"
    lines.append(f"parameters (set as {info.name}[key=value,...]; lists as a:b:c; a run uses "
                 f"its --profile column):")
    header = ["parameter", "type", "default", *info.profiles, "help"]
    rows = [[p.name, p.type, format_value(p.default),
             *(format_value(p.profiles.get(prof, p.default)) for prof in info.profiles),
             p.help] for p in info.params]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        lines.append(("  " + "  ".join(cells) + "  " + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def _values(params: list[tuple[str, str, Any, str]], profiles: dict[str, dict[str, Any]],
            registered: dict[str, Any]) -> tuple[list[ParamInfo], tuple[str, ...]]:
    names = tuple(dict.fromkeys([*PROFILES, *profiles]))
    out = []
    for pname, ptype, default, help_ in params:
        base = registered.get(pname, default)
        per = {prof: {**profiles.get(prof, {}), **registered}.get(pname, default)
               for prof in names}
        out.append(ParamInfo(pname, ptype, base, per, help_))
    return out, names


# --------------------------------------------------------------------------- from the class
def _from_class(name: str) -> PluginInfo:
    from bench.params import field_types, type_name

    info = METHODS.get(name)
    cls = info.cls
    types = field_types(cls.Params)
    names = [f.name for f in dataclasses.fields(cls.Params)]
    helps: dict[str, str] = {}
    for klass in reversed(cls.Params.__mro__):  # a subclass's docstring wins
        if dataclasses.is_dataclass(klass) and klass.__doc__:
            helps.update(_doc_help(inspect.cleandoc(klass.__doc__), names))
    params = []
    for f in dataclasses.fields(cls.Params):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = Required()
        params.append((f.name, type_name(types[f.name]), default, helps.get(f.name, "")))
    plist, names = _values(params, dict(cls.profiles), dict(info.defaults))
    return PluginInfo(name, cls.kind, inspect.getdoc(cls) or "", METHODS.entry(name).origin,
                      bool(cls.trainable), dict(info.defaults), plist, names, "class")


# --------------------------------------------------------------------------- from the files
class _Module:
    """One parsed source file: its classes, imports and module-level constants."""

    cache: ClassVar[dict[tuple[Path, int, int], _Module]] = {}

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
    def load(cls, path: Path, modname: str = "") -> _Module:
        path = path.resolve()
        try:
            stat = path.stat()
            key = (path, stat.st_mtime_ns, stat.st_size)  # an edited file is read again
            if key not in cls.cache:
                cls.cache[key] = cls(path, modname)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            raise _Unresolved(f"{path}: {exc}") from None
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


def _bench_module_path(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)  # imports the parent package only (bench)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


@dataclass
class _Class:
    module: _Module
    node: ast.ClassDef


def _lookup(module: _Module, name: str, depth: int = 0) -> tuple[_Module, Any]:
    """What ``name`` means in ``module``: a class (`_Class`) or a constant expression."""
    if depth > 20:
        raise _Unresolved(name)
    if name in module.classes:
        return module, _Class(module, module.classes[name])
    if name in module.constants:
        return module, module.constants[name]
    if name in module.imports:
        source, attr = module.imports[name]
        if source == "bench":
            import bench

            source = bench._EXPORTS.get(attr, "")
        path = None
        if source.startswith("bench.") or source == "bench":
            path = _bench_module_path(source)
        elif source:  # a sibling file of an include folder
            candidate = module.path.parent / (source.replace(".", "/") + ".py")
            path = candidate if candidate.is_file() else None
        if path is None:
            raise _Unresolved(f"{name} from {source}")
        return _lookup(_Module.load(path, source), attr, depth + 1)
    raise _Unresolved(name)


def _base_classes(cls: _Class) -> list[_Class]:
    out = []
    for base in cls.node.bases:
        out.append(_class_of(cls.module, base))
    return out


def _class_of(module: _Module, expr: ast.expr) -> _Class:
    if isinstance(expr, ast.Name):
        _, found = _lookup(module, expr.id)
        if isinstance(found, _Class):
            return found
    if isinstance(expr, ast.Attribute):
        if isinstance(expr.value, ast.Name) and expr.value.id == "bench":  # bench.CamSource
            import bench

            target = bench._EXPORTS.get(expr.attr, "")
            path = _bench_module_path(target) if target else None
            if path is None:
                raise _Unresolved(ast.unparse(expr))
            _, found = _lookup(_Module.load(path, target), expr.attr)
            if isinstance(found, _Class):
                return found
            raise _Unresolved(ast.unparse(expr))
        owner = _class_of(module, expr.value)  # Outer.Params: a class nested in a class
        for stmt in owner.node.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == expr.attr:
                return _Class(owner.module, stmt)
        for base in _base_classes(owner):
            try:
                return _class_of(base.module, ast.Attribute(ast.Name(base.node.name), expr.attr))
            except _Unresolved:
                continue
    raise _Unresolved(ast.unparse(expr))


def _mro(cls: _Class) -> list[_Class]:
    """The class and its bases, depth first, each once (enough for single inheritance)."""
    out: list[_Class] = []

    def walk(c: _Class) -> None:
        if any(o.node is c.node for o in out):
            return
        out.append(c)
        for base in _base_classes(c):
            walk(base)

    walk(cls)
    return out


def _class_attr(cls: _Class, attr: str) -> tuple[_Class, ast.expr] | None:
    """The expression assigned to ``attr`` in the class or its nearest base that sets it."""
    for c in _mro(cls):
        for stmt in c.node.body:
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == attr for t in stmt.targets):
                return c, stmt.value
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                    and stmt.target.id == attr and stmt.value is not None:
                return c, stmt.value
    return None


def _nested_params(cls: _Class) -> _Class | None:
    for c in _mro(cls):
        for stmt in c.node.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == "Params":
                return _Class(c.module, stmt)
        found = _class_attr(c, "Params")
        if found is not None and found[0].node is c.node:
            return _class_of(c.module, found[1])
    return None


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
        ast.Mod: operator.mod}


def _eval(module: _Module, expr: ast.expr, depth: int = 0) -> Any:
    """Evaluate a literal-ish expression: constants, containers, arithmetic, module constants,
    ``Other.profiles["quick"]`` and ``{**a, "k": v}``; anything else is `_Unresolved`."""
    if depth > 30:
        raise _Unresolved("too deep")
    ev = lambda e: _eval(module, e, depth + 1)  # noqa: E731
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
                    raise _Unresolved("** of a non-dict")
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
        owner, found = _lookup(module, expr.id)
        if isinstance(found, _Class):
            return found
        return _eval(owner, found, depth + 1)
    if isinstance(expr, ast.Attribute):
        owner = ev(expr.value)
        if isinstance(owner, _Class):
            found = _class_attr(owner, expr.attr)
            if found is None:
                raise _Unresolved(ast.unparse(expr))
            return _eval(found[0].module, found[1], depth + 1)
        raise _Unresolved(ast.unparse(expr))
    if isinstance(expr, ast.Call) and not expr.keywords and _is_path(module, expr.func):
        return Path(*(ev(a) for a in expr.args))
    if isinstance(expr, ast.Subscript):
        container = ev(expr.value)
        try:
            return container[ev(expr.slice)]
        except (KeyError, IndexError, TypeError):
            raise _Unresolved(ast.unparse(expr)) from None
    raise _Unresolved(ast.unparse(expr))


def _is_path(module: _Module, func: ast.expr) -> bool:
    """``Path`` (imported from pathlib) or ``pathlib.Path``."""
    if isinstance(func, ast.Name):
        return module.imports.get(func.id) == ("pathlib", "Path")
    return isinstance(func, ast.Attribute) and func.attr == "Path" and \
        isinstance(func.value, ast.Name) and func.value.id == "pathlib"


def _default(module: _Module, expr: ast.expr | None) -> Any:
    """A dataclass field's default: a literal, ``field(default=...)``, ``field(default_factory=
    list)``; other expressions are shown as their source."""
    if expr is None:
        return Required()
    if isinstance(expr, ast.Call) and getattr(expr.func, "id", getattr(expr.func, "attr", "")) \
            == "field":
        for kw in expr.keywords:
            if kw.arg == "default":
                return _default(module, kw.value)
            if kw.arg == "default_factory":
                factory = {"list": list, "tuple": tuple, "dict": dict, "set": set}
                if isinstance(kw.value, ast.Name) and kw.value.id in factory:
                    return factory[kw.value.id]()
                if isinstance(kw.value, ast.Lambda):
                    return _default(module, kw.value.body)
                return Source(ast.unparse(kw.value) + "()")
        return Required()
    try:
        return _eval(module, expr)
    except _Unresolved:
        return Source(ast.unparse(expr))


def _is_classvar(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar")) or "InitVar" in text


def _params_fields(params: _Class, depth: int = 0) -> list[tuple[str, str, Any, str]]:
    """(name, annotation text, default, help) of a Params class, base fields first."""
    if depth > 10:
        raise _Unresolved("Params nesting")
    fields: dict[str, tuple[str, str, Any, str]] = {}
    for base in params.node.bases:
        for item in _params_fields(_class_of(params.module, base), depth + 1):
            fields[item[0]] = item
    own = [s.target.id for s in params.node.body
           if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    helps = _doc_help(ast.get_docstring(params.node) or "", [*fields, *own])
    for stmt in params.node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and not _is_classvar(stmt.annotation):
            name = stmt.target.id
            help_ = params.module.comment(stmt) or helps.get(name, "")
            if not help_ and name in fields:
                help_ = fields[name][3]
            fields[name] = (name, _type_text(ast.unparse(stmt.annotation)),
                            _default(params.module, stmt.value), help_)
    return list(fields.values())


def _type_text(annotation: str) -> str:
    """An annotation as `bench.params.type_name` spells it (``float or None``), or as written
    when it names something this reading cannot evaluate."""
    from bench.params import _NAMESPACE, type_name

    try:
        return type_name(eval(annotation, dict(_NAMESPACE)))  # the plugin's own source text
    except Exception:
        return annotation.replace("typing.", "")


def _registered(cls: _Class, name: str) -> dict[str, Any]:
    for deco in cls.node.decorator_list:
        if not isinstance(deco, ast.Call) or not deco.args:
            continue
        fname = getattr(deco.func, "id", getattr(deco.func, "attr", ""))
        arg = deco.args[0]
        if fname == "register_method" and isinstance(arg, ast.Constant) and arg.value == name:
            return {kw.arg: _eval(cls.module, kw.value) for kw in deco.keywords if kw.arg}
    raise _Unresolved(f"no @register_method('{name}')")


def _from_ast(name: str, path: Path, kind: str) -> PluginInfo:
    module = _Module.load(path)
    cls = next((_Class(module, node) for node in module.classes.values()
                if any(_deco_name(d) == name for d in node.decorator_list)), None)
    if cls is None:
        raise _Unresolved(f"{path}: no class registered as '{name}'")
    registered = _registered(cls, name)
    if kind == "?":  # the scan of the plugin file alone could not tell: follow the bases
        from bench.plugins import KNOWN_BASES

        kind = next((KNOWN_BASES[c.node.name] for c in _mro(cls) if c.node.name in KNOWN_BASES),
                    "?")
    params_cls = _nested_params(cls)
    params = _params_fields(params_cls) if params_cls is not None else []
    found = _class_attr(cls, "profiles")
    profiles = _eval(found[0].module, found[1]) if found else {}
    if not isinstance(profiles, dict):
        raise _Unresolved("profiles is not a dict")
    found = _class_attr(cls, "trainable")
    trainable = bool(_eval(found[0].module, found[1])) if found else False
    plist, names = _values(params, profiles, registered)
    return PluginInfo(name, kind, ast.get_docstring(cls.node) or "", str(path), trainable,
                      registered, plist, names, "ast")


def _deco_name(deco: ast.expr) -> str | None:
    if isinstance(deco, ast.Call) and deco.args and isinstance(deco.args[0], ast.Constant):
        fname = getattr(deco.func, "id", getattr(deco.func, "attr", ""))
        if fname == "register_method":
            return str(deco.args[0].value)
    return None


_DOC_ENTRY = re.compile(r"^(\s*)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:\s+(\S.*)$")


def _doc_help(doc: str, names: Any = ()) -> dict[str, str]:
    """Per-field help from a docstring written ``name: text`` (``a, b: text`` for several),
    continued on more indented lines; ``...; other: text`` within a line starts the entry of
    field ``other`` (one of ``names``)."""
    known = sorted(set(names), key=len, reverse=True)
    alternatives = "|".join(map(re.escape, known))
    inline = re.compile(rf"[;.][ \t]+(?=(?:{alternatives}):[ \t])") if known else None
    out: dict[str, str] = {}
    current: list[str] = []
    indent = -1
    for line in doc.splitlines():
        match = _DOC_ENTRY.match(line)
        lead = len(line) - len(line.lstrip())
        if match and (not current or lead <= indent):
            current = [n.strip() for n in match.group(2).split(",")]
            indent = lead
            for n in current:
                out[n] = ""
            text = match.group(3).strip()
        elif current and line.strip() and (lead > indent or not match):
            text = line.strip()  # a continuation: indented, or not itself an entry
        else:
            current = []
            continue
        pieces = inline.split(text) if inline else [text]
        for i, piece in enumerate(pieces):
            if i:
                name, _, piece = piece.partition(":")
                current = [name.strip()]
                out[current[0]] = ""
                piece = piece.strip()
            for n in current:
                out[n] = f"{out[n]} {piece}".strip()
    return {n: text.rstrip(";, ") for n, text in out.items()}
