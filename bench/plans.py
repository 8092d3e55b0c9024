"""Stage plans: what the runner learns from plugin classes, kept so a cached rerun needs none.

Before a cell runs, the runner asks each stage's plugin class for its resolved parameters,
its code digest, its kind of output, its flags (trainable, baseline, ...), its initial weights
and whether it can run (`StageInfo`). Importing the classes imports torch and timm (seconds),
yet a rerun whose stages are all cached only reads maps and scores them. So the answers are
kept per pipeline in the run's cache, ``<out>/cache/plans/<key>.json``, and a later run takes
them from there instead of importing anything, as long as they are still what the classes
would say:

- the plan's key hashes the pipeline's text, the profile and the include folders;
- the plan holds a digest of all the code the answers come from (`tree_digest`: every
  ``.py`` file of the ``bench`` package, of the built-in ``methods/`` folder and of each
  include folder); any edit there makes every plan stale, and the run asks the classes again
  (and rewrites the plans);
- ``not_runnable`` answers may depend on files a parameter names (``sam[checkpoint=PATH]``):
  the plan records, for every string parameter, whether it names an existing path, and is
  stale when one of them appeared or disappeared;
- a pipeline with a plugin registered through an entry point (code outside those folders)
  gets no plan.

A stale or missing plan only costs time: the runner then imports the classes as before. The
cache keys themselves are always computed by the runner (`bench.runner.CellRunner.
stage_states`) from these answers and the data's fingerprints, whichever way they came.

``bench run`` also keeps the expansion of its ``--methods`` value (wildcards over plugin names,
each selected plugin's demo pipeline, which checks pipelines against the plugin classes) under
``plans/methods-<key>.json``, valid under the same code digest and while every plugin's
optional requirements are still as installed as they were (`expand_methods`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.errors import NotRunnableError
from bench.spec import PipelineSpec, parse_stage, split_top_level

#: format of the plan files; bumping it makes every plan stale
FORMAT = 1
#: sub-folder of the run's cache folder that holds plans
FOLDER = "plans"


@dataclass(frozen=True)
class StageInfo:
    """What the runner needs to know of one stage's plugin class (see the module doc).

    Attributes:
        name: the plugin's registered name.
        text: the stage's spec text (``crf[iterations=5]``).
        kind: ``cam``, ``wrapper``, ``refiner`` or ``segmenter``.
        output: the kind of map it outputs under its parameters (`Plugin.output_kind`).
        config: its resolved configuration as records and keys hold it (name, kind, params).
        code: its code digest (`bench.code_digest.code_digest`).
        trainable: whether it learns from the training split.
        baseline: a reference level (`Plugin.baseline`).
        segmenter: whether it is a `bench.stages.Segmenter`.
        needs_pseudo_labels: a segmenter that trains on the pipeline's pseudo labels.
        uses_input_threshold: a refiner that gets its input stage's threshold.
        inference_params: parameters that only change inference (`Plugin.inference_params`).
        weights: its initial weights (`bench.weights.pipeline_weights`; None: nothing learned).
        not_runnable: ``(reason, hint)`` of its `Plugin.not_runnable` answer, or None.
    """

    name: str
    text: str
    kind: str
    output: str
    config: dict[str, Any]
    code: str
    trainable: bool
    baseline: bool
    segmenter: bool
    needs_pseudo_labels: bool
    uses_input_threshold: bool
    inference_params: tuple[str, ...]
    weights: str | None
    not_runnable: tuple[str, str] | None

    def blocked(self) -> NotRunnableError | None:
        """The stage's `NotRunnableError` (None: it can run)."""
        return None if self.not_runnable is None else NotRunnableError(*self.not_runnable)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageInfo:
        """A `StageInfo` from its JSON form (`dataclasses.asdict`)."""
        blocked = data["not_runnable"]
        return cls(**{**data, "inference_params": tuple(data["inference_params"]),
                      "not_runnable": tuple(blocked) if blocked is not None else None})


def unchecked_spec(text: str) -> PipelineSpec:
    """A pipeline parsed without checking it against the plugin classes (`bench.spec.
    parse_pipeline` checks it, which imports them): for texts a plan says passed the check."""
    return PipelineSpec(tuple(parse_stage(part) for part in split_top_level(text, "+")))


# --------------------------------------------------------------------------- from the classes
def stage_infos(spec: PipelineSpec, profile: str,
                folders: Sequence[Path] = ()) -> list[StageInfo]:
    """Every stage's `StageInfo`, asked from its plugin class (imports the plugin files)."""
    from bench.code_digest import code_digest
    from bench.pipeline import pipeline_outputs, stage_configs, stage_params
    from bench.plugins import METHODS
    from bench.stages import Segmenter
    from bench.weights import pipeline_weights

    configs = stage_configs(spec, profile)
    outputs = pipeline_outputs(spec, profile)
    weights = pipeline_weights(spec, profile)
    out = []
    for stage, config, output, origin in zip(spec.stages, configs, outputs, weights,
                                             strict=True):
        cls = METHODS.get(stage.name).cls
        blocked = cls.not_runnable(stage_params(stage, profile), profile)
        out.append(StageInfo(
            name=stage.name, text=stage.text, kind=str(cls.kind), output=str(output),
            config=config.as_dict(), code=code_digest(cls, tuple(folders)),
            trainable=bool(cls.trainable), baseline=bool(cls.baseline),
            segmenter=issubclass(cls, Segmenter),
            needs_pseudo_labels=bool(getattr(cls, "needs_pseudo_labels", True)),
            uses_input_threshold=bool(getattr(cls, "uses_input_threshold", False)),
            inference_params=tuple(getattr(cls, "inference_params", ())), weights=origin,
            not_runnable=None if blocked is None else (blocked.reason, _hint(blocked))))
    return out


def _hint(error: NotRunnableError) -> str:
    text = str(error)
    prefix = f"{error.reason}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# --------------------------------------------------------------------------- validity
def code_folders(include: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The folders whose code plans depend on: ``bench``, built-in ``methods/``, include
    folders (``--include`` and ``BENCH_INCLUDE``)."""
    from bench.plugins import builtin_dir, include_dirs

    return [Path(__file__).resolve().parent, builtin_dir("methods"), *include_dirs(include)]


def tree_digest(include: Iterable[str | os.PathLike[str]] = ()) -> str:
    """A digest of every ``.py`` file plans depend on (`code_folders`) and of the compiled
    extensions' built libraries, with the harness version; file contents are memoised by size
    and mtime (`bench.code_digest.file_digest`), so an unchanged tree costs a ``stat`` per
    file."""
    import hashlib

    from bench import __version__
    from bench.code_digest import EXTENSIONS, extension_file, file_digest, folder_digest

    h = hashlib.sha256(f"bench {__version__}\n".encode())
    for folder in code_folders(include):
        h.update(f"{folder.name}:{folder_digest(folder) if folder.is_dir() else '-'}\n"
                 .encode())
    for name in EXTENSIONS:  # the compiled modules' code is in their built library
        built = extension_file(name)
        h.update(f"{name}:{file_digest(built) if built else '-'}\n".encode())
    return h.hexdigest()[:16]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def path_signature(infos: Sequence[StageInfo]) -> dict[str, bool]:
    """For every non-empty string parameter of the stages: whether it names an existing path
    (``not_runnable`` answers may depend on it)."""
    out = {}
    for info in infos:
        for text in _strings(info.config.get("params", {})):
            value = text.strip()
            if value and len(value) < 4096 and "\0" not in value:
                try:
                    out[value] = Path(value).expanduser().exists()
                except (OSError, RuntimeError, ValueError):
                    out[value] = False
    return out


def _from_entry_point(names: Iterable[str]) -> bool:
    from bench.plugins import METHODS

    return any(METHODS.entry(name).meta.get("entry_point") or not METHODS.entry(name).origin
               for name in names)


# --------------------------------------------------------------------------- the store
class PlanStore:
    """The plans under one run's cache folder (``<out>/cache/plans/``).

    Args:
        cache_root: the run's cache folder.
        include: the run's include folders (part of every plan's key and of `tree_digest`).
        tree: `tree_digest` when the caller has it already (a run computes it once).
    """

    def __init__(self, cache_root: Path, include: Sequence[str | os.PathLike[str]] = (),
                 tree: str | None = None) -> None:
        self.dir = cache_root / FOLDER
        self.include = [str(p) for p in include]
        self._tree = tree

    @property
    def tree(self) -> str:
        """The code digest current plans must hold."""
        if self._tree is None:
            self._tree = tree_digest(self.include)
        return self._tree

    def _path(self, what: str, **key: Any) -> Path:
        from bench.cache import stable_hash

        return self.dir / f"{what}-{stable_hash({'include': self.include, **key})}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT \
                or data.get("tree") != self.tree:
            return None
        return data

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        from bench.atomic import write_json

        with contextlib.suppress(OSError):  # a read-only cache: plans only save time
            write_json(path, {"format": FORMAT, "tree": self.tree, **data})

    # ------------------------------------------------------------------ stage infos
    def infos(self, text: str, profile: str) -> list[StageInfo] | None:
        """The stored `StageInfo` of pipeline ``text`` under ``profile``, if still valid."""
        data = self._read(self._path("stages", spec=text, profile=profile))
        if data is None:
            return None
        try:
            infos = [StageInfo.from_json(d) for d in data["stages"]]
        except (KeyError, TypeError):
            return None
        if path_signature(infos) != data.get("paths"):
            return None
        return infos

    def save_infos(self, text: str, profile: str, infos: Sequence[StageInfo]) -> None:
        """Keep the `StageInfo` of pipeline ``text`` (not for entry-point plugins)."""
        if _from_entry_point(info.name for info in infos):
            return
        self._write(self._path("stages", spec=text, profile=profile),
                    {"spec": text, "profile": profile, "paths": path_signature(infos),
                     "stages": [asdict(info) for info in infos]})

    def pipeline_infos(self, text: str, profile: str,
                       folders: Sequence[Path]) -> tuple[PipelineSpec, list[StageInfo], bool]:
        """``(spec, infos, planned)`` of pipeline ``text``: from a valid plan (``planned``; no
        plugin imported), else parsed, checked and asked from the classes, and kept."""
        infos = self.infos(text, profile)
        if infos is not None:
            return unchecked_spec(text), infos, True
        from bench.spec import parse_pipeline

        spec = parse_pipeline(text)
        infos = stage_infos(spec, profile, folders)
        self.save_infos(text, profile, infos)
        return spec, infos, False

    # ------------------------------------------------------------------ --methods
    def expand_methods(self, methods: str) -> list[PipelineSpec]:
        """`bench.spec.expand_methods` of ``methods``, from a valid plan when there is one
        (its messages printed again), else expanded (importing plugin classes) and kept."""
        from bench.plugins import METHODS, missing_requirements
        from bench.spec import expand_methods

        requirements = {name: missing_requirements(name) for name in METHODS.names()}
        path = self._path("methods", methods=methods)
        data = self._read(path)
        if data is not None and data.get("requirements") == requirements:
            for line in data.get("messages", []):
                print(line, file=sys.stderr)
            return [unchecked_spec(text) for text in data["specs"]]
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                specs = expand_methods(methods)
        finally:
            sys.stderr.write(said.getvalue())
        names = {stage.name for spec in specs for stage in spec.stages}
        if not _from_entry_point(names):
            self._write(path, {"methods": methods, "requirements": requirements,
                               "messages": said.getvalue().splitlines(),
                               "specs": [spec.text for spec in specs]})
        return specs
