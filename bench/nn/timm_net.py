"""Image-level smoke classifiers on timm backbones: creation and CAM feature access.

- `check_backbone`: any ``timm`` model name; an unknown one is an error listing close matches.
- `create_net`: a `TimmNet`, i.e. the timm model with one smoke logit, its initial weights
  (`bench.weights`), its input normalisation, and feature access for CAMs: a NCHW grid for CNNs
  and for ViTs (patch tokens put back on their grid). ViTs of timm's ``vision_transformer``
  family are built with average pooling of the patch tokens and no norm after pooling, so that
  the classifier is "mean of tokens → linear" and the patch-token CAM is exact (as classic CAM
  is for a CNN's global-average-pooled linear head).

The ViT handling lives here rather than with the ``vit_small_patch16_224`` method because every
classifier CAM may use a ViT: ``classifier[backbone=deit_small_patch16_224]`` and the student
of ``consistency`` too.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.errors import ConfigError
from bench.weights import WeightsError, WeightsSpec, load_weights

#: timm modules whose models take ``global_pool="avg", fc_norm=False, dynamic_img_size=True``
VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


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
        #: the memory format `normalize` gives inputs; None (as built): CNN inputs become
        #: channels-last, the CNNs' training format, ViT inputs stay as they come.
        #: `set_memory_format` changes it together with the weights' format
        self.memory_format: torch.memory_format | None = None

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
        """Input normalisation; CNNs get channels-last tensors (faster on CPU and with AMP)
        unless `set_memory_format` chose another format."""
        x = (x - self.mean) / self.std
        fmt = self.memory_format
        if fmt is None:
            fmt = torch.channels_last if self.kind == "cnn" else None
        return x.contiguous(memory_format=fmt) if fmt is not None else x

    def set_memory_format(self, fmt: torch.memory_format | None) -> None:
        """Weights and inputs in ``fmt`` (``torch.channels_last`` or
        ``torch.contiguous_format``, for any backbone); None restores the format as built
        (CNNs channels-last, ViTs contiguous). Numbers agree across formats to float
        rounding; which is faster depends on the backbone, the CPU and the precision."""
        self.memory_format = fmt
        if fmt is None:
            fmt = torch.channels_last if self.kind == "cnn" else torch.contiguous_format
        self.to(memory_format=fmt)

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
            raise WeightsError(f"cannot fetch hub weights of '{backbone}' ({first}); offline, "
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
