"""``bench fetch-weights`` and the weights cache: a ``file://`` download with its checksum, and
the resolution order of ``weights=hub`` (cache, then hub, then an error) without a network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.cli import main

PLUGIN = '''
"""A CAM source whose weights come from a URL ($FW_URL)."""
import os
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method


@register_method("fw_cam")
class FwCam(CamSource):
    """Needs one URL weight, and a timm backbone's with backbone=NAME."""

    @dataclass
    class Params:
        backbone: str = ""

    @classmethod
    def hub_weights(cls, params, profile):
        out = [{"kind": "url", "name": "fw_tiny.pth", "url": os.environ["FW_URL"]}]
        if params.backbone:
            out.append({"kind": "timm", "name": params.backbone})
        return out

    def compute(self, images):
        return [im.mean(axis=2).astype(np.float32) / 255.0 for im in images]
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fw_plugins")
    (folder / "fw_cam.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def weights(tmp_path: Path, plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import torch

    folder = plugin_dir
    source = tmp_path / "server" / "tiny.pth"
    source.parent.mkdir()
    torch.save({"conv.weight": torch.arange(12.0).view(3, 4)}, source)
    monkeypatch.setenv("FW_URL", source.as_uri())
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "cache"))
    return {"include": str(folder), "source": source, "cache": tmp_path / "cache"}


def test_fetch_weights_downloads_a_file_url_with_its_checksum(
        weights: dict, capsys: pytest.CaptureFixture) -> None:
    import torch

    assert main(["fetch-weights", "--include", weights["include"], "--methods", "fw_cam"]) == 0
    line = capsys.readouterr().out.strip()
    stored = weights["cache"] / "url" / "fw_tiny.pth"
    digest = hashlib.sha256(weights["source"].read_bytes()).hexdigest()
    assert line.startswith(f"stored url:fw_tiny.pth: {stored} sha256 {digest}")
    assert stored.read_bytes() == weights["source"].read_bytes()
    assert torch.equal(torch.load(stored)["conv.weight"], torch.arange(12.0).view(3, 4))
    assert main(["fetch-weights", "--include", weights["include"], "--methods", "fw_cam"]) == 0
    assert capsys.readouterr().out.startswith(f"cached url:fw_tiny.pth: {stored} sha256 {digest}")


def test_a_broken_url_is_one_line(weights: dict, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    missing = weights["source"].with_name("gone.pth")
    monkeypatch.setenv("FW_URL", missing.as_uri())
    assert main(["fetch-weights", "--include", weights["include"], "--methods", "fw_cam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot download {missing.as_uri()}" in err
    assert not (weights["cache"] / "url" / "fw_tiny.pth").exists()


def test_resolution_order_cache_hub_error(weights: dict,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.weight_cache import HubWeight, WeightsError, fetch, resolve

    weight = HubWeight("url", "fw_tiny.pth", weights["source"].as_uri())
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve(weight) == ("hub", None)  # online, not cached: the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"run \"bench fetch-weights --methods fw_cam "
                                           r"--profile full\" where the internet"):
        resolve(weight, ["fw_cam"], "full")  # offline, not cached: the command to run
    path, _, fetched = fetch(weight)
    assert fetched
    assert resolve(weight) == ("cache", path)  # cached: the cache, online or not
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve(weight) == ("cache", path)


def test_hub_weight_file_reads_the_cache_else_fetches_into_it_else_names_the_command(
        weights: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """What plugins that read a URL weight at run time call (sam, clip, mmseg)."""
    from bench import hub_weight_file
    from bench.weight_cache import WeightsError

    weight = {"kind": "url", "name": "fw_tiny.pth", "url": weights["source"].as_uri()}
    stored = weights["cache"] / "url" / "fw_tiny.pth"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"run \"bench fetch-weights --methods fw_cam\""):
        hub_weight_file(weight, ["fw_cam"])
    assert not stored.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: downloaded into the cache, said so
    assert hub_weight_file(weight, ["fw_cam"]) == stored
    digest = hashlib.sha256(weights["source"].read_bytes()).hexdigest()
    assert capsys.readouterr().err == (f"bench: fetched url:fw_tiny.pth into the weights cache: "
                                       f"{stored} sha256 {digest}\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: read offline, nothing said
    weights["source"].unlink()
    assert hub_weight_file(weight, ["fw_cam"]) == stored
    assert capsys.readouterr().err == ""


def test_weights_hub_reads_the_cached_timm_file(weights: dict) -> None:
    import timm
    import torch

    from bench.nn.timm_net import create_net
    from bench.weights import resolve_weights

    assert resolve_weights("hub", False, "test_resnet").source == "hub"  # not cached yet
    reference = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p))
    target = weights["cache"] / "timm" / "test_resnet.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    spec = resolve_weights("hub", False, "test_resnet")
    assert (spec.source, spec.path) == ("file", str(target))
    net = create_net("test_resnet", spec, input_size=64)
    ours = net.model.state_dict()
    head = reference.pretrained_cfg["classifier"]
    for key, value in reference.state_dict().items():
        if not key.startswith(head + "."):
            assert torch.equal(ours[key], value), key


def test_classifier_cams_declare_their_timm_weights(weights: dict,
                                                    capsys: pytest.CaptureFixture) -> None:
    from bench.plugins import discover
    from bench.weight_cache import pipeline_hub_weights

    discover([weights["include"]])
    assert [str(w) for w in pipeline_hub_weights("resnet50", "full")] == ["timm:resnet50"]
    assert pipeline_hub_weights("resnet50", "quick") == []  # quick: random initialisation
    assert pipeline_hub_weights("effnet", "full") == []  # packaged weights
    assert [str(w) for w in pipeline_hub_weights("fw_cam[backbone=test_vit]", "quick")] == \
        ["url:fw_tiny.pth", "timm:test_vit"]
    assert main(["fetch-weights", "--methods", "all_smoke,dark_channel+crf"]) == 0
    assert capsys.readouterr().out.startswith("nothing to fetch")


def test_deeplabv3plus_encoder_reads_the_cached_timm_file(weights: dict) -> None:
    import timm
    import torch

    from bench.pipeline import build_stage
    from bench.plugins import discover
    from bench.spec import parse_pipeline
    from bench.weight_cache import pipeline_hub_weights

    discover([])
    assert [str(w) for w in pipeline_hub_weights("effnet+crf+deeplabv3plus", "full")] == \
        ["timm:resnet101"]  # the full profile's ImageNet ResNet-101 encoder
    assert pipeline_hub_weights("effnet+crf+deeplabv3plus", "quick") == []  # packaged
    reference = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p))
    target = weights["cache"] / "timm" / "test_resnet.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    stage = parse_pipeline("effnet+deeplabv3plus[encoder=test_resnet,weights=imagenet]").stages[1]
    from bench.stages import RunContext

    seg = build_stage(stage, RunContext(device="cpu", workdir=weights["cache"], progress=False))
    model = seg.build_model(pretrained=True)
    encoder = model.encoder.model.state_dict()
    own = reference.state_dict()
    shared = [k for k in encoder if k in own]
    assert shared and all(torch.equal(encoder[k], own[k]) for k in shared)
