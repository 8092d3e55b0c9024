"""``deeplabv3plus[weights=cam]``: the segmenter's encoder starts from the pipeline's CAM source.

The CAM source's classifier was fine-tuned on the training split's image-level labels; its
backbone is the same timm architecture as the segmenter's encoder, so the encoder can start
from it instead of from ImageNet. Checked: through ``bench run`` the encoder's tensors at the
start of training are exactly the trained classifier's (and not the packaged ImageNet ones);
an architecture mismatch, a missing tensor and a pipeline without a CAM source are one-line
errors; the rows' weights column and the cache key follow the CAM source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import ClassifierCam, RunContext
from bench.errors import ConfigError
from bench.plugins import METHODS, builtin_dir, discover, import_plugin_file
from bench.weights import packaged_state_dict, pipeline_weights

discover()
DeepLabV3Plus = import_plugin_file(builtin_dir("methods") / "deeplabv3plus.py").DeepLabV3Plus

TINY_EFFNET = "effnet[epochs=1,input_size=64,batch_size=8]"
#: effnet is EfficientNet-Lite0; the quick profile's encoder (Lite2) is set back to match it
TINY_SEG = ("deeplabv3plus[epochs=1,batch_size=4,crop_size=32,val_limit=1,weights=cam,"
            "encoder=efficientnet_lite0]")


def segmenter(**params: Any) -> Any:
    base = {"encoder": "efficientnet_lite0", "weights": "cam", "decoder_channels": 32}
    return DeepLabV3Plus(DeepLabV3Plus.Params(**{**base, **params}),
                         RunContext(device="cpu", progress=False))


def test_encoder_starts_from_the_trained_cam_backbone_through_bench_run(
        write_dataset: Any, tmp_path: Path, smoke5k_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.cli import main
    from bench.records import load_records

    name, _ = write_dataset(tmp_path / "datasets", "tinycam", smoke5k_root,
                            "val_fraction = 0.3\n")
    seen: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
    load = DeepLabV3Plus._load_cam_encoder

    def spy(self: Any, model: Any) -> None:
        load(self, model)
        seen.append(({k: v.clone() for k, v in model.encoder.model.state_dict().items()},
                     dict(self._cam_state)))

    monkeypatch.setattr(DeepLabV3Plus, "_load_cam_encoder", spy)
    out = tmp_path / "results"
    method = f"{TINY_EFFNET}+{TINY_SEG}"
    assert main(["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
                 str(out), "--n-boot", "20", "--no-progress", "--methods", method]) == 0
    assert len(seen) == 1
    encoder, cam = seen[0]
    # the classifier as trained and cached by the CAM stage
    (meta,) = [m for m in (out / "cache").glob("*/model/meta.json")]
    trained = torch.load(meta.parent / "model.pt", map_location="cpu")
    assert set(encoder) <= set(trained)
    for key, value in encoder.items():
        assert torch.equal(value, trained[key]), key
        assert torch.equal(cam[key], trained[key]), key
    # fine-tuned, not ImageNet's: the blocks the quick profile trains moved
    imagenet = packaged_state_dict("efficientnet_lite0")
    moved = [k for k in encoder if k.startswith("blocks.6") and k.endswith("weight")
             and not torch.equal(encoder[k], imagenet[k])]
    assert moved
    record = next(r for r in load_records(out) if r["method"] == method)
    assert record["weights"] == {"effnet": "packaged"}  # the CAM source's origin only


def classifier(tmp_path: Path, backbone: str) -> ClassifierCam:
    cam = ClassifierCam(ClassifierCam.Params(backbone=backbone, weights="none", input_size=64),
                        RunContext(device="cpu", workdir=tmp_path, progress=False))
    cam.build()
    return cam


def test_a_cam_backbone_of_another_architecture_is_an_error(tmp_path: Path) -> None:
    seg = segmenter()
    with pytest.raises(ConfigError) as info:
        seg.bind_cam_source(classifier(tmp_path, "resnet18"))
    text = str(info.value)
    assert "\n" not in text
    assert "the CAM source's backbone is 'resnet18', the encoder is 'tf_efficientnet_lite0'" \
        in text
    discover()
    dark = METHODS.get("dark_channel").cls()
    with pytest.raises(ConfigError, match="has no trained timm backbone"):
        seg.bind_cam_source(dark)
    with pytest.raises(ConfigError, match="no CAM source was bound"):
        segmenter().build_model(pretrained=True)


def test_a_backbone_missing_encoder_tensors_is_an_error(tmp_path: Path) -> None:
    seg = segmenter()
    source = classifier(tmp_path, "tf_efficientnet_lite0")
    seg.bind_cam_source(source)
    built = seg.build_model(pretrained=True)  # the same architecture: every tensor is there
    for key, value in built.encoder.model.state_dict().items():
        assert torch.equal(value, source.require_net().model.state_dict()[key]), key
    assert seg._cam_state is not None
    del seg._cam_state["blocks.2.0.conv_pw.weight"]
    with pytest.raises(ConfigError, match=r"lacks 1 of the encoder's \d+ tensors "
                                          r"\(e\.g\. blocks\.2\.0\.conv_pw\.weight\)"):
        seg.build_model(pretrained=True)
    # a trained state loads without the CAM source (pretrained=False builds a bare network)
    assert seg.build_model(pretrained=False) is not None


def test_weights_column_and_hub_list_follow_the_cam_source() -> None:
    from bench.spec import parse_pipeline

    params = DeepLabV3Plus.Params(encoder="efficientnet_lite0", weights="cam")
    assert DeepLabV3Plus.initial_weights(params, "quick") is None
    assert DeepLabV3Plus.hub_weights(params, "quick") == []
    spec = parse_pipeline("effnet+crf+deeplabv3plus[weights=cam]")
    assert pipeline_weights(spec, "quick") == ["packaged", None, None]
    random_cam = parse_pipeline("resnet50[weights=none]+crf+deeplabv3plus[weights=cam]")
    assert pipeline_weights(random_cam, "quick") == ["random", None, None]


def test_a_pipeline_without_cam_source_is_an_error(write_dataset: Any, tmp_path: Path,
                                                   smoke5k_root: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    name, _ = write_dataset(tmp_path / "datasets", "tinysup", smoke5k_root,
                            "val_fraction = 0.3\n")
    method = "supervised[epochs=1,batch_size=4,crop_size=32,weights=cam]"
    code = main(["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
                 str(tmp_path / "results"), "--n-boot", "20", "--no-progress", "--methods",
                 method])
    assert code != 0
    err = capsys.readouterr().err
    assert "starts from the pipeline's CAM source, and this pipeline has none" in err
