"""Cross-architecture consistency: alignment loss values, training in both paradigms, the
ablation grid table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.nn.classifier_cam import ClassifierCam
from bench.plugins import builtin_dir, discover, import_plugin_file
from bench.sample import Sample
from bench.stages import RunContext

discover()  # first, so that the registry entry keeps what the scan read (demo, label)
_method = import_plugin_file(builtin_dir("methods") / "consistency.py")
LEVELS, METRICS = _method.LEVELS, _method.METRICS
ConsistencyCam, alignment_loss, flatten_pair = (_method.ConsistencyCam, _method.alignment_loss,
                                                _method.flatten_pair)

# two positions, two channels: the student's position features are the teacher's, swapped
SWAP_S = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
SWAP_T = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
_P = math.e / (1 + math.e)  # softmax([1, 0])[0]
_Q = 1 - _P
KNOWN = {
    # global: both average to [0.5, 0.5]
    ("cosine", "global"): 0.0, ("l1", "global"): 0.0, ("l2", "global"): 0.0,
    # spatial: [1, 0] vs [0, 1] at each position
    ("cosine", "spatial"): 1.0, ("l1", "spatial"): 1.0, ("l2", "spatial"): 1.0,
    # channel: softmax over positions [p, q] vs [q, p] for each channel
    ("cosine", "channel"): 1 - 2 * _P * _Q / (_P**2 + _Q**2),
    ("l1", "channel"): _P - _Q,
    ("l2", "channel"): (_P - _Q) ** 2,
}


@pytest.mark.parametrize(("metric", "level"), sorted(KNOWN))
def test_alignment_loss_known_values(metric: str, level: str) -> None:
    value = alignment_loss(SWAP_S, SWAP_T, metric, level)
    assert float(value) == pytest.approx(KNOWN[(metric, level)], abs=1e-6)


def test_global_level_sees_magnitude() -> None:
    s = torch.tensor([[[2.0, 0.0], [2.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert float(alignment_loss(s, t, "cosine", "global")) == pytest.approx(0.0, abs=1e-7)
    assert float(alignment_loss(s, t, "l1", "global")) == pytest.approx(0.5)
    assert float(alignment_loss(s, t, "l2", "global")) == pytest.approx(0.5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("level", LEVELS)
def test_identical_features_give_zero(metric: str, level: str) -> None:
    f = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(0))
    assert float(alignment_loss(f, f.clone(), metric, level)) == pytest.approx(0.0, abs=1e-6)


def test_bad_options_and_shapes() -> None:
    f = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="metric"):
        alignment_loss(f, f, "kl", "spatial")
    with pytest.raises(ValueError, match="level"):
        alignment_loss(f, f, "l1", "pixel")
    with pytest.raises(ValueError, match="differ in shape"):
        alignment_loss(f, torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="paradigm"):
        ConsistencyCam.Params(paradigm="distill")


def test_flatten_pair_pools_the_finer_grid() -> None:
    student = torch.arange(16.0).reshape(1, 1, 4, 4)
    teacher = torch.zeros(1, 3, 2, 2)
    s, t = flatten_pair(student, teacher)
    assert s.shape == (1, 4, 1) and t.shape == (1, 4, 3)
    assert s[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def toy(n: int, seed: int, size: int = 32) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if i % 2 == 0:
            y, x = rng.integers(0, size // 2, 2)
            img[y:y + size // 2, x:x + size // 2] = 210
            mask[y:y + size // 2, x:x + size // 2] = 1
        out.append(Sample(f"c{seed}-{i}", img, int(i % 2 == 0), mask))
    return out


def student(tmp_path: Path, **params: object) -> ConsistencyCam:
    base: dict[str, object] = {"backbone": "vit_tiny_patch16_224", "weights": "none",
                               "input_size": 32, "epochs": 2, "batch_size": 4, "lr": 1e-3,
                               "teacher": "classifier", "level": "channel", "lam": 0.5}
    base.update(params)
    return ConsistencyCam(ConsistencyCam.Params(**base),  # type: ignore[arg-type]
                          RunContext(device="cpu", seed=0, workdir=tmp_path, progress=False))


def test_teacher_student_trains_student_only(tmp_path: Path) -> None:
    teacher = ClassifierCam(ClassifierCam.Params(backbone="resnet18", weights="none",
                                                 input_size=32),
                            RunContext(device="cpu", workdir=tmp_path / "t", progress=False))
    teacher.build()
    before = [p.detach().clone() for p in teacher.require_net().parameters()]
    cam = student(tmp_path / "s")
    assert cam.sources() == ["classifier"]
    cam.bind_sources([teacher])
    cam.fit(toy(8, 0), toy(4, 1))
    assert [h["epoch"] for h in cam.history] == [1, 2]
    assert all("align" in h and "cls" in h and "cls_teacher" not in h for h in cam.history)
    for a, b in zip(before, teacher.require_net().parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the teacher stays frozen
    maps = cam.compute([s.image for s in toy(3, 2)])
    assert [m.shape for m in maps] == [(32, 32)] * 3
    cam.save(tmp_path)
    assert (tmp_path / "projection.pt").exists()
    again = student(tmp_path / "s2")
    again.load(tmp_path)
    for a, b in zip(maps, again.compute([s.image for s in toy(3, 2)]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_co_training_builds_and_trains_its_teacher(tmp_path: Path) -> None:
    from bench.plugins import discover

    discover()
    cam = student(tmp_path, paradigm="co_training", metric="l2", level="global", epochs=1)
    assert cam.sources() == []
    cam.fit(toy(8, 0), [])
    assert cam.teacher_net is not None and cam.teacher_net.backbone == "resnet18"
    assert "cls_teacher" in cam.history[0] and cam.history[0]["val_acc"] is None


def record(method: str, stages: list[dict[str, object]], miou: float) -> dict[str, object]:
    return {"method": method, "pipeline": method, "stage": len(stages) - 1, "stage_kind": "cam",
            "dataset": "synthetic", "split": "test", "profile": "quick", "seed": 0,
            "n_images": 4, "metrics": {"mIoU": miou, "IoU_smoke": miou / 2, "precision": 0.5,
                                       "recall": 0.5},
            "distractors": {"chimney": 0.1, "steam": 0.05},
            "config": {"stages": stages}, "provenance": {"date": "2026-01-01"}}


def test_grid_table_one_row_per_combination() -> None:
    from bench.table import frame, grid, render

    recs = []
    for metric, level, miou in (("cosine", "spatial", 0.4), ("l1", "spatial", 0.3),
                                ("cosine", "channel", 0.35)):
        params = {"metric": metric, "level": level, "paradigm": "teacher_student", "lam": 1.0}
        recs.append(record(f"consistency[metric={metric},level={level}]",
                           [{"name": "consistency", "kind": "cam", "params": params}], miou))
    recs.append(record("resnet50", [{"name": "resnet50", "kind": "cam",
                                     "params": {"backbone": "resnet50"}}], 0.2))
    table = grid(frame(recs), "consistency", ["metric", "level", "paradigm", "lam"])
    assert list(table.columns)[:4] == ["metric", "level", "paradigm", "lam"]
    assert len(table) == 3 and set(table["mIoU"]) == {"40.00", "30.00", "35.00"}
    assert {"chimney", "steam"} <= set(table.columns)
    assert "| cosine" in render(table, "md")
    varying = grid(frame(recs), "consistency")
    assert list(varying.columns)[:2] == ["metric", "level"]  # only what differs


def test_bench_table_grid_shows_the_declared_ablation_axes(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """`bench table --grid consistency` shows metric x level x paradigm x lam even where only
    one of them varies (the thesis's table shape), from `ConsistencyCam.grid_params`."""
    import json

    from bench.cli import main
    from bench.records import record_path

    for metric, miou in (("cosine", 0.4), ("l1", 0.3)):
        params = {"metric": metric, "level": "spatial", "paradigm": "teacher_student",
                  "lam": 1.0}
        rec = record(f"consistency[metric={metric}]",
                     [{"name": "consistency", "kind": "cam", "params": params}], miou)
        path = record_path(tmp_path, rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    assert main(["table", "--out", str(tmp_path), "--grid", "consistency"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][:5] == \
        ["metric", "level", "paradigm", "lam", "mIoU"]
