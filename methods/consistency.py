"""Cross-architecture consistency: ViT student aligned with a ResNet teacher (thesis: 47.37)."""

from __future__ import annotations

from typing import Any, ClassVar

from bench import ClassifierCam, ConsistencyCam, register_method


@register_method("consistency")
class CrossArchitectureCam(ConsistencyCam):
    """ViT-S student trained on labels and on agreement with a ResNet-50 teacher; student CAM.

    consistency[metric=cosine|l1|l2,level=global|spatial|channel,
    paradigm=teacher_student|co_training,lam=0.3..1.5,teacher=resnet50].
    """

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {**ClassifierCam.profiles["quick"], "lr": 5e-4},
    }
