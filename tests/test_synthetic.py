"""The synthetic smoke generator: determinism, consistency of labels, and what each knob moves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.synthetic import SyntheticConfig, generate, render

N = 120


def batch(**knobs: float) -> list:
    cfg = replace(SyntheticConfig(size=96), **knobs)
    return [render(i, 7, cfg) for i in range(N)]


def test_deterministic_by_index_seed_and_config() -> None:
    cfg = SyntheticConfig(size=64)
    a, b = render(3, 1, cfg), render(3, 1, cfg)
    for field in ("image", "mask", "chimney", "steam", "smoke_alpha"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(render(3, 2, cfg).image, a.image)
    assert not np.array_equal(render(4, 1, cfg).image, a.image)


def test_types_labels_and_masks_are_consistent() -> None:
    for item in batch():
        assert item.image.dtype == np.uint8 and item.image.shape == (96, 96, 3)
        assert item.mask.dtype == np.uint8 and set(np.unique(item.mask)) <= {0, 1}
        assert item.label == int(item.mask.any())
        assert not (item.steam & (item.mask == 1)).any()  # steam is never smoke
        assert item.chimney.dtype == bool and item.steam.dtype == bool


def test_generate_returns_samples_with_aux_masks() -> None:
    samples = generate(3, seed=5, config=SyntheticConfig(size=64), start=10)
    assert [s.id for s in samples] == ["syn-5-00010", "syn-5-00011", "syn-5-00012"]
    assert set(samples[0].aux) == {"chimney", "steam"}


def test_invalid_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="smoke_rate"):
        SyntheticConfig(smoke_rate=1.5)
    with pytest.raises(ValueError, match="smoke_coverage"):
        SyntheticConfig(smoke_coverage=0.0)


def test_smoke_rate_sets_the_fraction_of_smoky_images() -> None:
    for rate in (0.2, 0.8):
        share = np.mean([it.label for it in batch(smoke_rate=rate)])
        assert abs(share - rate) < 0.12


def test_smoke_coverage_raises_the_smoke_fraction() -> None:
    means = [np.mean([it.mask.mean() for it in batch(smoke_rate=1.0, smoke_coverage=c)])
             for c in (0.02, 0.05, 0.12)]
    assert means[0] < means[1] < means[2]
    assert 0.5 * 0.05 < means[1] < 2.0 * 0.05  # near the target


def test_edge_softness_widens_the_partially_transparent_fringe() -> None:
    def fringe(softness: float) -> float:
        items = batch(smoke_rate=1.0, edge_softness=softness)
        alpha = np.concatenate([it.smoke_alpha[it.smoke_alpha > 0.01] for it in items])
        return float(np.mean(alpha < 0.15))  # share of faint pixels among plume pixels

    assert fringe(0.0) < fringe(1.0)


def test_steam_rate_sets_the_fraction_of_images_with_steam() -> None:
    low = np.mean([it.steam.any() for it in batch(steam_rate=0.1)])
    high = np.mean([it.steam.any() for it in batch(steam_rate=0.7)])
    assert low < 0.25 and high > 0.5


def test_spurious_correlation_knobs_set_conditional_chimney_rates() -> None:
    items = batch(chimney_given_smoke=0.9, chimney_given_no_smoke=0.1)
    smoky = [it.chimney.any() for it in items if it.meta["smoke"]]
    clean = [it.chimney.any() for it in items if not it.meta["smoke"]]
    assert np.mean(smoky) > 0.75 and np.mean(clean) < 0.25
    flipped = batch(chimney_given_smoke=0.1, chimney_given_no_smoke=0.9)
    assert np.mean([it.chimney.any() for it in flipped if it.meta["smoke"]]) < 0.25


def test_plumes_rise_from_chimney_tops() -> None:
    items = batch(smoke_rate=1.0, steam_rate=0.0, chimney_given_smoke=1.0)
    near = 0
    for it in items:
        ys, xs = np.nonzero(it.chimney)
        top = ys.min()
        top_xs = xs[ys <= top + 1]
        window = it.smoke_alpha[max(0, top - 6):top + 2,
                                max(0, top_xs.min() - 6):top_xs.max() + 7]
        near += bool((window > 0.05).any())
    # with several chimneys the plume may rise from another one; most rise from the tallest
    assert near / len(items) > 0.3
