"""DeepLabV3+ segmenter trained on pseudo labels (stage 3 of a weakly supervised pipeline)."""

from __future__ import annotations

from bench import DeepLabV3PlusSegmenter, register_method


@register_method("deeplabv3plus")
class DeepLabV3Plus(DeepLabV3PlusSegmenter):
    """DeepLabV3+ (smp, timm encoder) trained on the pipeline's pseudo labels; optional CRF loss.

    Pseudo labels come from the stage before it (soft maps thresholded at the threshold chosen
    on the validation split); 255 is ignored by the partial cross-entropy. ``crf_weight=2e-9``
    adds the DenseCRF loss of Tang et al. (ECCV 2018). Quick profile: EfficientNet-Lite0 with
    packaged ImageNet weights, 128-px crops, 4 epochs of AdamW on CPU; full profile: ResNet-101,
    512-px crops, 60 epochs of SGD (parameters in `bench.segmenter.DeepLabV3PlusSegmenter`).
    """

    label = "DeepLabV3+"
    demo = "effnet+crf+deeplabv3plus"
