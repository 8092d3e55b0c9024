"""Classifier CAMs at the precision users run (issue 18.4): ``autocast`` and ``channels_last``.

Tiny random timm models (resnet18, vit_tiny_patch16_224, built by timm's own classes through
`ClassifierCam.build`), images of a bright square on dark noise, a head with N(0, 1) weights
(so that CAMs have structure rather than the near-zero init's almost flat maps). What is
checked against float32 (``autocast=off``, the same weights):

- float16: every pixel within 1e-2. On CUDA (skipped without a GPU) and, as a stand-in for the
  numerics where the CPU has no float16 kernels, through torch's CPU autocast with the
  capability check patched out (same format, other kernels).
- bfloat16 on the CPU (where torch's oneDNN has kernels; skipped elsewhere): the mean within
  1e-2 and every pixel within 5e-2. bfloat16 keeps 8 significant bits and an 18-layer
  network's features carry about 0.5-1% relative error; after min-max normalisation single
  pixels of these maps differ from float32 by 0.010-0.015 (measured here, 3 seeds), beyond the
  1e-2 that float16 meets; ``bench/nn/classifier_cam.py`` documents it.

``auto`` (the default) reproduces the maps of before the parameters existed bit for bit on the
CPU (float32, the same code path as ``off``), and the parameters are inference-only: part of a
stage's cache key, not of its trained state's. Nothing here times anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bench.nn.classifier_cam as classifier_cam
from bench.cache import stage_key
from bench.errors import ConfigError
from bench.nn.classifier_cam import ClassifierCam, autocast_dtype, device_lacks
from bench.params import build_params
from bench.pipeline import stage_configs
from bench.plugins import discover
from bench.spec import parse_pipeline
from bench.stages import RunContext

BACKBONES = ("resnet18", "vit_tiny_patch16_224")
NO_CUDA = "no CUDA device on this machine (the float16/bfloat16 CUDA paths need one)"
CPU_BF16 = not device_lacks(torch.bfloat16, torch.device("cpu"))
CPU_FP16 = not device_lacks(torch.float16, torch.device("cpu"))


def squares(n: int = 3, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Bright squares on dark noise: maps with structure, not flat ones."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(seed * 10 + i)
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8) // 3
        y, x = rng.integers(0, size // 2, 2)
        image[y:y + size // 3, x:x + size // 3] = 230
        out.append(image)
    return out


def make(tmp_path: Path, backbone: str, device: str = "cpu", seed: int = 0,
         **params: object) -> ClassifierCam:
    base: dict[str, object] = {"backbone": backbone, "weights": "none", "input_size": 64,
                               "cam_scale": 1.0}
    base.update(params)
    return ClassifierCam(ClassifierCam.Params(**base),  # type: ignore[arg-type]
                         RunContext(device=device, seed=seed, workdir=tmp_path, progress=False))


def pair(tmp_path: Path, backbone: str, device: str = "cpu", seed: int = 0,
         **params: object) -> tuple[ClassifierCam, ClassifierCam]:
    """(float32 reference, variant) with the same random weights and an N(0, 1) head."""
    ref = make(tmp_path, backbone, device, seed, autocast="off")
    ref.build()
    with torch.no_grad():
        head = ref.require_net().model.get_classifier()
        head.weight.copy_(torch.randn(head.weight.shape,
                                      generator=torch.Generator().manual_seed(seed)))
    other = make(tmp_path, backbone, device, seed, **params)
    other.build(weights=False)
    other.require_net().load_state_dict(ref.require_net().state_dict())
    return ref, other


def differences(ref: ClassifierCam, other: ClassifierCam, seed: int = 0) -> np.ndarray:
    batch = squares(seed=seed)
    a, b = np.stack(ref.compute(batch)), np.stack(other.compute(batch))
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (3, 128, 128)
    assert all(np.ptp(m) > 0.5 for m in a)  # maps with structure: the comparison means something
    return np.abs(a - b)


# --------------------------------------------------------------------------- defaults
def test_defaults_keep_todays_maps_and_are_inference_only(tmp_path: Path) -> None:
    p = ClassifierCam.Params()
    assert (p.autocast, p.channels_last) == ("auto", "auto")
    assert {"autocast", "channels_last"} <= set(ClassifierCam.inference_params)
    ref, auto = pair(tmp_path, "resnet18", autocast="auto")
    assert autocast_dtype("auto", torch.device("cpu")) is None  # float32 on the CPU
    batch = squares()
    for a, b in zip(ref.compute(batch), auto.compute(batch), strict=True):
        assert np.array_equal(a, b)  # the same float32 path: bit for bit
    assert auto.require_net().memory_format is None  # auto: the format as built


def test_options_enter_the_stage_key_not_the_trained_state() -> None:
    """A bfloat16 map is never served from a float32 cache; one training serves both."""
    discover()

    def keys(text: str) -> tuple[str, str]:
        (config,) = stage_configs(parse_pipeline(text), "quick")
        return stage_key({"stage": config.as_dict()}, ClassifierCam.inference_params)

    default, model = keys("resnet50")
    for variant in ("resnet50[autocast=bfloat16]", "resnet50[autocast=off]",
                    "resnet50[channels_last=false]", "resnet50[channels_last=true]"):
        key, model_key = keys(variant)
        assert key != default and model_key == model


def test_spec_values_and_errors() -> None:
    where = "'resnet50[...]'"
    p = build_params(ClassifierCam.Params, {"autocast": "bfloat16", "channels_last": "false",
                                            "weights": "none"}, where)
    assert p.autocast == "bfloat16" and p.channels_last is False
    assert build_params(ClassifierCam.Params, {"channels_last": "on", "weights": "none"},
                        where).channels_last is True
    with pytest.raises(ConfigError, match=r"autocast.*'bf16'.*one of 'auto', 'off', "
                                          r"'bfloat16', 'float16'"):
        build_params(ClassifierCam.Params, {"autocast": "bf16", "weights": "none"}, where)
    with pytest.raises(ValueError, match="autocast must be one of"):
        ClassifierCam.Params(weights="none", autocast="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels_last must be auto, true or false"):
        ClassifierCam.Params(weights="none", channels_last="yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors
def test_cpu_without_bfloat16_is_a_one_line_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent float32 fallback: the build (before any training) names what is missing."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    cam = make(tmp_path, "resnet18", autocast="bfloat16")
    with pytest.raises(ConfigError) as info:
        cam.build()
    text = str(info.value)
    assert "\n" not in text and cam.net is None
    assert "autocast=bfloat16: this CPU has no bfloat16 support" in text
    assert "use autocast=off" in text
    make(tmp_path, "resnet18", autocast="off").build()  # float32 needs nothing


@pytest.mark.skipif(CPU_FP16, reason="this CPU has float16 kernels in torch's oneDNN")
def test_cpu_float16_without_kernels_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ClassifierCam: autocast=float16: this CPU has no "
                                          r"float16 support .*use autocast=bfloat16 or off"):
        make(tmp_path, "resnet18", autocast="float16").build()


def test_unsupported_device_types_are_errors() -> None:
    assert "not supported" in device_lacks(torch.bfloat16, torch.device("meta"))
    with pytest.raises(ConfigError, match="autocast must be one of"):
        autocast_dtype("fp8", torch.device("cpu"))


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_formats_agree_in_float32(tmp_path: Path, backbone: str,
                                         channels_last: bool) -> None:
    ref, other = pair(tmp_path, backbone, channels_last=channels_last)
    assert float(differences(ref, other).max()) <= 1e-5
    net = other.require_net()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert net.memory_format == fmt
    conv = next(m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=fmt)
    x = torch.rand(1, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert net.normalize(x).is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_float16_agrees_to_1e_2(tmp_path: Path, backbone: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """float16 numerics on the CPU (torch's autocast; the capability check patched out where
    the CPU has no float16 kernels: slower kernels, the same format as CUDA's)."""
    monkeypatch.setattr(classifier_cam, "device_lacks", lambda dtype, device: "")
    for seed in range(2):
        ref, half = pair(tmp_path, backbone, seed=seed, autocast="float16")
        assert half.cam_dtype() == torch.float16
        assert float(differences(ref, half, seed).max()) <= 1e-2


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no bfloat16 kernels in torch's oneDNN")
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("channels_last", ["auto", True])
def test_cpu_bfloat16_agrees(tmp_path: Path, backbone: str, channels_last: object) -> None:
    for seed in range(2):
        ref, bf16 = pair(tmp_path, backbone, seed=seed, autocast="bfloat16",
                         channels_last=channels_last, autocast_tol=5e-2)
        assert bf16.cam_dtype() == torch.bfloat16
        diff = differences(ref, bf16, seed)
        assert float(diff.mean()) <= 1e-2 and float(diff.max()) <= 5e-2
        # the plugin's own check measured the same batch against its own float32 maps
        assert bf16.autocast_agreement is not None
        assert bf16.autocast_agreement[0] == pytest.approx(float(diff.max()), abs=1e-5)
        assert bf16.autocast_agreement[1] == pytest.approx(float(diff.mean()), abs=1e-6)


@pytest.mark.skipif(not CPU_BF16, reason="this CPU has no bfloat16 kernels in torch's oneDNN")
def test_disagreement_beyond_autocast_tol_stops_the_run(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """bfloat16 maps are never bit-identical to float32 ones on a structured map: a tolerance
    of 1e-6 must refuse them with one line naming the measured difference; 0 skips the check;
    the check runs on the first batch only."""
    _, strict = pair(tmp_path, "resnet18", autocast="bfloat16", autocast_tol=1e-6)
    with pytest.raises(ConfigError) as info:
        strict.compute(squares())
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("ClassifierCam: autocast=bfloat16 CAMs differ from float32 by up to ")
    assert "first batch of 3 image(s), beyond autocast_tol=1e-06: use autocast=off" in text
    measured = strict.autocast_agreement
    assert measured is not None and measured[0] > 1e-6
    assert f"up to {measured[0]:.3g} " in text

    _, unchecked = pair(tmp_path, "resnet18", autocast="bfloat16", autocast_tol=0)
    unchecked.compute(squares())
    assert unchecked.autocast_agreement is None

    _, loose = pair(tmp_path, "resnet18", autocast="bfloat16", autocast_tol=1.0)
    loose.compute(squares())
    assert loose.autocast_agreement is not None
    monkeypatch.setattr(ClassifierCam, "_check_agreement",
                        lambda *a: pytest.fail("checked twice"))
    loose.compute(squares(seed=1))  # later batches: no second float32 pass

    off = make(tmp_path, "resnet18", autocast="off", autocast_tol=1e-9)
    off.build()
    off.compute(squares())
    assert off.autocast_agreement is None  # float32 itself: nothing to compare
    with pytest.raises(ValueError, match="autocast_tol must be >= 0"):
        ClassifierCam.Params(weights="none", autocast_tol=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("setting", ["float16", "bfloat16", "auto"])
def test_cuda_autocast_agrees(tmp_path: Path, backbone: str, setting: str) -> None:
    """On CUDA: float16 (explicit, or ``auto`` with ``amp``) within 1e-2 of float32;
    bfloat16 where the GPU has it, with the CPU test's bounds."""
    if setting == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    ref, low = pair(tmp_path, backbone, device="cuda", autocast=setting, autocast_tol=5e-2)
    assert low.cam_dtype() == (torch.bfloat16 if setting == "bfloat16" else torch.float16)
    diff = differences(ref, low)
    if setting == "bfloat16":
        assert float(diff.mean()) <= 1e-2 and float(diff.max()) <= 5e-2
    else:
        assert float(diff.max()) <= 1e-2
