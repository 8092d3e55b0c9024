"""Plugin parameters: a nested dataclass per plugin, filled from spec strings and profiles.

A plugin declares ``class Params`` (a dataclass); a spec such as ``crf[iterations=5,sigma_xy=40]``
overrides fields by name. Values arrive as strings and are converted by the field's type:
``int``, ``float``, ``bool`` (true/false/1/0/yes/no), ``str``, and ``tuple[...]`` / ``list[...]``
written with ``:`` between items (``scales=0.5:1:1.5``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from bench.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def convert(text: str, annotation: Any, where: str) -> Any:
    """Convert the string ``text`` to ``annotation`` (a type or a string naming one)."""
    if not isinstance(text, str):
        return text
    tp = _resolve(annotation)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return convert(text, args[0], where)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        item = args[0] if args else str
        items = [convert(part, item, where) for part in text.split(":") if part != ""]
        return tuple(items) if origin is tuple else items
    try:
        if tp is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if tp in (int, float, str):
            return tp(text)
    except ValueError:
        raise ConfigError(f"{where}: cannot read '{text}' as {tp.__name__}") from None
    return text


def _resolve(annotation: Any) -> Any:
    if isinstance(annotation, str):
        namespace = {"tuple": tuple, "list": list, "int": int, "float": float, "str": str,
                     "bool": bool, "None": type(None), "typing": typing}
        try:
            return eval(annotation, namespace)  # annotations are our own code, not user input
        except Exception:
            return str
    return annotation


def build_params(params_cls: type, overrides: dict[str, Any], where: str) -> Any:
    """Instantiate ``params_cls`` with ``overrides``; unknown keys get a "did you mean" error."""
    if not dataclasses.is_dataclass(params_cls):
        raise TypeError(f"{where}: Params must be a dataclass")
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            choices = ", ".join(fields) or "(none)"
            raise ConfigError(f"{where}: unknown parameter '{key}'.{hint} Parameters: {choices}")
        kwargs[key] = convert(value, fields[key].type, f"{where} parameter '{key}'")
    try:
        return params_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def params_dict(params: Any) -> dict[str, Any]:
    """Parameters as a JSON-friendly dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(params).items()}
