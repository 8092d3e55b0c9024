"""Speed of CAM extraction and classifier training (pytest-benchmark).

- CAM extraction, ResNet-50 (random init, ``pretrained=False``), 8 images of 512x512 per call,
  on CPU: ours (`ClassifierCam.compute`: uint8 images in, one forward pass, classic CAM,
  upsampling and normalisation; no backward) against pytorch-grad-cam's ``GradCAM`` on the
  same model and the same normalised batch (forward + backward + its own resize/normalise).
  Throughput in images/s; the summary gives the ratio of mean and of best rounds.
- CAM extraction at the precision users run (issue 18.4), ResNet-50 and EfficientNet-Lite0 at
  512x512 and ViT-S/16 at 224x224, 8 images per call, on CPU: `ClassifierCam.compute` under
  each ``autocast`` / ``channels_last`` setting (float32 as today, float32 NCHW, bfloat16
  autocast channels-last and NCHW; bfloat16 only where torch's oneDNN has kernels for it)
  against the plain float32 forward of the same network (``net(x)`` on the batch already
  converted to float: no CAM, no upsampling, no normalisation), timed in turn round by round.
  The summary gives each ratio (best rounds, wall and CPU time) and how far the maps are from
  the float32 ones (max and mean absolute difference; random-init backbones except the
  packaged Lite0 weights, random heads). On CUDA (skipped without a GPU) the same for
  ResNet-50 with ``autocast=float16`` and ``auto``.
- Training throughput (images/s of optimisation steps, and of whole epochs including
  augmentation) of the quick-profile classifiers: ResNet-50, ViT-S/16 and EfficientNet-Lite0 at
  128 px, batch 16, on 48 images.

Run: ``python -m pytest benchmarks/test_bench_cam.py --benchmark-enable``.
Nothing asserts a time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.nn.classifier_cam import ClassifierCam, device_lacks
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


# --------------------------------------------------------------------------- precision
#: backbone: (image side, weights) of the precision benchmark
PRECISION_MODELS = {"resnet50": (512, "none"), "tf_efficientnet_lite0": (512, "package"),
                    "vit_small_patch16_224": (224, "none")}
#: variant: (autocast, channels_last); "fp32" is the default (today's maps)
PRECISION_VARIANTS = {"fp32": ("auto", "auto"), "fp32_nchw": ("off", False),
                      "bf16": ("bfloat16", "auto"), "bf16_nchw": ("bfloat16", False)}
#: the CUDA variants (ResNet-50): float32, float16, and auto (float16 under ``amp``)
CUDA_VARIANTS = {"fp32": ("off", "auto"), "fp16": ("float16", "auto"),
                 "auto": ("auto", "auto")}
PRECISION_ROUNDS = 4
NO_CPU_BF16 = device_lacks(torch.bfloat16, torch.device("cpu"))


def _precision_cams(backbone: str, device: str, variants: dict[str, tuple[str, Any]]
                    ) -> dict[str, ClassifierCam]:
    """A CAM source of ``backbone`` per variant, all with the weights of the first (its
    head drawn from N(0, 1), so that maps have structure: the near-zero initial head of a
    random backbone gives flat maps, which would agree trivially)."""
    side, weights = PRECISION_MODELS[backbone]
    cams: dict[str, ClassifierCam] = {}
    for name, (autocast, channels_last) in variants.items():
        params = ClassifierCam.Params(backbone=backbone, weights=weights, input_size=side,
                                      cam_scale=1.0, autocast=autocast,  # type: ignore[arg-type]
                                      autocast_tol=0.0,  # measured and reported below
                                      channels_last=channels_last)
        cam = ClassifierCam(params, RunContext(device=device, seed=0, progress=False))
        if cams:
            cam.build(weights=False)
            cam.require_net().load_state_dict(next(iter(cams.values())).require_net()
                                              .state_dict())
        else:
            cam.build()
            with torch.no_grad():  # a random N(0, 1) head: maps with structure, not flat ones
                head = cam.require_net().model.get_classifier()
                head.weight.copy_(torch.randn(head.weight.shape,
                                              generator=torch.Generator().manual_seed(0)))
        cams[name] = cam
    return cams


def _in_turn(benchmark: Any, backbone: str, device: str, variants: dict[str, tuple[str, Any]],
             scenes512: list, report: Any) -> None:
    """Time the plain float32 forward and every variant's `compute` in turn, round by round
    (the machine's load hits all of them), and report each against the forward: best rounds,
    wall and CPU time, and the maps' distance from the first variant's (float32)."""
    from PIL import Image

    side = PRECISION_MODELS[backbone][0]
    batch = [image if image.shape[0] == side else
             np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
             for image, _ in scenes512[:BATCH]]
    cams = _precision_cams(backbone, device, variants)
    net = next(iter(cams.values())).require_net()  # float32, as built
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).to(device).float().div_(255)

    def forward() -> None:
        with torch.inference_mode():
            net(x).cpu()  # .cpu(): waits for CUDA

    maps = {name: np.stack(cam.compute(batch)) for name, cam in cams.items()}  # warm-up too
    forward()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("forward", *cams)}

    def timed(key: str, fn: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times[key].append((time.perf_counter() - wall, time.process_time() - cpu))

    def one_round() -> None:
        timed("forward", forward)
        for name, cam in cams.items():
            timed(name, lambda cam=cam: cam.compute(batch))

    benchmark.group = f"CAM precision {backbone} {side}x{side} x{BATCH} {device}, in turn"
    benchmark.pedantic(one_round, rounds=PRECISION_ROUNDS, warmup_rounds=0)
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    for key, (wall, _cpu) in best.items():
        benchmark.extra_info[f"{key}_images_per_s_best"] = BATCH / wall
    where = f"CPU, {torch.get_num_threads()} threads" if device == "cpu" else "CUDA"
    fwd, fwd_cpu = best["forward"]
    ref = next(iter(maps.values()))
    report(f"CAM {backbone} {side}x{side} batch {BATCH}, {where}, best of "
           f"{PRECISION_ROUNDS} rounds in turn: plain float32 forward {BATCH / fwd:.2f} img/s")
    for name, (wall, cpu) in best.items():
        if name == "forward":
            continue
        autocast, channels_last = variants[name]
        diff = np.abs(maps[name] - ref)
        report(f"  {name} (autocast={autocast}, channels_last={str(channels_last).lower()}): "
               f"{BATCH / wall:.2f} img/s = {fwd / wall:.2f}x the plain float32 forward "
               f"({fwd_cpu / cpu:.2f}x in CPU time); maps vs float32: max {diff.max():.4f}, "
               f"mean {diff.mean():.4f}")


@pytest.mark.parametrize("backbone", list(PRECISION_MODELS))
def test_cam_precision(benchmark: Any, backbone: str, scenes512: list, report: Any) -> None:
    """Every CPU variant and the plain float32 forward of one backbone, in turn."""
    variants = {k: v for k, v in PRECISION_VARIANTS.items()
                if not (k.startswith("bf16") and NO_CPU_BF16)}
    if NO_CPU_BF16:
        report(f"CAM {backbone}: bfloat16 variants left out: {NO_CPU_BF16}")
    _in_turn(benchmark, backbone, "cpu", variants, scenes512, report)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cam_precision_cuda(benchmark: Any, scenes512: list, report: Any) -> None:
    """ResNet-50 on CUDA: float32, float16 and auto (float16 with ``amp``), in turn."""
    _in_turn(benchmark, "resnet50", "cuda", CUDA_VARIANTS, scenes512, report)
