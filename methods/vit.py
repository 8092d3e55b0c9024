"""ViT-S/16 classifier CAM: patch tokens mapped back to their grid."""

from __future__ import annotations

from typing import Any, ClassVar

from bench import ClassifierCam, register_method


@register_method("vit_small_patch16_224", backbone="vit_small_patch16_224")
class ViTCam(ClassifierCam):
    """ViT-S/16 classifier, patch-token CAM: sharp edges, prone to chimneys and steam.

    The classifier averages the patch tokens (no class token head), so the CAM of the final
    tokens is exact; ``layers=blocks.9:blocks.11`` fuses CAMs of several blocks. The token
    handling is `bench.TimmNet`'s, shared with every timm ViT backbone
    (``classifier[backbone=deit_small_patch16_224]``, the ``consistency`` student).
    """

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {**ClassifierCam.profiles["quick"], "lr": 5e-4},
    }
