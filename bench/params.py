"""Plugin parameters: a nested dataclass per plugin, filled from spec strings and profiles.

A plugin declares ``class Params`` (a dataclass); a spec such as ``crf[iterations=5,sigma_xy=40]``
overrides fields by name. Values arrive as strings and are converted by the field's annotation:

- ``int``, ``float``, ``str``, ``pathlib.Path``;
- ``bool``: ``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``;
- ``Optional[X]`` / ``X | None``: ``none`` (or ``null``) is None, anything else an ``X``;
- ``tuple[X, ...]``, ``tuple[X, Y]`` (exactly two items) and ``list[X]``, written with ``:``
  between items (``scales=0.5:1:1.5``; an empty value is an empty sequence);
- ``Literal["a", "b"]``: one of the choices (a wrong one gets a "did you mean");
- an `enum.Enum`: a member's name or value.

Annotations may be strings (``from __future__ import annotations``): they are resolved with
`typing.get_type_hints` in the plugin's module. A value that does not convert is a one-line
`ConfigError` naming the plugin spec, the parameter, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.registry import did_you_mean

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}
_UNION_TYPES: tuple[Any, ...] = (typing.Union, getattr(types, "UnionType", typing.Union))


class _Bad(ValueError):
    """A value that does not convert; the message says what was expected."""


def convert(text: Any, annotation: Any, where: str) -> Any:
    """Convert the string ``text`` to ``annotation`` (a type, or a string naming one).

    ``where`` names the parameter in the error (``"'crf[iterations=x]': parameter
    'iterations'"``). Values that are not strings (profile and registered defaults) are
    returned unchanged.
    """
    if not isinstance(text, str):
        return text
    tp = _resolve(annotation) if isinstance(annotation, str) else annotation
    try:
        return _convert(text, tp)
    except _Bad as exc:
        raise ConfigError(f"{where}: cannot read '{text}' as {type_name(tp)}{exc}") from None


def _convert(text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is typing.Any or tp is object:
        return text
    if origin in _UNION_TYPES:
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args) and (text.strip().lower() in _NONE or (
                not text.strip() and str not in members)):
            return None
        for member in members:  # the first member that reads the text wins
            try:
                return _convert(text, member)
            except _Bad:
                continue
        raise _Bad("")
    if origin is typing.Literal:
        for choice in args:
            if isinstance(choice, str):
                if text == choice:
                    return choice
            elif isinstance(choice, bool):
                if text.strip().lower() in (_TRUE if choice else _FALSE):
                    return choice
            elif _same_number(text, choice):
                return choice
        shown = [str(c) for c in args]
        raise _Bad(f".{did_you_mean(text, shown)}")
    if origin in (tuple, list) or tp in (tuple, list):
        parts = [] if text.strip() == "" else [p.strip() for p in text.split(":")]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if args == ((),):  # tuple[()]
                args = ()
            if len(parts) != len(args):
                raise _Bad(f" ({len(args)} values separated by ':', got {len(parts)})")
            items = [_item(p, a) for p, a in zip(parts, args, strict=True)]
        else:
            item = args[0] if args else str
            items = [_item(p, item) for p in parts]
        return tuple(items) if (origin or tp) is tuple else items
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if text in (member.name, str(member.value)):
                return member
        raise _Bad(f".{did_you_mean(text, [m.name for m in tp])}")
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Bad(" (true or false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            raise _Bad("") from None
        if not value.is_integer():
            raise _Bad(" (a whole number)")
        return int(value)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise _Bad(" (a number)") from None
    if tp is str:
        return text
    if isinstance(tp, type) and issubclass(tp, Path):
        if not text.strip():
            raise _Bad(" (an empty path)")
        return tp(text).expanduser()
    return text  # an annotation we cannot read: hand the text to the plugin as it is


def _item(text: str, tp: Any) -> Any:
    try:
        return _convert(text, tp)
    except _Bad as exc:
        raise _Bad(f" (item '{text}' is not {type_name(tp)}{exc})") from None


def _same_number(text: str, choice: Any) -> bool:
    try:
        return type(choice)(text) == choice
    except (TypeError, ValueError):
        return False


def type_name(tp: Any) -> str:
    """A reader's name for an annotation: ``float or None``, ``tuple[int, int]``, ``one of
    'a', 'b'``."""
    if isinstance(tp, str):
        return tp
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNION_TYPES:
        members = [type_name(a) for a in args if a is not type(None)]
        if len(members) < len(args):
            members.append("None")
        return " or ".join(members)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.name) for m in tp)
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


_NAMESPACE: dict[str, Any] = {
    "tuple": tuple, "list": list, "int": int, "float": float, "str": str, "bool": bool,
    "None": None, "Path": Path, "pathlib": __import__("pathlib"), "typing": typing,
    "Optional": typing.Optional, "Union": typing.Union, "Literal": typing.Literal,
    "Any": typing.Any, "Tuple": typing.Tuple, "List": typing.List,  # noqa: UP006
}


def _resolve(annotation: str, namespace: dict[str, Any] | None = None) -> Any:
    """Evaluate a string annotation (our own or a plugin's code, not user input)."""
    try:
        return eval(annotation, {**_NAMESPACE, **(namespace or {})})
    except Exception:
        return str  # unknown names: the value reaches the plugin as text


def field_types(params_cls: type) -> dict[str, Any]:
    """Each field's annotation resolved to a type (string annotations included)."""
    try:
        hints = typing.get_type_hints(params_cls)
    except Exception:  # a name the module does not define: resolve field by field
        hints = {}
    out = {}
    for f in dataclasses.fields(params_cls):
        if f.name in hints:
            out[f.name] = hints[f.name]
        elif isinstance(f.type, str):
            out[f.name] = _resolve(f.type, _module_namespace(params_cls))
        else:
            out[f.name] = f.type
    return out


def _module_namespace(cls: type) -> dict[str, Any]:
    import sys

    namespace: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace.update(vars(module) if module is not None else {})
    return namespace


def build_params(params_cls: type, overrides: dict[str, Any], where: str) -> Any:
    """Instantiate ``params_cls`` with ``overrides``; unknown keys get a "did you mean" error."""
    if not dataclasses.is_dataclass(params_cls):
        raise TypeError(f"{where}: Params must be a dataclass")
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    types_ = field_types(params_cls) if any(isinstance(v, str) for v in overrides.values()) \
        else {}
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            choices = ", ".join(fields) or "(none)"
            raise ConfigError(f"{where}: unknown parameter '{key}'.{did_you_mean(key, fields)} "
                              f"Parameters: {choices}")
        kwargs[key] = convert(value, types_.get(key, fields[key].type),
                              f"{where}: parameter '{key}'")
    try:
        return params_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def params_dict(params: Any) -> dict[str, Any]:
    """Parameters as a JSON-friendly dict (tuples become lists, paths and enums strings)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(params).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    return value
