"""``--gpus N`` on CPU: two gloo processes train the weights one process trains on the same
global batches (to 1e-5), uneven last batch included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.ddp import loss_scale, shard
from bench.nn.classifier_cam import ClassifierCam
from bench.sample import Sample
from bench.stages import RunContext


def test_shards_cover_a_batch_once() -> None:
    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            parts = [range(n)[shard(n, r, world)] for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(3, 1, 2) == slice(2, 3) and loss_scale(1, 3) == pytest.approx(1 / 3)


def samples(n: int, size: int = 32) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.normal(70, 20, (size, size, 3))
        if i % 2 == 0:
            img[8:20, 10:24] = 210
        out.append(Sample(f"s{i}", img.clip(0, 255).astype(np.uint8), int(i % 2 == 0), None))
    return out


def trained(tmp_path: Path, gpus: int) -> tuple[dict[str, torch.Tensor], list[dict]]:
    # a ViT (LayerNorm, no BatchNorm: gloo has no synchronised BatchNorm) on 15 images in
    # batches of 4: the last batch of 3 splits 2 + 1 over two ranks
    params = ClassifierCam.Params(backbone="test_vit", weights="none", input_size=32, epochs=1,
                                  batch_size=4, lr=1e-3, warmup_epochs=0.5, amp=False)
    ctx = RunContext(device="cpu", seed=0, workdir=tmp_path / f"gpus{gpus}", progress=False,
                     extra={"gpus": gpus})
    cam = ClassifierCam(params, ctx)
    cam.fit(samples(15), [])
    return {k: v.detach().clone() for k, v in cam.require_net().state_dict().items()}, \
        cam.history


def test_two_gloo_processes_train_the_weights_of_one(tmp_path: Path,
                                                     capfd: pytest.CaptureFixture) -> None:
    single, history_1 = trained(tmp_path, 1)
    assert "DDP rank" not in capfd.readouterr().err
    ddp, history_2 = trained(tmp_path, 2)
    err = capfd.readouterr().err
    assert "DDP rank 0 of 2 (gloo, cpu)" in err and "DDP rank 1 of 2 (gloo, cpu)" in err
    assert single.keys() == ddp.keys()
    for key, value in ddp.items():
        torch.testing.assert_close(value, single[key], rtol=0, atol=1e-5, msg=key)
    # the weights moved: 4 steps of training, not a no-op
    init = ClassifierCam(ClassifierCam.Params(backbone="test_vit", weights="none",
                                              input_size=32),
                         RunContext(device="cpu", seed=0, workdir=tmp_path, progress=False))
    start = init.build().state_dict()
    assert max(float((start[k] - single[k]).abs().max()) for k in single) > 1e-3
    # the epoch logs sum every rank's shard
    for a, b in zip(history_1, history_2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["train_acc"] == b["train_acc"]


SEGMENTER = '''
"""A BatchNorm-free segmenter for the DDP test (gloo has no synchronised BatchNorm)."""
from dataclasses import dataclass

from torch import nn

from bench import TorchSegmenter, register_method


@register_method("dd_seg")
class DdSeg(TorchSegmenter):
    """Two convolutions."""

    @dataclass
    class Params(TorchSegmenter.Params):
        pass

    def build_model(self, pretrained):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def backbone(self, model):
        return None
'''


def test_the_segmenter_engine_trains_the_same_weights_on_two_ranks(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from bench.plugins import METHODS, discover

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "dd_seg.py").write_text(SEGMENTER)
    discover([str(folder)])
    cls = METHODS.get("dd_seg").cls
    rng = np.random.default_rng(1)
    # crops inside the images at scale 1: every pixel of every crop is labelled, so a rank's
    # mean loss over its half of a batch is half of the batch's
    train = [Sample(f"t{i}", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), 1, None)
             for i in range(8)]
    labels = [(s.image.mean(axis=2) > 127).astype(np.uint8) for s in train]
    weights = []
    for gpus in (1, 2):
        params = cls.Params(epochs=2, batch_size=4, crop_size=16, scale_min=1.0, scale_max=1.0,
                            optimizer="adamw", lr=1e-2, amp=False, tile_size=0)
        ctx = RunContext(device="cpu", seed=0, workdir=tmp_path / f"seg{gpus}", progress=False,
                         extra={"gpus": gpus})
        seg = cls(params, ctx)
        seg.fit(train, labels)
        weights.append({k: v.detach().clone() for k, v in seg.model.state_dict().items()})
        assert not seg.checkpoint_path().exists()
        err = capfd.readouterr().err
        assert ("DDP rank 1 of 2 (gloo, cpu)" in err) == (gpus == 2)
    for key, value in weights[1].items():
        torch.testing.assert_close(value, weights[0][key], rtol=0, atol=1e-5, msg=key)
