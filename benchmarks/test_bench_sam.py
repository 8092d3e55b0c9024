"""SAM pseudo labels: the vectorised merge against SEPL's per-mask loop, and SAM's frames/s.

- **Merge.** 100 SAM-like masks (ellipses of many sizes, some overlapping P) on a 512x512
  smoke scene, P its thresholded CAM. Ours (`bench.mask_merge.merge_labels`) works on the
  packed bits the mask cache stores: one ``&`` + popcount over all masks, one ``|``-reduction.
  The peer is the per-mask Python loop of SEPL's ``merge/max_iou*.py`` (github.com/cskyl/
  SAM_WSSS), with its PNG reads replaced by dense boolean masks in memory (no I/O on either
  side). Outputs must be identical; the summary gives the speed ratio per strategy.
- **SAM.** Frames/s of the automatic mask generator and of prompt mode (image embedding plus
  one batched decoder call) on a tiny random SAM (`ImageEncoderViT` at 64 px, one block;
  the ``sam`` refiner's tests build the same) with the refiner's default generator settings,
  on 512x512 frames; and of vit_b when ``SAM_CHECKPOINT`` names its checkpoint file.

Nothing asserts a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.mask_merge import merge_labels
from bench.mask_set import MaskSet

ROUNDS = 5
N_MASKS = 100
STRATEGIES = ("max_iou", "max_iou_imp", "max_iou_imp2")


def _best(benchmark: Any) -> float:
    return float(benchmark.stats.stats.min)


def sam_like_masks(seed: int, h: int, w: int, n: int, smoke: np.ndarray) -> np.ndarray:
    """``n`` ellipse masks of many sizes; a third of them centred inside ``smoke``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ys, xs = np.nonzero(smoke)
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        if i % 3 == 0 and len(ys):
            j = rng.integers(len(ys))
            cy, cx = float(ys[j]), float(xs[j])
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(4, h / 4), rng.uniform(4, w / 4)
        out[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return out


# --------------------------------------------------------------------------- SEPL's loop
def sepl_merge(strategy: str, masks: list[np.ndarray], predict: np.ndarray) -> np.ndarray:
    """SEPL's ``merge()`` for the smoke class, one mask at a time, as in ``merge/``: the
    improvement ``2 * sum((P == S) * P) - sum(S)``, the coverage ``sum((P == S) * P) /
    sum(P)`` (imp2), the uncovered-P mask (imp, imp2), then ``sum(candidates) > 0``. Pixels
    labelled 255 keep 255 where nothing kept covers them (our ignore rule; SEPL has none)."""
    processed = np.zeros_like(predict)
    pre_cls = predict == 1
    if np.sum(pre_cls) != 0:
        candidates = []
        sam_mask = np.zeros_like(pre_cls)
        for cur in masks:
            sam_mask = np.logical_or(sam_mask, cur)
            improve = 2 * np.sum((pre_cls == cur) * pre_cls) - np.sum(cur)
            keep = improve > 0
            if strategy == "max_iou_imp2":
                keep = keep or np.sum((pre_cls == cur) * pre_cls) / np.sum(pre_cls) >= 0.85
            if keep:
                candidates.append(cur)
        if strategy != "max_iou":
            candidates.append(np.logical_and(sam_mask == 0, pre_cls == 1))
        if candidates:
            processed[np.sum(candidates, axis=0) > 0] = 1
    ignore = (predict == 255) & (processed == 0)
    processed[ignore] = 255
    return processed


@pytest.fixture(scope="module")
def merge_case(scenes512: list) -> dict[str, Any]:
    _, cam = scenes512[0]
    labels = (cam >= 0.5).astype(np.uint8)
    labels[(cam > 0.4) & (cam < 0.5)] = 255  # an ignore band around P
    dense = sam_like_masks(1, 512, 512, N_MASKS, labels == 1)
    return {"labels": labels, "dense": list(dense), "packed": MaskSet.from_dense(dense)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_merge_vectorised(benchmark: Any, merge_case: dict, bench_report: dict, report: Any,
                          strategy: str) -> None:
    benchmark.group = f"merge {strategy}: {N_MASKS} masks 512x512"
    out = benchmark.pedantic(merge_labels, args=(strategy, merge_case["packed"],
                                                 merge_case["labels"]),
                             rounds=ROUNDS * 4, warmup_rounds=1)
    expected = sepl_merge(strategy, merge_case["dense"], merge_case["labels"])
    np.testing.assert_array_equal(out, expected)  # identical output
    assert 0 < (out == 1).sum() < out.size
    bench_report[f"merge_{strategy}_ours"] = _best(benchmark)
    _ratio_line(strategy, bench_report, report)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_merge_sepl_loop(benchmark: Any, merge_case: dict, bench_report: dict, report: Any,
                         strategy: str) -> None:
    benchmark.group = f"merge {strategy}: {N_MASKS} masks 512x512"
    out = benchmark.pedantic(sepl_merge, args=(strategy, merge_case["dense"],
                                               merge_case["labels"]),
                             rounds=ROUNDS, warmup_rounds=0)
    np.testing.assert_array_equal(out, merge_labels(strategy, merge_case["packed"],
                                                    merge_case["labels"]))
    bench_report[f"merge_{strategy}_sepl"] = _best(benchmark)
    _ratio_line(strategy, bench_report, report)


def _ratio_line(strategy: str, results: dict, report: Any) -> None:
    ours, sepl = results.get(f"merge_{strategy}_ours"), results.get(f"merge_{strategy}_sepl")
    if ours and sepl:
        report(f"merge {strategy}, {N_MASKS} masks at 512x512: vectorised {1e3 * ours:.2f} ms, "
               f"SEPL's per-mask loop {1e3 * sepl:.1f} ms: {sepl / ours:.0f}x faster, "
               "identical output")


# --------------------------------------------------------------------------- SAM frames/s
def build_tiny_sam(checkpoint: str | None = None) -> Any:
    """The tests' tiny SAM (`tests/test_sam.py`: 64 px ViT with one block, depth-1 decoder),
    loaded from that file so both suites time and test the same model."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "test_sam.py"
    spec = importlib.util.spec_from_file_location("_tiny_sam_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_sam(checkpoint).eval()


def _refiner(model: str, checkpoint: str, tmp_path: Any, mode: str) -> Any:
    from bench.plugins import METHODS, discover
    from bench.stages import RunContext

    discover()
    cls = METHODS.get("sam").cls
    # the refiner's default generator settings (32 points per side, one crop layer, ...)
    return cls(cls.Params(model=model, checkpoint=checkpoint, mode=mode),
               RunContext(workdir=tmp_path, progress=False, extra={"cache_root": tmp_path}))


def _frames_per_second(sam: Any, scenes: list, tmp_path: Any) -> float:
    from bench.sample import Sample

    start = time.perf_counter()
    for n, (image, cam) in enumerate(scenes):
        sam.input_threshold = 0.5
        sam.refine(Sample(f"f{n}", image), cam)
    elapsed = time.perf_counter() - start
    assert sam.cache.misses == len(scenes) and sam.cache.hits == 0  # every frame computed
    return len(scenes) / elapsed


@pytest.mark.parametrize("mode", ["auto", "prompt"])
def test_tiny_sam_frames_per_second(benchmark: Any, scenes512: list, tmp_path_factory: Any,
                                    bench_report: dict, report: Any, mode: str) -> None:
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(f"tiny-{mode}")
    checkpoint = folder / "tiny.pth"
    torch.save(build_tiny_sam().state_dict(), checkpoint)
    sam_model_registry["tiny"] = build_tiny_sam
    sam = _refiner("tiny", str(checkpoint), folder, mode)
    sam.model()  # loading is not per-frame time
    scenes = scenes512[:2]
    benchmark.group = "SAM frames/s (512x512, CPU)"
    rounds: list[float] = []

    def run() -> None:
        sam.cache = type(sam.cache)(tmp_path_factory.mktemp("cache"))  # always a miss
        rounds.append(_frames_per_second(sam, scenes, folder))

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    threads = torch.get_num_threads()
    report(f"tiny SAM ({mode}, default settings), {len(scenes)} frames of 512x512 on "
           f"{threads} CPU threads: {max(rounds):.2f} frames/s")


def test_vit_b_frames_per_second(benchmark: Any, scenes512: list, tmp_path: Any,
                                 report: Any) -> None:
    path = os.environ.get("SAM_CHECKPOINT", "")
    if not path:
        pytest.skip("set SAM_CHECKPOINT=/path/to/sam_vit_b_01ec64.pth to time vit_b")
    sam = _refiner("vit_b", path, tmp_path, "auto")
    sam.model()
    rounds: list[float] = []
    benchmark.group = "SAM frames/s (512x512)"
    benchmark.pedantic(lambda: rounds.append(_frames_per_second(sam, scenes512[:1], tmp_path)),
                       rounds=1, warmup_rounds=0)
    report(f"vit_b (auto, default settings) on {sam.ctx.torch_device()}: {max(rounds):.3f} "
           "frames/s")
