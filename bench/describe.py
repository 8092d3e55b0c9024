"""What ``bench show NAME`` prints: a plugin's kind, documentation and parameters.

For each parameter: its type, its default, and its value under each profile (class default <
``profiles[profile]`` < the defaults the plugin was registered with, as `bench.pipeline` builds
them), with the help text of the ``Params`` docstring or the field's comment.

Like ``bench list``, this must not import torch. Plugins are not imported: their files, and the
``bench`` modules their classes derive from (``ClassifierCam`` lives in
``bench.nn.classifier_cam``, which imports torch), are read with `ast` (`bench.source_scan`)
and the parameters' defaults and profiles evaluated from literals. A plugin whose classes
cannot be followed that way (a base class from another package, a default computed by a call)
is described from its imported class instead.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plugins import METHODS
from bench.source_scan import (
    SourceClass,
    SourceModule,
    Unresolved,
    class_attr,
    class_of,
    evaluate,
    nested_params,
)

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


# --------------------------------------------------------------------------- entry point
def describe(name: str) -> PluginInfo:
    """Describe registered plugin ``name`` (unknown names raise with "did you mean")."""
    entry = METHODS.entry(name)
    origin = Path(entry.origin) if entry.origin else None
    if origin is not None and origin.suffix == ".py" and origin.is_file():
        try:
            return _from_ast(name, origin, entry.meta.get("kind", "?"))
        except Unresolved:
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
def _default(module: SourceModule, expr: ast.expr | None) -> Any:
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
        return evaluate(module, expr)
    except Unresolved:
        return Source(ast.unparse(expr))


def _is_classvar(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar")) or "InitVar" in text


def _params_fields(params: SourceClass, depth: int = 0) -> list[tuple[str, str, Any, str]]:
    """(name, annotation text, default, help) of a Params class, base fields first."""
    if depth > 10:
        raise Unresolved("Params nesting")
    fields: dict[str, tuple[str, str, Any, str]] = {}
    for base in params.node.bases:
        for item in _params_fields(class_of(params.module, base), depth + 1):
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


def _registered(cls: SourceClass, name: str) -> dict[str, Any]:
    for deco in cls.node.decorator_list:
        if not isinstance(deco, ast.Call) or not deco.args:
            continue
        fname = getattr(deco.func, "id", getattr(deco.func, "attr", ""))
        arg = deco.args[0]
        if fname == "register_method" and isinstance(arg, ast.Constant) and arg.value == name:
            return {kw.arg: evaluate(cls.module, kw.value) for kw in deco.keywords if kw.arg}
    raise Unresolved(f"no @register_method('{name}')")


def _from_ast(name: str, path: Path, kind: str) -> PluginInfo:
    module = SourceModule.load(path)
    cls = next((SourceClass(module, node) for node in module.classes.values()
                if any(_deco_name(d) == name for d in node.decorator_list)), None)
    if cls is None:
        raise Unresolved(f"{path}: no class registered as '{name}'")
    registered = _registered(cls, name)
    params_cls = nested_params(cls)
    params = _params_fields(params_cls) if params_cls is not None else []
    found = class_attr(cls, "profiles")
    profiles = evaluate(found[0].module, found[1]) if found else {}
    if not isinstance(profiles, dict):
        raise Unresolved("profiles is not a dict")
    found = class_attr(cls, "trainable")
    trainable = bool(evaluate(found[0].module, found[1])) if found else False
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
