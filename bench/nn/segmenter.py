"""The segmenter engine of stage 3: training on pseudo labels, DenseCRF loss, prediction.

`TorchSegmenter` is the machinery every torch segmenter shares; a backend (the
``deeplabv3plus`` and ``mmseg`` methods) overrides one hook, `TorchSegmenter.build_model` (a
module mapping a normalised ``N x 3 x H x W`` batch to ``N x 2 x H x W`` logits), and optionally
`normalization` and `backbone`. It provides:

- **training** on label maps (0 background, 1 smoke, 255 ignore) with random scale, crop and
  flip; partial cross-entropy over the labelled pixels only (255 contributes neither loss nor
  gradient, and an all-ignore batch gives exactly zero); an optional DenseCRF loss on the softmax
  output (`bench.nn.crf_loss.DenseCRFLoss`, the regularised-loss recipe of Tang et al., "On
  Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018); SGD with the poly
  schedule and a 10x learning rate for the decoder (as in the DeepLab reference code); AMP on
  CUDA;
- **checkpoints** after every epoch in ``ctx.workdir/checkpoints`` (written atomically); a
  killed training started again with the same configuration and data resumes after the last
  finished epoch and, on CPU, ends with the very weights of an uninterrupted run;
- **validation** mIoU after every epoch when validation samples with masks are given (reported
  in the training history, never used to pick weights);
- **sliding-window inference** at the image's native resolution: frames larger than
  ``tile_size`` are covered by overlapping tiles whose logits are averaged; smaller ones are
  predicted in one pass (padded to a multiple of `size_divisor`);
- ``save``/``load`` of the weights plus a JSON description (parameters, normalisation, history).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bench.ddp as ddp
from bench.atomic import atomic_path, write_json
from bench.errors import ConfigError
from bench.maps import window_starts
from bench.sample import IGNORE, Sample
from bench.stages import Segmenter

#: upper bound of the smoke weight `TorchSegmenter.Params.class_balance` computes (a handful of
#: labelled smoke pixels must not blow the loss up)
MAX_CLASS_WEIGHT = 10.0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchSegmenter(Segmenter):
    """Trains a torch segmentation network on label maps and predicts masks (sliding window).

    Subclasses implement `build_model`; everything else (augmentation, losses, optimiser,
    checkpoints, validation, tiling, persistence) is shared. Parameter defaults are the paper
    settings (``full`` profile); plugins set ``profiles = {"quick": {...}}`` for laptop runs.
    """

    #: parameters that only affect inference or bookkeeping: a checkpoint stays valid, and the
    #: runner shares one trained network, when only they change
    inference_params: ClassVar[tuple[str, ...]] = ("tile_size", "tile_overlap", "infer_batch",
                                                   "infer_scale", "infer_scales",
                                                   "infer_crf", "infer_flip",
                                                   "soft", "val_every",
                                                   "val_limit", "keep_checkpoints")
    #: background and smoke
    num_classes: ClassVar[int] = 2
    #: input height and width are padded to a multiple of this before the forward pass
    size_divisor: ClassVar[int] = 32

    @dataclass
    class Params:
        """Training and inference settings shared by every torch segmenter.

        Attributes:
            epochs: passes over the training images.
            batch_size: crops per optimiser step (a final batch of one is merged into the one
                before it: batch norm needs two).
            crop_size: side of the square training crops (padded with ignore where smaller).
            work_size: the long side, in pixels, every image is resized to before the random
                rescaling (training) and before ``infer_scale`` (inference), so that data sets
                of 256-px and 4000-px photos are seen at one working resolution; 0 keeps each
                image's native resolution.
            scale_min, scale_max: random rescaling range applied before cropping (relative to
                the working resolution).
            min_side: the smallest long side, in pixels, the training scales may shrink an
                image to: an image whose long side times ``scale_min`` (at the working
                resolution) falls below it has its training scales and its inference scale
                multiplied by the factor that lifts it there (0: off). Scales chosen for
                640-px or larger photos (0.25-0.5) would otherwise shrink a data set's 256-px
                images to 64-128 px, below a 128-px crop and below the detail a plume needs;
                with ``min_side`` equal to the crop size no image is shrunk below one crop.
            flip: random horizontal flips.
            photometric: random photometric distortion of each crop, after mmseg's
                ``PhotoMetricDistortion`` (each with probability 0.5: brightness +-32 levels,
                contrast and saturation x0.5-1.5, hue +-18 of 180 degrees), so that the network
                cannot tell smoke by the colours and lighting of the training photos alone.
            optimizer: ``sgd`` (momentum, the DeepLab recipe) or ``adamw``.
            lr: base learning rate, decayed with the poly schedule ``(1 - it/total)**poly_power``.
            head_lr_mult: learning-rate factor for everything but the pretrained backbone.
            momentum, weight_decay: optimiser settings.
            amp: mixed precision (float16 autocast + gradient scaling); used on CUDA only.
            freeze_bn: keep the backbone's batch-norm layers in inference mode while training
                (their pretrained running statistics and affine parameters stay as loaded):
                statistics of batches of a few small crops are noisy estimates.
            ema: decay of an exponential moving average of the weights (and batch-norm
                buffers), updated after every step; the average is the trained network (0: the
                last step's weights). A few hundred steps on noisy labels end wherever the last
                batches left them; the average does not.
            ensemble: networks trained on the same labels from different seeds (the new layers'
                initialisation, the crops, their order); inference averages their logits
                (Lakshminarayanan et al. 2017's deep ensembles). The first member is the network
                ``ensemble=1`` trains; each further member costs one more training run and one
                more inference pass. A few hundred steps on noisy pseudo labels end in a network
                that depends on the seed; the average depends on it less.
            self_train: rounds of self-training after the first: the trained network predicts
                its training images (with the inference settings), pixels where it disagrees
                with the labels become ignore, and a new network is trained from the initial
                weights on what both agree on (each round ``epochs`` long).
            class_balance: exponent ``a`` of the smoke class weight ``(n_bg / n_smoke) ** a``
                in the cross-entropy, with the pixel counts of the training labels (255 not
                counted): 0 is plain cross-entropy, 0.5 weights smoke by the square root of its
                inverse frequency, 1 by its inverse frequency; capped at 10 (`MAX_CLASS_WEIGHT`).
            dice_weight: weight of a per-crop soft Dice term on the smoke class, added to the
                cross-entropy (0: off; 1 is the nnU-Net / MONAI ``DiceCE`` balance): one minus
                the mean, over the crops whose labels hold smoke, of ``2 |p y| / (|p| + |y|)``
                on their labelled pixels. The cross-entropy counts pixels, so a plume on 0.1%
                of a photo weighs next to nothing; in the Dice term every crop with smoke
                weighs the same, whatever the plume's size.
            crf_weight: weight of the DenseCRF loss (0 disables it).
            crf_sigma_rgb, crf_sigma_xy: bandwidths of its bilateral kernel.
            crf_scale: resolution factor at which the DenseCRF loss is computed.
            infer_scale: images are resized by this factor (times the ``work_size`` resize)
                before inference and the logits resized back to the image's size (1: the
                working resolution); the middle of the training scale range makes objects look
                as large as in training.
            infer_scales: multi-scale inference: the logits are computed at ``infer_scale``
                times each of these factors and averaged at the image's size (DeepLab's
                multi-scale test; ``0.667:1:1.333`` with ``infer_scale=0.375`` reads the
                image at 0.25, 0.375 and 0.5, the quick profile's training range); ``1``: one
                scale. Each factor costs one more pass.
            infer_crf: refine the softmax with the dense CRF at the image's size before the
                argmax (DeepLab's post-processing, Chen et al. 2015/2017): `bench.dense_crf`
                with its defaults, the kernels of the ``crf`` refiner, so the final stage sees
                the full-resolution edges its CRF pseudo labels saw.
            soft: output the smoke probability (a soft map) instead of the argmax, so the
                harness binarises it at the threshold chosen on the calibration split, as it
                does every soft stage's map; the class weight and the label noise move the
                argmax's operating point.
            infer_flip: average the logits of the image and of its mirror image (horizontal
                flip, as in training): twice the inference compute.
            tile_size: side of the sliding-window tiles at inference, in pixels of the resized
                image (0: always one pass).
            tile_overlap: fraction of a tile shared with its neighbour.
            infer_batch: tiles per forward pass at inference.
            val_every: compute validation mIoU every this many epochs (and after the last).
            val_limit: validation images used per evaluation (0: all).
            keep_checkpoints: keep the per-epoch checkpoint after training has finished.
        """

        epochs: int = 60
        batch_size: int = 12
        crop_size: int = 512
        work_size: int = 0
        min_side: int = 0
        scale_min: float = 0.5
        scale_max: float = 2.0
        flip: bool = True
        photometric: bool = False
        optimizer: str = "sgd"
        lr: float = 0.007
        head_lr_mult: float = 10.0
        momentum: float = 0.9
        weight_decay: float = 5e-4
        poly_power: float = 0.9
        amp: bool = True
        freeze_bn: bool = False
        ema: float = 0.0
        ensemble: int = 1
        self_train: int = 0
        class_balance: float = 0.0
        dice_weight: float = 0.0
        crf_weight: float = 0.0
        crf_sigma_rgb: float = 15.0
        crf_sigma_xy: float = 100.0
        crf_scale: float = 0.5
        infer_scale: float = 1.0
        infer_scales: tuple[float, ...] = (1.0,)
        infer_crf: bool = False
        infer_flip: bool = False
        soft: bool = False
        tile_size: int = 512
        tile_overlap: float = 0.25
        infer_batch: int = 4
        val_every: int = 1
        val_limit: int = 0
        keep_checkpoints: bool = False

        def __post_init__(self) -> None:
            if self.epochs < 1 or self.batch_size < 1 or self.crop_size < 8:
                raise ValueError("epochs and batch_size must be >= 1 and crop_size >= 8")
            if self.work_size < 0:
                raise ValueError("work_size must be >= 0 (0: native resolution)")
            if self.min_side < 0:
                raise ValueError("min_side must be >= 0 (0: off)")
            if not 0 < self.scale_min <= self.scale_max:
                raise ValueError("need 0 < scale_min <= scale_max")
            if self.optimizer not in ("sgd", "adamw"):
                raise ValueError(f"optimizer must be sgd or adamw, not '{self.optimizer}'")
            if self.lr <= 0 or self.head_lr_mult <= 0:
                raise ValueError("lr and head_lr_mult must be > 0")
            if self.self_train < 0:
                raise ValueError("self_train must be >= 0")
            if self.ensemble < 1:
                raise ValueError("ensemble must be >= 1 (1: one network)")
            if not 0 <= self.ema < 1:
                raise ValueError("ema must be in [0, 1) (0: no average)")
            if self.class_balance < 0:
                raise ValueError("class_balance must be >= 0")
            if self.dice_weight < 0:
                raise ValueError("dice_weight must be >= 0 (0: off)")
            if not 0 < self.infer_scale <= 4:
                raise ValueError("infer_scale must be in (0, 4]")
            if not self.infer_scales or not all(0 < m <= 4 for m in self.infer_scales):
                raise ValueError("infer_scales must be one or more factors in (0, 4]")
            if self.crf_weight < 0 or not 0 < self.crf_scale <= 1:
                raise ValueError("crf_weight must be >= 0 and crf_scale in (0, 1]")
            if self.tile_size < 0 or not 0 <= self.tile_overlap < 1:
                raise ValueError("tile_size must be >= 0 and tile_overlap in [0, 1)")
            if self.infer_batch < 1 or self.val_every < 1 or self.val_limit < 0:
                raise ValueError("infer_batch and val_every must be >= 1, val_limit >= 0")

    @classmethod
    def output_kind(cls, params: Any) -> str:
        """``soft`` (the smoke probability) with ``soft=true``, else ``labels`` (the argmax)."""
        return "soft" if getattr(params, "soft", False) else cls.output

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self.model: nn.Module | None = None
        self.history: list[dict[str, Any]] = []
        #: cross-entropy weights (background, smoke) of the last `fit`
        self.class_weights: tuple[float, float] = (1.0, 1.0)
        self._norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    # ------------------------------------------------------------------ hooks
    def build_model(self, pretrained: bool) -> nn.Module:
        """The network: normalised ``N x 3 x H x W`` → ``N x num_classes x H x W`` logits.

        ``pretrained`` is False when trained weights are about to be loaded (`load`), so no
        backbone weights need to be read or downloaded then.
        """
        raise NotImplementedError

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of RGB in [0, 1] the backbone expects (default: ImageNet)."""
        return IMAGENET_MEAN, IMAGENET_STD

    def backbone(self, model: nn.Module) -> nn.Module | None:
        """The pretrained part trained at the base learning rate (None: everything is)."""
        return getattr(model, "encoder", None)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """Called after each epoch (checkpoint already written) with its history record."""

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.ctx.torch_device()

    def _use_amp(self, device: torch.device) -> bool:
        return bool(self.params.amp) and device.type == "cuda"

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._norm is None:
            self._norm = self.normalization()
        mean, std = self._norm
        return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
                torch.tensor(std, device=device).view(1, 3, 1, 1))

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8/float 0..255 ``N x 3 x H x W`` → normalised float32."""
        mean, std = self._mean_std(raw.device)
        return (raw.float() / 255.0 - mean) / std

    def checkpoint_path(self, round_: int = 0, member: int = 0) -> Path:
        """Where the per-epoch checkpoint of training round ``round_`` (`self_train`) of
        ensemble member ``member`` lives."""
        name = ("last" if not round_ else f"round{round_ + 1}") + \
            (f"-member{member + 1}" if member else "")
        return Path(self.ctx.workdir) / "checkpoints" / f"{name}.pt"

    def member_seed(self, member: int) -> int:
        """The seed of ensemble member ``member``: the run's seed for the first, so that
        ``ensemble=1`` is the single network, and a distinct seed derived from it for each
        further member."""
        if member == 0:
            return int(self.ctx.seed)
        return (int(self.ctx.seed) * 1_000_003 + member * 104_729 + 31) % 2**31

    def _fingerprint(self, train: Sequence[Sample], labels: Sequence[np.ndarray],
                     seed: int) -> str:
        """What a checkpoint must match to be resumed: training parameters, seed and data."""
        params = {k: v for k, v in dataclasses.asdict(self.params).items()
                  if k not in self.inference_params}
        digest = hashlib.sha256(json.dumps([type(self).__name__, params, seed],
                                           sort_keys=True, default=str).encode())
        for sample, label in zip(train, labels, strict=True):
            digest.update(sample.id.encode())
            digest.update(np.ascontiguousarray(label).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ training
    def fit(self, train: Sequence[Sample], labels: Sequence[np.ndarray],
            val: Sequence[Sample] = ()) -> None:
        """Train on ``labels`` (uint8 HxW: 0, 1, 255 ignore), one per training sample."""
        world = int((self.ctx.extra or {}).get("gpus", 1) or 1)
        if world > 1 and not ddp.active():  # --gpus N: this process is rank 0 (bench.ddp)
            ddp.launch(self.fit, world, self.device.type, self.checkpoint_path().parent,
                       train, labels, val)
            return
        p = self.params
        samples = list(train)
        images = [np.ascontiguousarray(s.image) for s in samples]
        targets = [np.ascontiguousarray(np.asarray(lab, dtype=np.uint8)) for lab in labels]
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} training images but {len(targets)} label maps")
        if not images:
            raise ConfigError(f"{type(self).__name__}: no training images")
        for sample, img, lab in zip(samples, images, targets, strict=True):
            if img.shape[:2] != lab.shape:
                raise ValueError(f"label map of '{sample.id}' has shape {lab.shape}, image "
                                 f"{img.shape[:2]}")
            bad = (lab != 0) & (lab != 1) & (lab != IGNORE)
            if bad.any():
                raise ValueError(f"label map of '{sample.id}' has values other than 0, 1, 255: "
                                 f"{sorted(set(np.unique(lab[bad]).tolist()))[:5]}")
        if all((lab == IGNORE).all() for lab in targets):
            warnings.warn(f"{type(self).__name__}: every training pixel is ignore (255); the "
                          "cross-entropy term is zero", stacklevel=2)
        val_items = self._val_items(val)
        history: list[dict[str, Any]] = []
        for round_ in range(p.self_train + 1):
            if round_:
                # the network's own view of its training images: where it disagrees with the
                # labels, neither is trusted (ignore), and the next round learns the rest
                targets = [agreement(lab, pred) for lab, pred in
                           zip(targets, self.predict_labels(images), strict=True)]
            members = []
            for member in range(p.ensemble):
                history += self._fit_round(samples, images, targets, val_items, round_, member)
                members.append(self.model)
            self.model = members[0] if p.ensemble == 1 else LogitMean(members)
        self.history = history

    def _fit_round(self, samples: list[Sample], images: list[np.ndarray],
                   targets: list[np.ndarray], val_items: list[tuple[np.ndarray, np.ndarray]],
                   round_: int, member: int = 0) -> list[dict[str, Any]]:
        """One training run of ensemble member ``member`` from the initial weights on
        ``targets``; sets ``self.model`` to it."""
        p = self.params
        seed = self.member_seed(member)
        self.class_weights = class_weights(targets, p.class_balance)
        device = self.device
        # the new layers' initialisation follows this run's seed, not the caller's RNG state
        torch.manual_seed(seed)
        model = self.build_model(pretrained=True).to(device)
        self._freeze_bn(model)
        ddp.sync_batchnorm(model, device)
        if self._norm is None:
            self._norm = self.normalization()
        optimizer = self._make_optimizer(model)
        use_amp = self._use_amp(device)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        crf = self._make_crf() if p.crf_weight > 0 else None

        n = len(images)
        batches_per_epoch = max(1, n // p.batch_size if n % p.batch_size == 1 and n > 1
                                else math.ceil(n / p.batch_size))
        total_iters = p.epochs * batches_per_epoch
        fingerprint = self._fingerprint(samples, targets, seed)
        ema = self._make_ema(model)
        start_epoch, history = self._resume(model, optimizer, scaler, fingerprint, device, ema,
                                            round_, member)
        trained = ema.module if ema is not None else model

        from bench.progress import progress

        stage = (self.ctx.extra or {}).get("stage", type(self).__name__)
        desc = f"{stage} train" + (f" (round {round_ + 1})" if p.self_train else "") + \
            (f" (member {member + 1}/{p.ensemble})" if p.ensemble > 1 else "")
        bar = progress(total=total_iters, desc=desc, enabled=self.ctx.progress,
                       initial=start_epoch * batches_per_epoch)
        try:
            for epoch in range(start_epoch, p.epochs):
                started = time.perf_counter()
                torch.manual_seed(_epoch_seed(seed, epoch))
                rng = np.random.default_rng([seed % 2**32, epoch])
                self._train_mode(model)
                sums: dict[str, float] = {"loss": 0.0, "ce": 0.0, "dice": 0.0, "crf": 0.0}
                lr_now = p.lr
                for b, idx in enumerate(_batches(rng.permutation(n), p.batch_size)):
                    it = epoch * batches_per_epoch + b
                    lr_now = self._set_lr(optimizer, it, total_iters)
                    raw, target, valid = self._make_batch(images, targets, idx, rng, device)
                    rows = ddp.local_rows(len(idx))
                    if rows is not None:  # DDP: this rank's shard of the batch
                        raw, target, valid = raw[rows], target[rows], valid[rows]
                    with torch.autocast(device_type=device.type, dtype=torch.float16,
                                        enabled=use_amp):
                        logits = model(self._normalize(raw))
                    loss, parts = self.loss(logits, target, raw, valid, crf)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss * ddp.share(len(raw), len(idx))).backward()
                    ddp.all_reduce_grads(model.parameters())
                    scaler.step(optimizer)
                    scaler.update()
                    if ema is not None:
                        ema.update(model, step=it + 1)
                    for key, value in parts.items():
                        sums[key] += value
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['loss']:.4f}", epoch=epoch + 1)
                record: dict[str, Any] = {
                    "epoch": epoch + 1, "lr": lr_now,
                    **({"round": round_ + 1} if p.self_train else {}),
                    **({"member": member + 1} if p.ensemble > 1 else {}),
                    **{k: v / batches_per_epoch for k, v in sums.items()},
                }
                last = epoch + 1 == p.epochs
                if val_items and ((epoch + 1) % p.val_every == 0 or last):
                    self.model = trained
                    record["val_mIoU"] = self._validate(val_items)
                    self._train_mode(model)
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    val_mIoU=f"{record['val_mIoU']:.3f}")
                record["time_s"] = time.perf_counter() - started
                history.append(record)
                if ddp.rank_world()[0] == 0:
                    self._save_checkpoint(model, optimizer, scaler, epoch + 1, history,
                                          fingerprint, ema, round_, member)
                self.on_epoch_end(record)
        finally:
            bar.close()
        trained.eval()
        self.model = trained
        path = self.checkpoint_path(round_, member)
        if not p.keep_checkpoints and path.exists() and ddp.rank_world()[0] == 0:
            path.unlink()
            with contextlib.suppress(OSError):  # the folder, unless something else is in it
                path.parent.rmdir()
        return history

    def loss(self, logits: torch.Tensor, target: torch.Tensor, raw: torch.Tensor,
             valid: torch.Tensor, crf: nn.Module | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Partial cross-entropy over labelled pixels (+ weighted Dice and DenseCRF terms).

        The cross-entropy is the weighted mean over labelled pixels with `class_weights`
        (``sum w_y * ce / sum w_y``; plain mean when both are 1); a batch without labelled
        pixels gives exactly zero. With ``dice_weight``, ``dice_weight * (1 - mean Dice)`` is
        added, the Dice of the smoke probability on each crop's labelled pixels, averaged over
        the crops whose labels hold smoke (none: no term).

        Args:
            logits: ``N x C x H x W`` network output.
            target: ``N x H x W`` int64 labels; 255 is ignored (no loss, no gradient).
            raw: ``N x 3 x H x W`` float RGB in 0..255 (the crops, for the DenseCRF loss).
            valid: ``N x H x W`` bool, False on padding added around small crops.
            crf: the DenseCRF loss module, or None.

        Returns:
            The scalar loss to minimise and its parts as floats (``loss``, ``ce``, ``dice``,
            ``crf``).
        """
        logits = logits.float()
        weights = torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)
        ce_sum = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE,
                                 reduction="sum")
        labelled = target != IGNORE
        denominator = weights[target.masked_fill(~labelled, 0)][labelled].sum()
        ce = ce_sum / denominator.clamp(min=1e-12)
        total = ce
        dice_value = 0.0
        if self.params.dice_weight > 0:
            term = self.params.dice_weight * (1 - smoke_dice(logits, target))
            total = total + term
            dice_value = float(term.detach())
        crf_value = 0.0
        if crf is not None:
            probs = torch.softmax(logits, dim=1)
            term = _call_crf(crf, raw, probs, valid)
            total = total + term
            crf_value = float(term.detach())
        return total, {"loss": float(total.detach()), "ce": float(ce.detach()),
                       "dice": dice_value, "crf": crf_value}

    def _make_crf(self) -> nn.Module:
        p = self.params
        try:
            from bench.nn.crf_loss import DenseCRFLoss
        except ImportError as exc:
            raise ConfigError(f"crf_weight={p.crf_weight} needs bench.nn.crf_loss.DenseCRFLoss, "
                              f"which is not available: {exc}") from None
        return DenseCRFLoss(weight=p.crf_weight, sigma_rgb=p.crf_sigma_rgb,
                            sigma_xy=p.crf_sigma_xy, scale_factor=p.crf_scale)

    def _make_ema(self, model: nn.Module) -> Any | None:
        """timm's `ModelEmaV3` of ``model`` (weights and buffers) when ``ema`` > 0: the decay
        warms up as ``1 - (1 + step) ** -2/3`` towards ``ema``, so the randomly initialised
        head's first steps do not linger in the average of a short run."""
        if self.params.ema <= 0:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(model, decay=self.params.ema, use_warmup=True)

    def _backbone_norms(self, model: nn.Module) -> list[nn.Module]:
        """The backbone's batch-norm layers when ``freeze_bn`` is on (else none)."""
        backbone = self.backbone(model) if self.params.freeze_bn else None
        if backbone is None:
            return []
        return [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _freeze_bn(self, model: nn.Module) -> None:
        """``freeze_bn``: the backbone's batch-norm affine parameters are not trained."""
        for module in self._backbone_norms(model):
            for q in module.parameters(recurse=False):
                q.requires_grad_(False)

    def _train_mode(self, model: nn.Module) -> None:
        """``model.train()``, with the backbone's batch norm in inference mode (``freeze_bn``)."""
        model.train()
        for module in self._backbone_norms(model):
            module.eval()

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        p = self.params
        backbone = self.backbone(model)
        backbone_ids = {id(q) for q in backbone.parameters()} if backbone is not None else set()
        base = [q for q in model.parameters() if id(q) in backbone_ids and q.requires_grad]
        head = [q for q in model.parameters() if id(q) not in backbone_ids and q.requires_grad]
        mult = p.head_lr_mult if base else 1.0
        groups = [g for g in ({"params": base, "lr": p.lr, "lr_mult": 1.0},
                              {"params": head, "lr": p.lr * mult, "lr_mult": mult})
                  if g["params"]]
        if p.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum,
                                   weight_decay=p.weight_decay)
        return torch.optim.AdamW(groups, lr=p.lr, weight_decay=p.weight_decay)

    def _set_lr(self, optimizer: torch.optim.Optimizer, it: int, total: int) -> float:
        factor = (1.0 - it / max(total, 1)) ** self.params.poly_power
        for group in optimizer.param_groups:
            group["lr"] = self.params.lr * group.get("lr_mult", 1.0) * factor
        return self.params.lr * factor

    def _make_batch(self, images: list[np.ndarray], targets: list[np.ndarray],
                    idx: np.ndarray, rng: np.random.Generator, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random scale, crop and flip of the samples ``idx``.

        Returns raw RGB (float 0..255, ``N x 3 x S x S``), int64 targets (255 on padding) and
        a bool mask of the real (unpadded) pixels.
        """
        p = self.params
        size = p.crop_size
        assert self._norm is not None
        mean = torch.tensor(self._norm[0], device=device).view(3, 1) * 255
        raws, labs, valids = [], [], []
        for i in idx:
            img, lab = images[int(i)], targets[int(i)]
            h, w = lab.shape
            scale = self.work_scale(h, w) * float(rng.uniform(p.scale_min, p.scale_max))
            # cut the region that becomes the crop, then resize only that region
            rh, rw = min(h, math.ceil(size / scale)), min(w, math.ceil(size / scale))
            y = int(rng.integers(0, h - rh + 1))
            x = int(rng.integers(0, w - rw + 1))
            # copies: loaders may hand out read-only arrays
            img_t = torch.tensor(img[y:y + rh, x:x + rw], device=device).permute(2, 0, 1)
            lab_t = torch.tensor(lab[y:y + rh, x:x + rw], device=device)
            oh = min(size, max(1, round(rh * scale)))
            ow = min(size, max(1, round(rw * scale)))
            img_f = img_t.float()[None]
            if (oh, ow) != (rh, rw):
                img_f = F.interpolate(img_f, size=(oh, ow), mode="bilinear",
                                      align_corners=False, antialias=scale < 1)
                lab_t = F.interpolate(lab_t[None, None].float(), size=(oh, ow),
                                      mode="nearest")[0, 0].to(torch.uint8)
            img_f = img_f[0].clamp(0, 255)
            if p.flip and rng.random() < 0.5:
                img_f, lab_t = img_f.flip(-1), lab_t.flip(-1)
            if p.photometric:
                img_f = photometric_distortion(img_f, rng)
            raw = torch.zeros(3, size, size, device=device)
            target = torch.full((size, size), IGNORE, dtype=torch.int64, device=device)
            valid = torch.zeros(size, size, dtype=torch.bool, device=device)
            raw[:, :oh, :ow] = img_f
            target[:oh, :ow] = lab_t.long()
            valid[:oh, :ow] = True
            raw[:, ~valid] = mean  # pad with the mean colour (normalises to 0), not black
            raws.append(raw)
            labs.append(target)
            valids.append(valid)
        return torch.stack(raws), torch.stack(labs), torch.stack(valids)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, fingerprint: str, device: torch.device,
                ema: Any | None = None, round_: int = 0, member: int = 0
                ) -> tuple[int, list[dict[str, Any]]]:
        path = self.checkpoint_path(round_, member)
        if not path.exists():
            return 0, []
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: start afresh
            warnings.warn(f"ignoring unreadable checkpoint {path}: {exc}", stacklevel=3)
            return 0, []
        if state.get("fingerprint") != fingerprint:
            warnings.warn(f"ignoring checkpoint {path}: it was written for other parameters or "
                          "data", stacklevel=3)
            return 0, []
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        return int(state["epoch"]), list(state.get("history", []))

    def _save_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                         scaler: torch.amp.GradScaler, epoch: int,
                         history: list[dict[str, Any]], fingerprint: str,
                         ema: Any | None = None, round_: int = 0, member: int = 0) -> None:
        state = {"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "history": history}
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        with atomic_path(self.checkpoint_path(round_, member)) as tmp:
            torch.save(state, tmp)

    # ------------------------------------------------------------------ validation
    def _val_items(self, val: Sequence[Sample]) -> list[tuple[np.ndarray, np.ndarray]]:
        n = len(val)
        if not n:
            return []
        limit = self.params.val_limit
        picks = (range(n) if not limit or limit >= n
                 else sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist())))
        items = []
        for i in picks:
            sample = val[i]
            if sample.mask is not None:
                items.append((sample.image, sample.mask))
        return items

    def _validate(self, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
        from bench.metrics import AreaAccumulator

        acc = AreaAccumulator()
        for image, mask in items:
            acc.add(self.predict([image])[0], mask)
        return acc.metrics()["mIoU"]

    # ------------------------------------------------------------------ inference
    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() or load() before predict()")
        return self.model

    def work_scale(self, height: int, width: int) -> float:
        """The factor every scale of an image is multiplied by: the one that brings its long
        side to ``work_size`` (1 when it is 0), raised where needed so that ``scale_min``
        keeps the long side at ``min_side`` pixels or more."""
        p = self.params
        long = max(height, width)
        scale = p.work_size / long if p.work_size > 0 else 1.0
        if p.min_side > 0:
            scale = max(scale, p.min_side / (p.scale_min * long))
        return scale

    @torch.no_grad()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Float32 ``C x H x W`` logits of one uint8 HxWx3 image at its native size (CPU).

        The image is first resized by ``infer_scale`` times `work_scale` (bilinear,
        antialiased when shrinking); with several ``infer_scales`` this is done at each of them
        (``infer_scale`` times the factor) and the logits, back at the native size, averaged.
        Images larger than ``tile_size`` are then covered by overlapping tiles (stride
        ``tile_size * (1 - tile_overlap)``, the last tile flush with the border) whose logits are
        averaged where they overlap; each tile (or the whole image) is padded at the bottom and
        right to a multiple of `size_divisor` with the mean colour, and the padding is cut off.
        Logits of a resized image are resized back (bilinear) to the image's size.
        """
        model = self._require_model()
        model.eval()
        p = self.params
        device = next(model.parameters()).device
        x = self._normalize(torch.tensor(np.asarray(image), device=device)
                            .permute(2, 0, 1)[None])
        native: tuple[int, int] = (int(image.shape[0]), int(image.shape[1]))
        base = self.work_scale(*native) * p.infer_scale
        total = self._logits_at(model, x, native, base * p.infer_scales[0])
        for mult in p.infer_scales[1:]:
            total += self._logits_at(model, x, native, base * mult)
        return (total / len(p.infer_scales)).cpu()

    def _logits_at(self, model: nn.Module, x: torch.Tensor, native: tuple[int, int],
                   factor: float) -> torch.Tensor:
        """Logits of the normalised ``1 x 3 x H x W`` image ``x`` read at ``factor`` of its
        native size, tiled, flipped, and resized back to ``native`` (on ``x``'s device)."""
        p = self.params
        device = x.device
        if factor != 1.0:
            size = (max(1, round(native[0] * factor)), max(1, round(native[1] * factor)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=factor < 1)
        x = x[0]
        h, w = x.shape[1:]
        tile = p.tile_size if p.tile_size > 0 else max(h, w)
        th, tw = min(tile, h), min(tile, w)
        stride = max(1, round(tile * (1 - p.tile_overlap)))
        boxes = [(y, x0) for y in window_starts(h, th, stride)
                 for x0 in window_starts(w, tw, stride)]
        acc = torch.zeros(self.num_classes, h, w, device=device)
        count = torch.zeros(1, h, w, device=device)
        div = self.size_divisor
        ph, pw = -(-th // div) * div, -(-tw // div) * div
        use_amp = self._use_amp(device)
        for start in range(0, len(boxes), p.infer_batch):
            chunk = boxes[start:start + p.infer_batch]
            batch = torch.zeros(len(chunk), 3, ph, pw, device=device)
            for k, (y, x0) in enumerate(chunk):
                batch[k, :, :th, :tw] = x[:, y:y + th, x0:x0 + tw]
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                out = model(batch).float()
                if p.infer_flip:
                    out = (out + model(batch.flip(-1)).float().flip(-1)) / 2
            out = out[:, :, :th, :tw]
            for k, (y, x0) in enumerate(chunk):
                acc[:, y:y + th, x0:x0 + tw] += out[k]
                count[:, y:y + th, x0:x0 + tw] += 1
        result = acc / count
        if (h, w) != native:
            result = F.interpolate(result[None], size=native, mode="bilinear",
                                   align_corners=False)[0]
        return result

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities (float32 CxHxW) of one image: the softmax of `logits`, refined
        by the dense CRF with ``infer_crf``."""
        probs = torch.softmax(self.logits(image), 0).numpy().astype(np.float32)
        if self.params.infer_crf:
            from bench.crf import dense_crf

            probs = dense_crf(np.ascontiguousarray(image[..., :3], dtype=np.uint8), probs)
        return probs

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One uint8 label map (0 background, 1 smoke) per image, at the image's size (with
        ``soft``: `predict_proba`)."""
        if self.params.soft:
            return self.predict_proba(images)
        return self.predict_labels(images)

    def predict_labels(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The argmax label map (uint8, 0 background, 1 smoke) of every image, whatever
        ``soft`` says."""
        if not self.params.infer_crf:
            return [self.logits(im).argmax(0).numpy().astype(np.uint8) for im in images]
        return [self.probabilities(im).argmax(0).astype(np.uint8) for im in images]

    def predict_proba(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The smoke probability (float32 HxW in [0, 1]) of every image (``infer_crf``: the
        CRF's)."""
        return [self.probabilities(im)[1] for im in images]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write ``weights.pt`` (state dict) and ``segmenter.json`` into ``directory``."""
        model = self._require_model()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                   directory / "weights.pt")
        mean, std = self._norm if self._norm is not None else self.normalization()
        write_json(directory / "segmenter.json", {
            "class": type(self).__name__, "name": self.name,
            "params": dataclasses.asdict(self.params),
            "normalization": {"mean": list(mean), "std": list(std)},
            "class_weights": list(self.class_weights),
            "history": self.history,
        })

    def load(self, directory: Path) -> None:
        """Rebuild the network without pretrained weights and load the trained ones."""
        directory = Path(directory)
        meta_path = directory / "segmenter.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            norm = meta.get("normalization")
            if norm:
                self._norm = (tuple(norm["mean"]), tuple(norm["std"]))
            self.history = list(meta.get("history") or [])
            if meta.get("class_weights"):
                self.class_weights = tuple(meta["class_weights"])  # type: ignore[assignment]
        device = self.device
        n = self.params.ensemble
        model = (self.build_model(pretrained=False) if n == 1 else
                 LogitMean([self.build_model(pretrained=False) for _ in range(n)]))
        state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.to(device).eval()


# --------------------------------------------------------------------------- helpers
class LogitMean(nn.Module):
    """An ensemble of segmentation networks: the mean of their logits (``ensemble``)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The members' mean ``N x C x H x W`` logits."""
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


def class_weights(labels: Sequence[np.ndarray], balance: float) -> tuple[float, float]:
    """Cross-entropy weights (background, smoke) for label maps: smoke gets
    ``(n_background / n_smoke) ** balance``, capped at `MAX_CLASS_WEIGHT` and never below 1
    (``balance=0``, or labels without smoke or without background: (1, 1))."""
    if balance <= 0:
        return 1.0, 1.0
    smoke = sum(int(np.count_nonzero(lab == 1)) for lab in labels)
    background = sum(int(np.count_nonzero(lab == 0)) for lab in labels)
    if not smoke or not background:
        return 1.0, 1.0
    return 1.0, float(min(MAX_CLASS_WEIGHT, max(1.0, (background / smoke) ** balance)))


def smoke_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean soft Dice of the smoke class over the crops whose labels hold smoke.

    ``logits`` is ``N x 2 x H x W``, ``target`` ``N x H x W`` with 255 ignored: per crop,
    ``2 sum(p y) / (sum p + sum y)`` over its labelled pixels, with ``p`` the softmax's smoke
    probability and ``y`` the smoke label; crops without a smoke label are left out (1 when
    none has one, so that the term ``1 - Dice`` is zero).
    """
    labelled = target != IGNORE
    prob = torch.softmax(logits.float(), dim=1)[:, 1] * labelled
    truth = (target == 1).to(prob.dtype)
    has = truth.sum((1, 2)) > 0
    if not bool(has.any()):
        return prob.new_ones(())
    inter = (prob * truth).sum((1, 2))[has]
    sizes = (prob.sum((1, 2)) + truth.sum((1, 2)))[has]
    return (2 * inter / sizes).mean()


def photometric_distortion(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion`` on a float ``3 x H x W`` RGB image in 0..255 (random
    draws from ``rng``): brightness, then contrast before or after saturation and hue, each
    applied with probability 0.5; torchvision's colour operations."""
    from torchvision.transforms.v2 import functional as tvf

    x = image / 255.0
    if rng.random() < 0.5:
        x = (x + float(rng.uniform(-32, 32)) / 255.0).clamp(0, 1)
    contrast_first = rng.random() < 0.5
    contrast = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None
    if contrast is not None and contrast_first:
        x = tvf.adjust_contrast(x, contrast)
    if rng.random() < 0.5:
        x = tvf.adjust_saturation(x, float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.5:
        x = tvf.adjust_hue(x, float(rng.uniform(-18, 18)) / 180.0)
    if contrast is not None and not contrast_first:
        x = tvf.adjust_contrast(x, contrast)
    return x * 255.0


def agreement(labels: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``labels`` where ``prediction`` (0/1) agrees with them, ignore (255) elsewhere; ignore
    stays ignore."""
    return np.where(labels == prediction, labels, IGNORE).astype(np.uint8)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split ``order`` into batches; a trailing batch of one joins the one before it."""
    out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    elif len(out) == 1 and len(out[0]) == 1:
        out[0] = np.concatenate([out[0], out[0]])  # batch norm needs two values per channel
    return out


def _call_crf(crf: nn.Module, raw: torch.Tensor, probs: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor:
    """`bench.nn.crf_loss.DenseCRFLoss` on uint8 RGB crops and softmax outputs, padding left out."""
    images = raw.round().clamp(0, 255).to(torch.uint8)
    return crf(images, probs, valid.to(probs.dtype))
