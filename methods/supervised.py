"""The supervised upper bound: the DeepLabV3+ segmenter trained on ground-truth masks."""

from __future__ import annotations

from typing import ClassVar

from bench import DeepLabV3PlusSegmenter, register_method


@register_method("supervised")
class Supervised(DeepLabV3PlusSegmenter):
    """DeepLabV3+ trained on the ground-truth masks of the training split: the upper bound.

    Same network, parameters and profiles as ``deeplabv3plus``; it needs no pseudo labels, so
    it runs alone (``--methods supervised``) on data sets whose training split has masks.
    """

    needs_pseudo_labels: ClassVar[bool] = False
    label = "Supervised (upper bound)"
    demo = "supervised"
