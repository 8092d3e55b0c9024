"""Turn a parsed pipeline spec into plugin instances with their final parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.params import build_params, params_dict
from bench.plugins import METHODS
from bench.spec import PipelineSpec, StageSpec
from bench.stages import CamSource, CamWrapper, Plugin, Refiner, RunContext, Segmenter


def stage_params(stage: StageSpec, profile: str) -> Any:
    """The ``Params`` of one stage: class defaults < profile < registered name < spec values."""
    info = METHODS.get(stage.name)
    cls = info.cls
    overrides: dict[str, Any] = {**cls.profiles.get(profile, {}), **info.defaults,
                                 **dict(stage.params)}
    return build_params(cls.Params, overrides, f"'{stage.text}'")


def build_stage(stage: StageSpec, ctx: RunContext) -> Plugin:
    """Instantiate one stage's plugin with its parameters and the run context."""
    cls = METHODS.get(stage.name).cls
    plugin = cls(stage_params(stage, ctx.profile), ctx)
    plugin.name = stage.name
    return plugin


@dataclass
class StageConfig:
    """What identifies a stage's output: plugin name, kind and final parameters."""

    name: str
    kind: str
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": self.params}


def stage_configs(spec: PipelineSpec, profile: str) -> list[StageConfig]:
    """The resolved configuration of every stage (without instantiating any plugin)."""
    out = []
    for stage in spec.stages:
        cls = METHODS.get(stage.name).cls
        out.append(StageConfig(stage.name, cls.kind,
                               params_dict(stage_params(stage, profile))))
    return out


def pipeline_outputs(spec: PipelineSpec, profile: str) -> list[str]:
    """The kind of map (``soft`` or ``labels``) every stage outputs under its parameters."""
    return [METHODS.get(s.name).cls.output_kind(stage_params(s, profile)) for s in spec.stages]


__all__ = ["CamSource", "CamWrapper", "Refiner", "Segmenter", "StageConfig", "build_stage",
           "pipeline_outputs", "stage_configs", "stage_params"]
