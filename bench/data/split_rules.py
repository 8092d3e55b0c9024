"""Rules that assign frames to splits: by camera (or view), by time, by hash, or a carved range.

Loaders whose data come as one pool (a COCO export, a video metadata file, a folder per label)
use these to cut that pool into ``train`` / ``val`` / ``test`` deterministically:

- `SplitRule`: ``split_by = "camera"`` (``test_cameras`` / ``val_cameras``: names or fnmatch
  patterns such as ``"kooks_*"``), ``"time"``
  (``test_from`` / ``val_from``: frames at or after the instant), or ``"hash"``
  (``test_fraction`` of the groups by a SHA-1 of the group key). When the dataset file declares a
  ``val`` split but the rule names no validation cameras or time, validation is carved from what
  is left for training by a hash of the frame's *group* (camera and day), so near-identical
  frames of one camera and day never straddle train and val.
- `Carve`: a split given as a table ``{ folder = ".", range = [0.6, 0.8] }`` keeps the frames of
  ``folder`` whose position falls in the half-open range; positions come from a SHA-1 of the
  frame id, ranked within each label when ``stratify`` is true (the default), so every split
  gets its share of smoke and no-smoke frames.

Times are compared as wall-clock values: a time-zone offset written in a file name or a dataset
file is ignored (IJmond and RISE name frames in local camera time).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from bench.data.config import SPLITS, DatasetConfig
from bench.data.frames import Frame
from bench.data.hashing import hash_unit
from bench.errors import ConfigError

_TIME = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T _](?P<h>\d{2})[-:_.]?(?P<mi>\d{2})(?:[-:_.]?(?P<s>\d{2}))?)?")


def parse_time(value: Any) -> datetime | None:
    """A naive wall-clock datetime from a TOML datetime/date or an ISO-like string.

    Accepts ``2024-03-05``, ``2024-03-05T10:15:00``, ``2024-03-05T10-15-00+01-00`` (time fields
    separated by ``:``, ``-``, ``_`` or ``.``, as file names write them) and returns None when
    nothing date-like is found. Fractions of a second and offsets are ignored.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime.combine(value, time())
    if not isinstance(value, str):
        return None
    m = _TIME.search(value)
    if not m:
        return None
    try:
        return datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0),
                        int(m["mi"] or 0), int(m["s"] or 0))
    except ValueError:
        return None


def declared_rule_splits(config: DatasetConfig) -> list[str]:
    """The splits of a rule-split data set; anything but train/val/test is a `ConfigError`."""
    names = [k for k in config.splits if k != "val_fraction"]
    odd = [n for n in names if n not in SPLITS]
    if odd:
        raise ConfigError(f"{config.path}: splits {odd} cannot be assigned by a rule; use "
                          f"{', '.join(SPLITS)}")
    return names


@dataclass
class SplitRule:
    """How a pooled data set is cut into splits (see the module docstring)."""

    by: str
    declared: list[str]
    test_groups: set[str] = field(default_factory=set)
    val_groups: set[str] = field(default_factory=set)
    test_from: datetime | None = None
    val_from: datetime | None = None
    test_fraction: float = 0.0
    val_fraction: float = 0.15

    @classmethod
    def from_options(cls, config: DatasetConfig, group_word: str = "cameras",
                     by_names: Sequence[str] = ("camera", "time", "hash")) -> SplitRule:
        """Read ``split_by`` and its keys from the loader's table of ``config``.

        ``group_word`` names the group keys (``test_cameras`` for IJmond, ``test_views`` for
        RISE); ``by_names`` are the accepted ``split_by`` values, the first meaning "by group"
        and the second "by time".
        """
        opts = config.options
        where = f"{config.path}: [{config.loader}]"
        by = str(opts.get("split_by", ""))
        by_group, by_time = by_names[0], by_names[1]
        if by not in by_names:
            raise ConfigError(f"{where} split_by must be one of {', '.join(by_names)}, not "
                              f"'{by}'")
        declared = declared_rule_splits(config)
        rule = cls(by=by, declared=declared, val_fraction=config.val_fraction)

        def group_list(key: str) -> set[str]:
            value = opts.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise ConfigError(f"{where} {key} must be a list of names")
            return {str(v) for v in value}

        def instant(key: str) -> datetime | None:
            if key not in opts:
                return None
            parsed = parse_time(opts[key])
            if parsed is None:
                raise ConfigError(f"{where} {key} = {opts[key]!r} is not a date or time "
                                  "(e.g. 2024-03-01 or 2024-03-01T12:00:00)")
            return parsed

        if by == by_group:
            rule.test_groups = group_list(f"test_{group_word}")
            rule.val_groups = group_list(f"val_{group_word}")
            if "test" in declared and not rule.test_groups:
                raise ConfigError(f"{where} split_by = '{by}' needs test_{group_word}")
            both = rule.test_groups & rule.val_groups
            if both:
                raise ConfigError(f"{where} {sorted(both)} are in both test_{group_word} and "
                                  f"val_{group_word}")
            if "val" not in declared and rule.val_groups:
                raise ConfigError(f"{where} val_{group_word} is set but no 'val' split is "
                                  "declared")
        elif by == by_time:
            rule.test_from = instant("test_from")
            rule.val_from = instant("val_from")
            if "test" in declared and rule.test_from is None:
                raise ConfigError(f"{where} split_by = '{by}' needs test_from (frames at or "
                                  "after it are test)")
            if rule.val_from and rule.test_from and rule.val_from > rule.test_from:
                raise ConfigError(f"{where} val_from must not be after test_from")
        else:
            rule.test_fraction = float(opts.get("test_fraction", 0.2))
            if "test" in declared and not 0.0 < rule.test_fraction < 1.0:
                raise ConfigError(f"{where} test_fraction must be in (0, 1)")
        return rule

    @property
    def explicit_val(self) -> bool:
        return bool(self.val_groups) or self.val_from is not None

    def assign(self, group: str | None, when: datetime | None, hash_key: str) -> str:
        """The split of one frame (``train``, ``val`` or ``test``; never an undeclared one).

        Args:
            group: its camera/view key (needed when splitting by camera).
            when: its time (needed when splitting by time).
            hash_key: the key hashed for ``hash`` splits and the validation carve-out (frames
                sharing it always land together).
        """
        out = "train"
        if self.by == "camera":
            if _matches(group, self.test_groups):
                out = "test"
            elif _matches(group, self.val_groups):
                out = "val"
        elif self.by == "time":
            assert when is not None
            if self.test_from is not None and when >= self.test_from:
                out = "test"
            elif self.val_from is not None and when >= self.val_from:
                out = "val"
        elif hash_unit(hash_key, "test") < self.test_fraction:
            out = "test"
        if (out == "train" and "val" in self.declared and not self.explicit_val
                and hash_unit(hash_key, "val") < self.val_fraction):
            out = "val"
        return out if out in self.declared else "train"

    def describe(self) -> dict[str, Any]:
        """The rule as plain values (for error messages and records)."""
        return {k: (sorted(v) if isinstance(v, set) else v.isoformat()
                    if isinstance(v, datetime) else v)
                for k, v in self.__dict__.items()}


def _matches(group: str | None, patterns: set[str]) -> bool:
    """Whether a camera/view key matches one of the (fnmatch) patterns."""
    return group is not None and any(fnmatch.fnmatchcase(group, p) for p in patterns)


@dataclass
class Carve:
    """Keep the frames whose hash position lies in ``[low, high)`` (see the module docstring)."""

    low: float
    high: float
    stratify: bool = True
    salt: str = "carve"

    def apply(self, frames: list[Frame]) -> list[Frame]:
        """The frames of ``frames`` inside the range, in their original order."""
        groups: dict[Any, list[Frame]] = {}
        for f in frames:
            groups.setdefault(f.label if self.stratify else None, []).append(f)
        keep: set[int] = set()
        for members in groups.values():
            if self.stratify:
                ranked = sorted(members, key=lambda f: (hash_unit(f.id, self.salt), f.id))
                n = len(ranked)
                positions = {id(f): (i + 0.5) / n for i, f in enumerate(ranked)}
            else:
                positions = {id(f): hash_unit(f.id, self.salt) for f in members}
            keep.update(k for k, p in positions.items() if self.low <= p < self.high)
        return [f for f in frames if id(f) in keep]


def parse_carve(config: DatasetConfig, split: str, spec: dict[str, Any]) -> tuple[str, Carve]:
    """Read a split table ``{ folder = ".", range = [lo, hi], stratify = true }``."""
    where = f"{config.path}: splits.{split}"
    folder = spec.get("folder", ".")
    bounds = spec.get("range")
    unknown = set(spec) - {"folder", "range", "stratify"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)} (folder, range, "
                          "stratify)")
    if (not isinstance(folder, str) or not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) for b in bounds)
            or not 0.0 <= bounds[0] < bounds[1] <= 1.0):
        raise ConfigError(f"{where} must be {{ folder = \"...\", range = [low, high] }} with "
                          "0 <= low < high <= 1")
    high = float(bounds[1])
    # the top split includes position 1.0 exactly (only reachable through rounding)
    return folder, Carve(float(bounds[0]), high if high < 1.0 else 1.0 + 1e-12,
                         bool(spec.get("stratify", True)))
