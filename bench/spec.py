"""Method specs: plugins composed with ``+``, each optionally with ``[key=value,...]`` parameters.

Grammar::

    methods  := pipeline ("," pipeline)*           # --methods; a pipeline may contain wildcards
    pipeline := stage ("+" stage)*
    stage    := NAME ["[" key=value ("," key=value)* "]"]

Examples: ``resnet50``, ``effnet+multiscale[scales=0.5:1:1.5]+crf``, ``supervised``.
A valid pipeline is one CAM source, then any wrappers, then any refiners, then at most one
segmenter; a segmenter that trains on ground truth (``supervised``) runs alone.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from bench.errors import ConfigError
from bench.params import build_params
from bench.plugins import METHODS, method_kind, missing_requirements

_STAGE = re.compile(r"^\s*([A-Za-z0-9_.\-*?]+)\s*(?:\[(.*)\])?\s*$", re.S)


@dataclass(frozen=True)
class StageSpec:
    """One plugin in a pipeline: its registered name and raw (string) parameter overrides."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.params)}]"


@dataclass(frozen=True)
class PipelineSpec:
    """A parsed pipeline; ``text`` is its canonical spelling (used as the method's name)."""

    stages: tuple[StageSpec, ...]

    @property
    def text(self) -> str:
        return "+".join(s.text for s in self.stages)

    def prefix(self, n: int) -> PipelineSpec:
        """The pipeline made of the first ``n`` stages."""
        return PipelineSpec(self.stages[:n])

    def __str__(self) -> str:
        return self.text


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` except inside square brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ']' in '{text}'")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ConfigError(f"unbalanced '[' in '{text}'")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_stage(text: str) -> StageSpec:
    """Parse ``name[key=value,...]``."""
    match = _STAGE.match(text)
    if not match:
        raise ConfigError(f"cannot read stage '{text}': expected NAME or NAME[key=value,...]")
    name, body = match.group(1), match.group(2)
    params: list[tuple[str, str]] = []
    if body and body.strip():
        for item in split_top_level(body, ","):
            if "=" not in item:
                raise ConfigError(f"parameter '{item}' of '{name}' must be key=value")
            key, value = item.split("=", 1)
            params.append((key.strip(), value.strip()))
    return StageSpec(name, tuple(params))


def parse_pipeline(text: str) -> PipelineSpec:
    """Parse and validate one pipeline spec against the method registry."""
    if not text.strip():
        raise ConfigError("empty method spec")
    stages = tuple(parse_stage(part) for part in split_top_level(text, "+"))
    spec = PipelineSpec(stages)
    validate(spec)
    return spec


def validate(spec: PipelineSpec) -> None:
    """Check that the stages exist and come in a valid order; raise a clear `ConfigError`."""
    kinds = []
    for stage in spec.stages:
        METHODS.entry(stage.name)  # unknown names → "did you mean"
        kinds.append(method_kind(stage.name))
    first = spec.stages[0].name
    demo = METHODS.entry(first).meta.get("demo") or f"effnet+{first}"
    if kinds[0] == "segmenter":
        if METHODS.get(first).cls.needs_pseudo_labels:
            raise ConfigError(f"'{spec.text}': segmenter '{first}' needs a CAM source before it, "
                              f"e.g. '{demo}'")
        if len(kinds) > 1:
            raise ConfigError(f"'{spec.text}': segmenter '{first}' trains on ground truth and "
                              "runs alone")
        return
    if kinds[0] != "cam":
        raise ConfigError(f"'{spec.text}': {kinds[0]} '{first}' needs a CAM source before it, "
                          f"e.g. '{demo}'")
    seen_refiner = False
    for i, (stage, kind) in enumerate(zip(spec.stages, kinds, strict=True)):
        if i == 0:
            continue
        if kind == "cam":
            raise ConfigError(f"'{spec.text}': '{stage.name}' is a CAM source; a pipeline has "
                              "one, first (combine sources with 'fusion')")
        if kind == "wrapper" and seen_refiner:
            raise ConfigError(f"'{spec.text}': wrapper '{stage.name}' must come directly after "
                              "the CAM source, before any refiner")
        if kind == "refiner":
            seen_refiner = True
        if kind == "segmenter":
            if i != len(kinds) - 1:
                raise ConfigError(f"'{spec.text}': segmenter '{stage.name}' must be the last "
                                  "stage")
            if not METHODS.get(stage.name).cls.needs_pseudo_labels:
                raise ConfigError(f"'{spec.text}': segmenter '{stage.name}' trains on ground "
                                  "truth and runs alone")
    # refiner inputs: check what each refiner accepts against what the stage before outputs
    out = "soft"
    for stage, kind in zip(spec.stages[1:], kinds[1:], strict=True):
        if kind == "refiner":
            cls = METHODS.get(stage.name).cls
            if out not in cls.accepts:
                raise ConfigError(f"'{spec.text}': refiner '{stage.name}' accepts "
                                  f"{' or '.join(cls.accepts)} maps but gets {out} ones")
            out = cls.output_kind(build_params(cls.Params, {**METHODS.get(stage.name).defaults,
                                                           **dict(stage.params)},
                                               f"'{stage.text}'"))


def runnable_name(name: str) -> str | None:
    """The pipeline that runs plugin ``name`` when a wildcard selects it (None: not runnable)."""
    kind = METHODS.entry(name).meta.get("kind", "?")
    if kind == "?":
        kind = method_kind(name)
    if kind == "cam":
        return name
    if kind == "segmenter" and not METHODS.get(name).cls.needs_pseudo_labels:
        return name
    demo = METHODS.entry(name).meta.get("demo") or getattr(METHODS.get(name).cls, "demo", "")
    return demo or None


def is_wildcard(item: str) -> bool:
    """Whether one ``--methods`` item selects plugins by pattern (``vit*``, ``*``) rather than
    naming a pipeline."""
    return any(ch in item for ch in "*?") and "+" not in item


def expand_methods(arg: str) -> list[PipelineSpec]:
    """Expand a ``--methods`` value: comma-separated pipelines and wildcards over plugin names.

    A wildcard selects every matching plugin, each run through its demo pipeline if it cannot
    run alone (a refiner ``crf`` runs as ``effnet+crf``). An explicit name that cannot run
    alone is an error that names a pipeline that would.
    """
    out: list[PipelineSpec] = []
    for item in split_top_level(arg, ","):
        if not item:
            continue
        if is_wildcard(item):
            names = METHODS.select([item])
            texts = []
            for name in names:
                missing = missing_requirements(name)
                if missing:  # said, not silent: the run goes on without this plugin
                    print(f"bench: skipping '{name}' (wildcard '{item}'): needs "
                          f"{' and '.join(missing)}", file=sys.stderr)
                    continue
                texts.append(runnable_name(name))
            specs = [parse_pipeline(t) for t in texts if t]
        else:
            specs = [parse_pipeline(item)]
            for stage in specs[0].stages:
                missing = missing_requirements(stage.name)
                if missing:
                    raise ConfigError(f"'{stage.name}' needs an optional extra: "
                                      f"{' and '.join(missing)}")
        for spec in specs:
            if spec.text not in {s.text for s in out}:
                out.append(spec)
    if not out:
        raise ConfigError(f"--methods '{arg}' selects no method")
    return out
