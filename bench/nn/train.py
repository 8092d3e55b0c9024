"""The training loop of image-level classifiers (every trainable CAM source uses it).

- `image_set`: labelled samples decoded and resized once (`ImageSet`).
- `augment`: random resized crops, horizontal flips, light colour jitter.
- `train`: AdamW with decoupled weight decay, linear warm-up then cosine decay (per step),
  optionally ``epoch_size`` images drawn per epoch (large training sets on a laptop), AMP on
  CUDA only, gradient clipping, a checkpoint after every epoch in ``ctx.workdir/train`` so that
  a killed training resumes where it stopped, validation accuracy and throughput (images/s) per
  epoch. Its settings are a `TrainSettings`, which a plugin's ``Params`` includes.
- ``bench run --gpus N`` (``ctx.extra["gpus"]``): data-parallel over N processes (`bench.ddp`):
  each rank trains on its shard of every global batch and gradients are averaged, so the
  weights follow those of one process on the global batch; rank 0 writes checkpoint and log.

Determinism: batch order and augmentation come from a generator seeded by (seed, epoch), so a
resumed training draws what an uninterrupted one would. On CPU, the same seed gives the same
numbers.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bench.ddp as ddp
from bench.errors import ConfigError
from bench.stages import RunContext


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
    """Optimisation and augmentation settings of `train` (defaults: the classifiers' full
    profile). A trainable plugin's ``Params`` includes them by inheritance
    (``class Params(TrainSettings)``), so ``effnet[epochs=3]`` sets them like any parameter.

    epochs, batch_size, lr, weight_decay, warmup_epochs, min_lr_ratio, clip_grad: AdamW
        with linear warm-up and cosine decay to ``lr * min_lr_ratio``.
    amp: mixed precision (CUDA only; ignored on CPU).
    crop_scale: smallest area fraction of random resized crops (1: no crops).
    hflip, jitter: horizontal flips; colour jitter strength (0: none).
    epoch_size: images drawn (without replacement) per epoch; 0: all of them.
    """

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_grad: float = 1.0
    amp: bool = True
    crop_scale: float = 0.5
    hflip: bool = True
    jitter: float = 0.1
    epoch_size: int = 0


def augment(images: torch.Tensor, gen: torch.Generator, s: TrainSettings,
            rows: slice | None = None) -> torch.Tensor:
    """Random resized crop (area ``crop_scale``..1, aspect 3/4..4/3), h-flip, colour jitter.

    ``images``: uint8 Bx3xSxS; returns float in [0, 1] of the same shape, or only ``rows`` of
    it (a DDP rank's shard: the random draws are those of the whole batch).
    """
    b = images.shape[0]
    u = torch.rand((b, 8), generator=gen)
    if rows is not None:
        images, u = images[rows], u[rows]
    x = images.float().div_(255)
    size = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
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
    world = int((ctx.extra or {}).get("gpus", 1) or 1)
    if world > 1 and not ddp.active():  # --gpus N: this process becomes rank 0 of N
        return ddp.launch(train, world, ctx.torch_device().type, checkpoint_path(ctx).parent,
                          module, step, predict, train_set, val_set, settings, ctx, desc=desc,
                          frozen=frozen, fingerprint=fingerprint)
    rank, world = ddp.rank_world()
    device = ctx.torch_device()
    module.to(device)
    ddp.sync_batchnorm(module, device)
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
            # DDP: this rank's shard of the global batch (augmented with the batch's draws)
            rows = ddp.shard(len(idx), rank, world) if world > 1 else None
            x = augment(train_set.images[idx], gen, settings, rows).to(device)
            y = labels[idx][rows if rows is not None else slice(None)].to(device)
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            if len(x):
                with torch.autocast(device.type, enabled=use_amp):
                    loss, logits, logs = step(x, y)
                scaled = loss * ddp.loss_scale(len(x), len(idx)) if world > 1 else loss
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            else:  # a last batch smaller than the world: nothing here, zeros to the sum
                loss, logits, logs = torch.zeros(()), torch.zeros(0), {}
            if world > 1:
                ddp.all_reduce_grads(module.parameters())
            if scaler is not None:
                scaler.unscale_(opt)
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
            k = len(x)
            seen += k
            loss_sum += float(loss.detach()) * k
            correct += int(((logits.detach() > 0).float() == y).sum())
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value) * k
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
            bar.update(k)
        bar.close()
        if world > 1:  # the epoch's sums over every rank's shards
            keys = sorted(sums)
            totals = ddp.all_reduce_sum([seen, loss_sum, correct, *(sums[k] for k in keys)])
            seen, loss_sum, correct = int(totals[0]), totals[1], int(totals[2])
            sums = dict(zip(keys, totals[3:], strict=True))
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
        if rank:  # rank 0 writes the checkpoint and the log
            continue
        _atomic_torch_save({"fingerprint": stamp, "epoch": epoch, "module": module.state_dict(),
                            "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "scaler": scaler.state_dict() if scaler is not None else None,
                            "rng": torch.get_rng_state(), "history": history}, ckpt_file)
        with open(ckpt_file.parent / "log.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
    module.eval()
    return history


def settings_dict(settings: TrainSettings) -> dict[str, Any]:
    """The `TrainSettings` fields of ``settings`` (a plugin's ``Params``) as a plain dict (for
    ``meta.json``)."""
    return {f.name: getattr(settings, f.name) for f in fields(TrainSettings)}
