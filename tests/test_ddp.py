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
