"""Merge strategies (bench.mask_merge) and packed mask sets on hand-made masks, known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.mask_merge import MERGES, ignore_disagreement, merge_labels
from bench.mask_set import MaskSet


def box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows, cols] = True
    return m


S6 = (6, 6)
#: P: the top half (rows 0-2, 18 pixels)
P6 = box(S6, slice(0, 3), slice(None))
#: columns 0-1, all rows: exactly half (6 of 12) in P -> not kept (2*6 - 12 = 0)
HALF = box(S6, slice(None), slice(0, 2))
#: rows 0-3, columns 2-3: 6 of 8 in P -> kept
MOSTLY_IN = box(S6, slice(0, 4), slice(2, 4))
#: rows 4-5: nothing in P
OUTSIDE = box(S6, slice(4, 6), slice(None))


def labels_of(smoke: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    out = smoke.astype(np.uint8)
    if ignore is not None:
        out[ignore] = 255
    return out


def test_max_iou_keeps_masks_more_than_half_inside_and_drops_the_rest_of_p() -> None:
    masks = MaskSet.from_dense([HALF, MOSTLY_IN, OUTSIDE])
    out = merge_labels("max_iou", masks, labels_of(P6))
    np.testing.assert_array_equal(out, MOSTLY_IN.astype(np.uint8))


def test_max_iou_imp_adds_the_p_pixels_no_mask_covers() -> None:
    masks = MaskSet.from_dense([HALF, MOSTLY_IN, OUTSIDE])
    uncovered = box(S6, slice(0, 3), slice(4, 6))  # P, right of every mask
    out = merge_labels("max_iou_imp", masks, labels_of(P6))
    np.testing.assert_array_equal(out, (MOSTLY_IN | uncovered).astype(np.uint8))
    # no mask covers 85% of P, so imp2 agrees with imp here
    np.testing.assert_array_equal(merge_labels("max_iou_imp2", masks, labels_of(P6)), out)


@pytest.mark.parametrize(("in_p", "kept"), [(18, True), (17, True), (16, False)])
def test_max_iou_imp2_keeps_a_mask_covering_85_percent_of_p(in_p: int, kept: bool) -> None:
    shape = (10, 10)
    p = box(shape, slice(0, 2), slice(None))  # 20 pixels
    big = np.zeros(shape, bool)
    big.ravel()[:in_p] = True  # in_p of P's pixels (raster order: rows 0-1)
    big[2:, 9] = True  # 8 pixels outside P
    big[5:, 0:5] = True  # 25 more outside: far less than half inside
    masks = MaskSet.from_dense([big])
    assert 2 * in_p - int(big.sum()) < 0  # max_iou would never keep it
    np.testing.assert_array_equal(merge_labels("max_iou", masks, labels_of(p)),
                                  np.zeros(shape, np.uint8))
    out = merge_labels("max_iou_imp2", masks, labels_of(p))
    # P pixels under no mask stay smoke either way (here: the ones `big` misses)
    expected = (big if kept else np.zeros(shape, bool)) | (p & ~big)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_ignore_pixels_stay_ignored_unless_a_kept_mask_covers_them() -> None:
    p = box(S6, slice(0, 2), slice(0, 3))  # 6 pixels
    ignore = box(S6, slice(0, 2), slice(3, 6))  # 6 pixels right of P
    # 6 in P, 2 in the ignore band, 2 elsewhere: kept (2*6 - 10 > 0)
    kept = box(S6, slice(0, 2), slice(0, 4)) | box(S6, slice(2, 3), slice(0, 2))
    # 2 ignore pixels, 0 in P: not kept, ignore does not count as P
    dropped = box(S6, slice(0, 2), slice(5, 6))
    masks = MaskSet.from_dense([kept, dropped])
    out = merge_labels("max_iou_imp", masks, labels_of(p, ignore))
    expected = np.zeros(S6, np.uint8)
    expected[ignore] = 255
    expected[kept] = 1
    np.testing.assert_array_equal(out, expected)
    assert (out == 255).sum() == 4 and (out == 1).sum() == 10


@pytest.mark.parametrize("name", ["max_iou", "max_iou_imp", "max_iou_imp2", "union",
                                  "intersection"])
def test_an_empty_p_gives_no_smoke(name: str) -> None:
    ignore = box(S6, slice(5, 6), slice(None))
    masks = MaskSet.from_dense([HALF, MOSTLY_IN, OUTSIDE])
    out = merge_labels(name, masks, labels_of(np.zeros(S6, bool), ignore))
    expected = np.where(ignore, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_union_and_intersection_use_the_mask_of_highest_iou_with_p() -> None:
    p = box(S6, slice(0, 3), slice(0, 3))  # 9 pixels
    shifted = box(S6, slice(0, 3), slice(1, 4))  # IoU 6/12 = 0.5: the best
    superset = box(S6, slice(0, 5), slice(0, 5))  # IoU 9/25
    inside = box(S6, slice(0, 2), slice(0, 2))  # IoU 4/9
    masks = MaskSet.from_dense([superset, inside, shifted])
    np.testing.assert_array_equal(merge_labels("union", masks, labels_of(p)),
                                  box(S6, slice(0, 3), slice(0, 4)).astype(np.uint8))
    np.testing.assert_array_equal(merge_labels("intersection", masks, labels_of(p)),
                                  box(S6, slice(0, 3), slice(1, 3)).astype(np.uint8))


def test_union_and_intersection_without_an_overlapping_mask() -> None:
    masks = MaskSet.from_dense([OUTSIDE])
    np.testing.assert_array_equal(merge_labels("union", masks, labels_of(P6)),
                                  P6.astype(np.uint8))
    np.testing.assert_array_equal(merge_labels("intersection", masks, labels_of(P6)),
                                  np.zeros(S6, np.uint8))


def test_no_masks_at_all() -> None:
    masks = MaskSet.empty(S6)
    assert merge_labels("max_iou", masks, labels_of(P6)).sum() == 0
    np.testing.assert_array_equal(merge_labels("max_iou_imp2", masks, labels_of(P6)),
                                  P6.astype(np.uint8))


def test_ignore_band_marks_confident_disagreement() -> None:
    merged = np.array([[1, 1, 0, 0, 1]], np.uint8)
    prob = np.array([[0.05, 0.3, 0.97, 0.7, 0.9]], np.float32)
    assert ignore_disagreement(merged, prob, 0.0) is merged
    # smoke where the input said 0.05 < 0.1; background where it said 0.97 > 0.9
    np.testing.assert_array_equal(ignore_disagreement(merged, prob, 0.1),
                                  [[255, 1, 255, 0, 1]])
    # 0.5: every flipped pixel
    np.testing.assert_array_equal(ignore_disagreement(merged, prob, 0.5),
                                  [[255, 255, 255, 255, 1]])
    with pytest.raises(ValueError, match="ignore_band"):
        ignore_disagreement(merged, prob, 0.6)


def test_mask_set_packs_and_counts_exactly() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((7, 13, 11)) < 0.3  # 143 pixels: not a multiple of 8
    region = rng.random((13, 11)) < 0.5
    masks = MaskSet.from_dense(dense, scores={"predicted_iou": np.arange(7)})
    np.testing.assert_array_equal(masks.dense(), dense)
    np.testing.assert_array_equal(masks.areas, dense.sum(axis=(1, 2)))
    np.testing.assert_array_equal(masks.overlaps(region), (dense & region).sum(axis=(1, 2)))
    keep = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    np.testing.assert_array_equal(masks.union(keep), dense[keep].any(axis=0))
    assert masks.bits.shape == (7, 24) and masks.nbytes < dense.nbytes  # 3 words a mask
    again = MaskSet.from_arrays(masks.to_arrays())
    np.testing.assert_array_equal(again.dense(), dense)
    np.testing.assert_array_equal(again.select(keep).scores["predicted_iou"], [0, 2, 3, 6])


def test_a_user_adds_a_strategy_in_an_include_file(tmp_path: Path) -> None:
    from bench.plugins import discover

    (tmp_path / "my_merges.py").write_text('''
"""A merge strategy in a user's file."""
import numpy as np

from bench import register_merge


@register_merge("largest_only")
def largest_only(masks, smoke):
    """The largest SAM mask, whatever P says."""
    if not len(masks):
        return np.zeros(masks.shape, bool)
    return masks.mask(int(np.argmax(masks.areas)))
''', encoding="utf-8")
    discover([tmp_path])
    assert "largest_only" in MERGES and MERGES.entry("largest_only").obj is None  # not imported
    masks = MaskSet.from_dense([HALF, OUTSIDE, MOSTLY_IN])
    out = merge_labels("largest_only", masks, labels_of(P6))
    np.testing.assert_array_equal(out, HALF.astype(np.uint8))  # first of the two 12-px masks


def test_unknown_strategy_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'max_iou'"):
        MERGES.get("max_iuo")


def test_the_readme_strategy_example_registers_and_merges(tmp_path: Path) -> None:
    import re

    from bench.plugins import discover

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## SAM-enhanced pseudo labels")
    section = readme[start:readme.index("\n## ", start + 1)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    name = re.search(r'@register_merge\("(\w+)"\)', code).group(1)
    folder = tmp_path / "readme_merge"
    folder.mkdir()
    (folder / "readme_merge.py").write_text(code.replace(name, "readme_" + name),
                                            encoding="utf-8")
    discover([folder])
    masks = MaskSet.from_dense([MOSTLY_IN, OUTSIDE, HALF])
    np.testing.assert_array_equal(merge_labels("readme_" + name, masks, labels_of(P6)),
                                  OUTSIDE.astype(np.uint8))  # the first 12-pixel mask
