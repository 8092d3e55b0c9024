"""Run one (method, data set) cell: stages in order, each cached, each evaluated and recorded.

A cell is a pure function of its `Cell` description, so it can run in this process or in a
SLURM job. Every stage's outputs live under ``<out>/cache/<key>/`` where the key hashes the
configuration of the stage and everything upstream plus the training data's fingerprint. A
rerun finds finished stages there and does not recompute them; all writes are atomic, so a run
killed at any moment resumes cleanly.

What the runner needs to know of each stage's plugin class is one `bench.plans.StageInfo`.
`run_cell` first tries the cell with the infos of a valid plan (``<out>/cache/plans/``) and
without importing any plugin (so neither torch nor timm): when every map it needs is cached,
the cell is scored from them and prints one ``cached:`` line. When a stage has to be trained or
computed, that attempt stops before doing anything (`NeedsCompute`; what it would have printed
is dropped) and the cell runs again with the plugin classes, as it always did.

A stage's record is not scored again when an earlier run wrote it from the same maps, data,
options and code (its score key, `CellRunner.score_key`; the maps must still be cached): the
record is kept as it is, on either path.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cache import (
    StageCache,
    compact,
    model_dir,
    model_done,
    save_model,
    stable_hash,
    stage_key,
)
from bench.data import DATASETS, SplitData, discover_datasets, load_splits, resolve_root
from bench.data.frames import SampleList
from bench.device import resolve_device
from bench.errors import BenchError, ConfigError, NotRunnableError, PluginError, one_line
from bench.evaluate import StageScore, score_stage
from bench.pipeline import build_stage
from bench.plans import PlanStore, stage_infos
from bench.plugins import builtin_dir, discover, include_dirs
from bench.provenance import provenance
from bench.records import write_not_run_record, write_record
from bench.sanity import (
    all_smoke_iou,
    below_all_smoke,
    collapsed,
    label_smoke_share,
    predicted_smoke_share,
)
from bench.spec import PipelineSpec, parse_pipeline
from bench.stages import (
    CamSource,
    CamWrapper,
    Plugin,
    Refiner,
    RunContext,
    Segmenter,
    check_map,
)

#: the `RunOptions` a record's numbers depend on (part of its score key, `CellRunner.score_key`)
SCORE_OPTIONS = ("profile", "seed", "limit", "n_boot")


@dataclass
class RunOptions:
    """Options shared by every cell of a ``bench run`` invocation."""

    out: Path = Path("results")
    profile: str = "quick"
    device: str = "auto"
    seed: int = 0
    data_roots: dict[str, str] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    limit: int | None = None
    progress: bool = True
    n_boot: int = 1000
    #: processes (GPUs) that train each classifier and segmenter stage with DDP (`bench.ddp`)
    gpus: int = 1


@dataclass
class Cell:
    """One independent job: a method on a data set, scored on one split."""

    method: str
    dataset: str
    split: str
    options: RunOptions
    #: data set whose ``train`` split trains the method and whose ``val`` split calibrates
    #: thresholds (empty: ``dataset`` itself); another one makes this an out-of-distribution cell
    train_dataset: str = ""
    #: selected by a wildcard: a stage that cannot run as configured (`Plugin.not_runnable`:
    #: no checkpoint) is recorded as "not run" instead of failing the run
    optional: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if imported) torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def calibration_split(split: str, data_splits: Sequence[str]) -> str:
    """The split a soft map's threshold is chosen on: ``val``, or ``train`` when scoring ``val``."""
    if split != "val" and "val" in data_splits:
        return "val"
    if split == "val" and "train" in data_splits:
        return "train"
    raise ConfigError(f"no split to choose a threshold on when scoring '{split}' "
                      f"(splits: {', '.join(data_splits)})")


@dataclass
class StageState:
    """A stage of the cell being run: its plugin (built on demand), cache key and outputs."""

    index: int
    spec_text: str
    config: dict[str, Any]
    key: str
    trains: bool  # this stage or an upstream one learns from the training split
    plugin: Plugin | None = None
    ready: bool = False  # trained (or loaded) and usable
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    #: cache folder of the trained state: ``key``, or for a plugin with ``inference_params``
    #: a key without them, so variants that differ only in how they infer share one training
    model_key: str = ""


class NeedsCompute(Exception):
    """Raised by a cell run from a plan (`CellRunner` with ``planned``) that finds a stage it
    would have to train or compute: `run_cell` runs the cell again with the plugin classes."""


class CellRunner:
    """Runs the stages of one cell with caching, evaluation and records.

    Args:
        cell: the cell.
        plan: take the stages' `StageInfo` from a valid plan in the run's cache when there is
            one (`bench.plans`): the cell then imports no plugin, and stops with `NeedsCompute`
            before computing anything; its messages wait in `held` (printed by `run_cell` if
            the attempt succeeds). Without a valid plan it runs as with ``plan=False``, which
            asks the plugin classes (and writes the plan for the next run).
        store: the run's `PlanStore` (default: one for this cell's run folder).
    """

    def __init__(self, cell: Cell, plan: bool = False, store: PlanStore | None = None) -> None:
        self.cell = cell
        self.opts = cell.options
        discover(self.opts.include)
        discover_datasets(self.opts.include)
        self.cache_root = self.opts.out / "cache"
        store = store or PlanStore(self.cache_root, self.opts.include)
        #: the run's plans; its code digest is part of every record's score key
        self.store = store
        self.spec: PipelineSpec
        if plan:
            self.spec, self.infos, self.planned = store.pipeline_infos(
                cell.method, self.opts.profile, self.plugin_folders())
        else:
            self.spec = parse_pipeline(cell.method)
            #: what each stage's plugin class says (`bench.plans.StageInfo`)
            self.infos = stage_infos(self.spec, self.opts.profile, self.plugin_folders())
            #: whether the infos came from a plan (no plugin imported; see `NeedsCompute`)
            self.planned = False
        #: messages held back while running from a plan (printed once it succeeded)
        self.held: io.StringIO | None = io.StringIO() if self.planned else None
        self.dataset = DATASETS.get(cell.dataset)
        self.train_name = DATASETS.get(cell.train_dataset or cell.dataset).name
        self.ood = self.train_name != self.dataset.name
        #: key of the scored split in `SplitData` (OOD: kept apart from the training set's own)
        self.eval_key = f"ood-{cell.split}" if self.ood else cell.split
        self.configs = [info.config for info in self.infos]
        #: each stage's kind of map, ``soft`` or ``labels`` (`Plugin.output_kind`)
        self.outputs = [info.output for info in self.infos]
        self.data: SplitData | None = None
        #: exclusions of the scored data set of an out-of-distribution cell (its records)
        self.scored_excluded: dict[str, Any] = {}
        self.trains = any(info.trainable for info in self.infos)
        #: each stage's initial weights (`bench.weights.ORIGINS`; None: nothing learned)
        self.weights = [info.weights for info in self.infos]
        #: why each stage cannot run (None: it can), asked before any work
        self.not_runnable = [info.blocked() for info in self.infos]
        #: map files read from the cache, and records of earlier runs kept (`reused_record`)
        self.maps_read = 0
        self.records_reused = 0
        blocked = next((e for e in self.not_runnable if e is not None), None)
        if blocked is not None and not cell.optional:
            raise blocked

    def say(self, line: str) -> None:
        """Print one line on stderr (held back while running from a plan)."""
        print(line, file=self.held if self.held is not None else sys.stderr, flush=True)

    # ----------------------------------------------------------------- data
    def load_data(self) -> SplitData:
        """Load the scored split, the calibration split and (if anything trains) ``train``."""
        root = resolve_root(self.dataset, self.opts.data_roots)
        available = self.dataset.split_names
        if self.cell.split not in available:
            raise ConfigError(f"data set '{self.dataset.name}' has no split '{self.cell.split}' "
                              f"(splits: {', '.join(available)})")
        if self.ood:
            return self.load_ood_data(root)
        wanted = {self.cell.split, calibration_split(self.cell.split, available)}
        if self.trains:
            wanted.add("train")
        return load_splits(self.dataset, root, self.opts.profile, self.opts.limit,
                           splits=sorted(wanted), index=self.opts.out)

    def load_ood_data(self, root: Path | None) -> SplitData:
        """Train and calibrate on the training data set; score a split of another one."""
        train_config = DATASETS.get(self.train_name)
        train_root = resolve_root(train_config, self.opts.data_roots)
        data = load_splits(train_config, train_root, self.opts.profile, self.opts.limit,
                           splits=["train", "val"], index=self.opts.out)
        scored = load_splits(self.dataset, root, self.opts.profile, self.opts.limit,
                             splits=[self.cell.split], index=self.opts.out)
        data.splits[self.eval_key] = scored[self.cell.split]
        data.fingerprints[self.eval_key] = scored.fingerprints[self.cell.split]
        if self.cell.split in scored.subsets:  # named subsets of the scored split (issue 17)
            data.subsets[self.eval_key] = scored.subsets[self.cell.split]
        # the scored set's own exclusions, recorded apart: data.derived is part of the trained
        # stages' keys, which out-of-distribution cells share with the in-domain ones
        self.scored_excluded = scored.derived.get("excluded", {})
        return data

    def check_leakage(self, data: SplitData, trains: bool) -> None:
        """Refuse to score frames that training or threshold calibration has seen.

        Frames are compared by id and by content (a hash of the file or pixels), so a copy of a
        test image under another name in the training folder is caught too. The error names
        the files on both sides and the ``[exclude]`` entry that leaves them out of training.
        """
        from bench.data.leakage import find_leaks, leakage_message

        scored = self.eval_key
        if trains and scored == "train":
            raise ConfigError(f"'{self.spec.text}' trains on split 'train'; score it on 'val' "
                              "or 'test' (--split)")
        others = [self.calib_name(data)] + (["train"] if trains else [])
        for other in dict.fromkeys(others):
            if other == scored:
                continue
            leaks = find_leaks(data[other], data[scored])
            if leaks:
                train_config = DATASETS.get(self.train_name)
                raise ConfigError(leakage_message(
                    leaks, scored_split=self.cell.split, scored_name=self.dataset.name,
                    seen_split=other, seen_config=train_config,
                    scored_root=resolve_root(self.dataset, self.opts.data_roots),
                    seen_root=resolve_root(train_config, self.opts.data_roots)))

    # ----------------------------------------------------------------- stages
    def stage_states(self, data: SplitData) -> list[StageState]:
        states = []
        trains = False
        upstream = {"dataset": self.train_name, "seed": self.opts.seed,
                    "profile": self.opts.profile}
        for i, (info, config) in enumerate(zip(self.infos, self.configs, strict=True)):
            trains = trains or info.trainable
            upstream = {"up": upstream, "stage": config, "code": info.code}
            if info.uses_input_threshold:
                # the input threshold is chosen on the calibration split, which depends on
                # the scored split (val when scoring test, train when scoring val)
                upstream["calibration"] = self.calib_name(data)
            if trains:
                upstream["train_data"] = data.fingerprints.get("train")
                upstream["derived"] = data.derived
            key, model_key = stage_key(upstream, info.inference_params)
            states.append(StageState(i, self.spec.prefix(i + 1).text, config, key, trains,
                                     model_key=model_key))
        return states

    def plugin_folders(self) -> tuple[Path, ...]:
        """The built-in ``methods/`` folder and the include folders (for code digests)."""
        return (builtin_dir("methods"), *include_dirs(self.opts.include))

    def context(self, state: StageState) -> RunContext:
        workdir = self.cache_root / state.key
        workdir.mkdir(parents=True, exist_ok=True)
        return RunContext(device=self.opts.device, profile=self.opts.profile, seed=self.opts.seed,
                          workdir=workdir, progress=self.opts.progress,
                          extra={"dataset": self.dataset.name, "stage": state.spec_text,
                                 "cache_root": self.cache_root, "gpus": self.opts.gpus})

    def ensure_ready(self, states: list[StageState], i: int, data: SplitData) -> Plugin:
        """Build stage ``i``'s plugin and train it (or load its trained state from the cache)."""
        state = states[i]
        if state.ready:
            assert state.plugin is not None
            return state.plugin
        if self.planned:
            raise NeedsCompute(state.spec_text)
        ctx = self.context(state)
        with self.blame(i, "building it"):
            plugin = build_stage(self.spec.stages[i], ctx)
        if isinstance(plugin, CamWrapper):
            plugin.inner = self.ensure_ready(states, i - 1, data)  # type: ignore[assignment]
        self.prepare_sources(plugin, data)
        if isinstance(plugin, Refiner) and plugin.uses_input_threshold and i > 0 \
                and self.outputs[i - 1] == "soft":
            plugin.input_threshold = self.stage_threshold(states, i - 1, data)
        state.plugin = plugin
        if plugin.trainable:
            directory = model_dir(self.cache_root, state.model_key or state.key)
            done = model_done(directory)
            # parallel cells: one trains, the others wait for its DONE marker (bench.locks)
            with self.lock(directory, done is not None, f"the training of {state.spec_text}"):
                done = done or model_done(directory)
                if done is not None:
                    with self.blame(i, f"loading its trained state from {directory}"):
                        plugin.load(directory)
                    state.timings.setdefault("fit_s", float(done.get("fit_s", 0.0)))
                else:
                    seed_everything(self.opts.seed)
                    start = time.perf_counter()
                    self.fit(states, i, plugin, data)
                    state.timings["fit_s"] = time.perf_counter() - start

                    def save(tmp: Path) -> None:
                        with self.blame(i, "saving its trained state"):
                            plugin.save(tmp)

                    save_model(directory, save, state.timings["fit_s"])
        state.ready = True
        return plugin

    def prepare_sources(self, plugin: Plugin, data: SplitData) -> None:
        """Ready the sub-pipelines a plugin builds on (``plugin.sources()``, e.g. fusion's
        inputs or a teacher): each is trained or loaded under its own cache key, as if it ran
        alone, and the ready CAM sources go to ``plugin.bind_sources`` in the same order."""
        specs = plugin.sources() if callable(getattr(plugin, "sources", None)) else []
        ready = []
        for text in specs:
            sub = CellRunner(Cell(text, self.cell.dataset, self.cell.split, self.opts,
                                  self.cell.train_dataset))
            sub_states = sub.stage_states(data)
            source = sub.ensure_ready(sub_states, len(sub_states) - 1, data)
            if not isinstance(source, CamSource):
                raise ConfigError(f"'{self.spec.text}': source '{text}' must be a CAM source "
                                  "(optionally with wrappers), not a refiner or segmenter")
            ready.append(source)
        if specs:
            plugin.bind_sources(ready)  # type: ignore[attr-defined]

    def fit(self, states: list[StageState], i: int, plugin: Plugin, data: SplitData) -> None:
        train = data["train"]
        calib = self.calib_name(data)
        if isinstance(plugin, CamSource):
            labelled = data.classifier_train()
            if not len(labelled):
                raise ConfigError(f"data set '{self.dataset.name}': no image-level labels in "
                                  "split 'train' to train a classifier on")
            with self.blame(i, "training"):
                plugin.fit(labelled, data[calib].labelled() if calib != "train" else [])
        elif isinstance(plugin, Refiner):
            maps = self.maps(states, i - 1, "train", data)
            with self.blame(i, "training"):
                plugin.fit(train, maps)
        elif isinstance(plugin, Segmenter):
            labels = self.training_labels(states, i, data)
            if plugin.wants_cam_source():
                plugin.bind_cam_source(self.cam_source(states, i, data))
            with self.blame(i, "training"):
                plugin.fit(train, labels, data[calib] if calib != "train" else [])

    def cam_source(self, states: list[StageState], i: int, data: SplitData) -> CamSource:
        """The pipeline's first stage, trained, with its wrappers removed (for stage ``i``)."""
        if i == 0 or self.infos[0].kind not in ("cam", "wrapper"):
            raise ConfigError(f"'{self.spec.text}': stage '{states[i].spec_text}' starts from "
                              "the pipeline's CAM source, and this pipeline has none")
        source = self.ensure_ready(states, 0, data)
        while isinstance(source, CamWrapper):
            source = source.inner
        assert isinstance(source, CamSource)
        return source

    def training_labels(self, states: list[StageState], i: int,
                        data: SplitData) -> list[np.ndarray]:
        """What segmenter stage ``i`` trains on: the pseudo labels of the stage before it, or
        the training split's masks for a segmenter without ``needs_pseudo_labels``."""
        if self.infos[i].needs_pseudo_labels:
            return self.pseudo_labels(states, i - 1, data)
        train = data["train"]
        if not train.has_masks:
            raise ConfigError(f"'{self.spec.text}' trains on ground-truth masks but "
                              f"split 'train' of '{self.dataset.name}' has none")
        return [ref.frame.mask[_box_slices(ref.box)] for ref in train.refs]

    def pseudo_labels(self, states: list[StageState], i: int,
                      data: SplitData) -> list[np.ndarray]:
        """Stage ``i``'s maps on the training split as labels (soft maps: its chosen threshold)."""
        maps = self.maps(states, i, "train", data)
        if self.outputs[i] == "labels":
            return [m.astype(np.uint8) for m in maps]
        from bench.metrics import binarize

        threshold = self.stage_threshold(states, i, data)
        return [binarize(m, threshold).astype(np.uint8) for m in maps]

    def stage_threshold(self, states: list[StageState], i: int, data: SplitData) -> float:
        """The threshold chosen for stage ``i``'s soft maps on the calibration split."""
        state = states[i]
        if state.threshold is None:
            self.evaluate(states, i, data)
        assert state.threshold is not None
        return float(state.threshold)

    def calib_name(self, data: SplitData) -> str:
        if self.ood:
            return "val"
        return calibration_split(self.cell.split, list(data.splits))

    # ----------------------------------------------------------------- maps
    def maps(self, states: list[StageState], i: int, split: str,
             data: SplitData) -> list[np.ndarray]:
        """Stage ``i``'s output maps for every sample of ``split`` (cached on disk)."""
        state = states[i]
        samples = data[split]
        cache = StageCache(self.cache_root, state.key)
        if split not in state.maps:
            path = cache.maps_path(split, data.fingerprints[split])
            with self.lock(path, path.exists(), f"the maps of {state.spec_text} on {split}"):
                if path.exists():
                    state.maps[split], timing = cache.load_maps(path)
                    self.maps_read += 1
                    if timing is not None:
                        state.timings.setdefault(f"infer_{split}_s", timing)
                else:
                    # train (or load) this stage and compute its inputs first, so that the
                    # timing below is this stage's inference alone
                    plugin = self.ensure_ready(states, i, data)
                    if isinstance(plugin, Refiner):
                        self.maps(states, i - 1, split, data)
                    start = time.perf_counter()
                    computed = self.compute_maps(states, i, split, data)
                    elapsed = time.perf_counter() - start
                    state.timings[f"infer_{split}_s"] = elapsed
                    state.maps[split] = cache.save_maps(path, samples.ids, computed, elapsed)
                    note = plugin.summary()
                    if note:
                        self.say(f"bench: {state.spec_text} on {self.dataset.name}/{split}: "
                                 f"{note}")
        return cache.ordered(state.maps[split], samples.ids)

    def compute_maps(self, states: list[StageState], i: int, split: str,
                     data: SplitData) -> list[np.ndarray]:
        samples: SampleList = data[split]
        plugin = self.ensure_ready(states, i, data)
        desc = f"{states[i].spec_text} {samples.name}"
        who = type(plugin).__name__
        doing = f"computing maps of split '{split}'"
        if isinstance(plugin, CamSource):
            with self.blame(i, doing):
                return [compact(m, "soft") for m in plugin.cams(samples, desc=desc)]
        if isinstance(plugin, Refiner):
            upstream = self.maps(states, i - 1, split, data)
            from bench.progress import progress

            out = []
            with self.blame(i, doing):
                for sample, cam in progress(zip(samples, upstream, strict=True),
                                            total=len(samples), desc=desc,
                                            enabled=self.opts.progress):
                    refined = check_map(plugin.refine(sample, cam), sample.image,
                                        self.outputs[i], f"{who}.refine (sample {sample.id})")
                    out.append(compact(refined, self.outputs[i]))
            return out
        if isinstance(plugin, Segmenter):
            out = []
            with self.blame(i, doing):
                for start in range(0, len(samples), 8):
                    batch = samples[start:start + 8]
                    preds = plugin.predict([s.image for s in batch])
                    if len(preds) != len(batch):
                        raise ValueError(f"{who}.predict returned {len(preds)} maps for "
                                         f"{len(batch)} images")
                    out.extend(compact(check_map(p, s.image, self.outputs[i],
                                                  f"{who}.predict (sample {s.id})"),
                                        self.outputs[i]) for p, s in zip(preds, batch, strict=True))
            return out
        raise TypeError(f"unknown plugin type {who}")

    def lock(self, artifact: Path, exists: bool, what: str) -> AbstractContextManager[None]:
        """The lock of a cache artifact that does not exist yet (`bench.locks`): parallel
        cells compute it once; nothing to lock when it exists."""
        if exists:
            return nullcontext()
        from bench.locks import artifact_lock

        return artifact_lock(self.cache_root, artifact, what)

    @contextmanager
    def blame(self, i: int, doing: str) -> Iterator[None]:
        """Report an exception raised inside stage ``i``'s plugin as one `PluginError` line:
        plugin, stage, data set and what went wrong (the traceback stays chained for
        ``--debug``). Errors the harness already words (`BenchError`) pass unchanged."""
        try:
            yield
        except (BenchError, NeedsCompute):
            raise
        except Exception as exc:
            stage = self.spec.stages[i]
            raise PluginError(
                f"plugin '{stage.name}' (stage {i + 1} of '{self.spec.text}', "
                f"{self.infos[i].kind}) on {self.dataset.name}, {doing}: "
                f"{one_line(exc)}") from exc

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, states: list[StageState], i: int, data: SplitData) -> StageScore:
        state = states[i]
        output = self.outputs[i]
        eval_split = data[self.eval_key]
        calib = self.calib_name(data)
        if not eval_split.has_masks:  # image labels only (RISE clips, class folders)
            from bench.evaluate_image import score_image_level

            score = score_image_level(
                eval_split.ids, eval_split.labels, self.maps(states, i, self.eval_key, data),
                output, data[calib].labels, self.maps(states, i, calib, data), calib,
                n_boot=self.opts.n_boot, seed=self.opts.seed,
                eval_units=[ref.frame.unit for ref in eval_split.refs])
            state.threshold = score.threshold
            return score
        per_tile = self.scored_per_tile()
        soft = output == "soft"
        if soft and not len(data[calib]):
            raise ConfigError(f"split '{calib}' of '{self.train_name}' holds no frames to choose "
                              f"{self.spec.stages[i].name}'s threshold on (a carved val split "
                              "needs more training frames, a larger val_fraction or --limit)")
        score = score_stage(
            eval_views=eval_split.frame_views(per_tile),
            eval_maps=self.maps(states, i, self.eval_key, data),
            output=output,
            calib_views=data[calib].frame_views(self.calib_per_tile()) if soft else None,
            calib_maps=self.maps(states, i, calib, data) if soft else None,
            calib_name=calib,
            n_boot=self.opts.n_boot,
            seed=self.opts.seed,
        )
        state.threshold = score.threshold
        return score

    def scored_per_tile(self) -> bool:
        """Whether the scored data set counts tiles as images (``[tiles] score = "tile"``)."""
        return self.dataset.score_per_tile

    def calib_per_tile(self) -> bool:
        """Whether the calibration data set counts tiles as images."""
        return DATASETS.get(self.train_name).score_per_tile if self.ood else \
            self.dataset.score_per_tile

    def sanity_warnings(self, states: list[StageState], i: int, score: StageScore,
                        data: SplitData) -> list[str]:
        """The `bench.sanity` checks of stage ``i``'s score, as warning lines: a smoke IoU
        below ``all_smoke``'s (pixel level only), and a segmenter that predicts under 10% of
        the smoke share of its training labels. Baselines (``baseline = True``) are exempt."""
        info = self.infos[i]
        if info.baseline:
            return []
        where = f"'{states[i].spec_text}' on {self.dataset.name}/{self.cell.split}"
        pixel = data[self.eval_key].has_masks
        found = []
        if pixel:
            found.append(below_all_smoke(where, score.metrics.get("IoU_smoke", math.nan),
                                         all_smoke_iou(score.per_image_areas)))
        if info.segmenter:
            fractions = score.extra.get("fractions")
            predicted = predicted_smoke_share(score.per_image_areas) if pixel else \
                float(np.mean(fractions)) if fractions is not None and len(fractions) else \
                math.nan
            trained = label_smoke_share(self.training_labels(states, i, data))
            found.append(collapsed(where, predicted, trained, "pseudo labels"
                                   if info.needs_pseudo_labels else "masks"))
        return [w for w in found if w]

    def stage_weights(self, i: int) -> dict[str, str]:
        """Initial weights of the learned stages up to ``i``, by plugin name (a repeated name
        gets its stage number)."""
        out: dict[str, str] = {}
        for n, (stage, value) in enumerate(zip(self.spec.stages[:i + 1], self.weights[:i + 1],
                                               strict=True)):
            if value is not None:
                out[stage.name if stage.name not in out else f"{stage.name} ({n + 1})"] = value
        return out

    def record_file(self, states: list[StageState], i: int) -> Path:
        """Where stage ``i``'s record is (`bench.records.record_path`)."""
        from bench.records import record_path

        return record_path(self.opts.out, {"method": states[i].spec_text,
                                           "dataset": self.dataset.name,
                                           "train_dataset": self.train_name,
                                           "split": self.cell.split,
                                           "profile": self.opts.profile,
                                           "seed": self.opts.seed})

    def record_config(self, states: list[StageState], i: int,
                      data: SplitData) -> dict[str, Any]:
        """The ``config`` of stage ``i``'s record: its stages, cache key, data and options."""
        return {"stages": self.configs[: i + 1], "cache_key": states[i].key,
                "data": {"fingerprints": data.fingerprints, "derived": data.derived,
                         "dataset_file": str(self.dataset.path), "limit": self.opts.limit,
                         **({"scored_excluded": self.scored_excluded} if self.ood else {})},
                "options": {k: str(v) if isinstance(v, Path) else v
                            for k, v in asdict(self.opts).items()}}

    def score_key(self, states: list[StageState], i: int, data: SplitData) -> str:
        """What stage ``i``'s record says depends on, hashed: its `record_config` (stage key,
        so the maps; data fingerprints; the options in `SCORE_OPTIONS`), the scored and
        calibration splits with their aux masks and named subsets, the initial weights, the
        code (`bench.plans.tree_digest`: every ``.py`` file of ``bench``, ``methods/`` and the
        include folders, scoring included) and the NumPy version. A record that holds the
        same key is not scored again (`reused_record`)."""
        calib = self.calib_name(data)
        subsets = [(sub.name, sub.rule.describe(), sorted(sub.ids) if sub.ids is not None
                    else None) for sub in data.subsets.get(self.eval_key, [])]
        config = self.record_config(states, i, data)
        # the options that change numbers (others, like --out or --device, are kept in the
        # record as this run gives them: `reused_record`)
        config["options"] = {k: config["options"][k] for k in SCORE_OPTIONS}
        return stable_hash({
            "config": config, "output": self.outputs[i],
            "splits": [self.eval_key, calib, self.cell.split],
            "aux": [_aux_digest(data[self.eval_key]), _aux_digest(data[calib])],
            "per_tile": [self.scored_per_tile(), self.calib_per_tile()],
            "subsets": subsets, "weights": self.stage_weights(i), "code": self.store.tree,
            "numpy": np.__version__})

    def reused_record(self, states: list[StageState], i: int,
                      data: SplitData) -> dict[str, Any] | None:
        """Stage ``i``'s record as an earlier run wrote it, when its score key is this run's
        (`score_key`), its per-frame areas are there and the stage's maps are still cached;
        else None (the stage is scored). Its ``pipeline`` field is updated as `write_record`
        would, and its options are this run's (what a rerun could change besides provenance
        and timings)."""
        key = self.score_key(states, i, data)
        path = self.record_file(states, i)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(old, dict) or old.get("not_run") \
                or old.get("config", {}).get("score_key") != key \
                or not path.with_suffix(".areas.npz").is_file():
            return None
        cache = StageCache(self.cache_root, states[i].key)
        needed = [self.eval_key] + ([self.calib_name(data)] if self.outputs[i] == "soft" else [])
        if not all(cache.maps_path(split, data.fingerprints[split]).is_file()
                   for split in needed):
            return None
        pipeline = self.spec.text
        if pipeline != old.get("method") and old.get("pipeline") == old.get("method"):
            pipeline = old["method"]  # write_record keeps a method's own row
        options = self.record_config(states, i, data)["options"]
        if old.get("pipeline") != pipeline or old["config"].get("options") != options:
            from bench.atomic import write_json
            from bench.locks import artifact_lock

            with artifact_lock(self.cache_root, path, "a record"):
                old["pipeline"] = pipeline
                old["config"]["options"] = options
                write_json(path, old)
        self.records_reused += 1
        return old

    def record(self, states: list[StageState], i: int, score: StageScore,
               data: SplitData, warnings: Sequence[str] = ()) -> dict[str, Any]:
        state = states[i]
        rec = {
            "method": state.spec_text,
            "pipeline": self.spec.text,
            "stage": i,
            "stage_kind": state.config["kind"],
            "output": self.outputs[i],
            "dataset": self.dataset.name,
            "train_dataset": self.train_name,
            "split": self.cell.split,
            "profile": self.opts.profile,
            "seed": self.opts.seed,
            "device": self.device_used(states, i),
            "level": "pixel" if data[self.eval_key].has_masks else "image",
            "n_images": score.n_images,
            "n_tiles": len(data[self.eval_key]),
            "scored_per": "tile" if self.scored_per_tile() else "frame",
            "metrics": score.metrics,
            "ci": score.ci,
            "threshold": score.threshold_info,
            "distractors": score.distractors,
            "timings": state.timings,
            "weights": self.stage_weights(i),
            "warnings": list(warnings),
            "config": {**self.record_config(states, i, data),
                       "score_key": self.score_key(states, i, data)},
            "provenance": provenance(),
        }
        if data.subsets.get(self.eval_key):  # per-subset metrics from the stored areas
            from bench.subset_scores import score_subsets

            rec["subsets"] = score_subsets(data.subsets[self.eval_key], score, rec["level"],
                                           self.opts.n_boot, self.opts.seed)
        from bench.locks import artifact_lock
        from bench.records import record_path

        # parallel cells write shared prefix records; write_record reads the old one first
        with artifact_lock(self.cache_root, record_path(self.opts.out, rec), "a record"):
            write_record(self.opts.out, rec, score.per_image_areas, score.image_ids, score.units)
        return rec

    def not_run_record(self, states: list[StageState], i: int, data: SplitData,
                       reason: str) -> dict[str, Any]:
        """The record of a stage that did not run (`Plugin.not_runnable`): no metrics, its
        ``not_run`` reason, which tables show in place of the numbers."""
        state = states[i]
        rec = {
            "method": state.spec_text, "pipeline": self.spec.text, "stage": i,
            "stage_kind": state.config["kind"], "output": self.outputs[i],
            "dataset": self.dataset.name, "train_dataset": self.train_name,
            "split": self.cell.split, "profile": self.opts.profile, "seed": self.opts.seed,
            "level": "pixel" if data[self.eval_key].has_masks else "image",
            "n_images": 0, "metrics": {}, "ci": {}, "not_run": f"not run: {reason}",
            "weights": self.stage_weights(i), "warnings": [],
            "config": {"stages": self.configs[: i + 1], "cache_key": state.key},
            "provenance": provenance(),
        }
        write_not_run_record(self.opts.out, rec)
        return rec

    def device_used(self, states: list[StageState] | None = None, i: int = 0) -> str:
        """The resolved device, or "none" when no stage of this cell touched torch.

        A cell run from a plan touches no torch: its maps were computed by an earlier run, so
        stage ``i`` keeps the device of the record it replaces when that record has the same
        cache key (else "none").
        """
        if self.planned and states is not None:
            try:
                old = json.loads(self.record_file(states, i).read_text(encoding="utf-8"))
                if old.get("config", {}).get("cache_key") == states[i].key:
                    return str(old.get("device", "none"))
            except (OSError, ValueError, AttributeError):
                pass
            return "none"
        return resolve_device(self.opts.device) if "torch" in sys.modules else "none"

    # ----------------------------------------------------------------- main
    def run(self) -> list[dict[str, Any]]:
        data = self.load_data()
        self.data = data
        states = self.stage_states(data)
        self.check_leakage(data, self.trains)
        scored = data[self.eval_key]
        if not scored.has_masks and all(label is None for label in scored.labels):
            raise ConfigError(f"split '{self.cell.split}' of '{self.dataset.name}' has neither "
                              "pixel masks nor image labels to score against")
        records = []
        for i in range(len(states)):
            blocked = self.not_runnable[i]
            if blocked is not None:  # a wildcard's pipeline without its checkpoint
                self.say(f"bench: not running '{self.spec.text}': {blocked}")
                records += [self.not_run_record(states, j, data, blocked.reason)
                            for j in range(i, len(states))]
                break
            reused = self.reused_record(states, i, data)
            if reused is not None:  # scored before, from these maps, by this code
                for line in reused.get("warnings", []):
                    self.say(f"bench: warning: {line}")
                records.append(reused)
                continue
            score = self.evaluate(states, i, data)
            warnings = self.sanity_warnings(states, i, score, data)
            for line in warnings:
                self.say(f"bench: warning: {line}")
            records.append(self.record(states, i, score, data, warnings))
        return records


@dataclass
class CellResult:
    """What `run_cell_result` returns: the records, and whether the cell was all cached."""

    records: list[dict[str, Any]]
    #: every stage's maps came from the cache and no plugin was imported (`NeedsCompute`)
    cached: bool = False
    #: map files read from the cache
    maps_read: int = 0


def run_cell_result(cell: Cell, store: PlanStore | None = None) -> CellResult:
    """Run one cell: from its plan when valid and everything is cached (no plugin imported,
    one ``cached:`` line), else with the plugin classes (see the module doc)."""
    runner = CellRunner(cell, plan=True, store=store)
    if runner.planned:
        try:
            records = runner.run()
        except NeedsCompute:
            runner = CellRunner(cell, store=store)
        else:
            assert runner.held is not None
            sys.stderr.write(runner.held.getvalue())
            print(f"cached: {cell.method} on {cell.dataset}/{cell.split}: "
                  f"{len(runner.spec.stages)} stage(s), {runner.records_reused} record(s) "
                  f"kept, {runner.maps_read} map file(s) read and scored; nothing computed, "
                  "no plugin imported", file=sys.stderr, flush=True)
            return CellResult(records, True, runner.maps_read)
    return CellResult(runner.run(), False, runner.maps_read)


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Run one cell and return its records (one per stage); importable by SLURM workers."""
    return run_cell_result(cell).records


def pipeline_not_runnable(spec: PipelineSpec | str,
                          profile: str) -> list[NotRunnableError | None]:
    """Each stage's `Plugin.not_runnable` answer under its resolved parameters (None: it can
    run), without building any plugin."""
    from bench.pipeline import stage_params

    if isinstance(spec, str):
        spec = parse_pipeline(spec)
    return [_plugin_class(stage.name).not_runnable(stage_params(stage, profile), profile)
            for stage in spec.stages]


def _plugin_class(name: str) -> type[Plugin]:
    from bench.plugins import METHODS

    return METHODS.get(name).cls



_AUX_DIGESTS: weakref.WeakKeyDictionary[SampleList, str] = weakref.WeakKeyDictionary()


def _aux_digest(samples: SampleList) -> str:
    """A digest of the aux masks (``chimney``, ``steam``, ...) of a split's frames, which its
    fingerprint leaves out; memoised per `SampleList` (shared by a run's cells)."""
    if samples not in _AUX_DIGESTS:
        import hashlib

        h = hashlib.sha1()
        seen: set[int] = set()
        for ref in samples.refs:
            if id(ref.frame) in seen:
                continue
            seen.add(id(ref.frame))
            for name in sorted(ref.frame.aux):
                array = np.ascontiguousarray(ref.frame.aux[name])
                h.update(f"{ref.frame.id}:{name}:{array.dtype}:{array.shape}".encode())
                h.update(array)
        _AUX_DIGESTS[samples] = h.hexdigest()
    return _AUX_DIGESTS[samples]


def _box_slices(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    y, x, h, w = box
    return slice(y, y + h), slice(x, x + w)
