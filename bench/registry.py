"""A typed name → object registry with lazy entries, wildcard selection and "did you mean" errors.

Modelled on timm's and lm-eval's registries: names are unique (a duplicate is an error), unknown
names answer with the closest registered names and the full list, and ``fnmatch`` patterns select
several names at once (``vit*``). Entries may be *lazy*: a summary is known up front (read from a
plugin file without importing it) and the object is loaded only when first asked for, so listing
plugins never imports torch.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bench.errors import ConfigError, UnknownNameError

T = TypeVar("T")

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders the digit runs of a name as numbers: ``resnet50`` < ``resnet101``.

    Ties (``a01`` and ``a1``) are broken by the plain text, so the order is total and stable.
    """
    parts = _DIGITS.split(str(text))
    return (tuple((int(p), p) if i % 2 else p.casefold() for i, p in enumerate(parts)),
            str(text))


def natural_sorted(names: Iterable[str]) -> list[str]:
    """``names`` in natural order (see `natural_key`)."""
    return sorted(names, key=natural_key)


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """`` Did you mean 'a' or 'b'?`` for the choices close to ``word`` (``""`` if none is)."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


@dataclass
class Entry(Generic[T]):
    """What the registry knows about one name, before or after loading it."""

    name: str
    summary: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    obj: T | None = None
    loader: Callable[[], None] | None = None


class Registry(Generic[T]):
    """Maps unique names to objects of one kind (``what`` names the kind in messages)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[T]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, name: str, obj: T, *, summary: str = "", origin: str = "",
                 **meta: Any) -> T:
        """Register ``obj`` under ``name``; registering a name twice is an error.

        A lazy placeholder for the same name and origin is replaced by the real object (that is
        how a lazily discovered plugin file registers itself when imported).
        """
        old = self._entries.get(name)
        if old is not None:
            same_placeholder = old.obj is None and (not old.origin or not origin
                                                     or old.origin == origin)
            if not same_placeholder:
                where = f" (first registered from {old.origin})" if old.origin else ""
                raise ConfigError(f"duplicate {self.what} name '{name}'{where}")
            meta = {**old.meta, **meta}
            summary = summary or old.summary
            origin = origin or old.origin
        self._entries[name] = Entry(name, summary, origin, dict(meta), obj)
        return obj

    def register_lazy(self, name: str, loader: Callable[[], None], *, summary: str = "",
                      origin: str = "", **meta: Any) -> None:
        """Announce ``name`` without loading it; ``loader()`` must end up calling `register`."""
        old = self._entries.get(name)
        if old is not None:
            if old.origin == origin:
                return
            raise ConfigError(f"duplicate {self.what} name '{name}': defined in {old.origin} "
                              f"and in {origin}")
        self._entries[name] = Entry(name, summary, origin, dict(meta), None, loader)

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` (not loaded); unknown names raise `UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def get(self, name: str) -> T:
        """The object registered as ``name``, loading a lazy entry on first use."""
        entry = self.entry(name)
        if entry.obj is None and entry.loader is not None:
            loader, entry.loader = entry.loader, None
            loader()
            entry = self._entries[name]
            if entry.obj is None:
                raise ConfigError(f"{entry.origin} was imported but did not register "
                                  f"{self.what} '{name}'")
        assert entry.obj is not None
        return entry.obj

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names in natural order (``resnet50`` before ``resnet101``), optionally
        filtered by an fnmatch pattern."""
        names = natural_sorted(self._entries)
        return names if pattern is None else fnmatch.filter(names, pattern)

    def entries(self) -> list[Entry[T]]:
        """All entries, in the natural order of their names."""
        return [self._entries[n] for n in natural_sorted(self._entries)]

    def select(self, patterns: Iterable[str]) -> list[str]:
        """Names matching any pattern, in order of first match; a pattern matching nothing fails."""
        chosen: list[str] = []
        for pattern in patterns:
            matched = self.names(pattern) if _is_pattern(pattern) else [self.entry(pattern).name]
            if not matched:
                raise UnknownNameError(f"no {self.what} matches '{pattern}'; "
                                       f"choices: {', '.join(self.names())}")
            chosen.extend(n for n in matched if n not in chosen)
        return chosen

    def unknown_message(self, name: str) -> str:
        """A one-line message naming close matches and every choice."""
        hint = did_you_mean(name, self.names())
        return f"unknown {self.what} '{name}'.{hint} Choices: {', '.join(self.names())}"


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")
