"""Dataset files: one TOML file per data set, found in ``datasets/`` and ``--include`` folders.

Schema (every key but ``name`` and ``loader`` is optional; see ``datasets/README.md``)::

    name = "smoke5k"
    description = "first line is shown by `bench list`"
    loader = "folder_pairs"          # a loader kind registered in bench.data.loaders
    root = "data/SMOKE5K"            # default root, relative to the current folder
    root_env = "SMOKE5K_ROOT"        # environment variable overriding the root
    [splits]                         # split name -> what the loader needs to find it
    train = "train"
    test = "test"
    val_fraction = 0.15              # carved from train (by a hash of the frame id) if no val
    [masks]  encoding = "binary255"  # binary255 {0,255}, binary01 {0,1}, ... (masks.py)
    [tiles]  size = 512              # frames larger than this are cut into tiles, not resized
             score = "frame"         # "frame": stitch tiles, count each pixel once; "tile"
    [image_labels] crop = 0, smoke_min_fraction = 0.01   # derive image labels from masks
    [exclude]  train = ["frame id", ...]  # frames left out of a split (before val, limit, tiles)
               missing = "error"          # an id no frame has: "error" or "ignore" (subsets)
    [subsets.test] small = "lists/small.txt"  # named subsets of a split (bench.data.subsets)
    [<loader>] ...                   # options of the loader kind
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.subsets import SubsetRule, parse_subsets
from bench.errors import ConfigError
from bench.plugins import builtin_dir, include_dirs
from bench.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPLITS = ("train", "val", "test")
"""The split names the harness knows: ``--split`` choices, and the splits a rule can assign."""


@dataclass
class DatasetConfig:
    """A parsed dataset file."""

    name: str
    loader: str
    description: str = ""
    root: str | None = None
    root_env: str | None = None
    splits: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.15
    masks: dict[str, Any] = field(default_factory=dict)
    tiles: dict[str, Any] = field(default_factory=dict)
    image_labels: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: ``[exclude]``: split -> frame ids left out of it (``bench.data.splits.apply_exclusions``)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    #: ``[exclude] missing``: an excluded id that matches no frame is an "error" or "ignore"d
    exclude_missing: str = "error"
    #: ``[subsets.<split>]``: split -> its named subsets (`bench.data.subsets`)
    subsets: dict[str, list[SubsetRule]] = field(default_factory=dict)
    #: ``[subsets] missing``: a listed id that is no frame of its split: "error" or "ignore"
    subsets_missing: str = "error"
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def tile_size(self) -> int:
        return int(self.tiles.get("size", 0))

    @property
    def score_per_tile(self) -> bool:
        """``[tiles] score = "tile"``: score every tile as an image (a paper that scores crops).

        Off by default: tile maps are stitched back into frames and each pixel counts once.
        """
        return self.tiles.get("score", "frame") == "tile"

    @property
    def split_names(self) -> list[str]:
        names = [k for k in self.splits if k != "val_fraction"]
        if "val" not in names and "train" in names:
            names.append("val")
        return names


DATASETS: Registry[DatasetConfig] = Registry("dataset")

_KNOWN_KEYS = {"name", "loader", "description", "root", "root_env", "splits", "masks", "tiles",
               "image_labels", "citation", "license", "exclude", "subsets"}


def parse_dataset_file(path: Path) -> DatasetConfig:
    """Read and validate one dataset TOML file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read dataset file: {exc}") from None
    for key in ("name", "loader"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"{path}: dataset file needs a string '{key}'")
    loader = raw["loader"]
    splits = dict(raw.get("splits", {}))
    val_fraction = float(splits.pop("val_fraction", 0.15))
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"{path}: splits.val_fraction must be in (0, 1), got {val_fraction}")
    tiles = dict(raw.get("tiles", {}))
    if set(tiles) - {"size", "score"}:
        raise ConfigError(f"{path}: [tiles] unknown keys {sorted(set(tiles) - {'size', 'score'})}"
                          " (known: size, score)")
    if tiles.get("score", "frame") not in ("frame", "tile"):
        raise ConfigError(f"{path}: [tiles] score must be \"frame\" or \"tile\", not "
                          f"{tiles['score']!r}")
    exclude, missing = parse_exclude(path, raw.get("exclude"), splits)
    unknown = set(raw) - _KNOWN_KEYS - {loader}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (loader options go in "
                          f"a [{loader}] table)")
    config = DatasetConfig(
        name=raw["name"], loader=loader, description=str(raw.get("description", "")),
        root=raw.get("root"), root_env=raw.get("root_env"), splits=splits,
        val_fraction=val_fraction, masks=dict(raw.get("masks", {})),
        tiles=dict(raw.get("tiles", {})), image_labels=dict(raw.get("image_labels", {})),
        options=dict(raw.get(loader, {})), exclude=exclude, exclude_missing=missing,
        path=path, raw=raw)
    config.subsets, config.subsets_missing = parse_subsets(path, raw.get("subsets"),
                                                           config.split_names)
    return config


def parse_exclude(path: Path, raw: Any,
                  splits: dict[str, Any]) -> tuple[dict[str, list[str]], str]:
    """Validate an ``[exclude]`` table: (split -> frame ids, what a missing id is)."""
    if raw is None:
        return {}, "error"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [exclude] must be a table of split = [frame ids]")
    table = dict(raw)
    missing = table.pop("missing", "error")
    if missing not in ("error", "ignore"):
        raise ConfigError(f"{path}: [exclude] missing must be \"error\" or \"ignore\", not "
                          f"{missing!r}")
    declared = [s for s in splits if isinstance(s, str)]
    out = {}
    for split, ids in table.items():
        if split not in declared:
            hint = " (val is carved from train: exclude from train)" if split == "val" else ""
            raise ConfigError(f"{path}: [exclude] names split '{split}', which [splits] does "
                              f"not declare (splits: {', '.join(declared)}){hint}")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ConfigError(f"{path}: [exclude] {split} must be a list of frame ids (strings)")
        out[split] = list(dict.fromkeys(ids))
    return out, missing


_scanned: set[Path] = set()


def discover_datasets(include: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Register every dataset file of the built-in ``datasets/`` folder and include folders."""
    for folder in [builtin_dir("datasets"), *include_dirs(include)]:
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.resolve() in _scanned:
                continue
            config = parse_dataset_file(path)
            first = config.description.strip().splitlines()[0] if config.description else ""
            DATASETS.register(config.name, config, summary=first, origin=str(path))
            _scanned.add(path.resolve())


def check_options(config: DatasetConfig, known: Iterable[str],
                  choices: dict[str, Iterable[str]]) -> None:
    """Reject unknown keys of a dataset file's loader table and values outside their choices."""
    where = f"{config.path}: [{config.loader}]"
    known = set(known)
    unknown = set(config.options) - known
    if unknown:
        raise ConfigError(f"{where} unknown keys {sorted(unknown)} (known: "
                          f"{', '.join(sorted(known))})")
    for key, allowed in choices.items():
        allowed = tuple(allowed)
        if key in config.options and config.options[key] not in allowed:
            raise ConfigError(f"{where} {key} must be one of {', '.join(allowed)}, not "
                              f"{config.options[key]!r}")


def resolve_root(config: DatasetConfig, overrides: dict[str, str]) -> Path | None:
    """The data root: ``--data-root NAME=PATH`` > the ``root_env`` variable > the file's root.

    Returns None for data sets that need no root (synthetic). A root that does not exist is a
    `ConfigError` that says which flag or variable to set.
    """
    if config.loader == "synthetic":
        return None
    how = f"--data-root {config.name}=PATH"
    if config.root_env:
        how += f" or set {config.root_env}"
    if config.name in overrides:
        root, source = overrides[config.name], f"--data-root {config.name}"
    elif config.root_env and os.environ.get(config.root_env):
        root, source = os.environ[config.root_env], f"${config.root_env}"
    elif config.root:
        root, source = config.root, f"{config.path}"
    else:
        raise ConfigError(f"data set '{config.name}' has no root: use {how}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data set '{config.name}': root {path} (from {source}) is not a "
                          f"folder; use {how}")
    return path.resolve()
