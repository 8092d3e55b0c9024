"""Records and leaderboards say how learned stages were initialised (packaged, hub, file,
random); random rows are marked in Markdown and filtered by ``bench table --weights``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import ConfigError
from bench.pipeline import stage_params
from bench.plugins import discover
from bench.records import load_records
from bench.spec import parse_pipeline
from bench.table import RANDOM_LEGEND, filter_weights, frame
from bench.weights import is_random, join_origins, pipeline_weights, weights_origin

#: a resnet50 classifier trained for a moment on tiny crops (the weights are what is tested)
SMALL = "input_size=32,epochs=1,batch_size=4,epoch_size=0"


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local ResNet-50 state dict (timm's architecture, random values, ImageNet head)."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), path)
    return path


def test_weights_origin_reads_both_vocabularies() -> None:
    assert [weights_origin(w) for w in ("", "none", "scratch", "hub", "imagenet", "package",
                                        "packaged", "/w.pth")] == [
        "random", "random", "random", "hub", "hub", "packaged", "packaged", "file"]
    assert weights_origin("none", pretrained=True) == "hub"
    assert weights_origin("auto", auto="packaged") == "packaged"
    assert join_origins(["packaged", None, "random", "packaged"]) == "packaged+random"
    assert join_origins([None, None]) is None
    assert is_random("packaged+random") and not is_random("packaged") and not is_random(None)


def test_weights_of_plugins_follow_their_resolved_parameters(resnet50_file: Path) -> None:
    discover([])
    assert pipeline_weights("effnet", "quick") == ["packaged"]
    # the quick profile trains ResNet-50 from scratch (no hub download), the full one from hub
    assert stage_params(parse_pipeline("resnet50").stages[0], "quick").weights == "none"
    assert pipeline_weights("resnet50", "quick") == ["random"]
    assert pipeline_weights("resnet50", "full") == ["hub"]
    assert pipeline_weights(f"resnet50[weights={resnet50_file}]", "quick") == ["file"]
    assert pipeline_weights("effnet+crf+deeplabv3plus", "quick") == ["packaged", None,
                                                                     "packaged"]
    assert pipeline_weights("supervised[weights=none]", "quick") == ["random"]
    assert pipeline_weights("all_smoke", "quick") == [None]
    assert pipeline_weights("fusion[sources=effnet:resnet50]", "quick") == ["packaged+random"]
    assert pipeline_weights("consistency[teacher=effnet]", "quick") == ["random+packaged"]


def test_records_and_leaderboard_name_the_weights(write_dataset, tmp_path: Path,
                                                  smoke5k_root: Path, resnet50_file: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    include = tmp_path / "datasets"
    name, _ = write_dataset(include, "tiny", smoke5k_root, "val_fraction = 0.3\n")
    out = tmp_path / "results"
    random_spec = f"resnet50[{SMALL}]"
    file_spec = f"resnet50[weights={resnet50_file},{SMALL}]"
    methods = [f"effnet[{SMALL}]", random_spec, file_spec, "all_smoke"]
    assert main(["run", "--include", str(include), "--datasets", name, "--out", str(out),
                 "--n-boot", "10", "--no-progress", "--limit", "8",
                 "--methods", ",".join(methods)]) == 0
    capsys.readouterr()
    records = {r["method"]: r for r in load_records(out)}
    assert {m: records[m]["weights"] for m in methods} == {
        f"effnet[{SMALL}]": {"effnet": "packaged"}, random_spec: {"resnet50": "random"},
        file_spec: {"resnet50": "file"}, "all_smoke": {}}

    board = (out / "leaderboard.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in board.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows[f"{random_spec} †"] == "random"  # marked, with the legend under the table
    assert rows[file_spec] == "file" and rows[f"effnet[{SMALL}]"] == "packaged"
    assert rows["all_smoke"] == "-"
    assert f"|\n\n{RANDOM_LEGEND}\n" in board
    assert "- **weights**: initial weights of the learned stages" in board

    table = ["table", "--out", str(out), "--include", str(include)]
    assert main(table) == 0
    text = capsys.readouterr().out
    assert f"| {random_spec} † " in text and text.endswith(f"\n\n{RANDOM_LEGEND}\n")
    assert main([*table, "--weights", "pretrained"]) == 0
    text = capsys.readouterr().out
    assert "resnet50[input_size" not in text and file_spec in text and "all_smoke" in text
    assert "†" not in text
    assert main([*table, "--weights", "random"]) == 0
    text = capsys.readouterr().out
    shown = [line.split("|")[1].strip() for line in text.splitlines()[2:]
             if line.startswith("|")]
    assert shown == [f"{random_spec} †"]
    assert main([*table, "--weights", "random", "--format", "csv"]) == 0
    text = capsys.readouterr().out  # other formats: the column, no mark
    assert text.splitlines()[0].startswith("method,dataset,weights,")
    assert text.splitlines()[1].startswith(f'"{random_spec}",{name},random,')

    # a record from before records named their weights: '?', left out by either filter
    old = json.loads(Path(records["all_smoke"]["_path"]).read_text())
    del old["weights"]
    df = frame([old])
    assert list(df["weights"]) == ["?"]
    assert filter_weights(df, "pretrained").empty and filter_weights(df, "random").empty
    with pytest.raises(ConfigError, match="--weights must be one of pretrained, random"):
        filter_weights(df, "hub")
