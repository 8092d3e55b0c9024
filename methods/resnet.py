"""ResNet-50 / ResNet-101 classifier CAMs (classic CAM over the last stage, ``layer4``)."""

from __future__ import annotations

from bench import ClassifierCam, register_method


@register_method("resnet101", backbone="resnet101")
@register_method("resnet50", backbone="resnet50")
class ResNetCam(ClassifierCam):
    """ResNet classifier on image labels, classic CAM over the last stage (layer4).

    ``resnet50[layers=layer4.1:layer4]`` fuses the CAMs of two blocks; ``output_stride=16``
    doubles the CAM resolution. Quick profile: random init (offline), full: timm's ImageNet
    weights from the hub (``weights=PATH`` for a local file).
    """
