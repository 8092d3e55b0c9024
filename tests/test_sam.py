"""The ``sam`` refiner on a tiny random SAM built from ``segment_anything.modeling``.

No SAM checkpoint is reachable here, so the tests build a SAM with the package's own classes
(``ImageEncoderViT`` at 64 px, a depth-1 ``TwoWayTransformer``), save its random weights as a
checkpoint and register the architecture as ``model=tiny``; everything else is the real code
path: ``SamAutomaticMaskGenerator``, ``SamPredictor``, the mask cache and the CLI. Random
weights give arbitrary masks, so results are checked against the package's own API called
directly (unbatched), not against fixed pixels.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from bench.cli import main
from bench.errors import ConfigError
from bench.mask_merge import merge_labels
from bench.mask_set import MaskSet
from bench.plugins import METHODS, discover
from bench.records import load_records
from bench.sample import Sample
from bench.stages import RunContext
from bench.weights import WeightsError

#: generator settings under which a random model still yields masks, kept small for speed
FAST = ("points_per_side=8,crop_n_layers=0,pred_iou_thresh=0,stability_score_thresh=0,"
        "min_mask_region_area=0")


def build_tiny_sam(checkpoint: str | None = None) -> Sam:
    """A SAM of the package's classes at 64 px: one ViT block, a depth-1 decoder."""
    emb = 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=64, patch_size=16, in_chans=3, embed_dim=32, depth=1, num_heads=2,
            mlp_ratio=2.0, out_chans=emb, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=0,
            global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=emb, image_embedding_size=(4, 4),
                                     input_image_size=(64, 64), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=emb, mlp_dim=32, num_heads=2),
            transformer_dim=emb, iou_head_depth=1, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path) -> Path:
    """``model=tiny`` registered with segment_anything for this test; its checkpoint."""
    monkeypatch.setitem(sam_model_registry, "tiny", build_tiny_sam)
    return tiny_checkpoint


def refiner(checkpoint: Path, tmp_path: Path, **params: Any) -> Any:
    """A ``sam`` refiner on the tiny model, caching under ``tmp_path``."""
    discover()
    cls = METHODS.get("sam").cls
    values = {"model": "tiny", "checkpoint": str(checkpoint), "points_per_side": 8,
              "crop_n_layers": 0, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
              "min_mask_region_area": 0, **params}
    ctx = RunContext(workdir=tmp_path / "work", progress=False,
                     extra={"cache_root": tmp_path / "cache"})
    return cls(cls.Params(**values), ctx)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 48x64 image and a soft map with two smoke components (0.9 and 0.7 high)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 90, (48, 64, 3), dtype=np.uint8)
    image[10:30, 20:40] = (200, 190, 180)
    cam = np.full((48, 64), 0.02, np.float32)
    cam[10:30, 20:40] = 0.9
    cam[15:20, 25:30] = 1.0
    cam[35:45, 5:12] = 0.7
    return image, cam


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Counts calls of ``owner.name`` (wrapping the real method) in a one-element list."""
    real = getattr(owner, name)
    counter = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return counter


# --------------------------------------------------------------------------- mode=auto
def test_auto_mode_merges_the_generators_masks_and_caches_them(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, cam = scene()
    calls = count_calls(monkeypatch, SamAutomaticMaskGenerator, "generate")
    sam = refiner(tiny, tmp_path, merge="max_iou_imp2")
    sam.input_threshold = 0.5
    out = sam.refine(Sample("a", image), cam)
    assert calls[0] == 1
    assert sam.summary().startswith("SAM masks: 1 computed")
    assert torch.is_grad_enabled()  # SAM's no_grad stays inside SAM (a segmenter trains later)

    # the same masks straight from the package (same weights, same settings)
    model = build_tiny_sam()
    model.load_state_dict(torch.load(tiny, weights_only=True))
    records = SamAutomaticMaskGenerator(
        model, points_per_side=8, crop_n_layers=0, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, crop_n_points_downscale_factor=2,
        min_mask_region_area=0).generate(image)
    assert len(records) > 0 and calls[0] == 2  # the refiner's and this direct one
    direct = MaskSet.from_dense([r["segmentation"] for r in records])
    labels = (cam >= 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out, merge_labels("max_iou_imp2", direct, labels))

    # another merge strategy, another refiner object: masks come from the cache
    other = refiner(tiny, tmp_path, merge="max_iou")
    other.input_threshold = 0.5
    again = other.refine(Sample("b", image.copy()), cam)
    assert calls[0] == 2
    assert other.summary().startswith("SAM masks: 0 computed, 1 from the mask cache")
    np.testing.assert_array_equal(again, merge_labels("max_iou", direct, labels))


def test_a_frame_where_no_crop_keeps_a_mask(tiny: Path, tmp_path: Path) -> None:
    image, cam = scene()  # segment-anything #614: crop layers, every crop empty
    sam = refiner(tiny, tmp_path, crop_n_layers=1, pred_iou_thresh=1e9, merge="max_iou_imp2")
    out = sam.refine(Sample("a", image), cam)
    np.testing.assert_array_equal(out, (cam >= 0.5).astype(np.uint8))  # no mask: P itself
    assert sam.summary().startswith("SAM masks: 1 computed")


def test_auto_masks_are_stored_as_packed_bits(tiny: Path, tmp_path: Path) -> None:
    image, cam = scene()
    sam = refiner(tiny, tmp_path)
    sam.refine(Sample("a", image), cam)
    (entry,) = (tmp_path / "cache" / "sam" / "auto-masks").rglob("*.npz")
    with np.load(entry) as npz:
        assert npz["bits"].dtype == np.uint8
        assert npz["bits"].shape[1] == 48 * 64 // 8  # one bit per pixel (48 words)
        assert set(npz.files) >= {"shape", "areas", "score_predicted_iou"}


def test_the_input_threshold_decides_p(tiny: Path, tmp_path: Path) -> None:
    sam = refiner(tiny, tmp_path)
    _, cam = scene()
    sam.input_threshold = 0.8  # the 0.7 component is background at this threshold
    labels, prob = sam.pseudo_labels(cam)
    assert labels[40, 8] == 0 and labels[20, 30] == 1
    assert prob[20, 30] == pytest.approx(0.5 + 0.5 * 0.1 / 0.2)
    assert prob[40, 8] == pytest.approx(0.5 * 0.7 / 0.8)
    label_map = np.array([[0, 1, 255]], np.uint8)
    labels, prob = sam.pseudo_labels(label_map)  # a label map is used as it is
    np.testing.assert_array_equal(labels, label_map)
    np.testing.assert_array_equal(prob, [[0.0, 1.0, 0.5]])


def test_opencv_is_needed_for_min_mask_region_area(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    sam = refiner(tiny, tmp_path, min_mask_region_area=100)
    image, cam = scene()
    with pytest.raises(ConfigError, match=r"needs OpenCV \(pip install 'smoke-wsss-bench\[sam\]'"):
        sam.refine(Sample("a", image), cam)


# --------------------------------------------------------------------------- mode=prompt
def test_prompt_mode_batches_one_decoder_call_per_image_and_matches_single_prompts(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.mask_set import MaskSet as _MaskSet

    image, cam = scene()
    sam = refiner(tiny, tmp_path, mode="prompt", positive_points=2, negative_points=2,
                  point_spacing=4)
    sam.input_threshold = 0.5
    labels, prob = sam.pseudo_labels(cam)
    decoder = sam.model().mask_decoder
    calls = count_calls(monkeypatch, decoder, "forward")
    masks = sam.prompt_masks(image, labels, prob, soft=True)
    assert calls[0] == 1 and len(masks) == 2  # two components, one decoder call
    assert isinstance(masks, _MaskSet)

    # each prompt alone through SamPredictor.predict (NumPy API), on the same embedding
    component_prompts = sys.modules[type(sam).__module__].component_prompts
    prompts = component_prompts(labels, prob, sam.params, soft=True)
    assert [int(p.region.sum()) for p in prompts] == [400, 70]  # largest component first
    first = prompts[0]
    assert (first.labels == 1).sum() == 2 and (first.labels == 0).sum() == 2
    peak_x, peak_y = first.points[0]
    assert cam[int(peak_y), int(peak_x)] == 1.0  # the first positive point is the CAM peak
    for p in prompts:
        negatives = p.points[p.labels == 0].astype(int)
        assert (labels[negatives[:, 1], negatives[:, 0]] == 0).all()
    predictor = sam.predictor(image)
    for i, p in enumerate(prompts):
        alone, _, _ = predictor.predict(point_coords=p.points, point_labels=p.labels,
                                        box=p.box, multimask_output=True)
        ious = [(m & p.region).sum() / max((m | p.region).sum(), 1) for m in alone]
        np.testing.assert_array_equal(masks.mask(i), alone[int(np.argmax(ious))])


def test_prompt_mode_caches_the_image_embedding(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, cam = scene()
    calls = count_calls(monkeypatch, SamPredictor, "set_image")
    first = refiner(tiny, tmp_path, mode="prompt")
    out = first.refine(Sample("a", image), cam)
    assert calls[0] == 1 and "1 computed" in first.summary()
    second = refiner(tiny, tmp_path, mode="prompt", merge="union", select="score")
    second.refine(Sample("a", image), cam)
    assert calls[0] == 1 and "0 computed, 1 from the mask cache" in second.summary()
    third = refiner(tiny, tmp_path, mode="prompt")
    np.testing.assert_array_equal(third.refine(Sample("a", image), cam), out)  # stored = fresh


def test_prompt_mode_without_smoke_needs_no_sam(tiny: Path, tmp_path: Path) -> None:
    image, _ = scene()
    labels = np.zeros((48, 64), np.uint8)
    labels[0, :] = 255
    sam = refiner(tiny, tmp_path, mode="prompt")
    out = sam.refine(Sample("a", image), labels)
    np.testing.assert_array_equal(out, labels)
    assert sam.summary() == ""


# --------------------------------------------------------------------------- weights
def test_without_a_checkpoint_the_stage_is_not_runnable() -> None:
    discover()
    cls = METHODS.get("sam").cls
    problem = cls.not_runnable(cls.Params(), "quick")
    assert problem is not None and problem.reason == "needs a SAM checkpoint (checkpoint=PATH)"
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in str(problem)
    assert cls.initial_weights(cls.Params(), "quick") is None
    assert cls.initial_weights(cls.Params(checkpoint="hub"), "quick") == "hub"


def test_a_checkpoint_of_another_architecture_is_refused(tiny: Path, tmp_path: Path) -> None:
    state = torch.load(tiny, weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    bad = tmp_path / "partial.pth"
    torch.save(state, bad)
    sam = refiner(bad, tmp_path)
    with pytest.raises(WeightsError, match=r"does not fit model=tiny \(1 missing"):
        sam.model()


def test_hub_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline and not in the weights cache: the fetch-weights command to run, in one line."""
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    discover()
    cls = METHODS.get("sam").cls
    sam = cls(cls.Params(checkpoint="hub"), RunContext(workdir=tmp_path))
    with pytest.raises(WeightsError) as caught:
        sam.checkpoint_path()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("sam[checkpoint=hub]: url:sam_vit_b_01ec64.pth is not in the "
                              f"weights cache {tmp_path / 'weights'} and this machine is offline")
    assert ("run \"bench fetch-weights --methods 'effnet+crf+sam[checkpoint=hub,model=vit_b]'\""
            in message)
    assert message.endswith("sam_vit_b_01ec64.pth elsewhere and pass checkpoint=PATH")


# --------------------------------------------------------------------------- weights cache
def sam_module() -> Any:
    """The loaded plugin module (methods/sam.py), whose CHECKPOINTS table tests repoint."""
    discover()
    return sys.modules[METHODS.get("sam").cls.__module__]


@pytest.fixture
def served(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The official-checkpoint table pointed at ``file://`` copies of the tiny checkpoint
    (``vit_b`` and ``tiny``), an empty weights cache, offline."""
    server = tmp_path / "server"
    server.mkdir()
    (server / "sam_vit_b_01ec64.pth").write_bytes(tiny.read_bytes())
    (server / "sam_tiny_test.pth").write_bytes(tiny.read_bytes())
    module = sam_module()
    monkeypatch.setitem(module.CHECKPOINTS, "vit_b", (
        "sam_vit_b_01ec64.pth", (server / "sam_vit_b_01ec64.pth").as_uri()))
    monkeypatch.setitem(module.CHECKPOINTS, "tiny", (
        "sam_tiny_test.pth", (server / "sam_tiny_test.pth").as_uri()))
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    digest = hashlib.sha256(tiny.read_bytes()).hexdigest()
    return {"server": server, "cache": tmp_path / "weights", "sha256": digest}


def test_checkpoint_hub_declares_the_official_checkpoint() -> None:
    from bench.weight_cache import HubWeight, pipeline_hub_weights

    discover()
    base = "https://dl.fbaipublicfiles.com/segment_anything/"
    assert pipeline_hub_weights("effnet+crf+sam[checkpoint=hub]", "quick") == [
        HubWeight("url", "sam_vit_b_01ec64.pth", base + "sam_vit_b_01ec64.pth")]
    assert pipeline_hub_weights("effnet+crf+sam[checkpoint=hub,model=vit_h]", "full") == [
        HubWeight("url", "sam_vit_h_4b8939.pth", base + "sam_vit_h_4b8939.pth")]
    assert pipeline_hub_weights("effnet+crf+sam[checkpoint=/x/sam.pth]", "quick") == []
    assert pipeline_hub_weights("effnet+crf+sam", "quick") == []  # not run without one
    with pytest.raises(WeightsError, match=r"knows the official models \(vit_b, vit_l, "
                                           r"vit_h\), not 'tiny'"):
        pipeline_hub_weights("effnet+crf+sam[checkpoint=hub,model=tiny]", "quick")


def test_fetch_weights_stores_the_checkpoint_with_its_checksum(
        served: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-weights", "--methods", "effnet+crf+sam[checkpoint=hub]"]) == 0
    stored = served["cache"] / "url" / "sam_vit_b_01ec64.pth"
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"stored url:sam_vit_b_01ec64.pth: {stored} sha256 {served['sha256']} "
                   f"({stored.stat().st_size / 2**20:.1f} MiB)"]
    manifest = json.loads((served["cache"] / "manifest.json").read_text())
    assert manifest["url/sam_vit_b_01ec64.pth"]["sha256"] == served["sha256"]
    assert manifest["url/sam_vit_b_01ec64.pth"]["source"].startswith("file://")


def test_checkpoint_hub_downloads_into_the_weights_cache_when_online(
        served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    sam = refiner(Path("hub"), tmp_path)
    stored = served["cache"] / "url" / "sam_tiny_test.pth"
    assert sam.checkpoint_path() == stored
    assert f"bench: fetched url:sam_tiny_test.pth into the weights cache: {stored}" in \
        capsys.readouterr().err
    assert sam.checkpoint_digest() == served["sha256"]
    assert not (tmp_path / "torch").exists()  # nothing in torch's hub cache
    sam.model()  # the official loading path: every weight of the file


def test_cli_checkpoint_hub_runs_offline_from_the_weights_cache(
        served: dict, cli: dict, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fetch-weights, then an offline run: the cached file, recorded as hub weights; its masks
    are those of the same file passed as checkpoint=PATH (one mask cache entry: same bytes)."""
    hub = f"dark_channel+sam[model=tiny,checkpoint=hub,{FAST}]"
    assert main([*cli["base"], "--methods", hub]) == 2  # offline, not cached: one line
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bench: error:")]
    assert errors == err[-1:] and errors[0].startswith(
        "bench: error: sam[checkpoint=hub]: url:sam_tiny_test.pth is not in the weights cache")
    assert f"run \"bench fetch-weights --methods '{hub}'\" where the internet" in errors[0]

    assert main(["fetch-weights", "--methods", hub]) == 0
    assert capsys.readouterr().out.startswith(
        f"stored url:sam_tiny_test.pth: {served['cache'] / 'url' / 'sam_tiny_test.pth'} "
        f"sha256 {served['sha256']}")
    assert main([*cli["base"], "--methods", hub]) == 0
    assert "SAM masks: 4 computed" in capsys.readouterr().err
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert records[hub]["weights"] == {"sam": "hub"} and "mIoU" in records[hub]["metrics"]
    path = f"dark_channel+sam[model=tiny,checkpoint={tiny},{FAST}]"
    assert main([*cli["base"], "--methods", path]) == 0
    assert "SAM masks: 0 computed, 4 from the mask cache" in capsys.readouterr().err
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert records[path]["metrics"] == records[hub]["metrics"]


# --------------------------------------------------------------------------- through the CLI
@pytest.fixture
def cli(write_dataset: Any, tmp_path: Path, smoke5k_root: Path) -> dict:
    name, _ = write_dataset(tmp_path / "datasets", "tinysam", smoke5k_root,
                            "val_fraction = 0.3\n")
    out = tmp_path / "results"
    base = ["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
            str(out), "--n-boot", "20", "--no-progress"]
    return {"base": base, "out": out, "name": name}


def test_cli_computes_sam_once_across_strategies_and_reruns(
        tiny: Path, cli: dict, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls = count_calls(monkeypatch, SamAutomaticMaskGenerator, "generate")
    spec = f"dark_channel+sam[model=tiny,checkpoint={tiny},{FAST}]"
    assert main([*cli["base"], "--methods", spec]) == 0
    err = capsys.readouterr().err
    first = calls[0]
    assert first == 4  # the 4 test frames (label maps need no calibration split)
    assert "SAM masks: 4 computed" in err and "0 from the mask cache" in err

    other = f"dark_channel+sam[model=tiny,checkpoint={tiny},{FAST},merge=max_iou]"
    assert main([*cli["base"], "--methods", other]) == 0
    err = capsys.readouterr().err
    assert calls[0] == first  # second strategy: no SAM call
    assert err.count("SAM masks: 0 computed, 4 from the mask cache") == 1

    assert main([*cli["base"], "--methods", f"{spec},{other}"]) == 0
    err = capsys.readouterr().err
    assert calls[0] == first and "SAM masks" not in err  # rerun: stage maps are cached
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert records[spec]["weights"] == {"sam": "file"}
    assert records[spec]["output"] == "labels"


def test_cli_wildcard_run_shows_a_not_run_row_and_exits_0(
        cli: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    discover()
    # sam's demo is effnet+crf+sam; a CAM source without training keeps this test fast
    monkeypatch.setitem(METHODS.entry("sam").meta, "demo", "dark_channel+sam")
    assert main([*cli["base"], "--methods", "sam*"]) == 0
    captured = capsys.readouterr()
    assert "not run: needs a SAM checkpoint (checkpoint=PATH)" in captured.err
    board = (cli["out"] / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith("| dark_channel+sam "))
    assert "not run: needs a SAM checkpoint (checkpoint=PATH)" in row
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert records["dark_channel+sam"]["metrics"] == {}
    assert records["dark_channel"]["metrics"]["mIoU"] > 0  # the runnable prefix was scored
    assert main(["table", "--out", str(cli["out"]), "--ablation", "dark_channel+sam"]) == 0
    table = capsys.readouterr().out
    assert "| +SAM" in table and "not run: needs a SAM checkpoint" in table
    code = main(["compare", "dark_channel+sam", "dark_channel", "--out", str(cli["out"]),
                 "--dataset", cli["name"]])
    assert code == 2 and "was not run: needs a SAM checkpoint" in capsys.readouterr().err


def test_cli_named_sam_without_checkpoint_is_one_line_and_runs_nothing(
        cli: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli["base"], "--methods", "dark_channel,dark_channel+sam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bench: error: needs a SAM checkpoint (checkpoint=PATH): pass "
                             "sam[checkpoint=/path/to/sam_vit_b_01ec64.pth]")
    assert not (cli["out"] / "records").exists()


def test_cli_corrupt_checkpoint_is_one_line(tiny: Path, cli: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    spec = f"dark_channel+sam[model=tiny,checkpoint={bad},{FAST}]"
    assert main([*cli["base"], "--methods", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bench: error:")]
    assert len(errors) == 1 and errors[0] == err[-1]  # one line, the last one
    assert errors[0].startswith(f"bench: error: cannot read weights file {bad}: ")
    assert "(a corrupt or incomplete SAM checkpoint? 240 bytes; get the file again)" in err[-1]


def test_cli_unknown_merge_strategy(cli: dict, tiny: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"dark_channel+sam[checkpoint={tiny},merge=max_iuo]"
    assert main([*cli["base"], "--methods", spec]) == 2
    err = capsys.readouterr().err
    assert "unknown merge strategy 'max_iuo'. Did you mean 'max_iou'" in err
