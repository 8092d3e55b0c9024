"""`ClassifierCam`: the CAM source on an image-level smoke classifier (timm backbone).

`ClassifierCam` owns the machinery a classifier CAM method needs, pytorch-grad-cam style: a
method file only registers it under a name with defaults (``backbone="resnet101"``) and
overrides a hook when it does something different (`ClassifierCam.training_step`,
`ClassifierCam.cam_from_grid`, ...). The network is a `bench.nn.timm_net.TimmNet`, its initial
weights come from `bench.weights`, and it is trained by `bench.nn.train.train`.

CAM extraction is one forward pass per batch, no backward:

- CNN: classic CAM, ``relu(w · f(p))`` over the last feature map ``f`` with the classifier's
  weights ``w`` (for a global-average-pooled linear head this equals Grad-CAM).
- ViT: patch-token CAM, the same product over the final (normed) patch tokens put back on
  their grid; the classifier is built to average patch tokens, so the CAM is exact too.

Maps are upsampled (bilinear) to the image size and normalised to [0, 1] per image
(``normalize``: ``minmax``, ``max``, or ``sigmoid`` of the per-position logits, bias included,
which keeps smoke-free images dark). ``layers`` names modules whose outputs give CAMs instead of
the final features (ViT blocks ``blocks.9``, ResNet blocks ``layer4.1``); several are fused
(``layer_fusion``: mean, max, gmean).

Images are scaled before the forward pass by the factor the classifier was trained at
(``input_size`` over the training images' median size; ``cam_scale`` overrides it), keeping
their aspect ratio, sides rounded to a multiple of the network stride. So a classifier trained
on 128-px crops of large photos reads the photos at native resolution, and wrappers that rescale
or tile the image (multi-scale, sliding window) compose with it.

Precision and memory format of CAM extraction (inference-only parameters; training follows
``amp``):

- ``autocast``: ``auto`` (the default) computes as before the option existed: float32 on the
  CPU, float16 autocast on CUDA when ``amp`` is on. ``off`` is float32 everywhere. ``bfloat16``
  / ``float16`` run the backbone under that autocast dtype and the CAM product, upsampling and
  normalisation in float32; a dtype the device lacks (`autocast_dtype`: torch's oneDNN
  capability on the CPU, ``torch.cuda.is_bf16_supported`` on CUDA) is a one-line
  `ConfigError` when the network is built, never a silent fallback to float32. The option
  promises maps within 1e-2 of float32 and checks it: with an explicit dtype the first batch is
  also computed in float32, and a pixel differing by more than ``autocast_tol`` (default 1e-2;
  0: no check) stops the run with a one-line `ConfigError` naming the difference, so a
  backbone whose maps do not survive the dtype fails instead of scoring other maps. The trained
  classifier is cached, so a rerun with ``autocast=off`` reuses it.
- ``channels_last``: ``auto`` keeps the format the network was built in (CNNs channels-last,
  their training format; ViTs contiguous), ``true`` / ``false`` put weights and inputs in
  channels-last / contiguous NCHW for any backbone.

Both are part of a stage's cache key (a map computed in bfloat16 is never served from a float32
cache) and not of the trained state's (`inference_params`: one training serves every variant).

What they buy and cost (``benchmarks/test_bench_cam.py``, 8 images, 1 CPU thread of an
AVX512-BF16 CPU, against the plain float32 forward of the same network, best rounds in turn,
three runs): float32 CAMs run at 0.85-1.13x its throughput; ``autocast=bfloat16`` runs ResNet-50
at 512 px 2.2-2.8x, ViT-S/16 at 224 px 1.4-2.0x and EfficientNet-Lite0 at 512 px 2.1-3.1x as
fast as it, the CNNs only channels-last (NCHW: 1.2-1.7x; in float32, NCHW CNNs run at
0.77-0.96x: ``auto`` keeps channels-last). float16 keeps maps within 1e-2 of float32
(``tests/test_cam_precision.py``, tiny random ResNet-18 and ViT-Ti: max 0.003). bfloat16 keeps
8 significant bits and does not everywhere: ResNets and ViTs max 0.010-0.014, mean <= 0.003;
EfficientNet-Lite0 on its ImageNet weights (``effnet``) max 0.44-0.46, mean 0.013, its
BatchNorm layers magnifying the rounding of their inputs; a trained ``effnet`` (the quick
profile on 400 real smoke photos) on 12 real 2048x1536 photos: 0.017-0.09 per photo and 0.47 on
one whose float32 map is nearly empty (min-max normalisation of a near-zero map). So bfloat16
passes the check on ResNets and ViTs only with ``autocast_tol=0.02``, and ``effnet`` stays in
float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.maps import FUSE
from bench.nn.timm_net import TimmNet, check_backbone, create_net
from bench.nn.train import TrainSettings, checkpoint_path, image_set, settings_dict, train
from bench.sample import Sample
from bench.stages import CamSource
from bench.weights import WeightsSpec, resolve_weights, weights_origin

NORMALIZE = ("minmax", "max", "sigmoid")
#: values of the ``autocast`` parameter (CAM extraction precision)
AUTOCAST = ("auto", "off", "bfloat16", "float16")


def device_lacks(dtype: torch.dtype, device: torch.device) -> str:
    """Why ``device`` cannot run autocast in ``dtype`` (bfloat16 or float16); "" if it can.

    CUDA: float16 always, bfloat16 where ``torch.cuda.is_bf16_supported()``. CPU: where torch's
    oneDNN has kernels for the dtype (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` / ``_fp16_``:
    bfloat16 on AVX-512 or Arm BF16 CPUs, natively with AVX512-BF16 or AMX; float16 with
    AVX512-FP16 or AMX-FP16), not the slow reference kernels torch would fall back to.
    """
    name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return (f"{torch.cuda.get_device_name(device)} has no bfloat16 support in torch: "
                    "use autocast=float16 (or off)")
        return ""
    if device.type == "cpu":
        check = "_is_mkldnn_bf16_supported" if dtype == torch.bfloat16 \
            else "_is_mkldnn_fp16_supported"
        try:
            supported = bool(torch.backends.mkldnn.is_available()
                             and getattr(torch.ops.mkldnn, check)())
        except (AttributeError, RuntimeError):
            supported = False
        if supported:
            return ""
        needs = "AVX-512 or Arm BF16" if dtype == torch.bfloat16 else "AVX512-FP16 or AMX-FP16"
        other = "off" if dtype == torch.bfloat16 else "bfloat16 or off on the CPU"
        return (f"this CPU has no {name} support in torch's oneDNN (it needs {needs}): "
                f"use autocast={other}, or a CUDA device")
    return f"autocast on device '{device.type}' is not supported: use autocast=off"


def autocast_dtype(setting: str, device: torch.device, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype of CAM extraction under ``autocast=setting`` on ``device``; None means
    float32. ``auto`` is float16 on CUDA when ``amp``, else float32 (as before the parameter
    existed). A dtype the device lacks is a `ConfigError` (`device_lacks`), not a fallback."""
    if setting not in AUTOCAST:
        raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST)}, not '{setting}'")
    if setting == "auto":
        return torch.float16 if amp and device.type == "cuda" else None
    if setting == "off":
        return None
    dtype = torch.bfloat16 if setting == "bfloat16" else torch.float16
    why = device_lacks(dtype, device)
    if why:
        raise ConfigError(f"autocast={setting}: {why}")
    return dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """An autocast context in ``dtype`` on ``device``, or a no-op one for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _normalize_batch(cam: torch.Tensor, how: str, eps: float = 1e-12) -> torch.Tensor:
    """Per-image normalisation of BxHxW maps to [0, 1] (constant maps become zeros)."""
    if how == "sigmoid":
        return cam.clamp(0, 1)
    flat = cam.flatten(1)
    hi = flat.max(1).values.view(-1, 1, 1)
    lo = flat.min(1).values.view(-1, 1, 1) if how == "minmax" else torch.zeros_like(hi)
    span = hi - lo
    out = (cam - lo) / torch.where(span > eps, span, torch.ones_like(span))
    return torch.where(span > eps, out, torch.zeros_like(out)).clamp(0, 1)


# --------------------------------------------------------------------------- classifier CAM
class ClassifierCam(CamSource):
    """CAMs of an image-level smoke classifier on a timm backbone (trained on image labels)."""

    trainable: ClassVar[bool] = True
    label: ClassVar[str] = "Classifier CAM"
    #: parameters that change how CAMs are read, not what is trained: variants differing only
    #: in these share one trained classifier in the runner's cache
    inference_params: ClassVar[tuple[str, ...]] = ("layers", "layer_fusion", "normalize",
                                                   "cam_scale", "batch_infer", "autocast",
                                                   "autocast_tol", "channels_last")

    @dataclass
    class Params(TrainSettings):
        """Parameters (defaults: the full profile; ``profiles["quick"]`` shrinks them), on top
        of the `TrainSettings` of the training loop (epochs, batch_size, lr, ...).

        backbone: any timm model name.
        weights: initial weights: ``none``, ``hub`` (timm's pretrained, needs the internet),
            ``package`` (EfficientNet-Lite0 ImageNet weights from the pip package), or a path.
        pretrained: ``true`` is the same as ``weights=hub``.
        input_size: training resolution (square); crops are taken at this size.
        balance: weight positives by negatives/positives in the loss.
        output_stride: 8/16 dilate the last stages of CNNs that support it (0: native 32).
        drop_path: stochastic depth rate.
        layers: modules whose outputs give CAMs (``blocks.9:blocks.11``); empty: final features.
        layer_fusion: how CAMs of several layers combine: mean, max, gmean.
        normalize: minmax, max, or sigmoid (per-position probabilities).
        train_from: first parameter (name prefix, e.g. ``blocks.4``) that trains; earlier ones
            stay frozen, their BatchNorm in eval mode (fine-tuning a pretrained backbone).
        cam_scale: factor images are scaled by before the forward pass (0: as in training).
        batch_infer: images per forward pass when computing CAMs.
        autocast: precision of CAM extraction: auto (float32 on the CPU, float16 on CUDA with
            amp), off (float32), bfloat16 or float16 (the backbone under autocast; a device
            without the dtype is an error).
        autocast_tol: with ``autocast`` bfloat16 or float16, the first batch of CAMs is also
            computed in float32, and a map differing from its float32 map by more than this at
            any pixel stops the run with an error naming the difference (0: no check); the
            default is the 1e-2 agreement the option promises.
        channels_last: memory format of CAM extraction: auto (CNNs channels-last, ViTs NCHW),
            true (channels-last) or false (NCHW).
        """

        backbone: str = "resnet50"
        weights: str = "hub"
        pretrained: bool = False
        input_size: int = 224
        train_from: str = ""
        balance: bool = True
        output_stride: int = 0
        drop_path: float = 0.0
        layers: tuple[str, ...] = ()
        layer_fusion: str = "mean"
        normalize: str = "minmax"
        cam_scale: float = 0.0
        batch_infer: int = 8
        autocast: Literal["auto", "off", "bfloat16", "float16"] = "auto"
        autocast_tol: float = 0.01
        channels_last: Literal["auto", True, False] = "auto"

        def __post_init__(self) -> None:
            if self.normalize not in NORMALIZE:
                raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, "
                                 f"not '{self.normalize}'")
            if self.layer_fusion not in FUSE:
                raise ValueError(f"layer_fusion must be one of {', '.join(FUSE)}, "
                                 f"not '{self.layer_fusion}'")
            if self.input_size < 16 or self.epochs < 0 or self.batch_size < 1:
                raise ValueError("input_size must be >= 16, epochs >= 0 and batch_size >= 1")
            if self.output_stride not in (0, 8, 16, 32):
                raise ValueError("output_stride must be 0, 8, 16 or 32")
            if self.autocast not in AUTOCAST:
                raise ValueError(f"autocast must be one of {', '.join(AUTOCAST)}, "
                                 f"not '{self.autocast}'")
            if self.autocast_tol < 0:
                raise ValueError(f"autocast_tol must be >= 0 (0: no check), "
                                 f"not {self.autocast_tol}")
            if not (self.channels_last == "auto" or isinstance(self.channels_last, bool)):
                raise ValueError(f"channels_last must be auto, true or false, "
                                 f"not '{self.channels_last}'")
            # fail before any data is loaded: unknown backbone, missing weights file
            check_backbone(self.backbone)
            resolve_weights(self.weights, self.pretrained, self.backbone)

    #: the quick profile: minutes on a laptop CPU, no download (random init); it exercises the
    #: code path, it does not train a useful scratch classifier (see the README)
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"weights": "none", "input_size": 96, "epochs": 2, "batch_size": 16,
                  "lr": 1e-3, "warmup_epochs": 0.5, "epoch_size": 64},
    }

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self.net: TimmNet | None = None
        self.train_scale = 1.0
        self.history: list[dict[str, Any]] = []
        self.weights_info: dict[str, Any] = {"source": "none"}
        self.pos_weight: torch.Tensor | None = None
        #: (max, mean) absolute difference of the first batch's maps from float32 under an
        #: explicit ``autocast`` (None until checked); `compute` checks it once per instance
        self.autocast_agreement: tuple[float, float] | None = None

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """The classifier's initial weights (``weights`` / ``pretrained``), for records."""
        return weights_origin(params.weights, params.pretrained)

    @classmethod
    def hub_weights(cls, params: Any, profile: str) -> list[dict[str, str]]:
        """The timm weights ``weights=hub`` downloads (`bench.weight_cache`, fetch-weights)."""
        hub = weights_origin(params.weights, params.pretrained) == "hub"
        return [{"kind": "timm", "name": params.backbone}] if hub else []

    # ----------------------------------------------------------------- model
    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return int(self.params.batch_infer)

    def device(self) -> torch.device:
        return self.ctx.torch_device()

    def weights_spec(self) -> WeightsSpec:
        p = self.params
        return resolve_weights(p.weights, p.pretrained, p.backbone)

    def build(self, weights: bool = True) -> TimmNet:
        """Create the network (seeded from ``ctx.seed``) with its initial weights (``weights``)
        or just the architecture; also the way to get an untrained CAM source in tests.
        An ``autocast`` dtype the device lacks fails here, before any training."""
        p = self.params
        self.cam_dtype()
        spec = self.weights_spec() if weights else WeightsSpec("none")
        torch.manual_seed(self.ctx.seed)
        self.net = create_net(p.backbone, spec, p.input_size, p.output_stride, p.drop_path)
        self.net.to(self.device()).eval()
        if weights:
            self.weights_info = spec.describe()
        if p.train_from:
            self._freeze_before(p.train_from)
        self.net.check_layers(p.layers)  # before training, not after it
        return self.net

    def _freeze_before(self, prefix: str) -> None:
        """Freeze every parameter that comes before the first one named ``prefix...``."""
        model = self.require_net().model
        names = [n for n, _ in model.named_parameters()]
        if not any(n.startswith(prefix) for n in names):
            tops = list(dict.fromkeys(n.rsplit(".", 2)[0] for n in names))
            raise ConfigError(f"train_from={prefix}: no parameter of '{self.params.backbone}' "
                              f"starts with it (e.g. {', '.join(tops[len(tops) // 2:][:4])})")
        for name, param in model.named_parameters():
            if name.startswith(prefix):
                break
            param.requires_grad_(False)

    def require_net(self) -> TimmNet:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} has no model: call fit() or load() "
                               "(or build() for an untrained one)")
        return self.net

    # ----------------------------------------------------------------- training hooks
    def training_module(self) -> nn.Module:
        """Every module whose parameters training updates (the classifier)."""
        return self.require_net()

    def frozen_modules(self) -> list[nn.Module]:
        """Modules that stay in eval mode while training: norm layers with frozen parameters
        (``train_from``) keep their pretrained statistics."""
        model = self.require_net().model
        return [m for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and any(True for _ in m.parameters())
                and not any(p.requires_grad for p in m.parameters())]

    def prepare_training(self, train_labels: torch.Tensor) -> None:
        """Called before training with the training labels (sets the positive-class weight)."""
        pos = float(train_labels.sum())
        neg = float(len(train_labels)) - pos
        self.pos_weight = None
        if self.params.balance and pos > 0 and neg > 0:
            self.pos_weight = torch.tensor(neg / pos, device=self.device())

    def classification_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=self.pos_weight)

    def training_step(self, x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Loss of one batch: binary cross-entropy of the smoke logit."""
        logits = self.require_net()(x)
        return self.classification_loss(logits, y), logits, {}

    def fit(self, train_samples: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Train the classifier on image-level labels; val accuracy is logged per epoch."""
        p = self.params
        self.build()
        progress = self.ctx.progress
        train_set = image_set(train_samples, p.input_size, f"{self.name} load train", progress)
        val_set = image_set(val, p.input_size, f"{self.name} load val", progress) \
            if len(val) else None
        self.prepare_training(train_set.labels)
        self.history = train(self.training_module(), self.training_step,
                             self.require_net(), train_set, val_set, p, self.ctx,
                             desc=self.name or "classifier", frozen=self.frozen_modules(),
                             fingerprint=self.config())
        sides = [float(np.sqrt(h * w)) for h, w in train_set.native]
        self.train_scale = p.input_size / statistics.median(sides)

    # ----------------------------------------------------------------- persistence
    def state_modules(self) -> dict[str, nn.Module]:
        """What `save` stores and `load` restores, by file stem."""
        return {"model": self.require_net().model}

    def save(self, directory: Path) -> None:
        for stem, module in self.state_modules().items():
            torch.save(module.state_dict(), directory / f"{stem}.pt")
        meta = {"backbone": self.params.backbone, "weights": self.weights_info,
                "kind": self.require_net().kind, "train_scale": self.train_scale,
                "history": self.history, "settings": settings_dict(self.params),
                "config": self.config()}
        (directory / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        ckpt = checkpoint_path(self.ctx)
        if ckpt.exists():  # the trained model is saved; the resumable state is not needed
            ckpt.unlink()

    def load(self, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        self.build(weights=False)
        for stem, module in self.state_modules().items():
            state = torch.load(directory / f"{stem}.pt", map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        self.require_net().to(self.device()).eval()
        self.train_scale = float(meta.get("train_scale", 1.0))
        self.history = list(meta.get("history", []))
        self.weights_info = dict(meta.get("weights", {}))

    # ----------------------------------------------------------------- CAM hooks
    def cam_dtype(self, device: torch.device | None = None) -> torch.dtype | None:
        """The autocast dtype CAMs are computed in on ``device`` (default: the run's; None:
        float32); a `ConfigError` naming the plugin when the device lacks the dtype."""
        device = self.device() if device is None else device
        try:
            return autocast_dtype(self.params.autocast, device, bool(self.params.amp))
        except ConfigError as exc:
            raise ConfigError(f"{self.name or type(self).__name__}: {exc}") from None

    def cam_memory_format(self) -> torch.memory_format | None:
        """The memory format ``channels_last`` asks for (None: the network's own)."""
        choice = self.params.channels_last
        if choice == "auto":
            return None
        return torch.channels_last if choice else torch.contiguous_format

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """The size an image is fed at: scaled by ``cam_scale`` (or the training scale),
        sides rounded to a multiple of the network stride."""
        scale = self.params.cam_scale or self.train_scale
        stride = self.require_net().stride
        if self.params.output_stride:
            stride = min(stride, self.params.output_stride)
        return (max(stride, round(height * scale / stride) * stride),
                max(stride, round(width * scale / stride) * stride))

    def feature_grids(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature grids (BxCxhxw) that CAMs are computed from: one per selected layer."""
        return self.require_net().layer_grids(x, self.params.layers)

    def cam_from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """Low-resolution CAM Bxhxw of one feature grid, before upsampling and normalisation."""
        net = self.require_net()
        if self.params.normalize == "sigmoid":
            return torch.sigmoid(net.position_logits(grid, bias=True).float())
        return F.relu(net.position_logits(grid, bias=False).float())

    def cam_batch(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """CAMs of a batch of images in [0, 1] (Bx3xhxw) at output ``size``, BxHxW in [0, 1]."""
        return self.cams_from_grids(self.feature_grids(x), size)

    def cams_from_grids(self, grids: Sequence[torch.Tensor], size: tuple[int, int]
                        ) -> torch.Tensor:
        """CAMs BxHxW in [0, 1] at output ``size`` from the feature grids of `feature_grids`:
        per grid `cam_from_grid`, bilinear upsampling and normalisation, then layer fusion."""
        maps = []
        for grid in grids:
            cam = self.cam_from_grid(grid)[:, None]
            cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
            maps.append(_normalize_batch(cam, self.params.normalize))
        if len(maps) == 1:
            return maps[0]
        stack = torch.stack(maps)
        mode = self.params.layer_fusion
        if mode == "mean":
            return stack.mean(0)
        if mode == "max":
            return stack.max(0).values
        return stack.clamp(min=0).double().log().mean(0).exp().float()

    def _check_agreement(self, maps: np.ndarray, x: torch.Tensor, size: tuple[int, int]
                         ) -> None:
        """Compare one batch of reduced-precision maps with float32 ones (``autocast_tol``)."""
        reference = self.cams_from_grids([g.float() for g in self.feature_grids(x)], size)
        diff = np.abs(maps - reference.float().cpu().numpy())
        self.autocast_agreement = (float(diff.max()), float(diff.mean()))
        tol = self.params.autocast_tol
        if diff.max() > tol:
            raise ConfigError(
                f"{self.name or type(self).__name__}: autocast={self.params.autocast} CAMs "
                f"differ from float32 by up to {diff.max():.3g} (mean {diff.mean():.2g}) on the "
                f"first batch of {len(maps)} image(s), beyond autocast_tol={tol:g}: use "
                f"autocast=off, or accept the difference with a larger autocast_tol")

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """CAMs of uint8 HxWx3 images, batched by size; ``autocast`` and ``channels_last`` set
        the precision and memory format of the forward pass (see the module docstring)."""
        net = self.require_net()
        device = next(net.parameters()).device
        dtype = self.cam_dtype(device)
        # auto: the whole CAM under the autocast, as before the parameter existed; an explicit
        # dtype keeps the CAM product, upsampling and normalisation in float32
        legacy = self.params.autocast == "auto"
        fmt = self.cam_memory_format()
        if fmt != net.memory_format:
            net.set_memory_format(fmt)
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[0]), int(image.shape[1])), []).append(i)
        for (h, w), idx in groups.items():
            shape = self.input_shape(h, w)
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2)
            x = batch.to(device).float().div_(255)
            if shape != (h, w):
                x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False,
                                  antialias=shape[0] < h or shape[1] < w)
            with torch.inference_mode():
                if legacy:
                    with _autocast(device, dtype):
                        cams = self.cam_batch(x, (h, w))
                else:
                    with _autocast(device, dtype):
                        grids = self.feature_grids(x)
                    cams = self.cams_from_grids([g.float() for g in grids], (h, w))
                maps = cams.float().cpu().numpy()
                if not legacy and dtype is not None and self.autocast_agreement is None \
                        and self.params.autocast_tol > 0:
                    self._check_agreement(maps, x, (h, w))
            for j, i in enumerate(idx):
                out[i] = maps[j]
        return out  # type: ignore[return-value]
