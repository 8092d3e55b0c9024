"""Speed of CAM extraction and classifier training (pytest-benchmark).

- CAM extraction, ResNet-50 (random init, ``pretrained=False``), 8 images of 512x512 per call,
  on CPU: ours (`ClassifierCam.compute`: uint8 images in, one forward pass, classic CAM,
  upsampling and normalisation; no backward) against pytorch-grad-cam's ``GradCAM`` on the
  same model and the same normalised batch (forward + backward + its own resize/normalise).
  Throughput in images/s; the summary gives the ratio of mean and of best rounds.
- Training throughput (images/s of optimisation steps, and of whole epochs including
  augmentation) of the quick-profile classifiers: ResNet-50, ViT-S/16 and EfficientNet-Lite0 at
  128 px, batch 16, on 48 images.

Run: ``python -m pytest benchmarks/test_bench_cam.py --benchmark-enable``.
Nothing asserts a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.nn.classifier_cam import ClassifierCam
from bench.nn.train import image_set, train
from bench.sample import Sample
from bench.stages import RunContext

ROUNDS = 3
BATCH = 8


@pytest.fixture(scope="module")
def resnet50_cam() -> ClassifierCam:
    cam = ClassifierCam(ClassifierCam.Params(backbone="resnet50", weights="none",
                                             input_size=512, cam_scale=1.0),
                        RunContext(device="cpu", seed=0, progress=False))
    cam.build()
    return cam


@pytest.fixture(scope="module")
def batch512(scenes512: list) -> list[np.ndarray]:
    return [image for image, _ in scenes512[:BATCH]]


def _record(benchmark: Any, bench_report: dict, report: Any, name: str, n: int) -> None:
    if benchmark.stats is None:
        return
    stats = benchmark.stats.stats
    bench_report[name] = (n / stats.mean, n / stats.min)
    benchmark.extra_info["images_per_s"] = n / stats.mean
    benchmark.extra_info["images_per_s_best"] = n / stats.min
    if "cam_ours" in bench_report and "cam_gradcam" in bench_report:
        (om, ob), (gm, gb) = bench_report["cam_ours"], bench_report["cam_gradcam"]
        report(f"CAM ResNet-50 512x512 batch {BATCH}, CPU: ours {om:.2f} img/s, GradCAM "
               f"{gm:.2f} img/s -> {om / gm:.2f}x (mean rounds), {ob / gb:.2f}x (best rounds)")


def test_cam_resnet50_ours(benchmark: Any, resnet50_cam: ClassifierCam, batch512: list,
                           bench_report: dict, report: Any) -> None:
    benchmark.group = f"CAM resnet50 512x512 x{BATCH}"
    maps = benchmark.pedantic(resnet50_cam.compute, args=(batch512,), rounds=ROUNDS,
                              warmup_rounds=1)
    assert len(maps) == BATCH and maps[0].shape == (512, 512)
    _record(benchmark, bench_report, report, "cam_ours", BATCH)


def test_cam_resnet50_gradcam(benchmark: Any, resnet50_cam: ClassifierCam, batch512: list,
                              bench_report: dict, report: Any) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    benchmark.group = f"CAM resnet50 512x512 x{BATCH}"
    net = resnet50_cam.require_net()
    x = net.normalize(torch.from_numpy(np.stack(batch512)).permute(0, 3, 1, 2).float() / 255)
    targets = [ClassifierOutputTarget(0)] * BATCH
    with GradCAM(model=net.model, target_layers=[net.model.layer4]) as gradcam:
        maps = benchmark.pedantic(lambda: gradcam(input_tensor=x, targets=targets),
                                  rounds=ROUNDS, warmup_rounds=1)
    assert maps.shape == (BATCH, 512, 512)
    _record(benchmark, bench_report, report, "cam_gradcam", BATCH)


@pytest.mark.parametrize(("backbone", "weights"), [("resnet50", "none"),
                                                   ("vit_small_patch16_224", "none"),
                                                   ("tf_efficientnet_lite0", "package")])
def test_train_throughput(benchmark: Any, scenes512: list, tmp_path: Path, bench_report: dict,
                          report: Any, backbone: str, weights: str) -> None:
    samples = [Sample(f"s{i}", scenes512[i % len(scenes512)][0][::4, ::4].copy(), i % 2)
               for i in range(48)]
    params = ClassifierCam.Params(backbone=backbone, weights=weights, input_size=128,
                                  epochs=1, batch_size=16, lr=1e-3)
    cam = ClassifierCam(params, RunContext(device="cpu", seed=0, progress=False))
    data = image_set(samples, 128)
    runs: list[list[dict[str, Any]]] = []

    def once() -> None:
        cam.ctx.workdir = tmp_path / f"run{len(runs)}"  # no checkpoint to resume from
        cam.build()
        cam.prepare_training(data.labels)
        runs.append(train(cam.training_module(), cam.training_step, cam.require_net(), data,
                          None, params, cam.ctx))

    benchmark.group = "train 128px batch 16"
    benchmark.pedantic(once, rounds=2, warmup_rounds=0)
    steps = max(h["images_per_s"] for run in runs for h in run)
    epoch = max(len(data) / h["seconds"] for run in runs for h in run)
    benchmark.extra_info["train_images_per_s"] = steps
    benchmark.extra_info["epoch_images_per_s"] = epoch
    report(f"train {backbone} ({weights}) 128px batch 16, CPU: {steps:.1f} img/s in "
           f"optimisation steps, {epoch:.1f} img/s per epoch with augmentation (best round)")
