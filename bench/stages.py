"""The three stage interfaces every plugin implements: CAM source → refiners → segmenter.

A plugin subclasses one of `CamSource`, `CamWrapper`, `Refiner` or `Segmenter`, declares its
parameters as a nested ``Params`` dataclass, and overrides one or two hooks:

- `CamSource.compute(images)`: a float32 HxW map in [0, 1] per image (smoke activation).
- `CamSource.fit(train, val)`: train on image-level labels (only if ``trainable``).
- `CamWrapper.compute(images)`: built on ``self.inner.compute`` (multi-scale, sliding window, ...).
- `Refiner.refine(sample, cam)`: a better soft map or a label map (0, 1, 255 ignore).
- `Segmenter.fit(train, labels)` / `Segmenter.predict(images)`.

Everything crossing a stage boundary is NumPy; torch stays inside plugins. This module must stay
import-light (no torch): ``bench list`` imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bench.errors import NotRunnableError
from bench.sample import Sample

Kind = Literal["cam", "wrapper", "refiner", "segmenter"]
Output = Literal["soft", "labels"]


@dataclass
class RunContext:
    """What a plugin may know about the run it is part of.

    Attributes:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` as asked for; `torch_device` resolves it.
        profile: ``"quick"`` (minutes on a laptop CPU) or ``"full"`` (the paper's settings).
        seed: the run's seed; plugins derive every random stream from it.
        workdir: a private folder for this stage's artifacts (checkpoints, logs).
        progress: whether to show progress bars.
        extra: free-form values set by the runner (e.g. the data set name).
    """

    device: str = "cpu"
    profile: str = "quick"
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path("."))
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def torch_device(self) -> Any:
        """The ``torch.device`` to run on (``auto``: CUDA when available)."""
        import torch

        from bench.device import resolve_device

        return torch.device(resolve_device(self.device))


class Plugin:
    """Base of every plugin: holds validated parameters and the run context.

    Subclasses set ``Params`` (a dataclass) and may set ``profiles = {"quick": {...}}`` to
    override parameter defaults under a profile; a user's spec overrides both.
    """

    kind: ClassVar[Kind]
    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = False
    #: A pipeline that shows this plugin off, run when the plugin is selected by a wildcard.
    demo: ClassVar[str] = ""
    #: How the plugin is named in ablation tables ("Multi scale", "CRF"); default: its name.
    label: ClassVar[str] = ""
    #: Optional modules the plugin needs, as ``"module:extra"`` (``"mmseg:mmseg"``); a wildcard
    #: selection skips the plugin with a note when one is missing, an explicit one fails.
    requires: ClassVar[tuple[str, ...]] = ()
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    #: parameters `bench table --grid NAME` shows first, even where they do not vary
    grid_params: ClassVar[tuple[str, ...]] = ()
    #: parameters that change only how a trained plugin infers (or what it logs), not what is
    #: trained: variants differing only in these share one trained state in the runner's cache,
    #: and a resumed training accepts a checkpoint written under other values of them
    inference_params: ClassVar[tuple[str, ...]] = ()
    #: a trivial reference level (``random``, ``all_smoke``, ``all_background``), not a result:
    #: the runner's sanity checks (`bench.sanity`) skip it
    baseline: ClassVar[bool] = False

    @dataclass
    class Params:
        pass

    @classmethod
    def output_kind(cls, params: Any) -> Output:
        """The kind of map the plugin outputs under ``params`` (its resolved ``Params``):
        its class's ``output``, unless a parameter switches it (``affinity[labels=true]``
        outputs labels). Must not depend on profile-only parameters: a pipeline's stages are
        checked against each other from the spec's values."""
        return cls.output  # type: ignore[attr-defined]

    def __init__(self, params: Any | None = None, ctx: RunContext | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.ctx = ctx if ctx is not None else RunContext()

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """Where this plugin's learned weights start under ``params`` (its resolved ``Params``)
        and ``profile``: ``packaged``, ``hub``, ``file`` or ``random`` (`bench.weights.ORIGINS`,
        usually through `bench.weights.weights_origin`), several joined by ``+`` for a plugin
        of several networks; None (the default) for a plugin without learned weights. Records
        and leaderboards report it; `bench.weights.pipeline_weights` asks every stage."""
        return None

    @classmethod
    def not_runnable(cls, params: Any, profile: str) -> NotRunnableError | None:
        """Why this plugin cannot run under ``params`` (its resolved ``Params``) and
        ``profile``: a `NotRunnableError` for something only the user can supply (``sam``
        without ``checkpoint=``), or None (the default). Asked before any work, so it must be
        cheap (no torch, no large files). A run that selected the plugin by a wildcard records
        its pipeline as "not run: <reason>" and goes on; a named one fails with the error's
        line. Never run such a plugin on random weights instead."""
        return None

    def summary(self) -> str:
        """One line on what the plugin just did over a split (cache hits, say); the runner
        prints it after computing the split's maps. "" (the default) prints nothing."""
        return ""

    def config(self) -> dict[str, Any]:
        """The plugin's name and parameters, as recorded and hashed for caching."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}

    # Persistence of trained state (trainable plugins override both).
    def save(self, directory: Path) -> None:
        """Write trained state into ``directory`` (called after `fit`)."""
        raise NotImplementedError(f"{type(self).__name__} is trainable but does not define save()")

    def load(self, directory: Path) -> None:
        """Restore trained state written by `save`."""
        raise NotImplementedError(f"{type(self).__name__} is trainable but does not define load()")


class CamSource(Plugin):
    """Stage 1: a smoke activation map in [0, 1] for every image."""

    kind: ClassVar[Kind] = "cam"
    output: ClassVar[Output] = "soft"
    #: images handed to `compute` at once by `cams`
    batch_size: ClassVar[int] = 8

    def fit(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Train on image-level labels (``sample.label``); only called when ``trainable``."""

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Return one float32 HxW map in [0, 1] per uint8 HxWx3 image, at the image's size."""
        raise NotImplementedError

    def cams(self, samples: Sequence[Sample], desc: str = "cam") -> Iterator[np.ndarray]:
        """CAMs for ``samples`` in order, computed in batches of ``batch_size``."""
        from bench.progress import progress

        bar = progress(total=len(samples), desc=desc, enabled=self.ctx.progress)
        for start in range(0, len(samples), self.batch_size):
            batch = [s.image for s in samples[start:start + self.batch_size]]
            for image, cam in zip(batch, self.compute(batch), strict=True):
                yield check_cam(cam, image, type(self).__name__)
            bar.update(len(batch))
        bar.close()


class CamWrapper(CamSource):
    """A CAM source built on another one (``self.inner``), e.g. multi-scale or sliding window.

    In a spec it follows the source it wraps: ``resnet50+multiscale``. The inner source is
    trained (or loaded from cache) before the wrapper runs; the wrapper itself is not trained.
    """

    kind: ClassVar[Kind] = "wrapper"

    def __init__(self, params: Any | None = None, ctx: RunContext | None = None,
                 inner: CamSource | None = None) -> None:
        super().__init__(params, ctx)
        self.inner = inner  # type: ignore[assignment]


class Refiner(Plugin):
    """Stage 2: turns a soft CAM (or a label map) plus the image into a better one."""

    kind: ClassVar[Kind] = "refiner"
    #: what `refine` returns: a soft map in [0, 1] or labels (0, 1, 255)
    output: ClassVar[Output] = "soft"
    #: what `refine` accepts from the stage before it
    accepts: ClassVar[tuple[Output, ...]] = ("soft",)
    #: True: the runner sets `input_threshold` before `refine` runs
    uses_input_threshold: ClassVar[bool] = False

    def __init__(self, params: Any | None = None, ctx: RunContext | None = None) -> None:
        super().__init__(params, ctx)
        #: the threshold chosen for the upstream soft map on the calibration split (the one
        #: its record reports), so a refiner can read a CAM on its calibrated scale
        self.input_threshold: float | None = None

    def fit(self, train: Sequence[Sample], maps: Sequence[np.ndarray]) -> None:
        """Learn from training images and their upstream maps (only when ``trainable``)."""

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """Refine the upstream map ``cam`` of ``sample``."""
        raise NotImplementedError


class Segmenter(Plugin):
    """Stage 3: a segmentation network trained on pseudo labels (or ground truth)."""

    kind: ClassVar[Kind] = "segmenter"
    trainable: ClassVar[bool] = True
    output: ClassVar[Output] = "labels"
    #: False for upper bounds trained on ground-truth masks; such a segmenter runs alone.
    needs_pseudo_labels: ClassVar[bool] = True

    def fit(self, train: Sequence[Sample], labels: Sequence[np.ndarray],
            val: Sequence[Sample] = ()) -> None:
        """Train on ``labels`` (uint8 HxW: 0, 1, 255 ignore), one per training sample."""
        raise NotImplementedError

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Return one map per image at its size: labels (uint8) or a soft map (``output``)."""
        raise NotImplementedError

    def wants_cam_source(self) -> bool:
        """Whether `fit` needs the pipeline's trained CAM source (e.g. to start from its
        fine-tuned backbone); the runner then calls `bind_cam_source` before `fit`."""
        return False

    def bind_cam_source(self, source: CamSource) -> None:
        """Receive the pipeline's trained CAM source (wrappers removed) before `fit`."""
        raise NotImplementedError(f"{type(self).__name__} does not use a CAM source")


def check_cam(cam: np.ndarray, image: np.ndarray, who: str) -> np.ndarray:
    """Validate a CAM against its image: float HxW with values in [0, 1]; returns float32."""
    cam = np.asarray(cam)
    if cam.shape != image.shape[:2]:
        raise ValueError(f"{who} returned a map of shape {cam.shape} for an image of shape "
                         f"{image.shape[:2]}")
    cam = cam.astype(np.float32, copy=False)
    if cam.size and (not np.isfinite(cam).all() or cam.min() < -1e-6 or cam.max() > 1 + 1e-6):
        raise ValueError(f"{who} returned values outside [0, 1] (min {cam.min():.3g}, "
                         f"max {cam.max():.3g})")
    return np.clip(cam, 0.0, 1.0)


def check_map(m: np.ndarray, image: np.ndarray, output: str, who: str) -> np.ndarray:
    """Validate a stage's output against its image: a soft map as `check_cam` does, a label
    map as HxW with values 0, 1 and 255 only."""
    if output == "soft":
        return check_cam(m, image, who)
    m = np.asarray(m)
    if m.shape != image.shape[:2]:
        raise ValueError(f"{who} returned a map of shape {m.shape} for an image of shape "
                         f"{image.shape[:2]}")
    bad = np.setdiff1d(np.unique(m), [0, 1, 255])
    if bad.size:
        raise ValueError(f"{who} returned label values {bad[:5].tolist()} (allowed: 0, 1, 255)")
    return m
