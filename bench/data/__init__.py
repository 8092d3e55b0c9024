"""Data sets: declarative TOML files, loader kinds, tiling, splits and image-label derivation."""

from bench.data import coco, rise, voc  # noqa: F401  (registers the coco, rise, voc kinds)
from bench.data.config import DATASETS, DatasetConfig, discover_datasets, resolve_root
from bench.data.loaders import LOADERS, register_loader
from bench.data.splits import SplitData, load_splits

__all__ = ["DATASETS", "LOADERS", "DatasetConfig", "SplitData", "discover_datasets",
           "load_splits", "register_loader", "resolve_root"]
