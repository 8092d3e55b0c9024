"""Tests of bench.metrics: hand cases, mmseg parity, exact sweep, bootstrap, distractors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import (
    DEFAULT_THRESHOLDS,
    METRICS,
    AreaAccumulator,
    DistractorAccumulator,
    SweepAccumulator,
    apply_threshold,
    binarize,
    bootstrap_ci,
    distractor_mass,
    image_areas,
    metric_curve,
    metrics_from_areas,
    paired_bootstrap,
    sweep_areas,
)

# --------------------------------------------------------------------------- helpers


def mmseg_intersect_and_union(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """mmseg's ``intersect_and_union``, re-implemented naively with histograms.

    mmseg: mask = label != ignore; pred, label = pred[mask], label[mask];
    intersect = pred[pred == label]; areas = torch.histc(x, bins=C, min=0, max=C - 1) of
    intersect, pred and label; union = pred + label - intersect. ``np.histogram`` with the same
    bins and range drops out-of-range values as ``histc`` does.
    """
    mask = label != ignore_index
    p, lab = pred[mask].astype(np.float64), label[mask].astype(np.float64)
    intersect = p[p == lab]
    hist = lambda x: np.histogram(x, bins=num_classes, range=(0, num_classes - 1))[0]  # noqa: E731
    a_i, a_p, a_l = hist(intersect), hist(p), hist(lab)
    return np.stack([a_i, a_p + a_l - a_i, a_p, a_l]).astype(np.int64)


def naive_sweep(soft: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """One full-image comparison per threshold, in float64 (the documented semantics)."""
    s64 = np.asarray(soft).astype(np.float64)
    return np.stack(
        [mmseg_intersect_and_union((s64 >= t).astype(np.uint8), label, 2, 255) for t in thresholds]
    )


def random_case(rng: np.random.Generator, shape=(37, 53), p_ignore=0.15, p_smoke=0.35):
    label = (rng.random(shape) < p_smoke).astype(np.uint8)
    label[rng.random(shape) < p_ignore] = 255
    return label


def noisy_dataset(rng: np.random.Generator, n: int, flip: float, size: int = 24) -> np.ndarray:
    """Per-image areas of ``n`` images whose prediction flips each label pixel w.p. ``flip``."""
    acc = AreaAccumulator()
    for _ in range(n):
        label = random_case(rng, (size, size), p_smoke=rng.uniform(0.1, 0.6))
        truth = np.where(label == 255, 0, label)
        pred = np.where(rng.random(label.shape) < flip, 1 - truth, truth).astype(np.uint8)
        acc.add(pred, label)
    return acc.areas


# --------------------------------------------------------------------------- hand cases


def test_hand_case_3x3() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
    label = np.array([[1, 0, 0], [1, 1, 255], [0, 0, 0]], dtype=np.uint8)
    # 8 valid pixels (the 255 is out). smoke: pred {00,01,11} P=3, label {00,10,11} L=3,
    # I = {00,11} = 2, U = 3+3-2 = 4. background: P = 8-3 = 5, L = 5, I = {02,20,21,22} = 4,
    # U = 5+5-4 = 6.
    areas = image_areas(pred, label)
    assert areas.dtype == np.int64
    np.testing.assert_array_equal(areas, [[4, 2], [6, 4], [5, 3], [5, 3]])
    m = metrics_from_areas(areas)
    assert m["IoU_smoke"] == pytest.approx(2 / 4)
    assert m["IoU_background"] == pytest.approx(4 / 6)
    assert m["mIoU"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # 7/12
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(2 / 3)  # 2*2 / (3+3)
    assert m["accuracy"] == pytest.approx(6 / 8)  # (2+4) correct of 8 valid
    assert set(METRICS) <= set(m)
    assert all(type(v) is float for v in m.values())


def test_hand_case_4x4_precision_differs_from_recall() -> None:
    label = np.array(
        [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 255, 255]], dtype=np.uint8
    )
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8)
    # 12 valid. smoke: L=6, P = 3 (row 0) + 1 (row 1) = 4, I = {02,03,12} = 3, U = 4+6-3 = 7.
    # background: L=6, P = 12-4 = 8, I = 6 - 1 (pixel 01 predicted smoke) = 5, U = 8+6-5 = 9.
    m = metrics_from_areas(image_areas(pred, label))
    assert m["IoU_smoke"] == pytest.approx(3 / 7)
    assert m["IoU_background"] == pytest.approx(5 / 9)
    assert m["mIoU"] == pytest.approx(31 / 63)  # (3/7 + 5/9) / 2
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["F1"] == pytest.approx(0.6)  # 2PR/(P+R) = 0.75/1.25
    assert m["accuracy"] == pytest.approx(8 / 12)


def test_ignore_label_excluded_whatever_is_predicted() -> None:
    label = np.array([[1, 0, 255], [0, 255, 1]], dtype=np.uint8)
    base = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.uint8)
    flipped = base.copy()
    flipped[label == 255] = 1
    np.testing.assert_array_equal(image_areas(base, label), image_areas(flipped, label))
    m = metrics_from_areas(image_areas(flipped, label))
    assert m["mIoU"] == 1.0 and m["accuracy"] == 1.0  # 4 valid pixels, all right


def test_ignore_in_prediction_is_a_miss_not_a_false_alarm() -> None:
    label = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 255, 0, 255]], dtype=np.uint8)
    # smoke: P=1, L=2, I=1, U=2; background: P=1, L=2, I=1, U=2; 2 of 4 correct.
    np.testing.assert_array_equal(image_areas(pred, label), [[1, 1], [2, 2], [1, 1], [2, 2]])
    assert metrics_from_areas(image_areas(pred, label))["accuracy"] == 0.5


def test_empty_denominators_are_nan() -> None:
    zeros = np.zeros((2, 2), dtype=np.uint8)
    m = metrics_from_areas(image_areas(zeros, zeros))  # no smoke anywhere
    assert m["IoU_background"] == 1.0 and m["mIoU"] == 1.0  # nanmean over background only
    for key in ("IoU_smoke", "precision", "recall", "F1"):
        assert math.isnan(m[key]), key
    m = metrics_from_areas(image_areas(zeros, np.ones_like(zeros)))  # smoke never predicted
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["F1"] == 0.0
    m = metrics_from_areas(image_areas(zeros, np.full_like(zeros, 255)))  # everything ignored
    assert all(math.isnan(v) for v in m.values())


def test_dataset_sums_areas_instead_of_averaging_images() -> None:
    acc = AreaAccumulator()
    # A: 2x2, all smoke, predicted all smoke: smoke I=4 U=4 (IoU 1); no background (NaN).
    acc.add(np.ones((2, 2), np.uint8), np.ones((2, 2), np.uint8), "a")
    # B: 4x4, top half smoke, nothing predicted: smoke I=0 U=8 (IoU 0); background I=8 U=16.
    label_b = np.zeros((4, 4), np.uint8)
    label_b[:2] = 1
    acc.add(np.zeros((4, 4), np.uint8), label_b, "b")
    per_image = [metrics_from_areas(a) for a in acc.areas]
    assert np.mean([m["IoU_smoke"] for m in per_image]) == pytest.approx(0.5)
    assert np.mean([m["mIoU"] for m in per_image]) == pytest.approx(0.625)  # (1 + 0.25) / 2
    m = acc.metrics()
    assert m["IoU_smoke"] == pytest.approx(4 / 12)  # summed: I = 4, U = 4 + 8
    assert m["IoU_background"] == pytest.approx(8 / 16)
    assert m["mIoU"] == pytest.approx((1 / 3 + 1 / 2) / 2)  # 5/12, not 0.625
    assert acc.ids == ["a", "b"] and len(acc) == 2
    assert acc.areas.shape == (2, 4, 2)
    np.testing.assert_array_equal(acc.total, acc.areas.sum(axis=0))


def test_empty_accumulator_shapes() -> None:
    acc = AreaAccumulator()
    assert acc.areas.shape == (0, 4, 2)
    np.testing.assert_array_equal(acc.total, np.zeros((4, 2)))
    assert math.isnan(acc.metrics()["mIoU"])


# --------------------------------------------------------------------------- mmseg parity


@pytest.mark.parametrize(
    ("num_classes", "pred_dtype", "label_dtype", "pred_ignore"),
    [
        (2, np.uint8, np.uint8, False),  # fast path
        (2, np.bool_, np.uint8, False),
        (2, np.int64, np.int32, False),
        (2, np.uint8, np.uint8, True),  # pred has 255: histogram path
        (3, np.int64, np.int64, True),
    ],
)
def test_image_areas_matches_mmseg(num_classes, pred_dtype, label_dtype, pred_ignore) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        shape = tuple(rng.integers(1, 40, size=2))
        label = rng.integers(0, num_classes, shape)
        label[rng.random(shape) < 0.2] = 255
        pred = rng.integers(0, 2 if pred_dtype is np.bool_ else num_classes, shape)
        if pred_ignore:
            pred[rng.random(shape) < 0.1] = 255
        pred, label = pred.astype(pred_dtype), label.astype(label_dtype)
        want = mmseg_intersect_and_union(pred, label, num_classes, 255)
        np.testing.assert_array_equal(image_areas(pred, label, num_classes), want)


def test_metrics_match_mmseg_formulas_on_random_totals() -> None:
    rng = np.random.default_rng(3)
    acc = AreaAccumulator()
    for _ in range(5):
        label = random_case(rng)
        acc.add(rng.integers(0, 2, label.shape), label)
    i, u, p, lab = acc.total.astype(np.float64)
    m = metrics_from_areas(acc.total)
    assert m["mIoU"] == pytest.approx(np.mean(i / u))
    assert m["accuracy"] == pytest.approx(i.sum() / lab.sum())  # mmseg aAcc
    assert m["recall"] == pytest.approx(i[1] / lab[1])  # mmseg per-class Acc of smoke
    assert m["F1"] == pytest.approx(2 * i[1] / (p[1] + lab[1]))  # mmseg Dice of smoke
    assert m["F1"] == pytest.approx(
        2 * m["precision"] * m["recall"] / (m["precision"] + m["recall"])
    )


# --------------------------------------------------------------------------- validation


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        image_areas(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="shape mismatch"):
        sweep_areas(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("bad", [2, 7, 254])
def test_label_values_outside_allowed_set(bad: int) -> None:
    label = np.array([[0, 1], [255, bad]], dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"label contains values outside \{{0, 1, 255\}}: {bad}"):
        image_areas(np.zeros((2, 2), np.uint8), label)
    with pytest.raises(ValueError, match="label contains values outside"):
        sweep_areas(np.zeros((2, 2), np.float32), label)
    with pytest.raises(ValueError, match="label contains values outside"):
        image_areas(np.zeros((2, 2), np.uint8), label.astype(np.int64))


def test_negative_label_and_bad_dtypes() -> None:
    with pytest.raises(ValueError, match="label contains values outside"):
        image_areas(np.zeros(3, np.uint8), np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="integer dtype"):
        image_areas(np.zeros(3, np.uint8), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="pred must have an integer or bool dtype"):
        image_areas(np.zeros(3, np.float32), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="pred contains values outside"):
        image_areas(np.array([0, 3, 1], np.uint8), np.zeros(3, np.uint8))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, r"outside \[0, 1\]"),
        (-0.1, r"outside \[0, 1\]"),
        (np.nan, "non-finite"),
        (np.inf, "non-finite"),
    ],
)
def test_soft_map_values_checked(value: float, message: str) -> None:
    soft = np.full((2, 2), 0.5, np.float32)
    soft[1, 1] = value
    label = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match=message):
        sweep_areas(soft, label)
    with pytest.raises(ValueError, match=message):
        distractor_mass(soft, {"steam": label.astype(bool)})


def test_thresholds_checked() -> None:
    soft, label = np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="strictly increasing"):
        sweep_areas(soft, label, np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        SweepAccumulator(thresholds=[0.1, np.nan])


# --------------------------------------------------------------------------- sweep


def test_default_thresholds() -> None:
    assert DEFAULT_THRESHOLDS.shape == (50,)
    assert DEFAULT_THRESHOLDS[0] == 0.02 and DEFAULT_THRESHOLDS[-1] == 1.0
    assert DEFAULT_THRESHOLDS[14] == 0.3  # the float nearest 0.3, not 0.30000000000000004
    np.testing.assert_allclose(np.diff(DEFAULT_THRESHOLDS), 0.02)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_sweep_matches_naive_loop_exactly(dtype) -> None:
    rng = np.random.default_rng(11)
    thresholds = np.concatenate([[-0.5, 0.0], DEFAULT_THRESHOLDS, [1.5, 3.0]])
    irregular = np.sort(rng.choice(rng.random(200), 17, replace=False))
    for k in range(12):
        label = random_case(rng, tuple(rng.integers(1, 48, size=2)))
        soft = rng.random(label.shape).astype(dtype)
        flat = soft.reshape(-1)
        # values sitting exactly on, just below and just above thresholds, plus 0, -0.0 and 1
        on = DEFAULT_THRESHOLDS[rng.integers(0, 50, flat.size // 3)].astype(dtype)
        flat[: on.size] = on
        flat[on.size : 2 * on.size] = np.nextafter(on, dtype(0))
        flat[-4:] = np.array([0.0, -0.0, 1.0, 1.0], dtype)[: min(4, flat.size)]
        for th in (thresholds, irregular):
            np.testing.assert_array_equal(
                sweep_areas(soft, label, th), naive_sweep(soft, label, th)
            )
        if k == 0:  # non-contiguous inputs take the same path
            np.testing.assert_array_equal(
                sweep_areas(soft.T, label.T), naive_sweep(soft.T, label.T, DEFAULT_THRESHOLDS)
            )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sweep_table_and_sort_paths_match_naive_loop(dtype) -> None:
    """Both ways of counting (rank table; sort for thresholds too close for a table) are exact."""
    from bench.metrics.sweep import _as_thresholds, _rank_table

    rng = np.random.default_rng(3)
    spread = np.cumsum(rng.uniform(0.002, 0.004, 250))  # a larger table, moved by `lo`
    close = np.array([0.25, 0.5, np.nextafter(0.5, 1), 0.5 + 1e-7, 0.75])  # no table: sort
    wide = np.array([-1.0, 0.0, 1e-30, 1e-6, 0.5, 1.0, 1.5, 2.0, 7.0])  # keys clipped, shared
    cases = [(DEFAULT_THRESHOLDS, True), (spread, True), (close, False), (wide, True)]
    for th, table in cases:
        has_table = _rank_table(_as_thresholds(th).tobytes(), np.dtype(dtype)) is not None
        assert has_table == table, th
        label = random_case(rng, (41, 29))
        soft = rng.random(label.shape).astype(dtype)
        flat = soft.reshape(-1)
        on = np.clip(th[rng.integers(0, th.size, 300)], 0, 1).astype(dtype)
        flat[:300] = on  # exactly on, just below and just above thresholds
        flat[300:600] = np.nextafter(on, dtype(0))
        flat[600:900] = np.nextafter(on, dtype(1))
        flat[-5:] = np.array([0.0, -0.0, 1e-40, 1.0, 1.0], dtype)
        np.testing.assert_array_equal(sweep_areas(soft, label, th), naive_sweep(soft, label, th))


def test_sweep_boundary_is_exact_not_float32() -> None:
    # float32(0.02) = 0.0199999995... < 0.02: not smoke at t = 0.02 (a float32 comparison says it
    # is); the next float32 up is smoke.
    soft = np.array([[np.float32(0.02), np.nextafter(np.float32(0.02), np.float32(1))]])
    label = np.array([[1, 1]], dtype=np.uint8)
    sw = sweep_areas(soft, label, np.array([0.02]))
    assert sw[0, 2, 1] == 1  # one pixel predicted smoke
    np.testing.assert_array_equal(binarize(soft, 0.02), [[0, 1]])
    assert (soft >= 0.02).sum() == 2  # the pitfall binarize avoids


def test_sweep_ignore_and_other_label_dtypes() -> None:
    rng = np.random.default_rng(5)
    label = random_case(rng, (20, 30))
    soft = rng.random(label.shape)
    want = naive_sweep(soft, label, DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(sweep_areas(soft, label.astype(np.int64)), want)
    relabelled = np.where(label == 255, 9, label).astype(np.int16)
    np.testing.assert_array_equal(sweep_areas(soft, relabelled, ignore_index=9), want)
    hard = soft > 0.5  # a bool map is a soft map with values 0 and 1
    np.testing.assert_array_equal(
        sweep_areas(hard, label), naive_sweep(hard, label, DEFAULT_THRESHOLDS)
    )


def test_binarize_agrees_with_sweep() -> None:
    rng = np.random.default_rng(2)
    label = random_case(rng)
    soft = np.round(rng.random(label.shape), 2).astype(np.float32)
    sw = sweep_areas(soft, label)
    for i, t in enumerate(DEFAULT_THRESHOLDS):
        np.testing.assert_array_equal(image_areas(binarize(soft, t), label), sw[i])


def _split(rng: np.random.Generator, n: int, smoke_value: float, bg_value: float):
    acc = SweepAccumulator()
    labels = []
    for i in range(n):
        label = random_case(rng, (8, 8))
        soft = np.where(label == 1, smoke_value, bg_value).astype(np.float32)
        acc.add(soft, label, f"{id(acc)}-{i}")
        labels.append(label)
    return acc, labels


def test_threshold_chosen_on_val_and_applied_to_test() -> None:
    rng = np.random.default_rng(0)
    # val: smoke at 0.61, background at 0.59 -> only t = 0.60 separates them (mIoU 1 there).
    val, _ = _split(rng, 4, 0.61, 0.59)
    # test: smoke at 0.45, background at 0.20 -> at 0.60 nothing is predicted smoke.
    test, test_labels = _split(rng, 3, 0.45, 0.20)
    assert val.best_threshold("mIoU") == (0.6, 1.0)
    assert test.best_threshold("mIoU")[0] == 0.22  # test's own optimum, lowest of the ties
    result = apply_threshold(val, test, "mIoU")
    assert result.threshold == 0.6 and result.selected_on == "val"
    n_smoke = sum(int((lab == 1).sum()) for lab in test_labels)
    n_valid = sum(int((lab != 255).sum()) for lab in test_labels)
    assert result.metrics["IoU_smoke"] == 0.0 and result.metrics["recall"] == 0.0
    assert math.isnan(result.metrics["precision"])
    assert result.metrics["accuracy"] == pytest.approx((n_valid - n_smoke) / n_valid)
    record = result.as_record()
    assert record["threshold"] == 0.6 and record["threshold_selected_on"] == "val"
    assert record["val_mIoU"] == 1.0 and record["mIoU"] == result.metrics["mIoU"]
    # per-image test areas at the chosen threshold, ready for the bootstrap
    assert result.areas.shape == (3, 4, 2)
    np.testing.assert_array_equal(result.areas, test.areas_at(0.6))
    np.testing.assert_array_equal(result.areas.sum(axis=0), test.total[29])
    np.testing.assert_array_equal(result.areas[:, 2, 1], 0)  # nothing predicted smoke


def test_apply_threshold_refuses_leaks() -> None:
    rng = np.random.default_rng(1)
    val, _ = _split(rng, 2, 0.7, 0.3)
    with pytest.raises(ValueError, match="other than the one scored"):
        apply_threshold(val, val)
    clash = SweepAccumulator()
    clash.add(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), val.ids[0])
    with pytest.raises(ValueError, match="in both val and test"):
        apply_threshold(val, clash)
    with pytest.raises(ValueError, match="different thresholds"):
        apply_threshold(val, SweepAccumulator(thresholds=[0.5]))
    with pytest.raises(ValueError, match="not one of the swept thresholds"):
        val.areas_at(0.61)
    with pytest.raises(ValueError, match="no images"):
        SweepAccumulator().best_threshold()


def test_sweep_accumulator_shapes_and_curve() -> None:
    rng = np.random.default_rng(4)
    acc = SweepAccumulator()
    for i in range(3):
        label = random_case(rng, (10, 12))
        acc.add(rng.random(label.shape).astype(np.float32), label, str(i))
    assert acc.areas.shape == (3, 50, 4, 2) and acc.total.shape == (50, 4, 2)
    curve = acc.curve("F1")
    assert curve.shape == (50,)
    assert curve[19] == pytest.approx(metrics_from_areas(acc.total[19])["F1"])
    np.testing.assert_array_equal(metric_curve(acc.total, "recall"), acc.curve("recall"))
    assert (np.diff(acc.curve("recall")) <= 0).all()  # raising t never finds more smoke
    at_zero = SweepAccumulator(thresholds=[0.0, 0.5])
    at_zero.add(np.zeros((3, 3), np.float32), np.eye(3, dtype=np.uint8))
    assert at_zero.curve("recall")[0] == 1.0  # t = 0 calls even an all-zero map all smoke
    assert acc.metrics_at(0.4) == metrics_from_areas(acc.total[19])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_images() -> None:
    rng = np.random.default_rng(8)
    small = noisy_dataset(rng, 20, flip=0.2)
    large = noisy_dataset(rng, 500, flip=0.2)
    widths = []
    for areas in (small, large):
        point = metrics_from_areas(areas.sum(axis=0))["mIoU"]
        lo, hi = bootstrap_ci(areas, "mIoU", n_boot=400)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < 0.4 * widths[0]  # ~ sqrt(20/500) = 0.2 expected


def test_bootstrap_is_deterministic_by_seed() -> None:
    areas = noisy_dataset(np.random.default_rng(9), 30, flip=0.3)
    a = bootstrap_ci(areas, "IoU_smoke", n_boot=200, seed=1)
    assert bootstrap_ci(areas, "IoU_smoke", n_boot=200, seed=1) == a
    assert bootstrap_ci(areas, "IoU_smoke", n_boot=200, seed=2) != a
    assert all(type(v) is float for v in a)


def test_bootstrap_of_identical_images_is_a_point() -> None:
    # Every resample of copies of one image has the same summed ratios: the interval collapses.
    one = image_areas(np.array([[1, 0], [1, 1]], np.uint8), np.array([[1, 1], [0, 1]], np.uint8))
    lo, hi = bootstrap_ci(np.stack([one] * 7), "mIoU", n_boot=50)
    # smoke I=2 U=4, background I=0 U=2 -> mIoU = (0.5 + 0) / 2
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_bootstrap_argument_checks() -> None:
    areas = noisy_dataset(np.random.default_rng(1), 3, flip=0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(areas, "Dice")
    with pytest.raises(ValueError, match=r"\(N, 4, C\)"):
        bootstrap_ci(areas[0])
    with pytest.raises(ValueError, match="no images"):
        bootstrap_ci(areas[:0])


def test_paired_bootstrap_method_against_itself() -> None:
    areas = noisy_dataset(np.random.default_rng(12), 40, flip=0.25)
    res = paired_bootstrap(areas, areas.copy(), "mIoU", n_boot=300)
    assert res["delta"] == 0.0
    assert (res["ci_low"], res["ci_high"]) == (0.0, 0.0)
    assert res["p_value"] == 1.0
    assert res["n_images"] == 40 and res["n_boot"] == 300


def test_paired_bootstrap_detects_a_better_method() -> None:
    rng = np.random.default_rng(13)
    acc_good, acc_bad = AreaAccumulator(), AreaAccumulator()
    for _ in range(40):
        label = random_case(rng, (16, 16), p_smoke=rng.uniform(0.2, 0.5))
        truth = np.where(label == 255, 0, label)
        for acc, flip in ((acc_good, 0.1), (acc_bad, 0.3)):
            pred = np.where(rng.random(label.shape) < flip, 1 - truth, truth)
            acc.add(pred.astype(np.uint8), label)
    res = paired_bootstrap(acc_good.areas, acc_bad.areas, "mIoU", n_boot=500, seed=3)
    assert res["delta"] == pytest.approx(acc_good.metrics()["mIoU"] - acc_bad.metrics()["mIoU"])
    assert res["delta"] > 0 and res["ci_low"] > 0
    assert res["ci_low"] < res["delta"] < res["ci_high"]
    assert res["p_value"] < 0.01
    reverse = paired_bootstrap(acc_bad.areas, acc_good.areas, "mIoU", n_boot=500, seed=3)
    assert reverse["delta"] == pytest.approx(-res["delta"]) and reverse["ci_high"] < 0
    # same seed, same resamples: reversing the order mirrors the interval
    assert reverse["ci_low"] == pytest.approx(-res["ci_high"])


def test_paired_bootstrap_needs_the_same_images() -> None:
    areas = noisy_dataset(np.random.default_rng(1), 5, flip=0.1)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(areas, areas[:4])


# --------------------------------------------------------------------------- distractors


def test_distractor_mass_hand_case() -> None:
    cam = np.array([[0.5, 0.25], [0.25, 0.0]], np.float32)  # total mass 1.0
    aux = {
        "chimney": np.array([[1, 0], [0, 0]], bool),  # 0.5
        "steam": np.array([[0, 1], [1, 1]], np.uint8),  # 0.25 + 0.25 + 0
        "nothing": np.zeros((2, 2), bool),
    }
    assert distractor_mass(cam, aux) == {"chimney": 0.5, "steam": 0.5, "nothing": 0.0}
    zero = distractor_mass(np.zeros((2, 2), np.float32), aux)
    assert all(math.isnan(v) for v in zero.values())
    with pytest.raises(ValueError, match="shape mismatch"):
        distractor_mass(cam, {"steam": np.zeros((3, 3), bool)})
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        distractor_mass(cam, {"steam": np.full((2, 2), 2, np.uint8)})


def test_distractor_accumulator_sums_masses() -> None:
    acc = DistractorAccumulator()
    chimney = np.array([[1, 0], [0, 0]], bool)
    # image 1: mass 1.0, chimney 0.5, steam (the other three pixels) 0.5
    acc.add(np.array([[0.5, 0.25], [0.25, 0.0]]), {"chimney": chimney, "steam": ~chimney}, "1")
    # image 2: mass 2.0, chimney 0.0; no steam mask (unknown, not zero)
    assert acc.add(np.array([[0.0, 1.0], [1.0, 0.0]]), {"chimney": chimney}, "2") == {
        "chimney": 0.0
    }
    shares = acc.shares()
    assert shares["chimney"] == pytest.approx(0.5 / 3.0)  # not the mean of shares, 0.25
    assert shares["steam"] == pytest.approx(0.5)  # over image 1 only
    assert len(acc) == 2
