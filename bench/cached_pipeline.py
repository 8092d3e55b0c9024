"""A run's pipelines from its cache, never trained: recompute a record's missing maps, or apply
a trained pipeline to a new image (``bench report``, ``bench export``, ``bench demo``).

`CachedRunner` is the runner of `bench.runner` with one difference: where it would train a stage
(no trained state under the stage's key in ``<out>/cache``) it raises `NeedsTraining` instead.
Everything else (stage keys, cached maps, calibrated thresholds, tiles) is the runner's own, so
a recomputed map is the map ``bench run`` would have cached, and a stage key that no longer
matches its record (the code or configuration changed since the run) is refused rather than
shown as if it were the record's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.runner import Cell, CellRunner, RunOptions, StageState


class NeedsTraining(ConfigError):
    """A stage whose trained state is not in the run folder's cache (nothing here trains)."""


class CachedRunner(CellRunner):
    """A `CellRunner` that loads trained state from the cache and refuses to train."""

    def fit(self, states: list[StageState], i: int, plugin: Any, data: Any) -> None:
        """Refuse: the stage has no trained state in the cache."""
        raise NeedsTraining(
            f"'{states[i].spec_text}' has no trained state in {self.cache_root} (key "
            f"{states[i].model_key or states[i].key}); run 'bench run --methods "
            f"{self.spec.text} --out {self.opts.out}' first: this command never trains")

    def prepare_sources(self, plugin: Any, data: Any) -> None:
        """The base class's sub-pipelines (fusion's inputs, a teacher), run by `CachedRunner`s
        so that they do not train either."""
        specs = plugin.sources() if callable(getattr(plugin, "sources", None)) else []
        ready = []
        for text in specs:
            sub = CachedRunner(Cell(text, self.cell.dataset, self.cell.split, self.opts,
                                    self.cell.train_dataset, optional=True))
            sub_states = sub.stage_states(data)
            ready.append(sub.ensure_ready(sub_states, len(sub_states) - 1, data))
        if specs:
            plugin.bind_sources(ready)


def record_options(rec: dict[str, Any], out: Path,
                   data_roots: dict[str, str] | None = None) -> RunOptions:
    """The `RunOptions` a record was computed with, in run folder ``out``; ``data_roots``
    override the record's roots (by data set name)."""
    opts = (rec.get("config") or {}).get("options") or {}
    roots = {**dict(opts.get("data_roots") or {}), **dict(data_roots or {})}
    return RunOptions(out=Path(out), profile=rec["profile"], device=str(opts.get("device",
                      "auto")), seed=int(rec["seed"]), data_roots=roots,
                      include=list(opts.get("include") or []), limit=opts.get("limit"),
                      progress=False, n_boot=int(opts.get("n_boot", 1000)))


def record_runner(rec: dict[str, Any], out: Path,
                  data_roots: dict[str, str] | None = None) -> CachedRunner:
    """A `CachedRunner` for the pipeline of record ``rec`` (its own prefix: ``rec["method"]``)."""
    train = rec.get("train_dataset", rec["dataset"])
    cell = Cell(rec["method"], rec["dataset"], rec["split"], record_options(rec, out, data_roots),
                train if train != rec["dataset"] else "", optional=True)
    return CachedRunner(cell)


def checked_states(runner: CellRunner, rec: dict[str, Any], data: Any) -> list[StageState]:
    """The runner's stage states, after checking that the last one has the record's key."""
    states = runner.stage_states(data)
    want = (rec.get("config") or {}).get("cache_key")
    if states[-1].key != want:
        raise ConfigError(f"'{rec['method']}' on {rec['dataset']}/{rec['split']}: its stage key "
                          f"is {states[-1].key} now, the record's is {want} (the code, the "
                          "configuration or the training data changed since the run); rerun "
                          "'bench run' to refresh it")
    return states


def regenerate_maps(rec: dict[str, Any], out: Path, split: str,
                    data_roots: dict[str, str] | None = None) -> Path:
    """Compute (and cache, as ``bench run`` does) the maps of record ``rec``'s stage on
    ``split`` from the cached trained state; returns the maps file.

    ``split`` is the record's scored split or, for an in-domain record, any split of its data
    set (``train``: the pseudo labels a segmenter would train on). Raises `NeedsTraining` when a
    stage has no trained state, a `ConfigError` when the stage key no longer matches the record.
    """
    from bench.cache import StageCache
    from bench.data import load_splits, resolve_root

    runner = record_runner(rec, out, data_roots)
    data = runner.load_data()
    key = runner.eval_key if split == rec["split"] else split
    if key not in data.splits:
        if runner.ood:
            raise ConfigError(f"'{rec['method']}' was trained on {runner.train_name}: only its "
                              f"scored split '{rec['split']}' of {rec['dataset']} has its maps")
        extra = load_splits(runner.dataset, resolve_root(runner.dataset, runner.opts.data_roots),
                            runner.opts.profile, runner.opts.limit, splits=[split],
                            index=runner.opts.out)
        data.splits[split] = extra[split]
        data.fingerprints[split] = extra.fingerprints[split]
    states = checked_states(runner, rec, data)
    runner.maps(states, len(states) - 1, key, data)
    return StageCache(runner.cache_root, states[-1].key).maps_path(key, data.fingerprints[key])


class CachedPipeline:
    """A trained pipeline of a run, loaded from its cache, applied to new images.

    Built from the final record of a pipeline; every stage is loaded (never trained). `apply`
    cuts an image into the data set's tiles as ``bench run`` does, runs the stages tile by
    tile (maps rounded to the cache's precision between stages, as cached maps are) and
    stitches each stage's tiles back into one frame-sized map.
    """

    def __init__(self, rec: dict[str, Any], out: Path,
                 data_roots: dict[str, str] | None = None) -> None:
        self.record = rec
        self.runner = record_runner(rec, out, data_roots)
        data = self.runner.load_data()
        self.states = checked_states(self.runner, rec, data)
        self.plugins = [self.runner.ensure_ready(self.states, i, data)
                        for i in range(len(self.states))]
        self.outputs = [str(type(p).output_kind(p.params)) for p in self.plugins]
        self.tile = int(self.runner.dataset.tile_size)

    def apply(self, image: np.ndarray, image_id: str = "upload") -> list[np.ndarray]:
        """Each stage's map of ``image`` (uint8 HxWx3): float32 soft maps, uint8 labels."""
        from bench.data.tiling import tile_boxes
        from bench.stitch import FrameView, stitch

        image = np.ascontiguousarray(np.asarray(image, np.uint8)[..., :3])
        h, w = image.shape[:2]
        boxes = tile_boxes(h, w, self.tile)
        per_stage: list[list[np.ndarray]] = [[] for _ in self.plugins]
        for box in boxes:
            y, x, th, tw = box
            tile = np.ascontiguousarray(image[y:y + th, x:x + tw])
            for i, m in enumerate(self.tile_maps(tile, f"{image_id}@{y}_{x}")):
                per_stage[i].append(m)
        view = FrameView(image_id, (h, w), None, {}, list(enumerate(boxes)))
        return [stitch(view, maps, output)
                for maps, output in zip(per_stage, self.outputs, strict=True)]

    def tile_maps(self, tile: np.ndarray, tile_id: str) -> Sequence[np.ndarray]:
        """Each stage's map of one tile, in stage order."""
        from bench.cache import compact, restore
        from bench.sample import Sample
        from bench.stages import CamSource, Refiner, Segmenter, check_map

        out: list[np.ndarray] = []
        for i, plugin in enumerate(self.plugins):
            who = f"{self.states[i].spec_text} on {tile_id}"
            with self.runner.blame(i, f"applying it to {tile_id}"):
                if isinstance(plugin, CamSource):
                    m = plugin.compute([tile])[0]
                elif isinstance(plugin, Refiner):
                    m = plugin.refine(Sample(tile_id, tile), out[-1])
                elif isinstance(plugin, Segmenter):
                    m = plugin.predict([tile])[0]
                else:
                    raise TypeError(f"unknown plugin type {type(plugin).__name__}")
                m = check_map(m, tile, self.outputs[i], who)
            out.append(restore(compact(m, self.outputs[i])))
        return out
