"""The quick profile's segmenter recipe learns from incomplete pseudo labels (issue 11).

Synthetic scenes (crisp plume edges, so that the smoke the labels miss is visible) get pseudo
labels with a known recall and precision: the densest 60% of each plume's smoke, missing its
thin parts as a CAM does, plus false smoke in discs scattered over the background (precision
0.75). ``deeplabv3plus`` trained on them with the quick profile must find more of the smoke on
scenes it has not seen (recall above the labels' 0.6) without buying it with false smoke
(precision not below the labels'). Plain cross-entropy fails this: it predicts background on
most of the smoke; the quick recipe before its scale change reached recall 0.50. The current
one (scales 0.25-0.5 with ``min_side=128``: these 256-px scenes train at 0.5-1 and are read at
0.75; a per-crop Dice term; the EfficientNet-Lite2 encoder) reaches precision 0.744 / recall
0.760 with the test's seed on 2 threads: the precision condition holds by 0.004 (the Lite0
encoder before: 0.809 / 0.717; docs/segmenter-recipe.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import RunContext, Sample
from bench.data.synthetic import SyntheticConfig, render
from bench.pipeline import build_stage
from bench.plugins import discover
from bench.spec import parse_pipeline

#: the benchmark's scenes with more smoke, so that few frames carry enough of it
CONFIG = SyntheticConfig(smoke_rate=0.8, smoke_coverage=0.12, edge_softness=0.0)
RECALL = 0.6
PRECISION = 0.75


def scenes(first: int, n: int) -> list:
    return [render(i, 11, CONFIG) for i in range(first, first + n)]


def noisy_labels(scene: object, rng: np.random.Generator) -> np.ndarray:
    """Pseudo labels with a known recall and precision: the densest `RECALL` of the smoke
    (by opacity), which misses its thin parts as a CAM does, plus false smoke in discs on the
    background (about ``1 / PRECISION - 1`` times the labelled smoke). All background on a
    scene without smoke."""
    mask = scene.mask.astype(bool)
    labels = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return labels
    inside = np.flatnonzero(mask)
    densest = inside[np.argsort(-scene.smoke_alpha.ravel()[inside], kind="stable")]
    labels.ravel()[densest[:round(RECALL * len(inside))]] = 1  # opacity ties: upper rows first
    budget = labels.sum() * (1 / PRECISION - 1)
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    for _ in range(100):
        if budget <= 0:
            break
        y, x = rng.integers(0, mask.shape[0]), rng.integers(0, mask.shape[1])
        disc = ((yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(4, 10) ** 2) & ~mask
        budget -= int((disc & (labels == 0)).sum())
        labels[disc] = 1
    return labels


def precision_recall(preds: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    tp = sum(int(((p == 1) & (m == 1)).sum()) for p, m in zip(preds, masks, strict=True))
    fp = sum(int(((p == 1) & (m == 0)).sum()) for p, m in zip(preds, masks, strict=True))
    fn = sum(int(((p != 1) & (m == 1)).sum()) for p, m in zip(preds, masks, strict=True))
    return tp / (tp + fp), tp / (tp + fn)


def test_quick_segmenter_goes_beyond_incomplete_pseudo_labels(tmp_path: Path) -> None:
    discover()
    train = scenes(0, 48)
    held = scenes(1000, 16)
    rng = np.random.default_rng(0)
    labels = [noisy_labels(s, rng) for s in train]
    label_p, label_r = precision_recall(labels, [s.mask for s in train])
    assert label_r == pytest.approx(RECALL, abs=0.01)  # the premise
    assert label_p == pytest.approx(PRECISION, abs=0.02)

    stage = parse_pipeline("effnet+crf+deeplabv3plus").stages[-1]
    seg = build_stage(stage, RunContext(device="cpu", profile="quick", seed=0,
                                        workdir=tmp_path, progress=False))
    assert seg.params.class_balance > 0  # the quick recipe under test
    seg.fit([Sample(f"s{i}", s.image, s.label, None) for i, s in enumerate(train)], labels)
    preds = seg.predict([s.image for s in held])
    p, r = precision_recall(preds, [s.mask for s in held])
    assert r > 0.6, f"recall {r:.3f} (labels: {label_r:.3f})"
    assert p >= label_p, f"precision {p:.3f} below the labels' {label_p:.3f}"
