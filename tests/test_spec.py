"""Method specs: parsing, parameters, validation messages, wildcard expansion."""

from __future__ import annotations

import pytest

from bench.errors import ConfigError, UnknownNameError
from bench.pipeline import stage_configs
from bench.plugins import discover
from bench.spec import expand_methods, parse_pipeline, parse_stage, split_top_level

discover()


def test_split_top_level_respects_brackets() -> None:
    assert split_top_level("a[x=1,y=2]+b,c", ",") == ["a[x=1,y=2]+b", "c"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_top_level("a[x=1", ",")


def test_parse_stage_params() -> None:
    stage = parse_stage("threshold[threshold=0.3, band=0.2]")
    assert stage.name == "threshold"
    assert stage.params == (("threshold", "0.3"), ("band", "0.2"))
    assert stage.text == "threshold[threshold=0.3,band=0.2]"
    with pytest.raises(ConfigError, match="must be key=value"):
        parse_stage("threshold[0.3]")


def test_pipeline_text_is_canonical_and_params_are_typed() -> None:
    spec = parse_pipeline("dark_channel[patch=5] + threshold[band=0.1]")
    assert spec.text == "dark_channel[patch=5]+threshold[band=0.1]"
    configs = stage_configs(spec, "quick")
    assert configs[0].params["patch"] == 5
    assert configs[1].params == {"threshold": 0.5, "band": 0.1}


def test_unknown_method_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'dark_channel'"):
        parse_pipeline("dark_chanel")


def test_unknown_parameter_suggests_close_names() -> None:
    spec = parse_pipeline("dark_channel[pach=3]")
    with pytest.raises(ConfigError, match=r"unknown parameter 'pach'\. Did you mean 'patch'"):
        stage_configs(spec, "quick")


def test_bad_parameter_value() -> None:
    spec = parse_pipeline("dark_channel[patch=big]")
    with pytest.raises(ConfigError, match="cannot read 'big' as int"):
        stage_configs(spec, "quick")


def test_refiner_without_cam_source() -> None:
    with pytest.raises(ConfigError, match=r"refiner 'threshold' needs a CAM source before it, "
                                          r"e\.g\. 'dark_channel\+threshold'"):
        parse_pipeline("threshold")


def test_two_cam_sources() -> None:
    with pytest.raises(ConfigError, match="'random' is a CAM source"):
        parse_pipeline("dark_channel+random")


def test_refiner_input_kind_is_checked() -> None:
    # threshold outputs labels; a second threshold accepts only soft maps
    with pytest.raises(ConfigError, match="accepts soft maps but gets labels"):
        parse_pipeline("dark_channel+threshold+threshold")


def test_expand_methods_wildcards_and_demo_pipelines() -> None:
    texts = [s.text for s in expand_methods("all_*,dark_channel,thresh*")]
    assert texts == ["all_background", "all_smoke", "dark_channel", "dark_channel+threshold"]
    with pytest.raises(ConfigError, match="selects no method"):
        expand_methods(" , ")


def test_missing_optional_extra(tmp_path, capsys) -> None:
    from bench.plugins import scan_file

    path = tmp_path / "needs_extra.py"
    path.write_text('''
from bench import CamSource, register_method


@register_method("needs_extra_cam")
class NeedsExtra(CamSource):
    """Needs a module nobody has."""

    requires = ("no_such_module_xyz:fancy", "no_such_module_abc:fancy")
''')
    scan_file(path)
    texts = [s.text for s in expand_methods("needs_extra*,all_smoke")]
    assert texts == ["all_smoke"]
    err = capsys.readouterr().err
    assert "skipping 'needs_extra_cam'" in err
    assert err.count("smoke-wsss-bench[fancy]") == 1  # one hint per extra, not per module
    with pytest.raises(ConfigError, match=r"pip install 'smoke-wsss-bench\[fancy\]'"):
        expand_methods("needs_extra_cam")
