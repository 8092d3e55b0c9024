"""Any mmsegmentation model config as a segmenter (optional extra ``mmseg``).

The config defines the network (backbone, decode head); training and inference are the
harness's own (`bench.TorchSegmenter`): the same crops, partial cross-entropy with ignore 255,
optional DenseCRF loss, schedule, checkpoints and sliding-window inference as ``deeplabv3plus``,
so the backends differ only in the network. See docs/mmseg.md for installation and limits.

Running mmsegmentation 1.2.2 on ``mmcv-lite`` and current torch (no compiled mmcv ops) needs
two workarounds, the first half of this file:

1. **mmcv.** mmsegmentation 1.2.2 requires ``mmcv>=2.0.0rc4,<2.2.0``. The full mmcv 2.1 has no
   wheels for current torch and building it from source needs a CUDA toolchain, but
   ``mmcv-lite`` 2.1.0 (pure Python, same code without the compiled ``mmcv._ext``) installs
   anywhere. What breaks is ``import mmcv.ops``: its ``__init__`` loads compiled kernels, and
   mmseg imports two ops at start-up, ``point_sample`` (``mmseg.models.utils``,
   ``mmseg.utils.mask_classification``) and ``sigmoid_focal_loss``
   (``mmseg.models.losses.focal_loss``). `install` registers a small pure-torch ``mmcv.ops`` in
   ``sys.modules`` with those two functions (same signatures and results as mmcv's) when the
   compiled extension is missing, and nothing when a full mmcv is installed. Every other op
   (``CrissCrossAttention``, ``PSAMask``, deformable convolutions, ...) raises
   ``ModuleNotFoundError`` naming the op; mmseg already catches that for the heads that use
   them, so only configs built on those heads (CCNet, PSANet, Mask2Former, ...) cannot run.
2. **Checkpoints.** Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``; mmengine
   0.10 calls it without the argument, so any OpenMMLab checkpoint whose ``meta`` holds
   non-tensor objects (``HistoryBuffer``, numpy scalars, ...) fails to unpickle, with a
   confusing error. `safe_load` loads tensors-only first and unpickles arbitrary objects only
   when the caller trusts the file (``trust=True``), raising a clear error otherwise;
   `patch_checkpoint_loading` routes mmengine's local-file and http(s) checkpoint loaders
   (used by backbone ``init_cfg=dict(type='Pretrained', ...)``, ``open-mmlab://`` names and
   ``load_checkpoint``) through it.

**Hub weights.** A config's pretrained backbone (``model.pretrained``, ``init_cfg`` of type
``Pretrained``: ``open-mmlab://resnet101_v1c`` for the default DeepLabV3+ R-101-D8, an http(s)
URL for SegFormer, Swin, ...) and a URL ``checkpoint=`` are downloads. The plugin declares them
(`MMSeg.hub_weights`, each as the URL mmengine would fetch) so that ``bench fetch-weights``
stores them in the weights cache (``$BENCH_WEIGHTS``), and the patched http loader reads them
from there (`bench.hub_weight_file`: the cache, else a download into the cache when online,
else an error naming the ``fetch-weights`` command), not from torch's hub cache.

Nothing here imports mmcv, mmengine or mmseg until a function is called.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench import (
    ConfigError,
    HubWeight,
    TorchSegmenter,
    WeightsError,
    hub_weight_file,
    register_method,
    weights_origin,
)

#: mmseg 1.2.2's accepted mmcv range (``mmseg/__init__.py``).
MMCV_RANGE = ("2.0.0rc4", "2.2.0")
INSTALL_HINT = ("pip install 'mmcv-lite>=2.0.0rc4,<2.2.0' mmengine 'mmsegmentation==1.2.2' "
                "ftfy regex  (or: pip install -e '.[mmseg]')")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded safely (it holds more than tensors and is not trusted)."""


# --------------------------------------------------------------------------- pure-torch ops
def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs: Any) -> torch.Tensor:
    """``mmcv.ops.point_sample``: `F.grid_sample` at points given in ``[0, 1] x [0, 1]``.

    Args:
        input: feature map ``(N, C, H, W)``.
        points: normalised ``(x, y)`` coordinates ``(N, P, 2)`` or ``(N, Hg, Wg, 2)``.
        align_corners: as in `F.grid_sample`.
        **kwargs: passed to `F.grid_sample` (``mode``, ``padding_mode``).

    Returns:
        ``(N, C, P)`` or ``(N, C, Hg, Wg)`` sampled features.
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25, weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """``mmcv.ops.sigmoid_focal_loss``: per-class sigmoid focal loss with integer targets.

    Args:
        input: logits ``(N, C)``.
        target: class indices ``(N,)``; a value outside ``0..C-1`` is negative for every class
            (mmcv's kernel compares ``target == c`` per class).
        gamma, alpha: focal-loss parameters (Lin et al., ICCV 2017).
        weight: optional per-sample weight ``(N,)``.
        reduction: ``none`` (``(N, C)``), ``sum``, or ``mean`` (sum divided by ``N``, as mmcv).
    """
    num_classes = input.size(1)
    classes = torch.arange(num_classes, device=input.device)
    one_hot = (target.long().unsqueeze(1) == classes).to(input.dtype)
    prob = input.sigmoid()
    pt = (1 - prob) * one_hot + prob * (1 - one_hot)
    focal = (alpha * one_hot + (1 - alpha) * (1 - one_hot)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(input, one_hot, reduction="none") * focal
    if weight is not None:
        loss = loss * weight.view(-1, 1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / input.size(0)
    raise ValueError(f"reduction must be none, mean or sum, not {reduction!r}")


def _missing_op(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise ModuleNotFoundError(
        f"mmcv.ops.{name} needs mmcv's compiled extension, which mmcv-lite does not have; "
        "the mmseg method provides only point_sample and sigmoid_focal_loss",
        name=f"mmcv.ops.{name}")


# --------------------------------------------------------------------------- installation
def mmcv_has_compiled_ops() -> bool:
    """True when a full mmcv (with ``mmcv._ext``) is installed."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install() -> bool:
    """Make ``import mmseg.models`` work on mmcv-lite; returns True if the shim was installed.

    Idempotent. Does nothing when mmcv's compiled ops exist. Raises ImportError with the
    install command when mmcv, mmengine or mmseg is missing or mmcv is outside mmseg's range.
    """
    for module in ("mmcv", "mmengine", "mmseg"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"the mmseg backend needs {module}: {INSTALL_HINT}")
    import mmcv
    from mmengine.utils import digit_version  # what mmseg's own version check uses

    version = digit_version(mmcv.__version__)
    if not digit_version(MMCV_RANGE[0]) <= version < digit_version(MMCV_RANGE[1]):
        raise ImportError(f"mmsegmentation 1.2.2 needs mmcv >={MMCV_RANGE[0]},<{MMCV_RANGE[1]}; "
                          f"installed: mmcv {mmcv.__version__}. {INSTALL_HINT}")
    existing = sys.modules.get("mmcv.ops")
    if existing is not None and getattr(existing, "__bench_shim__", False):
        return True
    if mmcv_has_compiled_ops():
        return False
    ops = types.ModuleType("mmcv.ops", "Pure-torch stand-ins for mmcv.ops (methods/mmseg.py)")
    ops.__bench_shim__ = True  # type: ignore[attr-defined]
    ops.__file__ = __file__
    ops.point_sample = point_sample  # type: ignore[attr-defined]
    ops.sigmoid_focal_loss = sigmoid_focal_loss  # type: ignore[attr-defined]
    ops.__getattr__ = _missing_op  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops  # type: ignore[attr-defined]
    return True


def import_models() -> Any:
    """`install`, then import and return ``mmseg.models`` with all its modules registered.

    mmcv-lite's warning that ``MultiScaleDeformableAttention`` is unavailable is silenced (the
    docstring above says which ops are missing).
    """
    install()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        import mmseg.models
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
    return mmseg.models


@contextmanager
def quiet_mmengine(level: int = logging.WARNING) -> Iterator[None]:
    """Raise mmengine's current logger to ``level`` (``init_weights`` logs every tensor)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def available() -> tuple[bool, str]:
    """(True, "") when mmseg's models import (after `install`), else (False, the reason)."""
    try:
        import_models()
    except Exception as exc:  # the reason is reported, not raised
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


# --------------------------------------------------------------------------- checkpoints
def safe_load(source: Any, map_location: Any = "cpu", trust: bool = False) -> Any:
    """``torch.load`` tensors-only; arbitrary pickled objects only for trusted files.

    Args:
        source: a path or file-like object.
        map_location: as in ``torch.load``.
        trust: allow ``weights_only=False`` (runs pickled code: only for files you trust).
            ``BENCH_TRUST_CHECKPOINTS=1`` sets it for every call.

    Raises:
        CheckpointError: the file holds non-tensor objects and is not trusted.
    """
    trust = trust or os.environ.get("BENCH_TRUST_CHECKPOINTS", "") in ("1", "true", "yes")
    if hasattr(source, "seek"):
        start = source.tell()
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise CheckpointError(
                f"{source if isinstance(source, (str, Path)) else 'checkpoint'} holds objects "
                "other than tensors, which torch.load(weights_only=True) refuses. If you trust "
                "its source, pass trust_checkpoint=true (or set BENCH_TRUST_CHECKPOINTS=1). "
                f"Details: {str(exc).splitlines()[0]}") from None
    if hasattr(source, "seek"):
        source.seek(start)
    return torch.load(source, map_location=map_location, weights_only=False)


def patch_checkpoint_loading(trust: bool = False, spec: str = "", profile: str = "quick") -> None:
    """Route mmengine's local and http(s) checkpoint loaders through `safe_load`; http(s)
    files (``open-mmlab://``, ``torchvision://`` and ``mmcls://`` names end there too) come
    from the weights cache (`hub_file`), and ``spec`` and ``profile`` name the ``bench
    fetch-weights`` command an offline run without them is told to run."""
    from mmengine.runner import checkpoint as ck

    def load_from_local(filename: str, map_location: Any = None) -> Any:
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        return safe_load(filename, map_location, trust)

    def load_from_http(filename: str, map_location: Any = None, model_dir: str | None = None,
                       progress: bool = False) -> Any:
        # model_dir and progress are mmengine's (torch's hub folder); the weights cache is ours
        return safe_load(hub_file(filename, spec, profile), map_location, trust)

    ck.CheckpointLoader.register_scheme(prefixes="", force=True)(load_from_local)
    ck.CheckpointLoader.register_scheme(prefixes=("http://", "https://"),
                                        force=True)(load_from_http)
    # load_from_openmmlab / load_from_mmcls / load_from_torchvision call these module globals
    ck.load_from_local = load_from_local
    ck.load_from_http = load_from_http


# --------------------------------------------------------------------------- hub weights
def url_weight(url: str) -> HubWeight:
    """A downloaded checkpoint as a weights-cache entry: ``url/<the URL's file name>``."""
    from urllib.parse import urlparse

    name = os.path.basename(urlparse(url).path)
    if not name:
        raise WeightsError(f"checkpoint URL {url} names no file")
    return HubWeight("url", name, url)


def source_url(source: str) -> str | None:
    """The URL mmengine downloads for a checkpoint source: an http(s) URL itself, the URL of an
    ``open-mmlab://`` (``openmmlab://``), ``torchvision://`` (``modelzoo://``) or ``mmcls://``
    name (mmengine's tables); None for a local file or another scheme."""
    text = str(source).strip()
    if text.startswith(("http://", "https://")):
        return text
    scheme, sep, name = text.partition("://")
    if not sep or scheme not in ("open-mmlab", "openmmlab", "torchvision", "modelzoo",
                                 "mmcls"):
        return None
    from mmengine.runner import checkpoint as ck

    if scheme in ("open-mmlab", "openmmlab"):
        name = ck.get_deprecated_model_names().get(name, name)
        table = ck.get_external_models()
    elif scheme == "mmcls":
        table = ck.get_mmcls_models()
    else:
        table = ck.get_torchvision_models()
    if name not in table:
        raise WeightsError(f"checkpoint '{text}': mmengine knows no model '{name}' under "
                           f"{scheme}://")
    url = str(table[name])
    return url if url.startswith(("http://", "https://")) else None  # else under mmengine home


def pretrained_sources(cfg: Any) -> list[str]:
    """Every pretrained checkpoint a model config (a dict) loads when built and initialised:
    ``pretrained`` strings at any level and the ``checkpoint`` of ``init_cfg`` entries of type
    ``Pretrained``, in order, without repeats."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
                out.append(node["checkpoint"])
            if isinstance(node.get("pretrained"), str):
                out.append(node["pretrained"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(cfg)
    return list(dict.fromkeys(out))


def hub_file(source: str, spec: str = "", profile: str = "quick") -> Path:
    """The local file of a URL checkpoint source (`source_url`): the weights cache's, else
    downloaded into it when online, else a `WeightsError` naming ``bench fetch-weights``."""
    url = source_url(source)
    if url is None:
        raise WeightsError(f"checkpoint '{source}' is not a download")
    try:
        return hub_weight_file(url_weight(url), [spec or "effnet+crf+mmseg"], profile)
    except ConfigError as exc:  # one line, naming the plugin
        raise WeightsError(f"mmseg: {exc}") from None


def config_path(config: str) -> Path:
    """An mmseg config file: ``config`` itself, or relative to the configs shipped with the
    mmsegmentation package; a `ConfigError` when neither exists."""
    import mmseg

    path = Path(config).expanduser()
    if path.is_file():
        return path
    shipped = Path(mmseg.__file__).parent / ".mim" / "configs" / config
    if not shipped.is_file():
        raise ConfigError(f"mmseg config '{config}' not found (neither a file nor under "
                          f"{shipped.parent.parent})")
    return shipped


# --------------------------------------------------------------------------- the plugin
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

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """``checkpoint`` (a file, or a URL: hub), else the config's pretrained backbone (hub)
        or random initialisation."""
        if params.checkpoint.startswith(("http://", "https://")):
            return "hub"
        return weights_origin(params.checkpoint or
                              ("hub" if params.backbone_pretrained else "none"))

    @classmethod
    def hub_weights(cls, params: Any, profile: str) -> list[HubWeight]:
        """The downloads a training run makes (``bench fetch-weights``): a URL ``checkpoint``
        and, with ``backbone_pretrained``, the config's pretrained backbone(s) (the URLs
        mmengine resolves ``open-mmlab://`` and the like to); local files are not listed."""
        sources = [params.checkpoint] if params.checkpoint else []
        if params.backbone_pretrained:
            try:
                import_models()
            except ImportError as exc:
                raise ConfigError(f"the mmseg segmenter needs the optional extra: "
                                  f"{exc}") from None
            from mmengine.config import Config

            model = Config.fromfile(str(config_path(params.config))).model.to_dict()
            sources += pretrained_sources(model)
        out: list[HubWeight] = []
        for source in sources:
            url = source_url(source)
            if url is not None and url_weight(url) not in out:
                out.append(url_weight(url))
        return out

    def _config(self, pretrained: bool) -> Any:
        try:
            import_models()
        except ImportError as exc:
            raise ConfigError(f"the mmseg segmenter needs the optional extra: {exc}") from None
        patch_checkpoint_loading(self.params.trust_checkpoint, self.fetch_spec(),
                                 self.ctx.profile)
        from mmengine.config import Config

        cfg = Config.fromfile(str(config_path(self.params.config)))
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
        cfg = self._config(pretrained)
        from mmengine.config import ConfigDict
        from mmengine.registry import DefaultScope
        from mmseg.registry import MODELS

        with warnings.catch_warnings(), DefaultScope.overwrite_default_scope("mmseg"):
            # about mmseg's own losses and 1-channel binary heads; the harness's loss is used
            for message in ("For binary segmentation", "``build_loss``", "Default ``avg_non",
                            "DeprecationWarning: pretrained is a deprecated"):
                warnings.filterwarnings("ignore", message=f"{message}.*")
            # a ConfigDict, not a dict: EncoderDecoder sets ``backbone.pretrained`` as an
            # attribute when the config names ``model.pretrained`` (open-mmlab://...)
            segmentor = MODELS.build(ConfigDict(cfg.model.to_dict()))
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

    def fetch_spec(self) -> str:
        """The pipeline an offline run names in its ``bench fetch-weights`` command."""
        return str(self.ctx.extra.get("stage") or f"effnet+crf+mmseg[config={self.params.config}]")

    def _load_checkpoint(self, segmentor: Any, path: str) -> None:
        if source_url(path) is not None:  # a download: from the weights cache
            path = str(hub_file(path, self.fetch_spec(), self.ctx.profile))
        state = safe_load(path, "cpu", self.params.trust_checkpoint)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        own = segmentor.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise WeightsError(f"checkpoint {path} has no weights for config "
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
