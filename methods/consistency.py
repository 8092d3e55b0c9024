"""Cross-architecture consistency: a ViT student trained to agree with a CNN teacher.

ViT CAMs have sharp boundaries but latch onto patterns that co-occur with smoke (chimneys,
steam); CNN CAMs localise better. Training the ViT student on image labels *and* on agreement
with a ResNet teacher's features mitigates the spurious correlations; the student's CAM is the
output (`ConsistencyCam`, registered as ``consistency``).

The alignment loss (`alignment_loss`) compares the student's last feature grid, after a
learnable linear projection to the teacher's channels, with the teacher's last feature map.
Both are flattened to ``B x N x C`` (N spatial positions, channels kept; the finer grid is
average-pooled to the coarser one first). The *level* says which vectors are paired:

- ``global``: one C-vector per image, the features averaged over positions;
- ``spatial``: one C-vector per position (what each place looks like);
- ``channel``: one N-vector per channel: the channel's distribution over positions,
  ``softmax(f[:, c] / tau)`` (where each channel fires, as in channel-wise distillation).

The *metric* is the distance between paired vectors, averaged over the pairs: ``cosine``
(1 - cosine similarity), ``l1`` (mean absolute difference), ``l2`` (mean squared difference).
Identical features give zero for every combination.

Paradigms: ``teacher_student`` takes a trained teacher (the ``teacher`` pipeline, e.g.
``resnet50``, trained or loaded by the runner under its own cache key, so it is the very
classifier the ``resnet50`` method uses) and keeps it frozen; ``co_training`` builds the teacher
architecture from its initial weights and trains both networks together, each with its own
classification loss, the alignment loss reaching both. Total loss:
``bce(student) [+ bce(teacher)] + lam * alignment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench import (
    CamSource,
    ClassifierCam,
    ConfigError,
    TimmNet,
    create_net,
    join_origins,
    parse_pipeline,
    pipeline_weights,
    register_method,
    resolve_weights,
    stage_params,
)

METRICS = ("cosine", "l1", "l2")
LEVELS = ("global", "spatial", "channel")
PARADIGMS = ("teacher_student", "co_training")


def paired_vectors(feats: torch.Tensor, level: str, tau: float = 1.0) -> torch.Tensor:
    """The vectors a level compares, from ``B x N x C`` features: a ``pairs x dim`` matrix."""
    if feats.ndim != 3:
        raise ValueError(f"features must be B x N x C, not {tuple(feats.shape)}")
    b, n, c = feats.shape
    if level == "global":
        return feats.mean(1)
    if level == "spatial":
        return feats.reshape(b * n, c)
    if level == "channel":
        return torch.softmax(feats.transpose(1, 2) / tau, dim=-1).reshape(b * c, n)
    raise ValueError(f"level must be one of {', '.join(LEVELS)}, not '{level}'")


def distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Mean distance between paired rows of ``a`` and ``b`` (``pairs x dim``)."""
    if metric == "cosine":
        return (1 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)).mean()
    if metric == "l1":
        return (a - b).abs().mean()
    if metric == "l2":
        return (a - b).pow(2).mean()
    raise ValueError(f"metric must be one of {', '.join(METRICS)}, not '{metric}'")


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, metric: str = "cosine",
                   level: str = "spatial", tau: float = 1.0) -> torch.Tensor:
    """Feature alignment loss between ``B x N x C`` student (projected) and teacher features."""
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ in shape")
    return distance(paired_vectors(student.float(), level, tau),
                    paired_vectors(teacher.float(), level, tau), metric)


def flatten_pair(student: torch.Tensor, teacher: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two NCHW grids → ``B x N x C`` each, the finer grid average-pooled to the coarser."""
    hs, ws = student.shape[-2:]
    ht, wt = teacher.shape[-2:]
    size = (min(hs, ht), min(ws, wt))
    if (hs, ws) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if (ht, wt) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student.flatten(2).transpose(1, 2), teacher.flatten(2).transpose(1, 2)


@register_method("consistency")
class ConsistencyCam(ClassifierCam):
    """ViT-S student trained on labels and on agreement with a ResNet-50 teacher; student CAM.

    consistency[metric=cosine|l1|l2,level=global|spatial|channel,
    paradigm=teacher_student|co_training,lam=0.3..1.5,teacher=resnet50].
    """

    label: ClassVar[str] = "Consistency"
    #: the thesis's transfer-loss ablation: metric x level x paradigm x lambda
    grid_params: ClassVar[tuple[str, ...]] = ("metric", "level", "paradigm", "lam")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {**ClassifierCam.profiles["quick"], "lr": 5e-4},
    }

    @dataclass
    class Params(ClassifierCam.Params):
        """`ClassifierCam` parameters (of the student) plus:

        teacher: the teacher pipeline (a classifier CAM source such as ``resnet50``).
        paradigm: ``teacher_student`` (trained, frozen teacher) or ``co_training``.
        metric: ``cosine``, ``l1`` or ``l2``.
        level: ``global``, ``spatial`` or ``channel``.
        lam: weight of the alignment loss.
        tau: temperature of the channel level's softmax over positions.
        """

        backbone: str = "vit_small_patch16_224"
        teacher: str = "resnet50"
        paradigm: str = "teacher_student"
        metric: str = "cosine"
        level: str = "spatial"
        lam: float = 1.0
        tau: float = 1.0

        def __post_init__(self) -> None:
            super().__post_init__()
            for name, value, choices in (("paradigm", self.paradigm, PARADIGMS),
                                         ("metric", self.metric, METRICS),
                                         ("level", self.level, LEVELS)):
                if value not in choices:
                    raise ValueError(f"{name} must be one of {', '.join(choices)}, "
                                     f"not '{value}'")
            if self.lam < 0 or self.tau <= 0:
                raise ValueError("lam must be >= 0 and tau > 0")

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self.teacher_net: TimmNet | None = None
        self.projection: nn.Linear | None = None

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """The student's initial weights, then the teacher pipeline's (trained or fresh)."""
        return join_origins([super().initial_weights(params, profile),
                             *pipeline_weights(params.teacher, profile)])

    # ----------------------------------------------------------------- teacher
    def sources(self) -> list[str]:
        """The trained teacher pipeline (teacher-student only; co-training builds its own)."""
        return [self.params.teacher] if self.params.paradigm == "teacher_student" else []

    def bind_sources(self, plugins: Sequence[CamSource]) -> None:
        (teacher,) = plugins
        net = getattr(teacher, "net", None)
        if not isinstance(net, TimmNet):
            raise ConfigError(f"consistency: teacher '{self.params.teacher}' must be a "
                              "classifier CAM source (resnet50, classifier[...], ...)")
        self.teacher_net = net

    def _fresh_teacher(self) -> TimmNet:
        """The teacher architecture with its initial weights, for co-training."""
        spec = parse_pipeline(self.params.teacher)
        if len(spec.stages) != 1:
            raise ConfigError(f"consistency: co-training needs a single classifier as teacher, "
                              f"not '{self.params.teacher}'")
        tp = stage_params(spec.stages[0], self.ctx.profile)
        if not hasattr(tp, "backbone"):
            raise ConfigError(f"consistency: teacher '{self.params.teacher}' is not a classifier")
        torch.manual_seed(self.ctx.seed + 1)
        weights = resolve_weights(tp.weights, tp.pretrained, tp.backbone)
        return create_net(tp.backbone, weights, self.params.input_size, tp.output_stride)

    # ----------------------------------------------------------------- training hooks
    def prepare_training(self, train_labels: torch.Tensor) -> None:
        super().prepare_training(train_labels)
        if self.params.paradigm == "co_training":
            self.teacher_net = self._fresh_teacher()
        if self.teacher_net is None:
            raise ConfigError("consistency: no teacher (the runner binds it from sources())")
        teacher = self.teacher_net.to(self.device())
        if self.params.paradigm == "teacher_student":
            teacher.eval().requires_grad_(False)
        torch.manual_seed(self.ctx.seed + 2)
        student = self.require_net()
        self.projection = nn.Linear(student.num_features, teacher.num_features).to(self.device())

    def training_module(self) -> nn.Module:
        parts: dict[str, nn.Module] = {"student": self.require_net()}
        if self.projection is not None:
            parts["projection"] = self.projection
        if self.params.paradigm == "co_training" and self.teacher_net is not None:
            parts["teacher"] = self.teacher_net
        return nn.ModuleDict(parts)

    def frozen_modules(self) -> list[nn.Module]:
        frozen = super().frozen_modules()
        if self.params.paradigm == "teacher_student" and self.teacher_net is not None:
            frozen.append(self.teacher_net)
        return frozen

    def training_step(self, x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Student BCE (+ teacher BCE when co-training) + ``lam`` x alignment."""
        p = self.params
        student, teacher = self.require_net(), self.teacher_net
        assert teacher is not None and self.projection is not None
        grid_s, logits_s = student.forward_with_grid(x)
        if p.paradigm == "teacher_student":
            with torch.no_grad():
                grid_t, _ = teacher.forward_with_grid(x)
            cls_t = None
        else:
            grid_t, logits_t = teacher.forward_with_grid(x)
            cls_t = self.classification_loss(logits_t, y)
        feats_s, feats_t = flatten_pair(grid_s, grid_t)
        align = alignment_loss(self.projection(feats_s), feats_t, p.metric, p.level, p.tau)
        cls_s = self.classification_loss(logits_s, y)
        loss = cls_s + p.lam * align + (cls_t if cls_t is not None else 0)
        logs = {"cls": float(cls_s.detach()), "align": float(align.detach())}
        if cls_t is not None:
            logs["cls_teacher"] = float(cls_t.detach())
        return loss, logits_s, logs

    def save(self, directory: Path) -> None:
        super().save(directory)
        if self.projection is not None:
            torch.save(self.projection.state_dict(), directory / "projection.pt")
