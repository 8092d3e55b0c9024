"""bench.crf.dense_crf against pydensecrf2, its effect on a blurred CAM, and the crf refiner.

pydensecrf2 is part of the test extra: without it the comparisons fail (with the pip hint of
``backend="pydensecrf2"``), they do not skip.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from bench.crf import bilateral_filter, dense_crf
from bench.errors import ConfigError
from bench.sample import Sample


def smoke_scene(seed: int, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smoke-like test image (sky gradient, ground, chimney, grey plume, noise) and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    sky = np.stack([110 + 60 * yy / h, 150 + 50 * yy / h, np.full_like(yy, 210)], -1)
    ground = yy > h * rng.uniform(0.65, 0.8)
    img = np.where(ground[..., None], np.array([70, 80, 60], np.float32), sky)
    cx, cw = int(w * rng.uniform(0.25, 0.45)), max(2, w // 16)
    top = int(h * rng.uniform(0.35, 0.5))
    img[top:, cx:cx + cw] = (90, 60, 50)
    plume = np.zeros((h, w), np.float32)
    x, y, r = cx + cw / 2, float(top), w / 14
    for _ in range(8):  # discs drifting right and up, growing
        plume = np.maximum(plume, ((xx - x) ** 2 + (yy - y) ** 2 < r * r).astype(np.float32))
        x += rng.uniform(0.5, 1.2) * r
        y -= rng.uniform(0.1, 0.6) * r
        r *= 1.15
    plume = ndi.gaussian_filter(plume, 0.6)
    alpha = 0.85 * plume[..., None]
    img = (1 - alpha) * img + alpha * np.array([185, 180, 175], np.float32)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, plume > 0.5


def blurred_cam(mask: np.ndarray, seed: int) -> np.ndarray:
    """A CAM-like map: the mask blurred well past its edges, plus a little noise."""
    rng = np.random.default_rng(seed + 1000)
    cam = ndi.gaussian_filter(mask.astype(np.float32), mask.shape[1] / 12)
    cam /= max(float(cam.max()), 1e-6)
    return np.clip(0.9 * cam + 0.05 + rng.normal(0, 0.03, cam.shape), 0, 1).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@functools.cache
def load_refiner() -> type:
    """The DenseCRF class of methods/crf.py, imported by path with registration stubbed out.

    The test uses the class directly, so it neither depends on nor disturbs the registry.
    """
    import bench

    path = Path(__file__).resolve().parents[1] / "methods" / "crf.py"
    spec = importlib.util.spec_from_file_location("_test_methods_crf", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up
    saved = bench.__dict__.get("register_method")
    bench.register_method = lambda name, **defaults: (lambda cls: cls)  # type: ignore[attr-defined]
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del bench.register_method  # type: ignore[attr-defined]
        else:
            bench.register_method = saved  # type: ignore[attr-defined]
    return module.DenseCRF


@pytest.mark.parametrize("size", [48, 96])
def test_agrees_with_pydensecrf2(size: int) -> None:
    for seed in range(3):
        image, mask = smoke_scene(seed, size, size)
        cam = blurred_cam(mask, seed)
        probs = np.stack([1 - cam, cam])
        ours = dense_crf(image, probs)
        ref = dense_crf(image, probs, backend="pydensecrf2")
        assert ours.shape == (2, size, size) and ours.dtype == np.float32
        np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-5)
        agree = (ours.argmax(0) == ref.argmax(0)).mean()
        assert agree >= 0.99, (seed, agree)


def test_agrees_with_pydensecrf2_three_labels_and_other_settings() -> None:
    image, mask = smoke_scene(7, 64, 64)
    cam = blurred_cam(mask, 7)
    probs = np.stack([0.6 * (1 - cam), cam, 0.4 * (1 - cam)])
    kwargs = {"iterations": 5, "gauss_sxy": 2.0, "gauss_weight": 2.0, "bilateral_sxy": 30.0,
              "bilateral_srgb": 20.0, "bilateral_weight": 5.0}
    ours = dense_crf(image, probs, **kwargs)
    ref = dense_crf(image, probs, backend="pydensecrf2", **kwargs)
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.99


def test_moves_a_blurred_cam_boundary_to_the_image_edge() -> None:
    for seed in range(3):
        image, mask = smoke_scene(seed, 96, 96)
        cam = blurred_cam(mask, seed)
        q = dense_crf(image, np.stack([1 - cam, cam]))
        before, after = iou(cam > 0.5, mask), iou(q[1] > 0.5, mask)
        assert after > before + 0.05, (seed, before, after)
        assert after > 0.9, (seed, after)


def test_zero_iterations_and_zero_weights_return_the_input_distribution() -> None:
    image, mask = smoke_scene(1, 32, 32)
    cam = blurred_cam(mask, 1)
    probs = np.stack([1 - cam, cam])
    expected = np.clip(probs, 1e-5, 1) / np.clip(probs, 1e-5, 1).sum(0)
    np.testing.assert_allclose(dense_crf(image, probs, iterations=0), expected, atol=1e-5)
    np.testing.assert_allclose(dense_crf(image, probs, gauss_weight=0, bilateral_weight=0),
                               expected, atol=1e-5)


def test_threads_do_not_change_results() -> None:
    image, mask = smoke_scene(2, 200, 200)
    probs = np.stack([1 - blurred_cam(mask, 2), blurred_cam(mask, 2)])
    np.testing.assert_array_equal(dense_crf(image, probs, num_threads=1),
                                  dense_crf(image, probs, num_threads=2))


@pytest.mark.parametrize("labels", [2, 3])
def test_threads_and_the_kept_gaussian_kernel_do_not_change_results(labels: int) -> None:
    """Records must be reproducible: bit-identical on 1 and 2 threads, cold or warm cache.

    The Gaussian kernel's lattice is kept across calls (per grid size, sxy and weight) and its
    vertex numbering depends on the threads it was built with; the results must not.
    """
    from bench import _bilateral

    image, mask = smoke_scene(3, 300, 280)  # several splat blocks and construction chunks
    cam = blurred_cam(mask, 3)
    probs = np.stack([1 - cam, cam, 0.5 * cam][:labels]) / (1 + 0.5 * cam * (labels == 3))
    runs = []
    for build_threads in (1, 2):
        _bilateral.clear_cache()
        runs.append(dense_crf(image, probs, num_threads=build_threads))  # builds, keeps
        assert _bilateral.cache_size() == 1
        runs += [dense_crf(image, probs, num_threads=t) for t in (1, 2)]  # reuse it
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])


def test_concurrent_calls_share_the_kept_kernel() -> None:
    """Python threads (the GIL released) building and reusing one kept kernel: same results."""
    from concurrent.futures import ThreadPoolExecutor

    from bench import _bilateral

    scenes = [smoke_scene(seed, 96, 80) for seed in range(6)]
    probs = [np.stack([1 - blurred_cam(m, s), blurred_cam(m, s)]) for s, (_, m) in
             enumerate(scenes)]
    expected = [dense_crf(image, p, num_threads=1) for (image, _), p in zip(scenes, probs,
                                                                          strict=True)]
    _bilateral.clear_cache()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda ip: dense_crf(ip[0][0], ip[1], num_threads=2),
                            zip(scenes, probs, strict=True)))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _bilateral.cache_size() == 1


_BASELINE_BUILD_SCRIPT = """
import sys
import numpy as np
from bench.crf import bilateral_filter, dense_crf
data = np.load(sys.argv[1])
image, probs, three = data["image"], data["probs"], data["three"]
np.savez(sys.argv[2], two=dense_crf(image, probs, num_threads=2),
         three=dense_crf(image, three, iterations=3, num_threads=1),
         filtered=bilateral_filter(image, probs, 20.0, 10.0))
"""


def test_baseline_and_avx2_builds_agree_exactly(tmp_path: Path) -> None:
    """BENCH_NO_AVX2=1 forces the baseline x86-64 build of the vectorised loops: same bits."""
    import subprocess

    image, mask = smoke_scene(5, 120, 90)
    cam = blurred_cam(mask, 5)
    probs = np.stack([1 - cam, cam])
    three = np.stack([0.6 * (1 - cam), cam, 0.4 * (1 - cam)])
    np.savez(tmp_path / "in.npz", image=image, probs=probs, three=three)
    env = {**os.environ, "BENCH_NO_AVX2": "1"}
    subprocess.run([sys.executable, "-c", _BASELINE_BUILD_SCRIPT, str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True, env=env)
    baseline = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(baseline["two"], dense_crf(image, probs, num_threads=2))
    np.testing.assert_array_equal(baseline["three"],
                                  dense_crf(image, three, iterations=3, num_threads=1))
    np.testing.assert_array_equal(baseline["filtered"],
                                  bilateral_filter(image, probs, 20.0, 10.0))


def test_kept_gaussian_kernels_and_recycled_buffers_are_bounded() -> None:
    from bench import _bilateral

    image, mask = smoke_scene(4, 40, 40)
    probs = np.stack([1 - blurred_cam(mask, 4), blurred_cam(mask, 4)])
    _bilateral.clear_cache()
    for sxy in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        dense_crf(image, probs, gauss_sxy=sxy, iterations=1)
    assert _bilateral.cache_size() == 4  # the four most recent
    dense_crf(image, probs, gauss_weight=0)  # no Gaussian kernel: nothing kept
    dense_crf(image, probs, iterations=0)
    assert _bilateral.cache_size() == 4
    big, big_mask = smoke_scene(4, 200, 200)  # arrays over 64 KiB: recycled, bounded
    dense_crf(big, np.stack([1 - blurred_cam(big_mask, 4), blurred_cam(big_mask, 4)]))
    assert 0 < _bilateral.pool_bytes() <= 64 << 20
    _bilateral.clear_cache()
    assert _bilateral.cache_size() == 0 and _bilateral.pool_bytes() == 0


def numpy_mean_field(image: np.ndarray, probs: np.ndarray, iterations: int = 10,
                     gauss_sxy: float = 3.0, gauss_weight: float = 3.0,
                     bilateral_sxy: float = 80.0, bilateral_srgb: float = 13.0,
                     bilateral_weight: float = 10.0) -> np.ndarray:
    """The mean-field loop written plainly in NumPy over the compiled lattice filter.

    The compiled `dense_crf` runs each iteration as one fused pass (slice both kernels, update,
    splat both), filters K-1 channels against a precomputed total and uses its own exp; this is
    the textbook loop (every channel, NumPy's exp) it must agree with.
    """
    from bench import _bilateral

    k, h, w = probs.shape
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).astype(np.float32).reshape(k, -1)
    kernels = []
    if gauss_weight:
        kernels.append((_bilateral.Lattice.from_grid(h, w, gauss_sxy), gauss_weight))
    if bilateral_weight:
        kernels.append((_bilateral.Lattice.from_image(image, bilateral_sxy, bilateral_srgb),
                        bilateral_weight))
    ones = np.ones((1, h * w), np.float32)
    norms = [1 / np.sqrt(lattice.filter(ones)[0] + 1e-20) for lattice, _ in kernels]

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(0))
        return e / e.sum(0)

    q = softmax(-unary)
    for _ in range(iterations):
        msg = np.zeros_like(q)
        for (lattice, weight), norm in zip(kernels, norms, strict=True):
            msg += weight * norm * lattice.filter(np.ascontiguousarray(q * norm, np.float32))
        q = softmax(-unary + msg)
    return q.reshape(k, h, w)


@pytest.mark.parametrize("size", [(64, 64), (100, 77), (200, 160)])
def test_equals_a_plain_mean_field_loop(size: tuple[int, int]) -> None:
    """The fused passes compute the textbook iteration: measured within 5e-7, asserted 1e-5."""
    image, mask = smoke_scene(size[0], *size)
    cam = blurred_cam(mask, size[0])
    probs = np.stack([1 - cam, cam])
    np.testing.assert_allclose(dense_crf(image, probs), numpy_mean_field(image, probs),
                               rtol=0, atol=1e-5)
    three = np.stack([0.6 * (1 - cam), cam, 0.4 * (1 - cam)])
    kwargs = {"iterations": 5, "gauss_sxy": 2.0, "gauss_weight": 2.0, "bilateral_sxy": 30.0,
              "bilateral_srgb": 20.0, "bilateral_weight": 5.0}
    np.testing.assert_allclose(dense_crf(image, three, **kwargs),
                               numpy_mean_field(image, three, **kwargs), rtol=0, atol=1e-5)
    for weights in ({"gauss_weight": 0.0}, {"bilateral_weight": 0.0}):
        np.testing.assert_allclose(dense_crf(image, probs, iterations=4, **weights),
                                   numpy_mean_field(image, probs, iterations=4, **weights),
                                   rtol=0, atol=1e-5)


GOOD_IMAGE = np.zeros((8, 9, 3), np.uint8)
GOOD_PROBS = np.full((2, 8, 9), 0.5, np.float32)


@pytest.mark.parametrize(("image", "probs", "kwargs", "match"), [
    (GOOD_IMAGE.astype(np.float64), GOOD_PROBS, {}, "image must be a uint8"),
    (np.zeros((8, 9, 1), np.uint8), GOOD_PROBS, {}, "3 colour channels"),
    (np.zeros((8, 9), np.uint8), GOOD_PROBS, {}, "3 colour channels"),
    (GOOD_IMAGE, GOOD_PROBS.astype(np.int64), {}, "probs must be float32 or float64"),
    (GOOD_IMAGE, np.full((2, 9, 8), 0.5, np.float32), {}, r"probs must have shape \(K, H, W\)"),
    (GOOD_IMAGE, GOOD_PROBS[0], {}, r"probs must have shape \(K, H, W\)"),
    (GOOD_IMAGE, GOOD_PROBS[:1], {}, "at least 2 labels"),
    (GOOD_IMAGE, GOOD_PROBS * 3, {}, r"probabilities in \[0, 1\]"),
    (GOOD_IMAGE, GOOD_PROBS * np.nan, {}, r"probabilities in \[0, 1\]"),
    (GOOD_IMAGE, GOOD_PROBS, {"iterations": -1}, "iterations"),
    (GOOD_IMAGE, GOOD_PROBS, {"iterations": 2.5}, "iterations"),
    (GOOD_IMAGE, GOOD_PROBS, {"gauss_sxy": 0}, "gauss_sxy must be > 0"),
    (GOOD_IMAGE, GOOD_PROBS, {"bilateral_srgb": -1}, "bilateral_srgb must be > 0"),
    (GOOD_IMAGE, GOOD_PROBS, {"bilateral_weight": float("inf")}, "bilateral_weight"),
    (GOOD_IMAGE, GOOD_PROBS, {"clip": 0}, "clip"),
    (GOOD_IMAGE, GOOD_PROBS, {"backend": "opencv"}, "backend must be one of"),
    (GOOD_IMAGE, GOOD_PROBS, {"num_threads": -2}, "num_threads"),
])
def test_bad_inputs_raise_value_error(image: np.ndarray, probs: np.ndarray, kwargs: dict,
                                      match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dense_crf(image, probs, **kwargs)


def test_missing_pydensecrf2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match=r"pip install 'smoke-wsss-bench\[crf\]'"):
        dense_crf(GOOD_IMAGE, GOOD_PROBS, backend="pydensecrf2")
    refiner = load_refiner()(load_refiner().Params(backend="pydensecrf2"))
    with pytest.raises(ConfigError, match=r"pip install 'smoke-wsss-bench\[crf\]'"):
        refiner.refine(Sample("x", GOOD_IMAGE), GOOD_PROBS[1])


# --- the crf refiner (methods/crf.py), used directly -------------------------------------------

def test_refiner_returns_a_sharper_soft_map() -> None:
    cls = load_refiner()
    assert cls.output == "soft" and cls.demo == "effnet+crf"
    refiner = cls()
    assert refiner.params.iterations == 10 and refiner.params.backend == "bench"
    image, mask = smoke_scene(3, 80, 80)
    cam = blurred_cam(mask, 3)
    out = refiner.refine(Sample("s", image, 1, mask.astype(np.uint8)), cam)
    assert out.shape == cam.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert iou(out > 0.5, mask) > iou(cam > 0.5, mask) + 0.05


def test_refiner_handles_saturated_cams() -> None:
    refiner = load_refiner()()
    image, _ = smoke_scene(4, 32, 32)
    for cam in (np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)):
        out = refiner.refine(Sample("s", image), cam)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert abs(float(out.mean()) - float(cam.mean())) < 1e-3  # no evidence to move


def test_refiner_backends_agree() -> None:
    cls = load_refiner()
    image, mask = smoke_scene(5, 64, 64)
    cam = blurred_cam(mask, 5)
    sample = Sample("s", image)
    ours = cls().refine(sample, cam)
    ref = cls(cls.Params(backend="pydensecrf2")).refine(sample, cam)
    assert ((ours > 0.5) == (ref > 0.5)).mean() >= 0.99


@pytest.mark.parametrize(("field", "value"), [
    ("iterations", -1), ("gauss_sxy", 0.0), ("bilateral_srgb", -3.0), ("clip", 0.5),
    ("backend", "cuda"),
])
def test_refiner_params_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        load_refiner().Params(**{field: value})


def test_calibrate_maps_the_center_to_one_half_and_keeps_order() -> None:
    calibrate = load_refiner().refine.__globals__["calibrate"]  # methods/ is not a package
    x = np.linspace(0, 1, 101, dtype=np.float32)
    for center in (0.04, 0.3, 0.8):
        y = calibrate(x, center)
        np.testing.assert_allclose(calibrate(np.float32([center]), center), [0.5], atol=1e-6)
        assert y[0] == 0 and y[-1] == 1 and (np.diff(y) > 0).all()
    np.testing.assert_array_equal(calibrate(x, 0.5), x)
    assert np.isfinite(calibrate(x, 1.0)).all() and np.isfinite(calibrate(x, 0.0)).all()


def test_refiner_reads_a_low_scale_cam_at_its_calibrated_threshold() -> None:
    """A CAM whose best threshold is 0.05 reads as 'background' to a CRF taking it as a
    probability; centred on that threshold it gives the same result as the unscaled CAM."""
    cls = load_refiner()
    image, mask = smoke_scene(3, 80, 80)
    cam = blurred_cam(mask, 3)
    low = 0.1 * cam  # 0.05 in the low CAM is 0.5 in the original
    sample = Sample("s", image, 1, mask.astype(np.uint8))
    raw = cls().refine(sample, low)
    assert (raw > 0.5).sum() == 0  # the failure: everything background
    refiner = cls()
    refiner.input_threshold = 0.05
    centred = refiner.refine(sample, low)
    assert iou(centred > 0.5, mask) > iou(cam > 0.5, mask)
    fixed = cls(cls.Params(center=0.05)).refine(sample, low)
    np.testing.assert_array_equal(fixed, centred)
