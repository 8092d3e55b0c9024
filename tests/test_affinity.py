"""AffinityNet (issue 14): pixel pairs and their labels, the sparse random walk against IRN's
dense one, the boundary network's training, and the ``affinity`` refiner through the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cli import main
from bench.pixel_pairs import (
    PAIR_BG,
    PAIR_FG,
    PAIR_IGNORE,
    PAIR_NEG,
    pair_labels,
    pair_offsets,
    pair_paths,
)
from bench.random_walk import (
    dense_random_walk,
    path_affinities,
    propagate,
    random_walk,
    transition_matrix,
)
from bench.records import load_records


# --------------------------------------------------------------------------- pairs and paths
def test_offsets_are_irns_half_plane() -> None:
    off = pair_offsets(5)
    assert len(off) == 34 and len(pair_offsets(10)) == 152  # IRN's radius 5 and 10
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in off)
    assert all(dy * dy + dx * dx < 25 for dy, dx in off)
    assert {tuple(o) for o in pair_offsets(2)} == {(0, 1), (1, -1), (1, 0), (1, 1)}


def test_paths_join_source_and_destination() -> None:
    paths = dict(zip(map(tuple, pair_offsets(5)), pair_paths(5), strict=True))
    assert {tuple(p) for p in paths[(0, 3)]} == {(0, 0), (0, 1), (0, 2), (0, 3)}
    # a diagonal step passes by both pixels beside it (distance to the line below 1)
    assert {tuple(p) for p in paths[(1, 1)]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # (2, 4): the pixels of its 3x5 box within distance 1 of the line, |x - 2y| < sqrt(5)
    assert {tuple(p) for p in paths[(2, 4)]} == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                 (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)}


def test_pair_labels_against_pairs_counted_by_hand() -> None:
    labels = np.array([[0, 0, 1],
                       [0, 255, 1],
                       [1, 1, 1]], np.uint8)
    codes = pair_labels(labels, radius=2)  # the 8-neighbourhood: 20 pairs in a 3x3 map
    assert codes.shape == (4, 3, 3)
    # by hand: background pairs (0,0)-(0,1), (0,0)-(1,0), (0,1)-(1,0); smoke pairs
    # (2,0)-(2,1), (2,1)-(2,2), (0,2)-(1,2), (1,2)-(2,2), (1,2)-(2,1); mixed pairs (0,1)-(0,2),
    # (1,0)-(2,0), (0,1)-(1,2), (1,0)-(2,1); the 8 pairs touching the ignore centre are skipped
    assert np.count_nonzero(codes == PAIR_BG) == 3
    assert np.count_nonzero(codes == PAIR_FG) == 5
    assert np.count_nonzero(codes == PAIR_NEG) == 4
    assert np.count_nonzero(codes == PAIR_IGNORE) == 36 - 12
    k = {tuple(o): i for i, o in enumerate(pair_offsets(2))}
    assert codes[k[(1, -1)], 0, 1] == PAIR_BG  # (0,1)-(1,0)
    assert codes[k[(1, 1)], 0, 1] == PAIR_NEG  # (0,1)-(1,2)
    assert codes[k[(1, 1)], 0, 0] == PAIR_IGNORE  # (0,0)-(1,1): the ignore centre
    assert codes[k[(0, 1)], 2, 2] == PAIR_IGNORE  # its destination is outside the map
    with pytest.raises(ValueError, match="0, 1 and 255"):
        pair_labels(np.array([[0, 2]]), 2)


def test_path_affinity_is_one_minus_the_largest_boundary_on_the_path() -> None:
    b = np.zeros((6, 8), np.float32)
    b[:, 4] = 0.8  # a wall in column 4
    b[0, 0] = 0.3
    aff = path_affinities(b, radius=3)
    k = {tuple(o): i for i, o in enumerate(pair_offsets(3))}
    assert aff[k[(0, 2)], 2, 3] == pytest.approx(0.2)  # (2,3) -> (2,5) crosses the wall
    assert aff[k[(0, 2)], 2, 0] == pytest.approx(1.0)  # (2,0) -> (2,2) does not
    assert aff[k[(1, 1)], 0, 0] == pytest.approx(0.7)  # starts on the 0.3 pixel
    assert aff[k[(0, 2)], 2, 6] == 0.0  # (2,6) -> (2,8) leaves the map
    assert aff[k[(2, 0)], 5, 1] == 0.0


def test_torch_path_affinities_match_numpy() -> None:
    import torch

    from bench.nn.boundary_net import torch_path_affinities

    b = np.random.default_rng(0).random((2, 9, 11)).astype(np.float32)
    got = torch_path_affinities(torch.from_numpy(b), 5).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i], path_affinities(b[i], 5), atol=1e-7)


# --------------------------------------------------------------------------- the walk
def two_regions(h: int = 10, w: int = 12, split: int = 6, radius: int = 5) -> np.ndarray:
    """Affinities of a graph whose pairs within a region have affinity 1 and pairs across the
    vertical line between columns ``split - 1`` and ``split`` have 0."""
    aff = np.zeros((len(pair_offsets(radius)), h, w), np.float32)
    ys, xs = np.mgrid[:h, :w]
    for k, (dy, dx) in enumerate(pair_offsets(radius)):
        ty, tx = ys + dy, xs + dx
        inside = (ty < h) & (tx >= 0) & (tx < w)
        same = (xs < split) == (tx < split)
        aff[k] = (inside & same).astype(np.float32)
    return aff


def test_a_seed_fills_its_region_and_does_not_cross_the_boundary() -> None:
    aff = two_regions()
    seed = np.zeros((10, 12), np.float32)
    seed[7, 1] = 1.0
    out = random_walk(seed, aff, radius=5, beta=10, exp_times=8)
    left, right = out[:, :6], out[:, 6:]
    assert np.all(right == 0.0)
    assert left.min() > 0 and left.min() / left.max() > 0.99  # the region is filled evenly
    # the walk averages: the region settles at the degree-weighted mean of the seed
    degree = 1 / np.asarray(transition_matrix(aff, 5, 10).diagonal()).reshape(10, 12)
    assert left.mean() == pytest.approx(degree[7, 1] / degree[:, :6].sum(), rel=1e-3)


def boundary_scene(h: int = 11, w: int = 13) -> np.ndarray:
    rng = np.random.default_rng(3)
    b = 0.3 * rng.random((h, w)).astype(np.float32)
    b[:, 6] = 0.9
    b[4, 2:6] = 0.7
    return b


def test_sparse_walk_equals_irns_dense_walk() -> None:
    b = boundary_scene()
    cam = np.random.default_rng(4).random((2, 11, 13)).astype(np.float32)
    sparse = propagate(cam, b, radius=5, beta=10, exp_times=8)
    dense = propagate(cam, b, radius=5, beta=10, exp_times=8, dense=True)
    assert sparse.shape == dense.shape == (2, 11, 13)
    assert dense.std() > 0.05 * dense.max()  # not a walk that has flattened everything
    np.testing.assert_allclose(sparse / dense.max(), dense / dense.max(), atol=1e-5)
    aff = path_affinities(b, 5)
    steps = dense_random_walk(cam[0] * (1 - b), aff, squaring=False)  # 256 products
    np.testing.assert_allclose(steps / dense.max(), dense[0] / dense.max(), atol=1e-5)


def test_transition_matrix_is_sparse_and_stochastic() -> None:
    aff = path_affinities(boundary_scene(40, 50), 5)
    t = transition_matrix(aff, 5, 10)
    assert t.shape == (2000, 2000)
    assert t.nnz <= 2000 * (2 * 34 + 1)  # one entry per neighbour within the radius
    np.testing.assert_allclose(np.asarray(t.sum(axis=1)).ravel(), 1.0, rtol=1e-12)


def test_walk_checks_its_inputs() -> None:
    aff = path_affinities(boundary_scene(), 5)
    with pytest.raises(ValueError, match="K=34"):
        random_walk(np.zeros((11, 13)), aff[:10])
    with pytest.raises(ValueError, match="lie in"):
        random_walk(np.zeros((11, 13)), aff * 2)
    with pytest.raises(ValueError, match="boundary"):
        propagate(np.zeros((11, 13)), np.full((11, 13), 1.5, np.float32))


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def scenes() -> list[Any]:
    """Smoky synthetic scenes (160 px) with large plumes."""
    from bench.data.synthetic import SyntheticConfig, render

    cfg = SyntheticConfig(size=160, smoke_rate=1.0, smoke_coverage=0.2, steam_rate=0.0)
    return [render(i, 5, cfg) for i in range(14)]


def small_settings(**kw: Any) -> Any:
    from bench.nn.boundary_net import BoundarySettings

    base = {"crop_size": 128, "batch_size": 6, "epochs": 6, "scale_min": 0.8, "scale_max": 1.0,
            "optimizer": "adamw", "lr": 5e-3, "train_radius": 5}
    return BoundarySettings(**{**base, **kw})


def edge_and_inside(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stride-4 cells on the smoke's border and cells well inside it."""
    from scipy import ndimage as ndi

    cells = mask[1::4, 1::4] == 1
    edge = cells & ~ndi.binary_erosion(cells) | ndi.binary_dilation(cells) & ~cells
    inside = ndi.binary_erosion(cells, iterations=2)
    return edge, inside


def test_boundary_net_learns_smoke_edges(scenes: list[Any], tmp_path: Path) -> None:
    from bench.nn.boundary_net import build_boundary_net, train_boundary_net
    from bench.stages import RunContext

    settings = small_settings(epochs=8, batch_size=4, lr=2e-2)
    model, _ = build_boundary_net(settings, seed=0)
    train = scenes[:10]
    history = train_boundary_net(model, [s.image for s in train],
                                 [s.mask.astype(np.uint8) for s in train], settings,
                                 RunContext(workdir=tmp_path, progress=False), "fp")
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    edge_values, inside_values = [], []
    for s in scenes[10:]:  # scenes it did not train on
        b = model.boundary(s.image, flip=True)
        edge, inside = edge_and_inside(s.mask)
        edge_values.append(b[edge])
        inside_values.append(b[inside])
    edge_mean = float(np.concatenate(edge_values).mean())
    inside_mean = float(np.concatenate(inside_values).mean())
    assert edge_mean > 2 * inside_mean, (edge_mean, inside_mean)


def test_a_resumed_training_ends_with_the_uninterrupted_weights(scenes: list[Any],
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    import torch

    import bench.nn.boundary_net as bn
    from bench.stages import RunContext

    settings = small_settings(epochs=2, batch_size=4, crop_size=64)
    images = [s.image for s in scenes[:6]]
    seeds = [s.mask.astype(np.uint8) for s in scenes[:6]]

    def trained(workdir: Path) -> tuple[Any, list[dict]]:
        model, _ = bn.build_boundary_net(settings, seed=0)
        history = bn.train_boundary_net(model, images, seeds, settings,
                                        RunContext(workdir=workdir, progress=False), "fp")
        return model, history

    straight, straight_history = trained(tmp_path / "a")
    real_loss, calls = bn.affinity_loss, []

    def dying_loss(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:  # the first batch of epoch 2 (2 batches per epoch)
            raise RuntimeError("killed")
        return real_loss(*args)

    monkeypatch.setattr(bn, "affinity_loss", dying_loss)
    with pytest.raises(RuntimeError, match="killed"):
        trained(tmp_path / "b")
    monkeypatch.setattr(bn, "affinity_loss", real_loss)
    assert (tmp_path / "b" / "train" / "checkpoint.pt").exists()
    resumed, history = trained(tmp_path / "b")
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["loss"] for h in history] == [h["loss"] for h in straight_history]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- the refiner
def refiner(**params: Any) -> Any:
    from bench.plugins import METHODS, discover

    discover()
    cls = METHODS.get("affinity").cls
    return cls(cls.Params(**params))


def test_seeds_from_a_soft_map_on_the_relative_and_absolute_scales() -> None:
    from bench.sample import Sample

    cam = np.array([[0.0, 0.3, 0.5, 0.6, 0.9, 1.0]], np.float32)
    sample = Sample("s", np.zeros((1, 6, 3), np.uint8))
    plugin = refiner(crf_seeds=False, thresholds="absolute")
    assert plugin.seeds(sample, cam).tolist() == [[0, 1, 1, 1, 1, 1]]
    plugin = refiner(crf_seeds=False)  # relative: the calibrated 0.6 reads as 0.15
    plugin.input_threshold = 0.6
    # x ** (log 0.15 / log 0.6): 0.3 -> 0.0035 (background), 0.5 -> 0.069, 0.9 -> 0.64
    assert plugin.seeds(sample, cam).tolist() == [[0, 0, 255, 255, 1, 1]]
    labels = np.array([[0, 1, 255]], np.uint8)
    assert plugin.seeds(Sample("t", np.zeros((1, 3, 3), np.uint8)), labels).tolist() == \
        [[0, 1, 255]]


def test_crf_seeds_snap_to_the_image_edge() -> None:
    from bench.sample import Sample

    image = np.full((40, 60, 3), 20, np.uint8)
    image[:, 30:] = 230  # a dark half and a bright half
    cam = np.zeros((40, 60), np.float32)
    cam[:, 25:] = 1.0  # the map's smoke starts 5 pixels inside the dark half
    sample = Sample("s", image)
    plain = refiner(crf_seeds=False, thresholds="absolute").seeds(sample, cam)
    cleaned = refiner(crf_seeds=True, thresholds="absolute").seeds(sample, cam)
    assert (plain[:, 25:] == 1).all() and (plain[:, :25] == 0).all()
    assert (cleaned[:, 30:] == 1).all() and (cleaned[:, :30] == 0).all()


def test_refine_outputs_a_soft_map_or_labels(scenes: list[Any], tmp_path: Path) -> None:
    from bench.nn.boundary_net import build_boundary_net
    from bench.sample import Sample
    from bench.stages import RunContext

    plugin = refiner(crf_seeds=False)
    plugin.ctx = RunContext(workdir=tmp_path)
    plugin.model, _ = build_boundary_net(small_settings(), seed=0)
    s = scenes[1]
    cam = np.zeros((160, 160), np.float32)
    cam[60:80, 60:80] = 1.0
    soft = plugin.refine(Sample("s", s.image), cam)
    assert soft.shape == (160, 160) and soft.dtype == np.float32
    assert soft.max() == pytest.approx(1.0) and soft.min() >= 0
    plugin.params.labels = True
    hard = plugin.refine(Sample("s", s.image), cam)
    assert hard.dtype == np.uint8
    np.testing.assert_array_equal(hard, (soft > 0.25).astype(np.uint8))
    assert not plugin.refine(Sample("s", s.image), np.zeros_like(cam)).any()
    assert type(plugin).output_kind(plugin.params) == "labels"


def test_labels_true_is_a_label_stage_in_the_pipeline_checks() -> None:
    from bench.errors import ConfigError
    from bench.pipeline import pipeline_outputs
    from bench.spec import parse_pipeline

    spec = parse_pipeline("effnet+affinity[labels=true]+deeplabv3plus")
    assert pipeline_outputs(spec, "quick") == ["soft", "labels", "labels"]
    assert pipeline_outputs(parse_pipeline("effnet+affinity"), "quick") == ["soft", "soft"]
    with pytest.raises(ConfigError, match="refiner 'crf' accepts soft maps but gets labels"):
        parse_pipeline("effnet+affinity[labels=true]+crf")


# --------------------------------------------------------------------------- through the CLI
TINY_AFFINITY = "affinity[epochs=2,batch_size=16,crop_size=32,train_radius=3,radius=3,exp_times=4]"
TINY_DEEPLAB = "deeplabv3plus[epochs=1,batch_size=4,crop_size=32,val_limit=1]"
TINY_EFFNET = "effnet[epochs=1,input_size=64,batch_size=8]"


@pytest.fixture
def cli(write_dataset: Any, tmp_path: Path, smoke5k_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> dict:
    from bench.plugins import METHODS, discover

    name, _ = write_dataset(tmp_path / "datasets", "tinyaff", smoke5k_root,
                            "val_fraction = 0.3\n")
    discover()
    cls = METHODS.get("affinity").cls
    counts = {"fit": 0, "refine": 0}
    fit, refine = cls.fit, cls.refine

    def counted_fit(self: Any, *args: Any) -> Any:
        counts["fit"] += 1
        return fit(self, *args)

    def counted_refine(self: Any, *args: Any) -> Any:
        counts["refine"] += 1
        return refine(self, *args)

    monkeypatch.setattr(cls, "fit", counted_fit)
    monkeypatch.setattr(cls, "refine", counted_refine)
    out = tmp_path / "results"
    base = ["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
            str(out), "--n-boot", "20", "--no-progress"]
    return {"base": base, "out": out, "counts": counts}


def test_cli_effnet_affinity_runs_and_caches(cli: dict) -> None:
    spec = f"{TINY_EFFNET}+{TINY_AFFINITY}"
    assert main([*cli["base"], "--methods", spec]) == 0
    assert cli["counts"]["fit"] == 1 and cli["counts"]["refine"] == 4 + 2  # 4 test frames, 2 val
    records = {r["method"]: r for r in load_records(cli["out"])}
    rec = records[spec]
    assert rec["weights"] == {"effnet": "packaged", "affinity": "packaged"}
    assert rec["output"] == "soft" and 0 <= rec["metrics"]["mIoU"] <= 1
    assert rec["timings"]["fit_s"] > 0
    model = next((cli["out"] / "cache").glob("*/model/boundary_net.pt"))
    assert not list((cli["out"] / "cache").glob("*/train/checkpoint.pt"))  # dropped once saved
    cli["counts"].update(fit=0, refine=0)
    assert main([*cli["base"], "--methods", spec]) == 0
    assert cli["counts"] == {"fit": 0, "refine": 0}  # everything from the cache
    # an inference-only parameter reuses the trained network
    assert main([*cli["base"], "--methods", f"{spec[:-1]},labels=true]"]) == 0
    # labels need no threshold: only the 4 test frames are refined, not the 2 val ones
    assert cli["counts"]["fit"] == 0 and cli["counts"]["refine"] == 4
    assert model.exists()
    labels = next(r for r in load_records(cli["out"]) if r["method"].endswith("labels=true]"))
    assert labels["output"] == "labels" and labels["threshold"] in (None, {})


def test_cli_crf_affinity_deeplab_resumes_a_killed_training(
        cli: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import bench.nn.boundary_net as bn

    spec = f"{TINY_EFFNET}+crf+{TINY_AFFINITY}+{TINY_DEEPLAB}"
    real_loss, calls = bn.affinity_loss, []

    def dying_loss(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # one batch per epoch: epoch 2's
            raise RuntimeError("killed mid-training")
        return real_loss(*args)

    monkeypatch.setattr(bn, "affinity_loss", dying_loss)
    assert main([*cli["base"], "--methods", spec]) == 2
    assert "killed mid-training" in capsys.readouterr().err
    (ckpt,) = (cli["out"] / "cache").glob("*/train/checkpoint.pt")
    calls.clear()
    monkeypatch.setattr(bn, "affinity_loss", lambda *a: (calls.append(1), real_loss(*a))[1])
    assert main([*cli["base"], "--methods", spec]) == 0
    assert len(calls) == 1  # only epoch 2 was trained again
    assert not ckpt.exists()
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert set(records) >= {TINY_EFFNET, f"{TINY_EFFNET}+crf", f"{TINY_EFFNET}+crf+{TINY_AFFINITY}",
                            spec}
    assert records[spec]["output"] == "labels" and records[spec]["metrics"]["mIoU"] > 0
    assert records[f"{TINY_EFFNET}+crf+{TINY_AFFINITY}"]["weights"]["affinity"] == "packaged"
    calls.clear()
    cli["counts"].update(fit=0, refine=0)
    assert main([*cli["base"], "--methods", spec]) == 0
    assert calls == [] and cli["counts"] == {"fit": 0, "refine": 0}
