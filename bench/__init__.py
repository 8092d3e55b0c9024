"""smoke-wsss-bench: a plugin-based benchmark of weakly supervised smoke segmentation.

The public API a plugin file may import (everything else in ``bench`` is internal)::

    from bench import register_method, CamSource, CamWrapper, Refiner, Segmenter
    from bench import RunContext, Sample, normalize_cam

Attributes resolve lazily so that ``import bench`` stays cheap (no torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "register_method": "bench.plugins",
    "METHODS": "bench.plugins",
    "CamSource": "bench.stages",
    "CamWrapper": "bench.stages",
    "Refiner": "bench.stages",
    "Segmenter": "bench.stages",
    "Plugin": "bench.stages",
    "RunContext": "bench.stages",
    "normalize_cam": "bench.stages",
    "Sample": "bench.sample",
    "SMOKE": "bench.sample",
    "BACKGROUND": "bench.sample",
    "IGNORE": "bench.sample",
    "BenchError": "bench.errors",
    "ConfigError": "bench.errors",
    "InputError": "bench.errors",
    "register_loader": "bench.data.loaders",
    "DATASETS": "bench.data.config",
    "ClassifierCam": "bench.cam",
    "MultiSourceCam": "bench.cam",
    "ConsistencyCam": "bench.consistency",
    "fuse_maps": "bench.cam",
    "resize_image": "bench.cam",
    "resize_map": "bench.cam",
    "window_starts": "bench.cam",
    "split_sources": "bench.cam",
    "TorchSegmenter": "bench.segmenter",
    "DeepLabV3PlusSegmenter": "bench.segmenter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bench' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
