"""CLIP stages: CLIP-ES CAM extraction against pytorch-grad-cam, and clip_verify per component.

- **CAM.** A batch of 8 smoke-like 224x224 scenes through ``clip`` (``caa=false``: the
  Grad-CAM itself) and through pytorch-grad-cam's ``GradCAM`` on the same model, with the same
  softmax over the same text embeddings (open_clip's forward pass and a reshape transform: the
  tests' ``SoftmaxHead``), both from uint8 images to 224x224 maps in [0, 1], in one run, round
  by round, so that the machine's load falls on both. The model is the tests' random
  ``tiny-test`` (tests/test_clip.py: width 64) at 224 px, with its 2 blocks and with 12 (ViT-B/16's
  depth). Maps must agree to 1e-5; the summary gives wall-clock and CPU-time ratios (best of 8)
  and ``clip[caa=true]``'s time. Where the time goes: ``clip`` runs every block but the last
  without autograd and takes the gradient with respect to the hooked ``ln_1`` output only;
  ``GradCAM`` records the whole forward pass and back-propagates into every parameter (the patch
  embedding's convolution included), then normalises and resizes on the CPU (NumPy, OpenCV).
  The gap grows with depth.
- **clip_verify.** A 512x512 frame whose label map holds 16 smoke components; each crop is
  resized to the model's input and the crops go through CLIP's image encoder in one batch. The
  summary gives the cost per component.

Set ``CLIP_CHECKPOINT=/path/to/ViT-B-16.pt`` to time OpenAI's ViT-B/16 as well. Nothing asserts
a time.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

BATCH = 8
SIZE = 224
N_COMPONENTS = 16


def _tests() -> Any:
    """tests/test_clip.py, for its tiny model and its GradCAM reference (one definition)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_clip.py"
    spec = importlib.util.spec_from_file_location("_clip_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _best(benchmark: Any) -> float:
    return float(benchmark.stats.stats.min)


def _model(tests: Any, folder: Path, layers: int) -> Path:
    """The tests' ``tiny-test`` model at 224 px with ``layers`` blocks, saved; its path."""
    path = folder / f"tiny224-{layers}.pt"
    torch.save(tests.build_tiny(SIZE, layers).state_dict(), path)  # registers tiny-test
    return path


@pytest.fixture(scope="module")
def tiny224(tmp_path_factory: pytest.TempPathFactory, scenes512: list) -> dict[str, Any]:
    from bench.maps import resize_image

    tests = _tests()
    folder = tmp_path_factory.mktemp("clip")
    batch = [resize_image(image, (SIZE, SIZE)) for image, _ in scenes512[:BATCH]]
    return {"tests": tests, "folder": folder, "checkpoint": _model(tests, folder, 2),
            "batch": batch, "frame": scenes512[0][0]}


def _stage(name: str, **params: Any) -> Any:
    from bench.plugins import METHODS, discover
    from bench.stages import RunContext

    discover()
    cls = METHODS.get(name).cls
    return cls(cls.Params(**params), RunContext(device="cpu", progress=False))


def _gradcam(tests: Any, checkpoint: Path, text: torch.Tensor) -> Any:
    """pytorch-grad-cam's GradCAM on open_clip's forward pass of the same weights."""
    import open_clip
    from pytorch_grad_cam import GradCAM

    model = open_clip.create_model("tiny-test", pretrained=str(checkpoint)).eval()
    grid = SIZE // 16

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], grid, grid, t.shape[-1]).permute(0, 3, 1, 2)

    return GradCAM(model=tests.SoftmaxHead(model, text, "patch_mean"),
                   target_layers=[model.visual.transformer.resblocks[-1].ln_1],
                   reshape_transform=reshape)


@pytest.mark.parametrize("layers", [2, 12])
def test_clip_cam_against_pytorch_grad_cam(benchmark: Any, tiny224: dict, report: Any,
                                           layers: int) -> None:
    """Both sides in one run, interleaved round by round (the machine's load hits both):
    from uint8 images to 224x224 maps. 2 blocks: the tests' model; 12: ViT-B/16's depth."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    tests = tiny224["tests"]
    checkpoint = _model(tests, tiny224["folder"], layers)
    batch = tiny224["batch"]
    cam = _stage("clip", model="tiny-test", checkpoint=str(checkpoint), caa=False)
    cam.compute(batch[:1])  # load the model and the text embeddings first
    clip = cam.clip()
    text = clip.text_features(cam.params.smoke, cam.params.background, cam.params.template)
    gradcam = _gradcam(tests, checkpoint, text)
    targets = [ClassifierOutputTarget(0)] * BATCH

    def theirs() -> np.ndarray:
        x = clip.preprocess(np.stack(batch), (SIZE, SIZE))
        return gradcam(input_tensor=x, targets=targets)

    np.testing.assert_allclose(np.stack(cam.compute(batch)), theirs(), atol=1e-5)  # same maps
    caa = _stage("clip", model="tiny-test", checkpoint=str(checkpoint), caa=True)
    caa.compute(batch[:1])
    times: dict[str, list[tuple[float, float]]] = {"clip": [], "gradcam": [], "caa": []}

    def timed(key: str, fn: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times[key].append((time.perf_counter() - wall, time.process_time() - cpu))

    def one_round() -> None:
        timed("clip", lambda: cam.compute(batch))
        timed("gradcam", theirs)
        timed("caa", lambda: caa.compute(batch))

    benchmark.group = f"clip, GradCAM and clip[caa=true] in turn: {BATCH} images at {SIZE} px"
    benchmark.pedantic(one_round, rounds=8, warmup_rounds=1)
    gradcam.activations_and_grads.release()
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    (ours, ours_cpu), (peer, peer_cpu) = best["clip"], best["gradcam"]
    report(f"CLIP-ES CAM, {BATCH} images at {SIZE} px, tiny model with {layers} blocks, "
           f"{torch.get_num_threads()} CPU threads (best of 8, interleaved): clip "
           f"{1e3 * ours:.0f} ms, pytorch-grad-cam GradCAM {1e3 * peer:.0f} ms: "
           f"{peer / ours:.1f}x faster ({peer_cpu / ours_cpu:.1f}x in CPU time), same maps "
           f"(1e-5); clip[caa=true] {1e3 * best['caa'][0]:.0f} ms")


def _verify_labels() -> np.ndarray:
    """A 512x512 label map with 16 square components (4x4 layout)."""
    labels = np.zeros((512, 512), np.uint8)
    rng = np.random.default_rng(0)
    for i in range(N_COMPONENTS):
        y, x = 128 * (i // 4) + 16, 128 * (i % 4) + 16
        side = int(rng.integers(24, 96))
        labels[y:y + side, x:x + side] = 1
    return labels


def _verify_cost(verify: Any, image: np.ndarray, frames: int = 3) -> float:
    from bench.sample import Sample

    labels = _verify_labels()
    verify.refine(Sample("warm", image), labels)  # load the model and the text embeddings
    start = time.perf_counter()
    for n in range(frames):
        out = verify.refine(Sample(f"f{n}", image), labels)
    per_component = (time.perf_counter() - start) / (frames * N_COMPONENTS)
    assert len(verify.records["f0"]) == N_COMPONENTS and out.max() > 0
    return per_component


def test_clip_verify_per_component(benchmark: Any, tiny224: dict, tmp_path: Path,
                                   report: Any) -> None:
    from open_clip import factory

    factory._MODEL_CONFIGS["tiny-test"] = tiny224["tests"].tiny_config(SIZE)  # 2 blocks
    verify = _stage("clip_verify", model="tiny-test", checkpoint=str(tiny224["checkpoint"]))
    verify.ctx.workdir = tmp_path
    costs: list[float] = []
    benchmark.group = "clip_verify per component"
    benchmark.pedantic(lambda: costs.append(_verify_cost(verify, tiny224["frame"])), rounds=3,
                       warmup_rounds=0)
    report(f"clip_verify, {N_COMPONENTS} components of a 512x512 frame, tiny model at {SIZE} "
           f"px, {torch.get_num_threads()} CPU threads: {1e3 * min(costs):.1f} ms per "
           "component (crop, resize, one batched encoder call)")


def test_vit_b_16(benchmark: Any, tiny224: dict, tmp_path: Path, report: Any) -> None:
    path = os.environ.get("CLIP_CHECKPOINT", "")
    if not path:
        pytest.skip("set CLIP_CHECKPOINT=/path/to/ViT-B-16.pt to time OpenAI's ViT-B/16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = tiny224["batch"]
    cam = _stage("clip", checkpoint=path)
    cam.ctx.device = device
    cam.compute(batch[:1])
    verify = _stage("clip_verify", checkpoint=path)
    verify.ctx.device, verify.ctx.workdir = device, tmp_path
    times: list[float] = []

    def run() -> None:
        start = time.perf_counter()
        cam.compute(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)

    benchmark.group = "ViT-B/16"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    cost = _verify_cost(verify, tiny224["frame"])
    report(f"ViT-B/16 on {device}: clip (caa=true) {BATCH / min(times):.1f} images/s at "
           f"{SIZE} px; clip_verify {1e3 * cost:.1f} ms per component")
