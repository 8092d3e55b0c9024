"""A classifier CAM on any timm backbone: ``classifier[backbone=convnext_tiny]``."""

from __future__ import annotations

from bench import ClassifierCam, register_method


@register_method("classifier", backbone="resnet18")
class AnyClassifierCam(ClassifierCam):
    """Classifier CAM on any timm backbone: classifier[backbone=NAME,weights=none|hub|PATH].

    CNNs with a pooled linear head get classic CAM; timm ViTs (``vit_*``, ``deit_*``) the
    patch-token CAM; other heads are applied to each position's features. Default: resnet18.
    """
