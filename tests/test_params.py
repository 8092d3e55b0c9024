"""`bench.params`: every annotated type a spec can carry, converted from spec text, and bad values
answered with one line naming the plugin, the parameter, the value and the expected type."""

from __future__ import annotations  # annotations are strings: resolved with get_type_hints

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from bench.errors import ConfigError
from bench.params import build_params, params_dict, type_name


class Colour(enum.Enum):
    RED = "r"
    GREEN = "g"


@dataclass
class Params:
    count: int = 1
    scale: float = 1.0
    flag: bool = False
    name: str = "x"
    center: Optional[float] = 0.5  # noqa: UP045 (the typing spelling is tested on purpose)
    limit: int | None = None
    checkpoint: Path = Path("model.pth")
    weights: Path | None = None
    scales: tuple[float, ...] = (1.0,)
    size: tuple[int, int] = (8, 8)
    ids: list[int] = None  # type: ignore[assignment]
    weights_list: list[float] = None  # type: ignore[assignment]
    layers: tuple[str, ...] = ()
    mode: Literal["mean", "max", "gmean"] = "mean"
    order: Literal[1, 2, 3] = 1
    colour: Colour = Colour.RED


WHERE = "'toy[...]'"


def build(**values: str) -> Params:
    return build_params(Params, values, WHERE)


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("count", "12", 12),
    ("count", "-3", -3),
    ("count", "1e3", 1000),
    ("scale", "0.25", 0.25),
    ("scale", "2e-9", 2e-9),
    ("scale", "3", 3.0),
    ("flag", "true", True), ("flag", "Yes", True), ("flag", "1", True), ("flag", "on", True),
    ("flag", "false", False), ("flag", "NO", False), ("flag", "0", False), ("flag", "off", False),
    ("name", "resnet50", "resnet50"),
    ("center", "0.3", 0.3), ("center", "none", None), ("center", "None", None),
    ("center", "null", None), ("center", "", None),
    ("limit", "7", 7), ("limit", "none", None),
    ("checkpoint", "runs/best.pth", Path("runs/best.pth")),
    ("weights", "/tmp/w.pth", Path("/tmp/w.pth")), ("weights", "none", None),
    ("scales", "0.5:1:1.5", (0.5, 1.0, 1.5)), ("scales", "2", (2.0,)), ("scales", "", ()),
    ("size", "32:48", (32, 48)),
    ("ids", "3:1:2", [3, 1, 2]),
    ("weights_list", "0.5:0.25", [0.5, 0.25]),
    ("layers", "blocks.9:blocks.11", ("blocks.9", "blocks.11")),
    ("mode", "gmean", "gmean"),
    ("order", "2", 2),
    ("colour", "GREEN", Colour.GREEN), ("colour", "g", Colour.GREEN),
])
def test_each_annotated_type_converts(key: str, text: str, expected: object) -> None:
    value = getattr(build(**{key: text}), key)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, (tuple, list)):
        assert [type(v) for v in value] == [type(v) for v in expected]


def test_home_is_expanded_in_paths() -> None:
    assert build(checkpoint="~/w.pth").checkpoint == Path.home() / "w.pth"


@pytest.mark.parametrize(("key", "text", "message"), [
    ("count", "many", "parameter 'count': cannot read 'many' as int"),
    ("count", "2.5", "cannot read '2.5' as int (a whole number)"),
    ("scale", "fast", "parameter 'scale': cannot read 'fast' as float (a number)"),
    ("flag", "maybe", "parameter 'flag': cannot read 'maybe' as bool (true or false)"),
    ("center", "half", "parameter 'center': cannot read 'half' as float or None"),
    ("limit", "lots", "cannot read 'lots' as int or None"),
    ("checkpoint", "", "cannot read '' as Path (an empty path)"),
    ("scales", "0.5:big", "cannot read '0.5:big' as tuple[float, ...] (item 'big' is not float "
                          "(a number))"),
    ("size", "32", "cannot read '32' as tuple[int, int] (2 values separated by ':', got 1)"),
    ("size", "1:2:3", "(2 values separated by ':', got 3)"),
    ("ids", "1:x", "cannot read '1:x' as list[int] (item 'x' is not int)"),
    ("order", "4", "cannot read '4' as one of 1, 2, 3."),
    ("colour", "BLUE", "cannot read 'BLUE' as one of 'RED', 'GREEN'."),
])
def test_bad_values_name_parameter_value_and_type(key: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**{key: text})
    text_ = str(info.value)
    assert text_.startswith(f"{WHERE}: ")
    assert message in text_
    assert "\n" not in text_


def test_literal_choice_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError) as info:
        build(mode="maen")
    assert str(info.value) == ("'toy[...]': parameter 'mode': cannot read 'maen' as one of "
                               "'mean', 'max', 'gmean'. Did you mean 'mean' or 'gmean' or 'max'?")
    with pytest.raises(ConfigError, match=r"one of 'mean', 'max', 'gmean'\.$"):
        build(mode="sum")  # nothing close: no suggestion, the choices say it all


def test_unknown_parameter_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter 'scal'\. Did you mean 'scale'"):
        build(scal="2")


def test_values_that_are_not_text_pass_unchanged() -> None:
    params = build_params(Params, {"scales": (0.5, 2.0), "count": 4}, WHERE)  # profile values
    assert params.scales == (0.5, 2.0) and params.count == 4


def test_params_dict_is_json_friendly() -> None:
    params = build(scales="1:2", weights="/w.pth", colour="GREEN", size="2:3")
    out = params_dict(params)
    assert out["scales"] == [1.0, 2.0] and out["size"] == [2, 3]
    assert out["weights"] == "/w.pth" and out["checkpoint"] == "model.pth"
    assert out["colour"] == "GREEN" and out["center"] == 0.5


def test_type_names_read_like_the_annotation() -> None:
    assert type_name(Optional[float]) == "float or None"  # noqa: UP045
    assert type_name(tuple[float, ...]) == "tuple[float, ...]"
    assert type_name(tuple[int, int]) == "tuple[int, int]"
    assert type_name(list[int]) == "list[int]"
    assert type_name(Literal["a", "b"]) == "one of 'a', 'b'"
    assert type_name(Path) == "Path"


PLUGIN = '''
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from bench import CamSource, register_method


@register_method("typed_cam")
class TypedCam(CamSource):
    """Every parameter type, through a real spec."""

    @dataclass
    class Params:
        level: float = 0.5
        center: Optional[float] = None
        cache: Path = Path("cache")
        scales: tuple[float, ...] = (1.0,)
        size: tuple[int, int] = (4, 4)
        mode: Literal["mean", "max"] = "mean"

    def compute(self, images):
        return [np.full(im.shape[:2], self.params.level, np.float32) for im in images]
'''


def test_types_through_a_spec_of_an_include_plugin(tmp_path: Path) -> None:
    from bench.pipeline import stage_configs, stage_params
    from bench.plugins import discover
    from bench.spec import parse_pipeline

    (tmp_path / "typed_cam.py").write_text(PLUGIN)
    discover([tmp_path])
    spec = parse_pipeline("typed_cam[center=0.25,cache=out/c,scales=0.5:1,size=2:3,mode=max]")
    params = stage_params(spec.stages[0], "quick")
    assert params.center == 0.25 and params.cache == Path("out/c")
    assert params.scales == (0.5, 1.0) and params.size == (2, 3) and params.mode == "max"
    assert stage_configs(spec, "quick")[0].params["cache"] == "out/c"
    assert stage_params(parse_pipeline("typed_cam[center=none]").stages[0], "quick").center \
        is None
    with pytest.raises(ConfigError) as info:
        stage_params(parse_pipeline("typed_cam[mode=mx]").stages[0], "quick")
    assert str(info.value) == ("'typed_cam[mode=mx]': parameter 'mode': cannot read 'mx' as "
                               "one of 'mean', 'max'. Did you mean 'max'?")
