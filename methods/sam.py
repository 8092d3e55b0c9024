"""SAM-enhanced pseudo labels: Segment Anything masks merged into a CAM's pseudo smoke region.

After SEPL (Chen et al. 2023, "Segment Anything Model (SAM) Enhanced Pseudo Labels for Weakly
Supervised Semantic Segmentation", github.com/cskyl/SAM_WSSS), on Meta's ``segment_anything``
package (``pip install 'smoke-wsss-bench[sam]'``; weights Apache-2.0). Works after any CAM
source or refiner (``effnet+sam``, ``effnet+crf+sam``, ``consistency+crf+sam+deeplabv3plus``).

- **Input.** A soft map is read at its input stage's calibrated threshold (as ``crf`` does;
  ``threshold=`` overrides it): pixels at or above it are the pseudo smoke region P. A label
  map (0, 1, 255) is used as it is. SEPL's tracker says it must be fed thresholded pseudo
  labels, not raw CAMs: that is what P is.
- **``mode=auto``**: ``SamAutomaticMaskGenerator`` masks of the whole image (settings are
  parameters; defaults from a course project that merged SAM masks into TransCAM pseudo
  labels: 32 points per side, predicted IoU 0.86, stability 0.92, one crop layer with point
  downscale 2, regions under 100 pixels removed, which needs OpenCV).
- **``mode=prompt``**: ``SamPredictor`` prompted from the map, all prompts of one image in one
  decoder call: per connected smoke component (8-connected, at least ``min_component_area``
  pixels, the ``max_components`` largest), a box around it, ``positive_points`` at its peaks
  (of the soft map, or of the distance to the component's border for a label map) and
  ``negative_points`` in confident background near it (input probability at most
  ``negative_confidence``, in the box grown by half its size on each side, most confident
  first); points are spread at least ``point_spacing`` pixels apart, missing ones padded with
  SAM's "no point" label. Of SAM's three masks per prompt, ``select=agreement`` keeps the one
  of highest IoU with the component, ``select=score`` the one SAM predicts best.
- **``merge=``** combines the masks S with P: a strategy of `bench.mask_merge` (``max_iou``,
  ``max_iou_imp``, ``max_iou_imp2`` (default), ``union``, ``intersection``, or one a user
  registers in a file with ``@register_merge``). Input ignore pixels that no kept mask covers
  stay 255.
- **``ignore_band``**: where the merge overrules a confident input, 255 instead of a hard
  label: a pixel made smoke whose input probability is below ``ignore_band``, or made
  background whose probability is above ``1 − ignore_band`` (probability: the soft map
  mapped piecewise linearly so that its threshold is 0.5; a label map gives 0 and 1). 0
  (default) disables it.
- **Output**: a label map (0, 1, 255).

SAM runs once per frame: automatic masks (packed bits) and image embeddings (float16, used
as stored, so a cached and a fresh run agree exactly) go to a content-keyed cache
(`bench.MaskCache`, ``<out>/cache/sam/``) keyed by the image's pixels, the model, the
checkpoint's digest, the precision and the generator's settings, and are shared by every
upstream pipeline and merge strategy. On CUDA SAM runs under float16 autocast.

No checkpoint ships in any package: ``checkpoint=PATH`` (the official files are listed in
`CHECKPOINTS`) or ``checkpoint=hub``: the official file of ``model``, which the stage declares
(`SamRefiner.hub_weights`) so that ``bench fetch-weights`` stores it in the weights cache
(``$BENCH_WEIGHTS``), and reads from there (`bench.hub_weight_file`: the cache, else a download
into the cache when online, else an error naming the ``fetch-weights`` command). Without a
checkpoint the stage does not run (`not_runnable`); it is never run on random weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bench import (
    MERGES,
    ConfigError,
    HubWeight,
    MaskCache,
    MaskSet,
    NotRunnableError,
    Refiner,
    Sample,
    WeightsError,
    binarize,
    hub_weight_file,
    ignore_disagreement,
    merge_labels,
    read_state_dict,
    register_method,
)

#: The official checkpoints (Kirillov et al. 2023, Apache-2.0): model -> (file name, URL).
CHECKPOINTS = {
    "vit_b": ("sam_vit_b_01ec64.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    "vit_l": ("sam_vit_l_0b3195.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    "vit_h": ("sam_vit_h_4b8939.pth",
              "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
}
NO_CHECKPOINT = ("", "none")
INSTALL_HINT = "pip install 'smoke-wsss-bench[sam]'"
OPENCV_HINT = (f"min_mask_region_area > 0 needs OpenCV ({INSTALL_HINT}, or "
               "pip install opencv-python-headless), or set min_mask_region_area=0")


@register_method("sam")
class SamRefiner(Refiner):
    """SAM masks merged into the pseudo smoke region (SEPL merges; needs a SAM checkpoint)."""

    output = "labels"
    accepts = ("soft", "labels")
    uses_input_threshold = True
    demo = "effnet+crf+sam"
    label = "SAM"
    requires = ("segment_anything:sam",)

    @dataclass
    class Params:
        mode: Literal["auto", "prompt"] = "auto"
        merge: str = "max_iou_imp2"  # a registered merge strategy (bench.mask_merge)
        model: str = "vit_b"  # segment_anything.sam_model_registry: vit_b, vit_l, vit_h
        checkpoint: str = "none"  # PATH, or hub (the weights cache / a download); none: not run
        #: pixels the merge flips against an input this confident become 255 (0: off)
        ignore_band: float = 0.0
        #: input value read as smoke; 0: the input's calibrated threshold (0.5 without one)
        threshold: float = 0.0
        # mode=auto: SamAutomaticMaskGenerator settings
        points_per_side: int = 32
        points_per_batch: int = 64  # prompts per decoder call (memory, not results)
        pred_iou_thresh: float = 0.86
        stability_score_thresh: float = 0.92
        box_nms_thresh: float = 0.7
        crop_n_layers: int = 1
        crop_n_points_downscale_factor: int = 2
        min_mask_region_area: int = 100  # > 0 needs OpenCV
        # mode=prompt
        select: Literal["agreement", "score"] = "agreement"  # which of SAM's 3 masks
        positive_points: int = 3  # per component, at its peaks
        negative_points: int = 2  # per component, in confident background near it
        negative_confidence: float = 0.1  # background probability at most this
        point_spacing: int = 8  # pixels between points of one kind
        min_component_area: int = 16  # smaller smoke components get no prompt
        max_components: int = 32  # the largest components are prompted

        def __post_init__(self) -> None:
            if self.merge not in MERGES:
                raise ValueError(f"merge: {MERGES.unknown_message(self.merge)}")
            if not 0.0 <= self.ignore_band <= 0.5:
                raise ValueError(f"ignore_band must be in [0, 0.5], got {self.ignore_band}")
            if not 0.0 <= self.threshold < 1.0:
                raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
            if not 0.0 <= self.negative_confidence <= 0.5:
                raise ValueError("negative_confidence must be in [0, 0.5], got "
                                 f"{self.negative_confidence}")
            for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor",
                         "max_components"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            for name in ("crop_n_layers", "min_mask_region_area", "positive_points",
                         "negative_points", "point_spacing", "min_component_area"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            if self.positive_points + self.negative_points == 0:
                raise ValueError("mode=prompt needs positive_points or negative_points > 0")

    cache_kinds: ClassVar[dict[str, str]] = {"auto": "auto-masks", "prompt": "embedding"}

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        root = self.ctx.extra.get("cache_root")
        self.cache = MaskCache(Path(root) / "sam" if root else self.ctx.workdir / "sam-cache")
        self._model: Any = None
        self._checkpoint: Path | None = None
        self._digest = ""
        self._sam_seconds = 0.0

    # ------------------------------------------------------------------ weights
    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """``hub`` or ``file``: SAM never runs on random weights (None without a checkpoint)."""
        text = str(params.checkpoint).strip().lower()
        if text in NO_CHECKPOINT:
            return None
        return "hub" if text == "hub" else "file"

    @classmethod
    def not_runnable(cls, params: Any, profile: str) -> NotRunnableError | None:
        """No checkpoint given (or its file missing): what to pass and where to get it."""
        text = str(params.checkpoint).strip()
        name, url = CHECKPOINTS.get(params.model, CHECKPOINTS["vit_b"])
        hint = (f"pass sam[checkpoint=/path/to/{name}] (the official {params.model} weights, "
                f"Apache-2.0: {url}), or sam[checkpoint=hub] to read them from the weights "
                "cache ('bench fetch-weights' stores them; a run downloads them when online)")
        if text.lower() in NO_CHECKPOINT:
            return NotRunnableError("needs a SAM checkpoint (checkpoint=PATH)", hint)
        if text.lower() != "hub" and not Path(text).expanduser().is_file():
            return NotRunnableError(f"SAM checkpoint file not found: {text}", hint)
        return None

    @classmethod
    def hub_weights(cls, params: Any, profile: str) -> list[HubWeight]:
        """The official checkpoint of ``model`` when ``checkpoint=hub`` (for ``bench
        fetch-weights`` and the weights check before a SLURM submission), else nothing."""
        if str(params.checkpoint).strip().lower() != "hub":
            return []
        return [hub_checkpoint(params.model)]

    def checkpoint_path(self) -> Path:
        """The checkpoint file (``hub``: the weights cache's, fetched into it when online)."""
        if self._checkpoint is not None:
            return self._checkpoint
        problem = self.not_runnable(self.params, self.ctx.profile)
        if problem is not None:
            raise problem
        text = self.params.checkpoint.strip()
        if text.lower() == "hub":
            self._checkpoint = self._download()
        else:
            self._checkpoint = Path(text).expanduser().resolve()
        return self._checkpoint

    def _download(self) -> Path:
        """The official checkpoint from the weights cache (`bench.hub_weight_file`: cached,
        else downloaded into the cache when online, else the ``fetch-weights`` command)."""
        weight = hub_checkpoint(self.params.model)
        spec = self.ctx.extra.get("stage") or \
            f"effnet+crf+sam[checkpoint=hub,model={self.params.model}]"
        try:
            return hub_weight_file(weight, [str(spec)], self.ctx.profile)
        except ConfigError as exc:  # offline, proxy, disk: one line saying what to do instead
            raise WeightsError(f"sam[checkpoint=hub]: {exc}; or download {weight.url} "
                               "elsewhere and pass checkpoint=PATH") from None

    def checkpoint_digest(self) -> str:
        """sha256 of the checkpoint's bytes (memoised by path, size and mtime)."""
        if not self._digest:
            self._digest = self.cache.file_digest(self.checkpoint_path())
        return self._digest

    def model(self) -> Any:
        """The SAM model with the checkpoint's weights (every one of them: strict loading)."""
        if self._model is not None:
            return self._model
        from segment_anything import sam_model_registry

        name = self.params.model
        if name not in sam_model_registry:
            from difflib import get_close_matches

            close = get_close_matches(name, list(sam_model_registry), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"sam[model={name}]: unknown SAM model.{hint} Choices: "
                              f"{', '.join(sorted(sam_model_registry))}")
        path = self.checkpoint_path()
        try:
            state = read_state_dict(path)
        except WeightsError as exc:
            raise WeightsError(f"{exc} (a corrupt or incomplete SAM checkpoint? "
                               f"{path.stat().st_size} bytes; get the file again)") from None
        model = sam_model_registry[name](checkpoint=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            missing = sum(1 for k in model.state_dict() if k not in state)
            extra = sum(1 for k in state if k not in model.state_dict())
            raise WeightsError(f"SAM checkpoint {path} does not fit model={name} ({missing} "
                               f"missing and {extra} unexpected keys, or other shapes): "
                               f"{str(exc).strip().splitlines()[0]}") from None
        device = self.ctx.torch_device()
        self._model = model.to(device).eval()
        return self._model

    def precision(self) -> str:
        """``fp16`` on CUDA (autocast), ``fp32`` elsewhere; part of the cache keys."""
        return "fp16" if self.ctx.torch_device().type == "cuda" else "fp32"

    # ------------------------------------------------------------------ refining
    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """A label map (0, 1, 255) of ``sample``: SAM masks merged into ``cam``'s smoke region."""
        labels, prob = self.pseudo_labels(cam)
        if self.params.mode == "auto":
            masks = self.auto_masks(sample.image)
        else:
            soft = bool(np.issubdtype(np.asarray(cam).dtype, np.floating))
            masks = self.prompt_masks(sample.image, labels, prob, soft)
        merged = merge_labels(self.params.merge, masks, labels)
        return ignore_disagreement(merged, prob, self.params.ignore_band)

    def threshold(self) -> float:
        """The input value read as smoke (``threshold``, else the calibrated one, else 0.5)."""
        if self.params.threshold:
            return float(self.params.threshold)
        return 0.5 if self.input_threshold is None else float(self.input_threshold)

    def pseudo_labels(self, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, prob)``: the input as a label map (0, 1, 255) and as a smoke probability
        whose 0.5 is the threshold (a label map: 0 and 1, its ignore pixels 0.5)."""
        cam = np.asarray(cam)
        if np.issubdtype(cam.dtype, np.floating):
            t = self.threshold()
            labels = binarize(cam, t).astype(np.uint8)
            x = np.clip(cam.astype(np.float32), 0.0, 1.0)
            t = min(max(t, 1e-6), 1.0 - 1e-6)
            prob = np.where(x < t, 0.5 * x / t, 0.5 + 0.5 * (x - t) / (1.0 - t))
            return labels, prob.astype(np.float32)
        labels = cam.astype(np.uint8)
        prob = np.where(labels == 1, 1.0, np.where(labels == 255, 0.5, 0.0)).astype(np.float32)
        return labels, prob

    def summary(self) -> str:
        """SAM calls and mask-cache hits since the last summary, and SAM's frames/s."""
        hits, misses = self.cache.hits, self.cache.misses
        if not hits and not misses:
            return ""
        what = "masks" if self.params.mode == "auto" else "image embeddings"
        rate = (f", {misses / self._sam_seconds:.2f} frames/s"
                if misses and self._sam_seconds > 0 else "")
        self.cache.reset_counts()
        self._sam_seconds = 0.0
        return (f"SAM {what}: {misses} computed{rate}, {hits} from the mask cache "
                f"({self.cache.root})")

    # ------------------------------------------------------------------ SAM
    def _settings(self, kind: str) -> dict[str, Any]:
        import segment_anything

        p = self.params
        out: dict[str, Any] = {
            "kind": kind, "model": p.model, "checkpoint": self.checkpoint_digest(),
            "precision": self.precision(),
            "segment_anything": getattr(segment_anything, "__version__", "1.0")}
        if kind == "auto-masks":
            out.update({k: getattr(p, k) for k in (
                "points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
                "crop_n_layers", "crop_n_points_downscale_factor", "min_mask_region_area")})
        return out

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.precision() == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def auto_masks(self, image: np.ndarray) -> MaskSet:
        """The automatic masks of ``image`` (from the mask cache, else computed and stored)."""
        kind = "auto-masks"
        key = self.cache.key(image, self._settings(kind))
        masks = self.cache.load_masks(kind, key)
        if masks is not None:
            return masks
        p = self.params
        if p.min_mask_region_area > 0 and not _has_opencv():
            raise ConfigError(f"sam[min_mask_region_area={p.min_mask_region_area}]: "
                              f"{OPENCV_HINT}")
        model = self.model()  # loading it is not SAM's per-frame time
        start = time.perf_counter()
        generator = _mask_generator_class()(
            model, points_per_side=p.points_per_side, points_per_batch=p.points_per_batch,
            pred_iou_thresh=p.pred_iou_thresh, stability_score_thresh=p.stability_score_thresh,
            box_nms_thresh=p.box_nms_thresh, crop_n_layers=p.crop_n_layers,
            crop_n_points_downscale_factor=p.crop_n_points_downscale_factor,
            min_mask_region_area=p.min_mask_region_area, output_mode="binary_mask")
        with self._autocast():
            records = generator.generate(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
        masks = MaskSet.from_dense(
            [r["segmentation"] for r in records], shape=image.shape[:2],
            scores={"predicted_iou": [r["predicted_iou"] for r in records],
                    "stability_score": [r["stability_score"] for r in records]})
        self._sam_seconds += time.perf_counter() - start
        self.cache.save_masks(kind, key, masks)
        return masks

    def predictor(self, image: np.ndarray) -> Any:
        """A ``SamPredictor`` set to ``image``, its embedding from the cache when stored."""
        import torch
        from segment_anything import SamPredictor
        from segment_anything.utils.transforms import ResizeLongestSide

        kind = "embedding"
        key = self.cache.key(image, self._settings(kind))
        stored = self.cache.load_arrays(kind, key)
        if stored is None:
            predictor = SamPredictor(self.model())
            start = time.perf_counter()
            with self._autocast():
                predictor.set_image(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
            stored = {"features": predictor.features.float().cpu().numpy().astype(np.float16),
                      "input_size": np.asarray(predictor.input_size, np.int64)}
            self._sam_seconds += time.perf_counter() - start
            self.cache.save_arrays(kind, key, stored)
        model = self.model()  # the prompt encoder and mask decoder are needed either way
        predictor = SamPredictor(model)
        size = model.image_encoder.img_size
        expected = ResizeLongestSide.get_preprocess_shape(image.shape[0], image.shape[1], size)
        if tuple(int(v) for v in stored["input_size"]) != tuple(expected):
            raise ConfigError(f"{self.cache.path(kind, key)}: stored embedding is for another "
                              "input size; delete it to recompute")
        device = next(model.parameters()).device
        predictor.reset_image()
        predictor.original_size = tuple(image.shape[:2])
        predictor.input_size = tuple(expected)
        predictor.features = torch.from_numpy(stored["features"].astype(np.float32)).to(device)
        predictor.is_image_set = True
        return predictor

    def prompt_masks(self, image: np.ndarray, labels: np.ndarray, prob: np.ndarray,
                     soft: bool) -> MaskSet:
        """One SAM mask per smoke component, prompted by its box, peaks and background
        (``soft``: the input was a soft map, whose peaks are the positive points)."""
        import torch

        prompts = component_prompts(labels, prob, self.params, soft)
        if not prompts:
            return MaskSet.empty(labels.shape)
        predictor = self.predictor(image)
        device = predictor.device
        size = predictor.original_size
        boxes = np.stack([p.box for p in prompts]).astype(np.float32)
        coords = np.stack([p.points for p in prompts]).astype(np.float32)
        point_labels = np.stack([p.labels for p in prompts]).astype(np.int64)
        boxes_t = torch.as_tensor(predictor.transform.apply_boxes(boxes, size), device=device)
        coords_t = torch.as_tensor(predictor.transform.apply_coords(coords, size), device=device)
        with self._autocast():
            masks, scores, _ = predictor.predict_torch(
                coords_t, torch.as_tensor(point_labels, device=device), boxes=boxes_t,
                multimask_output=True)
        masks_np = masks.cpu().numpy().astype(bool)  # (B, 3, H, W)
        scores_np = scores.float().cpu().numpy()
        chosen = []
        for b, prompt in enumerate(prompts):
            if self.params.select == "score":
                chosen.append(int(np.argmax(scores_np[b])))
                continue
            inter = (masks_np[b] & prompt.region).sum(axis=(1, 2))
            union = (masks_np[b] | prompt.region).sum(axis=(1, 2))
            chosen.append(int(np.argmax(inter / np.maximum(union, 1))))
        picked = np.stack([masks_np[b, c] for b, c in enumerate(chosen)])
        return MaskSet.from_dense(picked, scores={
            "predicted_iou": [scores_np[b, c] for b, c in enumerate(chosen)]})


def hub_checkpoint(model: str) -> HubWeight:
    """The official checkpoint of ``model`` as a weights-cache entry (``url`` kind, stored as
    ``<cache>/url/<file name>``); a `WeightsError` for a model without one."""
    if model not in CHECKPOINTS:
        raise WeightsError(f"sam[checkpoint=hub] knows the official models "
                           f"({', '.join(CHECKPOINTS)}), not '{model}'")
    name, url = CHECKPOINTS[model]
    return HubWeight("url", name, url)


# --------------------------------------------------------------------------- prompts
@dataclass
class Prompt:
    """SAM prompts for one smoke component: box (XYXY, pixels), points (N, 2) as (x, y) and
    their labels (1 smoke, 0 background, -1 padding), and the component itself."""

    box: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    region: np.ndarray


def spread_peaks(score: np.ndarray, allowed: np.ndarray, k: int, spacing: int) -> np.ndarray:
    """Up to ``k`` pixels of ``allowed``, highest ``score`` first (raster order on ties), each at
    least ``spacing`` pixels (Euclidean) from those chosen before; ``(n, 2)`` as (y, x)."""
    if k <= 0:
        return np.zeros((0, 2), np.int64)
    ys, xs = np.nonzero(allowed)
    if not len(ys):
        return np.zeros((0, 2), np.int64)
    order = np.argsort(-score[ys, xs], kind="stable")
    chosen: list[tuple[int, int]] = []
    for i in order:
        y, x = int(ys[i]), int(xs[i])
        if all((y - cy) ** 2 + (x - cx) ** 2 >= spacing ** 2 for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == k:
                break
    return np.asarray(chosen, np.int64).reshape(-1, 2)


def component_prompts(labels: np.ndarray, prob: np.ndarray, p: Any,
                      soft: bool) -> list[Prompt]:
    """The prompts of every smoke component (see `SamRefiner`'s ``mode=prompt``): positive
    points at the peaks of ``prob`` (``soft``) or of the distance to the component's border."""
    from scipy import ndimage as ndi

    smoke = labels == 1
    comps, n = ndi.label(smoke, structure=np.ones((3, 3), bool))
    if not n:
        return []
    areas = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    ids = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= max(
        p.min_component_area, 1)][: p.max_components]
    background = (labels == 0) & (prob <= p.negative_confidence)
    h, w = labels.shape
    out = []
    for cid in ids:
        region = comps == cid
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        peak_score = prob if soft else ndi.distance_transform_edt(region)
        pos = spread_peaks(peak_score, region, p.positive_points, p.point_spacing)
        gy, gx = (y1 - y0 + 1) // 2, (x1 - x0 + 1) // 2
        near = np.zeros_like(region)
        near[max(0, y0 - gy):min(h, y1 + gy + 1), max(0, x0 - gx):min(w, x1 + gx + 1)] = True
        neg = spread_peaks(1.0 - prob, background & near, p.negative_points, p.point_spacing)
        n_points = p.positive_points + p.negative_points
        points = np.zeros((n_points, 2), np.float32)
        point_labels = np.full(n_points, -1, np.int64)
        for j, (yx, lab) in enumerate([(q, 1) for q in pos] + [(q, 0) for q in neg]):
            points[j] = (yx[1], yx[0])
            point_labels[j] = lab
        out.append(Prompt(np.array([x0, y0, x1, y1], np.float32), points, point_labels, region))
    return out


def _mask_generator_class() -> type:
    """``SamAutomaticMaskGenerator`` with the empty-crop fix: when a crop keeps no mask, its
    ``crop_boxes`` must stay ``(0, 4)``, not ``(0,)``, or the cross-crop NMS of a frame where
    no crop keeps a mask fails with an IndexError (segment-anything issue #614; sam2 #681)."""
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    class Generator(SamAutomaticMaskGenerator):  # type: ignore[misc]
        def _process_crop(self, *args: Any, **kwargs: Any) -> Any:
            data = super()._process_crop(*args, **kwargs)
            if len(data["rles"]) == 0:
                data["crop_boxes"] = torch.zeros((0, 4), dtype=torch.int64)
            return data

    return Generator


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True

