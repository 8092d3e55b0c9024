"""smoke-wsss-bench: a plugin-based benchmark of weakly supervised smoke segmentation.

The public API a plugin file may import (everything else in ``bench`` is internal): the names
of `_EXPORTS`, e.g.::

    from bench import register_method, CamSource, CamWrapper, Refiner, Segmenter
    from bench import RunContext, Sample, normalize_cam, window_starts
    from bench import ClassifierCam, TorchSegmenter    # shared torch building blocks (bench.nn)

Attributes resolve lazily so that ``import bench`` stays cheap (no torch): a name imports its
module when first used, and only the `bench.nn` names (and `DenseCRFLoss`) import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # registry and the stage interfaces
    "register_method": "bench.plugins",
    "METHODS": "bench.plugins",
    "CamSource": "bench.stages",
    "CamWrapper": "bench.stages",
    "Refiner": "bench.stages",
    "Segmenter": "bench.stages",
    "Plugin": "bench.stages",
    "RunContext": "bench.stages",
    "MultiSourceCam": "bench.multi_source",
    "split_sources": "bench.multi_source",
    "parse_pipeline": "bench.spec",
    "stage_params": "bench.pipeline",
    # data
    "Sample": "bench.sample",
    "SMOKE": "bench.sample",
    "BACKGROUND": "bench.sample",
    "IGNORE": "bench.sample",
    "register_loader": "bench.data.loaders",
    "DATASETS": "bench.data.config",
    # errors
    "BenchError": "bench.errors",
    "ConfigError": "bench.errors",
    "InputError": "bench.errors",
    "NotRunnableError": "bench.errors",
    "WeightsError": "bench.weights",
    # torch-free map helpers
    "window_starts": "bench.maps",
    "fuse_maps": "bench.maps",
    "normalize_cam": "bench.maps",
    "resize_image": "bench.maps",
    "resize_map": "bench.maps",
    "binarize": "bench.metrics",
    # dense CRF (torch-free)
    "dense_crf": "bench.crf",
    "bilateral_filter": "bench.crf",
    "CRF_BACKENDS": "bench.crf",
    "PYDENSECRF_HINT": "bench.crf",
    # weights
    "resolve_weights": "bench.weights",
    "PACKAGED_ENCODERS": "bench.weights",
    "packaged_state_dict": "bench.weights",
    "weights_origin": "bench.weights",
    "pipeline_weights": "bench.weights",
    "join_origins": "bench.weights",
    "read_state_dict": "bench.weights",
    "HubWeight": "bench.weight_cache",
    "hub_weight_file": "bench.weight_cache",
    # mask sets, merge strategies and the content-keyed mask cache (torch-free)
    "MaskSet": "bench.mask_set",
    "MaskCache": "bench.mask_cache",
    "MERGES": "bench.mask_merge",
    "register_merge": "bench.mask_merge",
    "merge_labels": "bench.mask_merge",
    "ignore_disagreement": "bench.mask_merge",
    # pixel pairs and the random walk of AffinityNet/IRN (torch-free)
    "pair_offsets": "bench.pixel_pairs",
    "pair_paths": "bench.pixel_pairs",
    "pair_labels": "bench.pixel_pairs",
    "path_affinities": "bench.random_walk",
    "random_walk": "bench.random_walk",
    "dense_random_walk": "bench.random_walk",
    "propagate": "bench.random_walk",
    # torch building blocks (bench.nn)
    "ClassifierCam": "bench.nn.classifier_cam",
    "TrainSettings": "bench.nn.train",
    "TimmNet": "bench.nn.timm_net",
    "create_net": "bench.nn.timm_net",
    "TorchSegmenter": "bench.nn.segmenter",
    "IMAGENET_MEAN": "bench.nn.segmenter",
    "IMAGENET_STD": "bench.nn.segmenter",
    "DenseCRFLoss": "bench.nn.crf_loss",
    "BoundarySettings": "bench.nn.boundary_net",
    "BoundaryNet": "bench.nn.boundary_net",
    "build_boundary_net": "bench.nn.boundary_net",
    "train_boundary_net": "bench.nn.boundary_net",
    "save_boundary_net": "bench.nn.boundary_net",
    "load_boundary_net": "bench.nn.boundary_net",
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
