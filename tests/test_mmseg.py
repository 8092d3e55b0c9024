"""The mmsegmentation backend (methods/mmseg.py): its mmcv-lite shim and the ``mmseg`` plugin.

The pure-torch ops and the safe checkpoint loader need no mmseg; tests that build mmseg models
need the mmseg extra, which the test extra installs (``pip install -e '.[test]'``): they fail
with the reason when it does not import, they do not skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench import RunContext, Sample
from bench.errors import ConfigError
from bench.plugins import METHODS, builtin_dir, discover, import_plugin_file

#: the method file: its mmcv-lite shim (pure-torch ops, safe checkpoint loading) and the plugin
#: (imported after discovery, so that its registry entry keeps what the scan read)
discover()
compat = import_plugin_file(builtin_dir("methods") / "mmseg.py")

QUICK_CONFIG = "deeplabv3plus/deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py"


class NotATensor:
    """Something torch.load(weights_only=True) refuses to unpickle."""

    def __init__(self, value: int = 1) -> None:
        self.value = value


@pytest.fixture(scope="module")
def mmseg_ok() -> None:
    ok, reason = compat.available()
    assert ok, f"the mmseg extra (part of the test extra) does not import: {reason}"


def plugin(tmp_path: Path, **params: Any) -> Any:
    discover()
    cls = METHODS.get("mmseg").cls
    base = {"config": QUICK_CONFIG, "backbone_pretrained": False, "epochs": 1,
            "batch_size": 4, "crop_size": 64, "scale_min": 1.0, "scale_max": 1.0,
            "tile_size": 0}
    return cls(cls.Params(**{**base, **params}),
               RunContext(device="cpu", workdir=tmp_path, progress=False))


def squares(n: int, size: int = 64) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        image[16:40, 20:44] = 230
        mask[16:40, 20:44] = 1
        out.append(Sample(f"m{i}", image, 1, mask))
    return out


# --------------------------------------------------------------------------- pure torch
def test_point_sample_reads_pixel_centres() -> None:
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    points = torch.stack([(xs + 0.5) / 5, (ys + 0.5) / 4], -1).view(1, -1, 2).repeat(2, 1, 1)
    out = compat.point_sample(feat, points)
    assert out.shape == (2, 3, 20)
    assert torch.allclose(out, feat.view(2, 3, 20))
    grid = points.view(2, 4, 5, 2)
    assert torch.allclose(compat.point_sample(feat, grid), feat)
    # between two pixel centres: their mean
    mid = torch.tensor([[[1.0 / 5, 0.5 / 4]]])
    assert torch.allclose(compat.point_sample(feat[:1, :1], mid).view(()), feat[0, 0, 0, :2].mean())


def test_sigmoid_focal_loss_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    target = torch.tensor([0, 1, 2, 3, 1, 0])  # 3 = no class: negative everywhere
    one_hot = F.one_hot(target, 4)[:, :3].float()
    # gamma 0, alpha 0.5: half the binary cross-entropy
    got = compat.sigmoid_focal_loss(logits, target, gamma=0.0, alpha=0.5, reduction="none")
    bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
    assert torch.allclose(got, 0.5 * bce)
    full = compat.sigmoid_focal_loss(logits, target, 2.0, 0.25, reduction="none")
    p = logits.sigmoid()
    pt = torch.where(one_hot.bool(), 1 - p, p)
    expected = bce * pt**2 * torch.where(one_hot.bool(), 0.25, 0.75)
    assert torch.allclose(full, expected, atol=1e-6)
    assert torch.allclose(compat.sigmoid_focal_loss(logits, target), expected.sum() / 6)
    weight = torch.arange(6, dtype=torch.float32)
    assert torch.allclose(compat.sigmoid_focal_loss(logits, target, weight=weight,
                                                    reduction="sum"),
                          (expected * weight[:, None]).sum())


def test_other_ops_report_the_missing_extension() -> None:
    with pytest.raises(ModuleNotFoundError, match="compiled extension"):
        compat._missing_op("CrissCrossAttention")


def test_safe_load_refuses_pickled_objects_unless_trusted(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_TRUST_CHECKPOINTS", raising=False)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"epoch": 3}}, plain)
    assert compat.safe_load(plain)["meta"] == {"epoch": 3}
    risky = tmp_path / "risky.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": NotATensor(5)}, risky)
    with pytest.raises(compat.CheckpointError, match="trust_checkpoint"):
        compat.safe_load(risky)
    assert compat.safe_load(risky, trust=True)["meta"].value == 5
    monkeypatch.setenv("BENCH_TRUST_CHECKPOINTS", "1")
    assert compat.safe_load(risky)["meta"].value == 5


def test_plugin_is_registered_as_segmenter() -> None:
    discover()
    assert METHODS.entry("mmseg").meta["kind"] == "segmenter"
    cls = METHODS.get("mmseg").cls
    assert cls.needs_pseudo_labels and cls.Params().config.startswith("deeplabv3plus/")


def test_missing_extra_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = compat.importlib.util.find_spec
    monkeypatch.setattr(compat.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mmseg" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install"):
        plugin(tmp_path).build_model(pretrained=False)


# --------------------------------------------------------------------------- with mmseg
def test_shim_lets_mmseg_import(mmseg_ok: None) -> None:
    import mmcv.ops
    from mmseg.models.decode_heads import cc_head

    if compat.mmcv_has_compiled_ops():
        pytest.skip("a full mmcv with compiled ops is installed; the shim is not used")
    assert mmcv.ops.point_sample is compat.point_sample
    assert cc_head.CrissCrossAttention is None  # mmseg's own fallback for a missing op
    from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss

    logits = torch.randn(5, 2)
    target = torch.tensor([0, 1, 1, 0, 1])
    one_hot = F.one_hot(target, 2).float()
    ours = compat.sigmoid_focal_loss(logits, target, 2.0, 0.5, None, "none")
    theirs = py_sigmoid_focal_loss(logits, one_hot, gamma=2.0, alpha=0.5, reduction="none")
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_default_config_is_shipped_with_mmseg(mmseg_ok: None, tmp_path: Path) -> None:
    seg = plugin(tmp_path, config=METHODS.get("mmseg").cls.Params().config)
    cfg = seg._config(pretrained=False)
    assert cfg.model.decode_head.type == "DepthwiseSeparableASPPHead"
    assert cfg.model.decode_head.num_classes == 2 and cfg.model.auxiliary_head is None
    assert cfg.model.backbone.depth == 101 and cfg.model.pretrained is None
    mean, _std = seg.normalization()
    assert np.allclose(mean, (0.485, 0.456, 0.406), atol=1e-3)
    with pytest.raises(ConfigError, match="not found"):
        plugin(tmp_path, config="nope/nothing.py")._config(pretrained=False)


def test_fit_predict_save_load(mmseg_ok: None, tmp_path: Path) -> None:
    seg = plugin(tmp_path / "work")
    train = squares(4)
    seg.fit(train, [s.mask for s in train], squares(2))
    assert [h["epoch"] for h in seg.history] == [1] and "val_mIoU" in seg.history[0]
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    pred = seg.predict([image])[0]
    assert pred.shape == (50, 70) and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    seg.save(tmp_path / "model")
    fresh = plugin(tmp_path / "other")
    fresh.load(tmp_path / "model")
    assert torch.equal(fresh.logits(image), seg.logits(image))


def test_checkpoint_weights_load_except_mismatched_classes(mmseg_ok: None,
                                                           tmp_path: Path) -> None:
    source = plugin(tmp_path).build_model(pretrained=False).segmentor
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.zeros(21, *state[
        "decode_head.conv_seg.weight"].shape[1:])  # a 21-class model-zoo head
    path = tmp_path / "zoo.pth"
    torch.save({"state_dict": state, "meta": {"classes": ["a"] * 21}}, path)
    net = plugin(tmp_path, checkpoint=str(path)).build_model(pretrained=True).segmentor
    got = net.state_dict()
    assert torch.equal(got["backbone.stem.0.weight"], state["backbone.stem.0.weight"])
    assert got["decode_head.conv_seg.weight"].shape[0] == 2

    risky = tmp_path / "risky.pth"
    torch.save({"state_dict": state, "meta": NotATensor()}, risky)
    with pytest.raises(compat.CheckpointError):
        plugin(tmp_path, checkpoint=str(risky)).build_model(pretrained=True)
    plugin(tmp_path, checkpoint=str(risky), trust_checkpoint=True).build_model(pretrained=True)


def test_mmengine_loader_goes_through_safe_load(mmseg_ok: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mmengine.runner import CheckpointLoader

    monkeypatch.delenv("BENCH_TRUST_CHECKPOINTS", raising=False)
    compat.patch_checkpoint_loading(trust=False)
    risky = tmp_path / "risky.pth"
    torch.save({"meta": NotATensor()}, risky)
    with pytest.raises(compat.CheckpointError):
        CheckpointLoader.load_checkpoint(str(risky))
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.ones(1)}, plain)
    assert torch.equal(CheckpointLoader.load_checkpoint(os.fspath(plain))["w"], torch.ones(1))


# --------------------------------------------------------------------------- hub weights
#: a ResNetV1c-18 of width 8 under an FCN head, whose config asks for the ImageNet ResNet-18
#: as mmseg's configs do (``open-mmlab://resnet18_v1c``)
TINY_PRETRAINED_CONFIG = '''
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    type="EncoderDecoder",
    pretrained="open-mmlab://resnet18_v1c",
    backbone=dict(type="ResNetV1c", depth=18, base_channels=8, stem_channels=8, num_stages=4,
                  out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg=norm_cfg, norm_eval=False, style="pytorch", contract_dilation=True),
    decode_head=dict(type="FCNHead", in_channels=64, in_index=3, channels=8, num_convs=1,
                     concat_input=False, dropout_ratio=0.1, num_classes=2, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False,
                                      loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode="whole"))
'''
R18_URL = "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth"


def test_hub_weights_are_the_configs_pretrained_backbones(mmseg_ok: None) -> None:
    from bench.weight_cache import HubWeight, pipeline_hub_weights

    discover()
    r101 = "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth"
    assert pipeline_hub_weights("effnet+crf+mmseg", "full") == [  # open-mmlab://resnet101_v1c
        HubWeight("url", "resnet101_v1c-e67eebb6.pth", r101)]
    assert pipeline_hub_weights("effnet+crf+mmseg", "quick") == []  # random initialisation
    assert pipeline_hub_weights("effnet+crf+mmseg[backbone_pretrained=true]", "quick") == [
        HubWeight("url", "resnet18_v1c-b5776b93.pth", R18_URL)]
    segformer = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"  # an init_cfg URL
    assert [w.name for w in pipeline_hub_weights(
        f"effnet+crf+mmseg[config={segformer}]", "full")] == ["mit_b0_20220624-7e0fe6dd.pth"]
    zoo = "https://download.example.org/zoo/deeplab_smoke.pth"
    assert pipeline_hub_weights(f"effnet+crf+mmseg[checkpoint={zoo}]", "quick") == [
        HubWeight("url", "deeplab_smoke.pth", zoo)]
    assert pipeline_hub_weights("effnet+crf+mmseg[checkpoint=/x/zoo.pth]", "quick") == []
    assert compat.source_url("torchvision://resnet50").startswith("https://download.pytorch")
    assert compat.source_url("/local/file.pth") is None
    with pytest.raises(ConfigError, match=r"mmengine knows no model 'resnet7_v1c'"):
        compat.source_url("open-mmlab://resnet7_v1c")
    nested = {"pretrained": "open-mmlab://a", "backbone": {"init_cfg": [
        {"type": "Normal"}, {"type": "Pretrained", "checkpoint": "https://x/b.pth"}]},
        "neck": {"pretrained": "open-mmlab://a"}}
    assert compat.pretrained_sources(nested) == ["open-mmlab://a", "https://x/b.pth"]


def test_pretrained_backbone_loads_from_the_weights_cache_offline(
        mmseg_ok: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Offline: not cached, one line naming fetch-weights; cached (as fetch-weights stores
    it, from a file:// copy), the backbone starts from exactly those weights."""
    from bench.weight_cache import HubWeight, fetch

    config = tmp_path / "tiny_r18.py"
    config.write_text(TINY_PRETRAINED_CONFIG)
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = plugin(tmp_path / "a", config=str(config), backbone_pretrained=True)
    assert [str(w) for w in seg.hub_weights(seg.params, "quick")] == \
        ["url:resnet18_v1c-b5776b93.pth"]
    with pytest.raises(ConfigError) as caught:
        seg.build_model(pretrained=True)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "mmseg: url:resnet18_v1c-b5776b93.pth is not in the weights cache")
    assert f"run \"bench fetch-weights --methods 'effnet+crf+mmseg[config={config}]'\"" in message

    torch.manual_seed(1)
    source = plugin(tmp_path / "b", config=str(config)).build_model(pretrained=False)
    imagenet = {k: v.clone() for k, v in source.segmentor.backbone.state_dict().items()}
    served = tmp_path / "server" / "resnet18_v1c-b5776b93.pth"
    served.parent.mkdir()
    torch.save(imagenet, served)
    fetch(HubWeight("url", "resnet18_v1c-b5776b93.pth", served.as_uri()))
    torch.manual_seed(2)
    net = plugin(tmp_path / "c", config=str(config), backbone_pretrained=True).build_model(
        pretrained=True)
    got = net.segmentor.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in imagenet.items())
    assert "fetched" not in capsys.readouterr().err  # read from the cache


def test_a_url_checkpoint_comes_from_the_weights_cache(mmseg_ok: None, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.weight_cache import HubWeight, fetch

    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = plugin(tmp_path).build_model(pretrained=False).segmentor.state_dict()
    served = tmp_path / "server" / "deeplab_smoke.pth"
    served.parent.mkdir()
    torch.save({"state_dict": state}, served)
    url = "https://download.example.org/zoo/deeplab_smoke.pth"
    seg = plugin(tmp_path, checkpoint=url)
    assert seg.initial_weights(seg.params, "quick") == "hub"
    with pytest.raises(ConfigError, match=r"url:deeplab_smoke\.pth is not in the weights cache"):
        seg.build_model(pretrained=True)
    fetch(HubWeight("url", "deeplab_smoke.pth", served.as_uri()))
    got = plugin(tmp_path, checkpoint=url).build_model(pretrained=True).segmentor.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
