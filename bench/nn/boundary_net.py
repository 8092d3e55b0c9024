"""The inter-pixel relation network of IRN: a class-boundary map at stride 4, trained on pairs.

After IRN (Ahn, Cho & Kwak, "Weakly Supervised Learning of Instance Segmentation with
Inter-pixel Relations", CVPR 2019; ``net/resnet50_irn.py`` and ``step/train_irn.py`` of
jiwoon-ahn/irn), its boundary branch on any timm backbone:

- **`BoundaryNet`**: the backbone is frozen (IRN detaches its features, and keeps its batch
  norm in eval mode); from each feature level of stride >= 4 (the last one of each stride; a
  ViT gives one level at stride 16) a 1x1 convolution to ``channels`` (32) with group norm
  (4 groups) and ReLU, upsampled to stride 4; the levels are concatenated and a 1x1
  convolution gives one boundary logit per stride-4 cell.
- **`affinity_loss`**: the boundary map ``B = sigmoid(logit)`` gives each pair of cells within
  the training radius the affinity ``a = 1 - max(B)`` along the path between them
  (`torch_path_affinities`, the torch twin of `bench.random_walk.path_affinities`). Pairs
  labelled by `bench.pixel_pairs.pair_labels`: ``-log(a)`` for same-label pairs (the
  background and the smoke mean weighed half each), ``-log(1 - a)`` for cross-label ones,
  ignore pairs left out; the loss is the mean of the two terms (IRN's, without its
  displacement branch, which serves instance segmentation).
- **`train_boundary_net`**: random rescaling, flips and crops of (image, seed labels), labels
  reduced to stride 4 by taking the pixel nearest each cell's centre (``[1::4]``); SGD (IRN)
  or AdamW with the poly schedule; AMP on CUDA; a checkpoint after every epoch in
  ``ctx.workdir/train/checkpoint.pt`` (`bench.nn.train.checkpoint_path`), so that a killed
  training resumes after its last finished epoch and, on CPU, ends with the weights of an
  uninterrupted run (batch order and augmentation are drawn from (seed, epoch)).
- **`BoundaryNet.boundary`**: the boundary map of a whole image, averaged over the image and
  its mirror image as IRN's ``EdgeDisplacement`` does (``flip``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.atomic import atomic_path, write_json
from bench.errors import ConfigError
from bench.nn.timm_net import TimmNet, check_backbone, create_net
from bench.nn.train import checkpoint_path
from bench.pixel_pairs import PAIR_BG, PAIR_FG, PAIR_NEG, pair_labels, pair_paths
from bench.sample import IGNORE
from bench.stages import RunContext
from bench.weights import WeightsSpec, resolve_weights

#: IRN's log clamp
EPS = 1e-5


@dataclass
class BoundarySettings:
    """The boundary network and its training; defaults: IRN's ``train_irn`` settings, on
    EfficientNet-Lite0. A plugin's ``Params`` includes them by inheritance.

    backbone: any timm model name.
    weights: initial backbone weights: package (EfficientNet-Lite0 ImageNet weights from a pip
        package), hub, none or a path.
    channels: width of each feature level's 1x1 projection (IRN 32).
    epochs: passes over the training images (IRN 3).
    batch_size: crops per optimiser step (IRN 32).
    crop_size: side of the square training crops, a multiple of 4 (IRN 512).
    scale_min, scale_max: random rescaling of the images before cropping (IRN 0.5-1.5).
    flip: random horizontal flips.
    optimizer: sgd (IRN) or adamw.
    lr: base learning rate (IRN 0.1 with SGD).
    momentum: SGD momentum (IRN's PolyOptimizer hands its weight decay to SGD's momentum
        slot: 1e-4, none in effect).
    weight_decay: weight decay (IRN 1e-4).
    poly_power: the learning rate decays as lr * (1 - step/steps) ** poly_power.
    train_radius: pairs of stride-4 cells closer than this are trained on (IRN 10).
    amp: mixed precision (CUDA only).
    """

    backbone: str = "tf_efficientnet_lite0"
    weights: str = "package"
    channels: int = 32
    epochs: int = 3
    batch_size: int = 32
    crop_size: int = 512
    scale_min: float = 0.5
    scale_max: float = 1.5
    flip: bool = True
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    train_radius: int = 10
    amp: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.crop_size < 32 or self.crop_size % 4:
            raise ValueError(f"crop_size must be a multiple of 4 and >= 32, got {self.crop_size}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError("need 0 < scale_min <= scale_max")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and momentum in [0, 1)")
        if self.train_radius < 2 or self.channels < 4 or self.channels % 4:
            raise ValueError("train_radius must be >= 2 and channels a multiple of 4")
        # fail before any data is loaded: unknown backbone, missing weights file
        check_backbone(self.backbone)
        resolve_weights(self.weights, False, self.backbone)


# --------------------------------------------------------------------------- the network
class BoundaryNet(nn.Module):
    """Boundary logits at stride 4 from a frozen timm backbone (see the module docstring)."""

    def __init__(self, net: TimmNet, channels: int = 32) -> None:
        super().__init__()
        model = net.model
        if not callable(getattr(model, "forward_intermediates", None)) or \
                not getattr(model, "feature_info", None):
            raise ConfigError(f"backbone '{net.backbone}' has no timm feature API "
                              "(feature_info, forward_intermediates); choose another backbone")
        info = [dict(f) for f in model.feature_info]
        last: dict[int, int] = {}
        for i, f in enumerate(info):
            if int(f["reduction"]) >= 4:
                last[int(f["reduction"])] = i
        if not last:
            raise ConfigError(f"backbone '{net.backbone}' has no features at stride >= 4")
        self.levels = [last[r] for r in sorted(last)]
        self.reductions = [int(info[i]["reduction"]) for i in self.levels]
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(int(info[i]["num_chs"]), channels, 1, bias=False),
                          nn.GroupNorm(4, channels))
            for i in self.levels)
        self.out = nn.Conv2d(channels * len(self.levels), 1, 1, bias=True)
        self.pad_to = max(self.reductions)
        self.net.eval()

    def train(self, mode: bool = True) -> BoundaryNet:
        """Train the heads; the frozen backbone stays in eval mode (IRN)."""
        super().train(mode)
        self.net.eval()
        return self

    def trainable(self) -> list[nn.Parameter]:
        """The parameters training updates (the heads)."""
        return [*self.heads.parameters(), *self.out.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits ``B x 1 x ceil(H/4) x ceil(W/4)`` of images in [0, 1] (B x 3 x H x W);
        inputs are padded at the bottom and right to a multiple of the coarsest stride."""
        h, w = x.shape[-2:]
        out_h, out_w = -(-h // 4), -(-w // 4)
        ph, pw = -(-h // self.pad_to) * self.pad_to, -(-w // self.pad_to) * self.pad_to
        z = self.net.normalize(x)
        if (ph, pw) != (h, w):
            z = F.pad(z, (0, pw - w, 0, ph - h))  # zeros: the mean colour after normalising
        with torch.no_grad():
            feats = self.net.model.forward_intermediates(z, indices=self.levels,
                                                         intermediates_only=True)
        size = (ph // 4, pw // 4)
        parts = []
        for head, f in zip(self.heads, feats, strict=True):
            y = head(f)
            if tuple(y.shape[-2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            parts.append(F.relu(y))
        return self.out(torch.cat(parts, 1))[..., :out_h, :out_w]

    @torch.no_grad()
    def boundary(self, image: np.ndarray, flip: bool = True) -> np.ndarray:
        """float32 boundary map ``ceil(H/4) x ceil(W/4)`` in [0, 1] of a uint8 HxWx3 image:
        ``sigmoid`` of the logits, averaged with those of the mirror image (``flip``)."""
        self.eval()
        device = next(self.out.parameters()).device
        x = torch.tensor(np.asarray(image), device=device).permute(2, 0, 1)[None]
        x = x.float().div_(255)
        h, w = x.shape[-2:]
        # pad to a multiple of 4 so that the mirror image's cells are this image's cells
        x = F.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
        use_amp = device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            if flip:
                logits = self(torch.cat([x, x.flip(-1)]))
                logits = (logits[0] + logits[1].flip(-1)) / 2
            else:
                logits = self(x)[0]
        return torch.sigmoid(logits.float())[0].cpu().numpy()


def build_boundary_net(settings: BoundarySettings, seed: int = 0,
                       weights: bool = True) -> tuple[BoundaryNet, WeightsSpec]:
    """A `BoundaryNet` on ``settings.backbone`` with its initial weights (``weights``; False:
    the architecture only, for loading trained weights), heads seeded from ``seed``."""
    spec = resolve_weights(settings.weights, False, settings.backbone) if weights \
        else WeightsSpec("none")
    torch.manual_seed(seed)
    net = create_net(settings.backbone, spec, settings.crop_size)
    return BoundaryNet(net, settings.channels), spec


# --------------------------------------------------------------------------- pairs and loss
def torch_path_affinities(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """``B x K x H x W`` affinities ``1 - max(boundary)`` along the path of each pair of
    `bench.pixel_pairs.pair_offsets` (0 where the destination is outside), differentiable;
    ``boundary``: ``B x H x W`` in [0, 1]."""
    h, w = boundary.shape[-2:]
    r = int(radius)
    padded = F.pad(boundary, (r, r, 0, r), value=1.0)
    out = []
    for path in pair_paths(r):
        m = None
        for py, px in path.tolist():
            view = padded[:, py:py + h, r + px:r + px + w]
            m = view if m is None else torch.maximum(m, view)
        out.append(m)
    return 1.0 - torch.stack(out, 1)


def affinity_loss(logits: torch.Tensor, codes: torch.Tensor, radius: int
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """IRN's affinity loss of boundary ``logits`` (B x 1 x H x W) against pair ``codes``
    (B x K x H x W, `bench.pixel_pairs.pair_labels`). Returns the loss and its parts
    (``bg_pos``, ``fg_pos``, ``neg``: the mean terms; ``pairs``: labelled pairs)."""
    aff = torch_path_affinities(torch.sigmoid(logits.float()[:, 0]), radius)
    pos = -torch.log(aff + EPS)
    neg = -torch.log(1.0 + EPS - aff)
    terms = {}
    for name, code, value in (("bg_pos", PAIR_BG, pos), ("fg_pos", PAIR_FG, pos),
                              ("neg", PAIR_NEG, neg)):
        mask = (codes == code).float()
        terms[name] = (value * mask).sum() / (mask.sum() + EPS)
    loss = (terms["bg_pos"] / 2 + terms["fg_pos"] / 2 + terms["neg"]) / 2
    parts = {k: float(v.detach()) for k, v in terms.items()}
    parts["pairs"] = float((codes != 0).sum())
    return loss, parts


# --------------------------------------------------------------------------- training
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 29) % 2**63


def _make_batch(images: Sequence[np.ndarray], seeds: Sequence[np.ndarray], idx: np.ndarray,
                rng: np.random.Generator, s: BoundarySettings
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, flip and crop of the samples ``idx``: images in [0, 1] (N x 3 x S x S,
    padding 0.5 grey, which the backbone's normalisation takes near its mean) and pair codes
    (N x K x S/4 x S/4, padding ignore)."""
    size = s.crop_size
    xs, codes = [], []
    for i in idx:
        img, lab = images[int(i)], seeds[int(i)]
        h, w = lab.shape
        scale = float(rng.uniform(s.scale_min, s.scale_max))
        rh, rw = min(h, math.ceil(size / scale)), min(w, math.ceil(size / scale))
        y = int(rng.integers(0, h - rh + 1))
        x0 = int(rng.integers(0, w - rw + 1))
        # copies: loaders may hand out read-only arrays
        img_t = torch.tensor(img[y:y + rh, x0:x0 + rw])
        lab_t = torch.tensor(lab[y:y + rh, x0:x0 + rw])
        oh, ow = min(size, max(1, round(rh * scale))), min(size, max(1, round(rw * scale)))
        img_f = img_t.permute(2, 0, 1)[None].float()
        if (oh, ow) != (rh, rw):
            img_f = F.interpolate(img_f, size=(oh, ow), mode="bilinear", align_corners=False,
                                  antialias=scale < 1)
            lab_t = F.interpolate(lab_t[None, None].float(), size=(oh, ow),
                                  mode="nearest")[0, 0].to(torch.uint8)
        img_f = img_f[0].clamp(0, 255) / 255
        if s.flip and rng.random() < 0.5:
            img_f, lab_t = img_f.flip(-1), lab_t.flip(-1)
        canvas = torch.full((3, size, size), 0.5)
        label = torch.full((size, size), IGNORE, dtype=torch.uint8)
        canvas[:, :oh, :ow] = img_f
        label[:oh, :ow] = lab_t
        xs.append(canvas)
        codes.append(torch.from_numpy(pair_labels(label[1::4, 1::4].numpy(), s.train_radius)))
    return torch.stack(xs), torch.stack(codes)


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def train_boundary_net(model: BoundaryNet, images: Sequence[np.ndarray],
                       seeds: Sequence[np.ndarray], settings: BoundarySettings,
                       ctx: RunContext, fingerprint: str, desc: str = "affinity"
                       ) -> list[dict[str, Any]]:
    """Train ``model``'s heads on seed label maps (uint8, 0/1/255, one per image, same size);
    returns the per-epoch history (``epoch``, ``loss``, ``bg_pos``, ``fg_pos``, ``neg``,
    ``pairs``, ``lr``, ``seconds``). Resumes from a checkpoint written under the same
    ``fingerprint``."""
    s = settings
    if len(images) != len(seeds):
        raise ValueError(f"{len(images)} training images but {len(seeds)} seed maps")
    if not len(images):
        raise ConfigError("no training images for the boundary network")
    for img, lab in zip(images, seeds, strict=True):
        if img.shape[:2] != lab.shape:
            raise ValueError(f"seed map of shape {lab.shape} for an image of {img.shape[:2]}")
    device = ctx.torch_device()
    model.to(device)
    params = model.trainable()
    if s.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum,
                                                     weight_decay=s.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    use_amp = bool(s.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n = len(images)
    per_epoch = math.ceil(n / s.batch_size)
    total = per_epoch * s.epochs
    path = checkpoint_path(ctx)
    start, history = 0, []
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.heads.load_state_dict(state["heads"])
            model.out.load_state_dict(state["out"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start, history = int(state["epoch"]) + 1, list(state["history"])
    from bench.progress import progress

    bar = progress(total=total, desc=f"{desc} train", enabled=ctx.progress,
                   initial=start * per_epoch)
    try:
        for epoch in range(start, s.epochs):
            wall = time.perf_counter()
            torch.manual_seed(_epoch_seed(ctx.seed, epoch))
            rng = np.random.default_rng([ctx.seed % 2**32, epoch])
            model.train()
            sums: dict[str, float] = {}
            lr_now = s.lr
            batches = _batches(rng.permutation(n), s.batch_size)
            for b, idx in enumerate(batches):
                lr_now = s.lr * (1.0 - (epoch * per_epoch + b) / total) ** s.poly_power
                for group in opt.param_groups:
                    group["lr"] = lr_now
                x, codes = _make_batch(images, seeds, idx, rng, s)
                x, codes = x.to(device), codes.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(x)
                loss, parts = affinity_loss(logits, codes, s.train_radius)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                for key, value in {"loss": float(loss.detach()), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.3f}", refresh=False)
                bar.update(1)
            entry = {"epoch": epoch + 1, **{k: v / len(batches) for k, v in sums.items()},
                     "lr": lr_now, "seconds": time.perf_counter() - wall}
            history.append(entry)
            with atomic_path(path) as tmp:
                torch.save({"fingerprint": fingerprint, "epoch": epoch,
                            "heads": model.heads.state_dict(), "out": model.out.state_dict(),
                            "optimizer": opt.state_dict(),
                            "scaler": scaler.state_dict() if use_amp else None,
                            "history": history}, tmp)
    finally:
        bar.close()
    model.eval()
    return history


# --------------------------------------------------------------------------- persistence
def save_boundary_net(model: BoundaryNet, directory: Path, meta: dict[str, Any],
                      ctx: RunContext) -> None:
    """Write ``boundary_net.pt`` (the state dict) and ``meta.json`` (``meta`` plus the feature
    levels) into ``directory``, and delete the training checkpoint, which is no longer needed."""
    directory = Path(directory)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
               directory / "boundary_net.pt")
    write_json(directory / "meta.json", {**meta, "levels": model.levels,
                                         "reductions": model.reductions})
    ckpt = checkpoint_path(ctx)
    if ckpt.exists():
        ckpt.unlink()


def load_boundary_net(settings: BoundarySettings, directory: Path, ctx: RunContext
                      ) -> tuple[BoundaryNet, dict[str, Any]]:
    """The trained network `save_boundary_net` wrote (built without initial weights, on
    ``ctx``'s device, in eval mode) and its ``meta.json``."""
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    model, _ = build_boundary_net(settings, seed=ctx.seed, weights=False)
    state = torch.load(directory / "boundary_net.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(ctx.torch_device()).eval(), meta
