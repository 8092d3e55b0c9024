"""Any mmsegmentation model config as a segmenter (optional extra ``mmseg``).

The config defines the network (backbone, decode head); training and inference are the
harness's own (`bench.TorchSegmenter`): the same crops, partial cross-entropy with ignore 255,
optional DenseCRF loss, schedule, checkpoints and sliding-window inference as ``deeplabv3plus``,
so the backends differ only in the network. See docs/mmseg.md for installation and limits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench import ConfigError, TorchSegmenter, register_method

#: mmseg's DeepLabV3+ R-101-D8 (Pascal VOC aug, 512x512): the paper's network.
DEFAULT_CONFIG = "deeplabv3plus/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py"


@register_method("mmseg")
class MMSeg(TorchSegmenter):
    """An mmsegmentation model (DeepLabV3+ R-101-D8 by default) trained on pseudo labels.

    Needs ``pip install -e '.[mmseg]'`` (mmcv-lite, mmengine, mmsegmentation 1.2.2); ops that
    need mmcv's compiled extension are unavailable (docs/mmseg.md).
    """

    label = "mmseg"
    demo = "effnet+crf+mmseg"
    requires = ("mmseg:mmseg", "mmcv:mmseg", "mmengine:mmseg")

    @dataclass
    class Params(TorchSegmenter.Params):
        """mmseg model settings on top of the shared training settings.

        Attributes:
            config: an mmseg config file, absolute or relative to the configs shipped with the
                mmsegmentation package (``deeplabv3plus/...py``, ``pspnet/...py``, ...). Its
                ``model`` is built with 2 classes, ``SyncBN`` becomes ``BN`` and the auxiliary
                head is dropped (the harness's loss trains the decode head).
            checkpoint: optional weights to start from (an mmseg model-zoo ``.pth``); tensors
                whose shapes differ (the class layer) are skipped.
            backbone_pretrained: keep the config's pretrained backbone (``open-mmlab://...``,
                downloaded on first use); false: random initialisation.
            trust_checkpoint: allow unpickling checkpoints that hold more than tensors.
        """

        config: str = DEFAULT_CONFIG
        checkpoint: str = ""
        backbone_pretrained: bool = True
        trust_checkpoint: bool = False

    # mmseg's recipe for this config: SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9,
    # one learning rate for all layers, 512 crops with scale 0.5-2.0 (batch 8 instead of 16).
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"lr": 0.01, "head_lr_mult": 1.0, "batch_size": 8},
        "quick": {"config": "deeplabv3plus/deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py",
                  "backbone_pretrained": False, "crop_size": 128, "batch_size": 8,
                  "epochs": 2, "scale_min": 0.75, "scale_max": 1.5, "lr": 0.01,
                  "head_lr_mult": 1.0, "val_every": 2, "val_limit": 16},
    }

    def _config(self, pretrained: bool) -> Any:
        from bench import mmseg_compat

        try:
            mmseg_compat.import_models()
        except ImportError as exc:
            raise ConfigError(f"the mmseg segmenter needs the optional extra: {exc}") from None
        mmseg_compat.patch_checkpoint_loading(self.params.trust_checkpoint)
        import mmseg
        from mmengine.config import Config

        path = Path(self.params.config).expanduser()
        if not path.is_file():
            shipped = Path(mmseg.__file__).parent / ".mim" / "configs" / self.params.config
            if not shipped.is_file():
                raise ConfigError(f"mmseg config '{self.params.config}' not found (neither a "
                                  f"file nor under {shipped.parent.parent})")
            path = shipped
        cfg = Config.fromfile(str(path))
        model = cfg.model.to_dict()
        model.pop("data_preprocessor", None)  # the harness normalises the images itself
        if "auxiliary_head" in model:
            model["auxiliary_head"] = None
        _set_num_classes(model.get("decode_head"), self.num_classes)
        if not (pretrained and self.params.backbone_pretrained):
            model["pretrained"] = None
            model = _without_pretrained(model)
        cfg.model = _sync_bn_to_bn(model)
        return cfg

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        cfg = self._config(pretrained=False)
        pre = cfg.get("data_preprocessor") or cfg.model.get("data_preprocessor") or {}
        mean = pre.get("mean", [123.675, 116.28, 103.53])
        std = pre.get("std", [58.395, 57.12, 57.375])
        return tuple(m / 255 for m in mean), tuple(s / 255 for s in std)

    def build_model(self, pretrained: bool) -> Any:
        from torch import nn
        from torch.nn import functional as F

        from bench.mmseg_compat import quiet_mmengine

        cfg = self._config(pretrained)
        from mmengine.registry import DefaultScope
        from mmseg.registry import MODELS

        with warnings.catch_warnings(), DefaultScope.overwrite_default_scope("mmseg"):
            # about mmseg's own losses and 1-channel binary heads; the harness's loss is used
            for message in ("For binary segmentation", "``build_loss``", "Default ``avg_non"):
                warnings.filterwarnings("ignore", message=f"{message}.*")
            segmentor = MODELS.build(cfg.model.to_dict())
            with quiet_mmengine():
                segmentor.init_weights()
        if pretrained and self.params.checkpoint:
            self._load_checkpoint(segmentor, self.params.checkpoint)

        class Net(nn.Module):
            """Logits of the decode head, resized to the input (what the harness trains)."""

            def __init__(self, segmentor: nn.Module) -> None:
                super().__init__()
                self.segmentor = segmentor

            def forward(self, x: Any) -> Any:
                logits = self.segmentor._forward(x)  # tensor mode: decode head output
                if isinstance(logits, list | tuple):  # DANet, EncNet: the segmentation first
                    logits = logits[0]
                return F.interpolate(logits, size=x.shape[2:], mode="bilinear",
                                     align_corners=self.segmentor.align_corners)

        return Net(segmentor)

    def backbone(self, model: Any) -> Any:
        return model.segmentor.backbone

    def _load_checkpoint(self, segmentor: Any, path: str) -> None:
        from bench.mmseg_compat import safe_load

        state = safe_load(path, "cpu", self.params.trust_checkpoint)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        own = segmentor.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ConfigError(f"checkpoint {path} has no weights for config "
                              f"'{self.params.config}'")
        segmentor.load_state_dict(usable, strict=False)


def _without_pretrained(cfg: Any) -> Any:
    """Drop every ``init_cfg`` of type ``Pretrained`` (backbones, nested backbone configs)."""
    if isinstance(cfg, dict):
        return {k: None if k == "init_cfg" and isinstance(v, dict)
                and v.get("type") == "Pretrained" else _without_pretrained(v)
                for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return type(cfg)(_without_pretrained(v) for v in cfg)
    return cfg


def _set_num_classes(cfg: Any, num_classes: int) -> None:
    """Set ``num_classes`` wherever a (nested) head config has it (K-Net's stage heads too)."""
    if isinstance(cfg, dict):
        if "num_classes" in cfg:
            cfg["num_classes"] = num_classes
        for value in cfg.values():
            _set_num_classes(value, num_classes)
    elif isinstance(cfg, list | tuple):
        for value in cfg:
            _set_num_classes(value, num_classes)


def _sync_bn_to_bn(cfg: Any) -> Any:
    """Replace ``SyncBN`` norm layers (multi-GPU only) with ``BN`` throughout a config dict."""
    if isinstance(cfg, dict):
        out = {k: _sync_bn_to_bn(v) for k, v in cfg.items()}
        if out.get("type") == "SyncBN":
            out["type"] = "BN"
        return out
    if isinstance(cfg, list | tuple):
        return type(cfg)(_sync_bn_to_bn(v) for v in cfg)
    return cfg
