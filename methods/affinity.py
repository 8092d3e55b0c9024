"""AffinityNet, IRN-style: a boundary network trained on a CAM's confident regions, then a random
walk that spreads the CAM inside the boundaries.

After IRN (Ahn, Cho & Kwak, "Weakly Supervised Learning of Instance Segmentation with
Inter-pixel Relations", CVPR 2019, github.com/jiwoon-ahn/irn), which its authors recommend over
their earlier PSA/AffinityNet (Ahn & Kwak, CVPR 2018). A trainable refiner: ``effnet+affinity``,
``effnet+crf+affinity``, ``effnet+crf+affinity+deeplabv3plus``.

- **Seeds** (the training labels) from the incoming map of each training image: smoke where
  it is >= ``fg_thres`` (IRN 0.30), background where it is <= ``bg_thres`` (IRN 0.05),
  everything else ignore. With ``crf_seeds`` each of the two thresholded maps is first cleaned
  by the dense CRF (`bench.dense_crf`, IRN's ``crf_inference_label``: unary from the labels with
  probability 0.7, Gaussian kernel sxy 3 / weight 3, bilateral sxy 50 / srgb 5 / weight 10, 10
  iterations): smoke where the smoke CRF says smoke, background where both say background.
  A label map (0, 1, 255) is used as it is.
- **Threshold scale** (``thresholds``): ``relative`` (default) reads a soft map on IRN's scale:
  it is first mapped by ``m ** (log c / log t)``, which sends the input's calibrated threshold
  ``t`` (chosen on the calibration split, as in its record) to ``c = cam_eval_thres`` (0.15,
  the threshold IRN evaluates its CAMs at and set 0.30 / 0.05 against) and keeps 0, 1 and the
  order of values. So 0.30 and 0.05 mean "well above" and "well below the input's own
  threshold" whatever that is (effnet's CAM and the CRF's probability have different ones).
  ``absolute`` applies the thresholds to the map's values as they are. Without a calibrated
  threshold (the refiner used outside a run) the map is read as it is.
- **Training**: the boundary network `bench.BoundaryNet` (frozen backbone, IRN's boundary
  branch) on pairs of stride-4 cells within ``train_radius`` (IRN 10): same-label pairs must
  have affinity 1, cross-label pairs 0, pairs touching ignore are skipped (`bench.pixel_pairs`,
  `bench.train_boundary_net`). It trains on the training split's maps only; the trained state
  is cached like every trained stage, and a killed training resumes after its last epoch.
- **Inference**: the boundary map ``B`` of the image at stride 4 (averaged with its mirror
  image: ``infer_flip``); the map (on the threshold scale above; a label map: 1 on smoke)
  averaged over each 4x4 cell; IRN's walk `bench.propagate`: affinities ``1 - max(B)`` along
  the path between cells within ``radius`` (5), ``T = A ** beta`` (10) normalised, the map
  ``cam * (1 - B) @ T ** (2 ** exp_times)`` (8), on a sparse graph. The result is upsampled
  4x (bilinear) and divided by its maximum: the **soft map** this refiner outputs.
  ``labels=true`` outputs IRN's decision instead: a label map (uint8, 1 where the soft map
  exceeds ``bg_score`` (0.25), else 0), stored and scored as labels (`output_kind`).

Profiles: ``full`` is IRN's training (512-px crops, batch 32, 3 epochs, rescaling 0.5-1.5,
SGD at 0.1, radius 10, CRF-cleaned seeds, mirrored inference) on EfficientNet-Lite0;
``quick`` (the default run on 2 CPU cores) trains on 128-px crops for 5 epochs with AdamW, on
radius 5, without the seed CRF and without mirrored inference (see ``profiles``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bench import (
    IGNORE,
    BoundarySettings,
    Refiner,
    Sample,
    dense_crf,
    propagate,
    register_method,
    resize_map,
    weights_origin,
)

#: IRN's ``crf_inference_label`` (``misc/imutils.py``): unary from labels at probability 0.7
SEED_CRF = {"iterations": 10, "gauss_sxy": 3.0, "gauss_weight": 3.0, "bilateral_sxy": 50.0,
            "bilateral_srgb": 5.0, "bilateral_weight": 10.0}


@register_method("affinity")
class AffinityNet(Refiner):
    """IRN's boundary network trained on the CAM's confident regions, then its random walk."""

    output = "soft"
    accepts = ("soft", "labels")
    uses_input_threshold = True
    trainable = True
    demo = "effnet+affinity"
    label = "AffinityNet"
    inference_params: ClassVar[tuple[str, ...]] = ("radius", "beta", "exp_times", "bg_score",
                                                   "labels", "infer_flip")

    @dataclass
    class Params(BoundarySettings):
        """Seeds, walk and output, on top of the boundary network's `BoundarySettings`
        (backbone, weights, epochs, batch_size, crop_size, lr, train_radius, ...).

        fg_thres: smoke seeds where the map is >= this (IRN 0.30), on the thresholds scale.
        bg_thres: background seeds where the map is <= this (IRN 0.05), on the thresholds scale.
        thresholds: relative (the input's calibrated threshold is read as cam_eval_thres) or
            absolute (the map's values as they are).
        cam_eval_thres: IRN's CAM evaluation threshold, the scale of relative thresholds (0.15).
        crf_seeds: clean both thresholded maps with the dense CRF (IRN).
        crf_gt_prob: the seed CRF's confidence in the thresholded labels (IRN 0.7).
        radius: the random walk's neighbourhood, in stride-4 cells (IRN 5).
        beta: affinities are raised to this power (IRN 10).
        exp_times: the walk takes 2 ** exp_times steps (IRN 8).
        bg_score: labels=true marks smoke where the walked map (divided by its maximum)
            exceeds this (IRN 0.25).
        labels: output IRN's 0/1 decision instead of the soft map.
        infer_flip: average the boundary map with the mirror image's (IRN).
        """

        fg_thres: float = 0.30
        bg_thres: float = 0.05
        thresholds: Literal["relative", "absolute"] = "relative"
        cam_eval_thres: float = 0.15
        crf_seeds: bool = True
        crf_gt_prob: float = 0.7
        radius: int = 5
        beta: float = 10.0
        exp_times: int = 8
        bg_score: float = 0.25
        labels: bool = False
        infer_flip: bool = True

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0 <= self.bg_thres < self.fg_thres <= 1:
                raise ValueError(f"need 0 <= bg_thres < fg_thres <= 1, got {self.bg_thres} "
                                 f"and {self.fg_thres}")
            if not 0 < self.cam_eval_thres < 1:
                raise ValueError(f"cam_eval_thres must be in (0, 1), got {self.cam_eval_thres}")
            if not 0.5 < self.crf_gt_prob < 1:
                raise ValueError(f"crf_gt_prob must be in (0.5, 1), got {self.crf_gt_prob}")
            if self.radius < 2 or self.beta <= 0 or not 0 <= self.exp_times <= 16:
                raise ValueError("need radius >= 2, beta > 0 and exp_times in [0, 16]")
            if not 0 <= self.bg_score < 1:
                raise ValueError(f"bg_score must be in [0, 1), got {self.bg_score}")

    #: quick: the default run's budget on 2 CPU cores (the synthetic set's 128 training images
    #: at 256 px): 128-px crops (32x32 cells), 5 epochs of AdamW at 5e-3 (in a short trial, a
    #: dozen steps of SGD at IRN's 0.1 barely moved the loss), radius 5, no seed CRF (two CRFs
    #: per training image cost more than the training), no mirrored inference
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"crop_size": 128, "batch_size": 16, "epochs": 5, "scale_min": 0.5,
                  "scale_max": 1.0, "optimizer": "adamw", "lr": 5e-3, "weight_decay": 1e-4,
                  "train_radius": 5, "crf_seeds": False, "infer_flip": False},
    }

    @classmethod
    def output_kind(cls, params: Any) -> str:
        """``labels`` with ``labels=true`` (IRN's decision), else the soft walked map."""
        return "labels" if params.labels else "soft"

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self.model: Any = None
        self.history: list[dict[str, Any]] = []
        self.weights_info: dict[str, Any] = {"source": "none"}

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """The backbone's initial weights (``weights``), for records."""
        return weights_origin(params.weights)

    # ------------------------------------------------------------------ seeds
    def scale(self, cam: np.ndarray) -> np.ndarray:
        """A soft map on the seed thresholds' scale (``thresholds``; module docstring)."""
        x = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
        if self.params.thresholds == "absolute" or self.input_threshold is None:
            return x
        t = min(max(float(self.input_threshold), 0.01), 0.99)
        gamma = math.log(self.params.cam_eval_thres) / math.log(t)
        return np.power(x, gamma, dtype=np.float32)

    def seeds(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """uint8 seed labels of ``sample`` from its map: 1 confident smoke, 0 confident
        background, 255 ignore (a label map is returned as it is)."""
        cam = np.asarray(cam)
        if not np.issubdtype(cam.dtype, np.floating):
            return cam.astype(np.uint8)
        p = self.params
        x = self.scale(cam)
        fg = x >= p.fg_thres
        not_bg = x > p.bg_thres
        if p.crf_seeds:
            fg = self._crf_labels(sample.image, fg)
            not_bg = self._crf_labels(sample.image, not_bg)
        out = np.full(x.shape, IGNORE, np.uint8)
        out[fg] = 1
        out[~fg & ~not_bg] = 0
        return out

    def _crf_labels(self, image: np.ndarray, smoke: np.ndarray) -> np.ndarray:
        """IRN's ``crf_inference_label`` on a two-label map: where the CRF says smoke."""
        q = np.where(smoke, self.params.crf_gt_prob, 1.0 - self.params.crf_gt_prob)
        probs = np.stack([1.0 - q, q]).astype(np.float32)
        out = dense_crf(image, probs, **SEED_CRF)  # type: ignore[arg-type]
        return out[1] > out[0]

    # ------------------------------------------------------------------ training
    def _fingerprint(self, samples: Sequence[Sample], seeds: Sequence[np.ndarray]) -> str:
        params = {k: v for k, v in asdict(self.params).items()
                  if k not in self.inference_params}
        digest = hashlib.sha256(json.dumps([type(self).__name__, params, self.ctx.seed],
                                           sort_keys=True, default=str).encode())
        for sample, seed in zip(samples, seeds, strict=True):
            digest.update(sample.id.encode())
            digest.update(np.ascontiguousarray(seed).tobytes())
        return digest.hexdigest()[:16]

    def fit(self, train: Sequence[Sample], maps: Sequence[np.ndarray]) -> None:
        """Train the boundary network on the seeds of the training split's maps."""
        from bench import build_boundary_net, train_boundary_net

        samples = list(train)
        if len(samples) != len(maps):
            raise ValueError(f"{len(samples)} training images but {len(maps)} maps")
        seeds = [self.seeds(s, m) for s, m in zip(samples, maps, strict=True)]
        self.model, spec = build_boundary_net(self.params, seed=self.ctx.seed)
        self.weights_info = spec.describe()
        stage = (self.ctx.extra or {}).get("stage", self.name or "affinity")
        self.history = train_boundary_net(self.model, [s.image for s in samples], seeds,
                                          self.params, self.ctx,
                                          self._fingerprint(samples, seeds), desc=stage)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write the trained network and its ``meta.json`` (history, initial weights)."""
        from bench import save_boundary_net

        if self.model is None:
            raise RuntimeError("AffinityNet: call fit() before save()")
        save_boundary_net(self.model, directory, {"config": self.config(),
                                                  "weights": self.weights_info,
                                                  "history": self.history}, self.ctx)

    def load(self, directory: Path) -> None:
        """Rebuild the network without initial weights and load the trained ones."""
        from bench import load_boundary_net

        self.model, meta = load_boundary_net(self.params, directory, self.ctx)
        self.history = list(meta.get("history", []))
        self.weights_info = dict(meta.get("weights", {}))

    # ------------------------------------------------------------------ inference
    def boundary(self, image: np.ndarray) -> np.ndarray:
        """The boundary map of ``image`` at stride 4 (``ceil(H/4) x ceil(W/4)``, in [0, 1])."""
        if self.model is None:
            raise RuntimeError("AffinityNet: call fit() or load() before refine()")
        return self.model.boundary(image, flip=self.params.infer_flip)

    def values(self, cam: np.ndarray) -> np.ndarray:
        """What the walk propagates, full size: the soft map on the threshold scale, or 1 on
        the smoke of a label map."""
        cam = np.asarray(cam)
        if not np.issubdtype(cam.dtype, np.floating):
            return (cam == 1).astype(np.float32)
        return self.scale(cam)

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """The walked map of ``sample`` divided by its maximum, float32 at the image's size
        (``labels``: uint8 labels, 1 above ``bg_score``)."""
        p = self.params
        h, w = sample.image.shape[:2]
        b = self.boundary(sample.image)
        cells = _cell_means(self.values(cam), b.shape)
        walked = propagate(cells, b, radius=p.radius, beta=p.beta, exp_times=p.exp_times)
        up = resize_map(walked, (4 * b.shape[0], 4 * b.shape[1]))[:h, :w]
        top = float(up.max())
        soft = np.clip(up / top, 0.0, 1.0) if top > 0 else np.zeros((h, w), np.float32)
        if p.labels:
            return (soft > p.bg_score).astype(np.uint8)
        return soft.astype(np.float32)


def _cell_means(values: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Means of ``values`` (HxW) over 4x4 cells, ``cells`` = (ceil(H/4), ceil(W/4)); the last
    row and column of cells repeat the border pixels where H or W is not a multiple of 4."""
    ch, cw = cells
    h, w = values.shape
    padded = np.pad(values, ((0, 4 * ch - h), (0, 4 * cw - w)), mode="edge")
    return padded.reshape(ch, 4, cw, 4).mean(axis=(1, 3)).astype(np.float32)
