"""The runner's sanity checks: a stage below all_smoke, a segmenter that collapsed to background."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.metrics import image_areas, metrics_from_areas
from bench.records import load_records
from bench.sanity import (
    all_smoke_iou,
    below_all_smoke,
    collapsed,
    label_smoke_share,
    predicted_smoke_share,
)

PLUGINS = '''
"""A healthy CAM source and a segmenter that always predicts background."""
from dataclasses import dataclass

import numpy as np

from bench import CamSource, Segmenter, register_method


@register_method("sanity_bright")
class Bright(CamSource):
    """Brightness as smoke map (the test frames' smoke is a bright blob)."""

    @dataclass
    class Params:
        pass

    def compute(self, images):
        return [(im.mean(axis=2) / 255.0).astype(np.float32) for im in images]


@register_method("collapse_seg")
class Collapse(Segmenter):
    """Learns nothing and predicts background everywhere: a collapsed segmenter."""

    @dataclass
    class Params:
        pass

    def fit(self, train, labels, val=()):
        assert any(np.any(np.asarray(lab) == 1) for lab in labels)  # pseudo labels have smoke

    def save(self, directory):
        (directory / "nothing.txt").write_text("")

    def load(self, directory):
        pass

    def predict(self, images):
        return [np.zeros(im.shape[:2], np.uint8) for im in images]
'''


def test_all_smoke_iou_is_what_all_smoke_scores() -> None:
    rng = np.random.default_rng(0)
    labels = [rng.choice([0, 1, 255], size=(6, 7), p=[0.7, 0.2, 0.1]).astype(np.uint8)
              for _ in range(3)]
    ones = np.stack([image_areas(np.ones_like(lab), lab) for lab in labels])
    zeros = np.stack([image_areas(np.zeros_like(lab), lab) for lab in labels])
    baseline = all_smoke_iou(zeros)  # from the label areas alone, whatever was predicted
    assert baseline == pytest.approx(metrics_from_areas(ones.sum(axis=0))["IoU_smoke"])
    assert below_all_smoke("x", metrics_from_areas(ones.sum(axis=0))["IoU_smoke"],
                           baseline) is None  # all_smoke itself does not warn
    assert below_all_smoke("'s' on d/test", 0.0, baseline) == \
        f"'s' on d/test: smoke IoU 0.00 is below all_smoke's {100 * baseline:.2f}"
    assert below_all_smoke("x", math.nan, baseline) is None  # image level: no smoke IoU
    assert predicted_smoke_share(ones) == 1.0 and predicted_smoke_share(zeros) == 0.0
    assert label_smoke_share([np.array([[1, 0, 255, 255]], np.uint8)]) == 0.5
    assert math.isnan(label_smoke_share([np.full((2, 2), 255, np.uint8)]))
    assert collapsed("x", 0.011, 0.1, "pseudo labels") is None  # 11% of the labels' share
    assert "under 10% of the 10.00% smoke of its training masks" in collapsed(
        "x", 0.009, 0.1, "masks")


def test_collapsed_segmenter_warns_and_records_it(write_dataset, tmp_path: Path,
                                                  smoke5k_root: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    include = tmp_path / "plugins"
    include.mkdir()
    (include / "sanity_plugins.py").write_text(PLUGINS, encoding="utf-8")
    name, _ = write_dataset(include, "tiny", smoke5k_root, "val_fraction = 0.3\n")
    out = tmp_path / "results"
    assert main(["run", "--include", str(include), "--datasets", name, "--out", str(out),
                 "--n-boot", "20", "--no-progress", "--limit", "10",
                 "--methods", "sanity_bright+collapse_seg,all_smoke,all_background"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("bench: warning: ")]
    where = f"'sanity_bright+collapse_seg' on {name}/test"
    assert len(warned) == 2, err
    assert warned[0].startswith(f"bench: warning: {where}: smoke IoU 0.00 is below "
                                "all_smoke's ")
    assert warned[1].startswith(f"bench: warning: {where}: predicts smoke on 0.00% of pixels, "
                                "under 10% of the ")
    assert "smoke of its training pseudo labels" in warned[1]
    assert "sanity_bright+collapse_seg: mIoU" in err and "s; 2 warnings)" in err

    records = {r["method"]: r for r in load_records(out)}
    assert records["sanity_bright+collapse_seg"]["warnings"] == [
        w.removeprefix("bench: warning: ") for w in warned]
    # healthy stages, and the baselines (a reference level, not a result), do not warn
    assert records["sanity_bright"]["warnings"] == []
    assert records["sanity_bright"]["metrics"]["IoU_smoke"] > \
        records["all_smoke"]["metrics"]["IoU_smoke"]
    assert records["all_smoke"]["warnings"] == []
    assert records["all_background"]["warnings"] == []
    assert all(r["weights"] == {} for r in records.values())  # nothing learned weights
