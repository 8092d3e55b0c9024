"""Named subsets of a split: id lists (SmokeSeg's small, medium and large smoke) or rules.

A data set file declares them per split in ``[subsets.<split>]``; each entry is one subset::

    [subsets]
    missing = "error"          # a listed id that is no frame of its split: "error" or "ignore"

    [subsets.test]
    small = "SmokeSeg_ImageSets/Segmentation/test_small.txt"   # an id list file under the root
    picked = { ids = ["frame_a", "frame_b"] }                  # ids written in the file
    faint = { smoke_share = [0.0, 0.01] }                      # a rule over the labelled masks

- An id list names frames by frame id (one per line, VOC style: `read_id_list`).
  List files are read when the split loads, so a missing file or an id that is not a frame of
  the split fails before any work (``missing = "ignore"`` lets a file also serve samples of the
  data set). Ids excluded from the split by ``[exclude]`` are left out silently.
- ``smoke_share = [lo, hi]`` keeps the frames with smoke whose labelled smoke covers a share
  ``lo <= s < hi`` of their non-ignored pixels (``[0.0, 0.01]``: smoke under 1% of the frame).
  Frames without smoke belong to no share rule. Rules are read from the per-frame areas a record
  stores, so they apply to pixel-level scoring only.

Records carry each subset's metrics (`bench.subset_scores`), summed from the per-frame areas of
the scored split: nothing is rescored. ``all`` names the whole split and cannot be a subset name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError, InputError

#: the name tables use for the whole split
WHOLE_SPLIT = "all"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TILE_SUFFIX = re.compile(r"@\d+_\d+$")


@dataclass(frozen=True)
class SubsetRule:
    """One declared subset: exactly one of an id list file, inline ids or a smoke-share rule."""

    name: str
    list_file: str | None = None
    ids: tuple[str, ...] | None = None
    smoke_share: tuple[float, float] | None = None

    def describe(self) -> str:
        """What the subset is, for records: the list file, ``ids (n)`` or the share rule."""
        if self.list_file is not None:
            return self.list_file
        if self.ids is not None:
            return f"ids ({len(self.ids)})"
        assert self.smoke_share is not None
        lo, hi = self.smoke_share
        return f"smoke share in [{lo:g}, {hi:g})"


@dataclass(frozen=True)
class Subset:
    """A subset resolved for one loaded split: its frame ids, or its rule."""

    rule: SubsetRule
    ids: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return self.rule.name

    def members(self, image_ids: Sequence[str], areas: np.ndarray, level: str) -> np.ndarray | None:
        """Which scored rows belong to the subset (bool per row), or None where the subset does
        not apply (a smoke-share rule on image-level scores).

        ``image_ids`` are the scored units' ids (frame ids, or tile ids ``<frame>@<y>_<x>``
        when a data set scores tiles: those belong to their frame's subsets); ``areas`` their
        per-row areas, shape ``(N, 4, 2)`` (`bench.metrics.AREA_ROWS`).
        """
        if self.ids is not None:
            return np.array([_TILE_SUFFIX.sub("", i) in self.ids for i in image_ids], bool)
        if level != "pixel":
            return None
        assert self.rule.smoke_share is not None
        lo, hi = self.rule.smoke_share
        label = np.asarray(areas, np.float64)[:, 3, :]  # area_label per class
        valid = label.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(valid > 0, label[:, 1] / np.maximum(valid, 1), 0.0)
        return (label[:, 1] > 0) & (share >= lo) & (share < hi)


def read_id_list(path: Path, what: str = "id list") -> list[str]:
    """The ids of a VOC list file, in file order: the first word of every non-blank line.

    A missing or unreadable file, an empty list and an id listed twice are `InputError`s
    naming the file (and the line of the repeated id).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read {what} ({exc})") from None
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        first = words[0]
        if first in seen:
            raise InputError(path, f"line {number}: id '{first}' is listed twice (first on line "
                                   f"{seen[first]})")
        seen[first] = number
        ids.append(first)
    if not ids:
        raise InputError(path, f"{what} holds no ids")
    return ids


def parse_subsets(path: Path, raw: Any, split_names: Iterable[str]) -> tuple[
        dict[str, list[SubsetRule]], str]:
    """Validate a ``[subsets]`` table: (split -> its subsets in file order, ``missing``)."""
    if raw is None:
        return {}, "error"
    where = f"{path}: [subsets]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of [subsets.<split>] tables")
    table = dict(raw)
    missing = table.pop("missing", "error")
    if missing not in ("error", "ignore"):
        raise ConfigError(f"{where} missing must be \"error\" or \"ignore\", not {missing!r}")
    splits = list(split_names)
    out: dict[str, list[SubsetRule]] = {}
    for split, entries in table.items():
        if split not in splits:
            raise ConfigError(f"{where} names split '{split}', which the file does not have "
                              f"(splits: {', '.join(splits)})")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{where}: [subsets.{split}] must be a table of name = subset")
        out[split] = [_parse_rule(f"{path}: [subsets.{split}] {name}", name, value)
                      for name, value in entries.items()]
    return out, missing


def _parse_rule(where: str, name: str, value: Any) -> SubsetRule:
    if not _NAME.match(name) or name == WHOLE_SPLIT:
        raise ConfigError(f"{where}: a subset name is letters, digits, '_', '.' or '-' and not "
                          f"'{WHOLE_SPLIT}' (the whole split)")
    if isinstance(value, str):
        value = {"list": value}
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{where}: expected a list file (\"path/to/ids.txt\"), {{ ids = [...] "
                          "}, { list = \"...\" } or { smoke_share = [lo, hi] }")
    ((key, arg),) = value.items()
    if key == "list":
        if not isinstance(arg, str) or not arg:
            raise ConfigError(f"{where}: list must be a file path relative to the data root")
        return SubsetRule(name, list_file=arg)
    if key == "ids":
        if not isinstance(arg, list) or not arg or not all(isinstance(i, str) for i in arg):
            raise ConfigError(f"{where}: ids must be a non-empty list of frame ids (strings)")
        return SubsetRule(name, ids=tuple(dict.fromkeys(arg)))
    if key == "smoke_share":
        ok = (isinstance(arg, list) and len(arg) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg))
        if not ok or not 0.0 <= arg[0] < arg[1] <= 1.0 or any(map(math.isnan, arg)):
            raise ConfigError(f"{where}: smoke_share must be [lo, hi] with 0 <= lo < hi <= 1, "
                              f"got {arg!r}")
        return SubsetRule(name, smoke_share=(float(arg[0]), float(arg[1])))
    raise ConfigError(f"{where}: unknown subset kind '{key}' (list, ids or smoke_share)")


def resolve_subsets(rules: Sequence[SubsetRule], root: Path | None, split: str,
                    frame_ids: Iterable[str], excluded: Iterable[str] = (),
                    missing: str = "error", dataset_file: Path | None = None) -> list[Subset]:
    """The subsets of one loaded split: list files read, ids checked against its frames.

    ``frame_ids`` are the split's frames before ``--limit`` (after ``[exclude]``, whose ids
    ``excluded`` are dropped from every list). An id that is no frame of the split is a
    `ConfigError` naming the list (unless ``missing = "ignore"``).
    """
    frames = set(frame_ids)
    dropped = set(excluded)
    out = []
    for rule in rules:
        if rule.smoke_share is not None:
            out.append(Subset(rule))
            continue
        if rule.list_file is not None:
            if root is None:
                raise ConfigError(f"{dataset_file}: [subsets.{split}] {rule.name}: a list file "
                                  "needs a data root")
            source = str(root / rule.list_file)
            ids = read_id_list(root / rule.list_file, f"id list of subset '{rule.name}'")
        else:
            assert rule.ids is not None
            source, ids = f"{dataset_file}: [subsets.{split}] {rule.name}", list(rule.ids)
        absent = [i for i in ids if i not in frames and i not in dropped]
        if absent and missing != "ignore":
            raise ConfigError(
                f"{source}: {len(absent)} id(s) of subset '{rule.name}' are no frame of split "
                f"'{split}': {', '.join(repr(i) for i in absent[:3])}"
                f"{' ...' if len(absent) > 3 else ''}; if the data set file also serves samples "
                f"of the data set, add missing = \"ignore\" to [subsets] in {dataset_file}")
        out.append(Subset(rule, frozenset(i for i in ids if i in frames)))
    return out
