"""Cached reruns (issue 18.1): splits loaded once per run, rendered synthetic frames kept on
disk (and rendered again when the generator changes), stage plans that let a fully cached cell
run without importing any plugin (no torch, no timm) and give the same keys and numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.records import load_records

ROOT = Path(__file__).resolve().parent.parent

#: a small synthetic data set (64 px scenes, few frames): fast to render and to train on
TINY_SYNTHETIC = '''name = "{name}"
description = "small synthetic set for cached-rerun tests"
loader = "synthetic"

[synthetic]
size = 64
smoke_rate = 0.5
smoke_coverage = 0.1

[synthetic.quick]
train = 12
val = 6
test = 8

[splits.train]
n = 12
seed = 1
chimney_given_smoke = 0.95
chimney_given_no_smoke = 0.2

[splits.val]
n = 6
seed = 2

[splits.test]
n = 8
seed = 3
'''

PLUGIN = '''
"""A CAM source whose output depends on a constant edited by a test; logs its batches."""
import os
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method

GAIN = {gain}


@register_method("plan_cam")
class PlanCam(CamSource):
    """Brightness times GAIN; logs every batch to $BENCH_TEST_LOG."""

    @dataclass
    class Params:
        scale: float = 1.0

    def compute(self, images):
        with open(os.environ["BENCH_TEST_LOG"], "a") as fh:
            fh.write("cam\\n")
        return [np.clip(im.mean(axis=2) / 255.0 * GAIN * self.params.scale, 0, 1)
                .astype(np.float32) for im in images]
'''


def tiny_dataset(folder: Path) -> str:
    """Write the small synthetic data set file into ``folder``; returns its (unique) name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"tinysyn{abs(hash(str(folder))) % 10**6}"
    (folder / f"{name}.toml").write_text(TINY_SYNTHETIC.format(name=name), encoding="utf-8")
    return name


def env() -> dict[str, str]:
    return {**os.environ, "BENCH_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def numbers(out: Path) -> dict[str, tuple]:
    """What a record says in numbers, by method."""
    return {r["method"]: (r.get("metrics"), r.get("ci"), r.get("threshold"), r.get("n_images"),
                          r.get("not_run"), r.get("config", {}).get("cache_key"))
            for r in load_records(out)}


# --------------------------------------------------------------------------- loaded once
def test_each_split_is_loaded_once_per_run(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.data.synthetic_cache as syn_cache

    name = tiny_dataset(tmp_path / "data")
    seen: list[int] = []
    original = syn_cache.cached_split

    def counting(config, seed, n, cache_dir):  # type: ignore[no-untyped-def]
        seen.append(seed)
        return original(config, seed, n, cache_dir)

    monkeypatch.setattr(syn_cache, "cached_split", counting)
    argv = ["run", "--include", str(tmp_path / "data"), "--datasets", name,
            "--out", str(tmp_path / "out"), "--n-boot", "20", "--no-progress",
            "--methods", "all_smoke,all_background,random,dark_channel+threshold"]
    assert main(argv) == 0
    # four cells, each scoring test and choosing thresholds on val: each split loaded once
    assert sorted(seen) == [2, 3]
    assert len(load_records(tmp_path / "out")) == 5


def test_shared_loads_hand_each_caller_its_own_split_data(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from bench.data import DATASETS, discover_datasets, load_splits
    from bench.data.loaders import LOADERS
    from bench.data.splits import shared_loads

    name = tiny_dataset(tmp_path / "data")
    discover_datasets([str(tmp_path / "data")])
    config = DATASETS.get(name)
    calls: list[str] = []
    loader = LOADERS.get("synthetic")

    def counting(cfg, split, root, profile):  # type: ignore[no-untyped-def]
        calls.append(split)
        return loader(cfg, split, root, profile)

    monkeypatch.setattr(LOADERS, "get", lambda kind: counting)
    with shared_loads():
        a = load_splits(config, None, splits=["test", "val"], index=tmp_path / "run")
        b = load_splits(config, None, splits=["test", "val"], index=tmp_path / "run")
        c = load_splits(config, None, splits=["test", "train", "val"], index=tmp_path / "run")
        a.splits["ood-test"] = a["test"]  # an out-of-distribution cell adds a split
        assert "ood-test" not in b.splits and "ood-test" not in c.splits
        assert a.fingerprints == b.fingerprints
        assert a["test"].refs[0].frame is c["test"].refs[0].frame  # the same frames
    assert sorted(calls) == ["test", "train", "val"]  # each split's loader ran once
    calls.clear()
    load_splits(config, None, splits=["test"], index=tmp_path / "run")  # outside: not shared
    load_splits(config, None, splits=["test"], index=tmp_path / "run")
    assert calls == ["test", "test"]


# --------------------------------------------------------------------------- synthetic cache
def test_synthetic_cache_hits_misses_and_matches_rendering(tmp_path: Path) -> None:
    import hashlib

    from bench.data.synthetic import SyntheticConfig, render
    from bench.data.synthetic_cache import cache_path, cached_split

    cfg = SyntheticConfig(size=48)
    first = cached_split(cfg, 5, 4, tmp_path)
    assert not first.cached and cache_path(tmp_path, cfg, 5, 4).is_file()
    again = cached_split(cfg, 5, 4, tmp_path)
    assert again.cached
    for i in range(4):
        item = render(i, 5, cfg)
        for got in (first, again):
            assert np.array_equal(got.images[i], item.image)
            assert np.array_equal(got.masks[i], item.mask)
            assert np.array_equal(got.chimney[i], item.chimney)
            assert np.array_equal(got.steam[i], item.steam)
            assert int(got.labels[i]) == item.label
            assert got.digests[i] == hashlib.sha1(np.ascontiguousarray(item.image)).hexdigest()
    # any knob, the stream and the number of scenes are part of the key
    for other in ((SyntheticConfig(size=48, smoke_rate=0.7), 5, 4), (cfg, 6, 4), (cfg, 5, 3)):
        assert cache_path(tmp_path, *other) != cache_path(tmp_path, cfg, 5, 4)
        assert not cached_split(*other, tmp_path).cached
    assert cached_split(cfg, 5, 4, None).cached is False  # no cache folder: rendered


def test_synthetic_cache_renders_again_when_the_generator_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.data.synthetic_cache as syn_cache
    from bench.code_digest import folder_digest
    from bench.data.synthetic import SyntheticConfig

    cfg = SyntheticConfig(size=40)
    assert not syn_cache.cached_split(cfg, 0, 2, tmp_path).cached
    assert syn_cache.cached_split(cfg, 0, 2, tmp_path).cached
    monkeypatch.setattr(syn_cache, "generator_digest", lambda: "edited-generator")
    assert not syn_cache.cached_split(cfg, 0, 2, tmp_path).cached  # never the stale file
    assert syn_cache.cached_split(cfg, 0, 2, tmp_path).cached
    monkeypatch.undo()
    # the generator digest follows every file of the package, as folder_digest does
    package = ROOT / "bench" / "data" / "synthetic"
    assert syn_cache.generator_digest() == folder_digest(package)
    copy = tmp_path / "generator"
    copy.mkdir()
    for path in package.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    before = folder_digest(copy)
    plumes = copy / "plumes.py"
    plumes.write_text(plumes.read_text(encoding="utf-8").replace("0.5", "0.6", 1),
                      encoding="utf-8")
    assert folder_digest(copy) != before


def test_unreadable_synthetic_cache_file_is_rendered_again(tmp_path: Path) -> None:
    from bench.data.synthetic import SyntheticConfig
    from bench.data.synthetic_cache import cache_path, cached_split

    cfg = SyntheticConfig(size=40)
    good = cached_split(cfg, 1, 2, tmp_path)
    cache_path(tmp_path, cfg, 1, 2).write_bytes(b"not a zip file")
    again = cached_split(cfg, 1, 2, tmp_path)
    assert not again.cached and np.array_equal(again.images, good.images)
    assert cached_split(cfg, 1, 2, tmp_path).cached


# --------------------------------------------------------------------------- torch-free rerun
RUN = """
import sys
from bench.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "timm") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(rc)
"""


def run_bench(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``bench`` in a fresh interpreter; its stderr ends with the heavy modules it imported."""
    done = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True,
                          cwd=cwd, env=env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_fully_cached_rerun_imports_neither_torch_nor_timm(tmp_path: Path) -> None:
    name = tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    methods = "all_smoke,effnet+crf,effnet[normalize=sigmoid]"
    argv = ["run", "--include", str(tmp_path / "data"), "--datasets", name, "--out", str(out),
            "--n-boot", "30", "--methods", methods]
    first = run_bench(argv, tmp_path)
    assert "HEAVY=timm,torch" in first.stderr  # effnet trained: torch was needed
    assert "cached:" not in first.stderr
    fresh, board = numbers(out), (out / "leaderboard.md").read_text(encoding="utf-8")

    again = run_bench(argv, tmp_path)
    assert "HEAVY=\n" in again.stderr, again.stderr[-2000:]
    for method in ("all_smoke", "effnet+crf", "effnet[normalize=sigmoid]"):
        assert f"cached: {method} on {name}/test" in again.stderr
    # records scored from these maps by this code are kept, not scored again
    assert f"cached: effnet+crf on {name}/test: 2 stage(s), 2 record(s) kept" in again.stderr
    # the same records in numbers and keys, the same leaderboard, byte for byte
    assert numbers(out) == fresh
    assert (out / "leaderboard.md").read_text(encoding="utf-8") == board
    # records gone: the cached rerun scores the cached maps again, to the same numbers
    shutil.rmtree(out / "records")
    rescored = run_bench(argv, tmp_path)
    assert "HEAVY=\n" in rescored.stderr, rescored.stderr[-2000:]
    assert rescored.stderr.count("0 record(s) kept") == 3
    assert numbers(out) == fresh
    assert (out / "leaderboard.md").read_text(encoding="utf-8") == board
    # the run log says which cells were read from the cache
    run_id = json.loads((out / "runs" / "last.json").read_text(encoding="utf-8"))["run_id"]
    cells = sorted((out / "runs" / run_id / "cells").glob("*.json"))
    assert len(cells) == 3
    assert all(json.loads(p.read_text(encoding="utf-8")).get("cached") is True for p in cells)

    # a new method next to cached ones: only its cell imports the plugin classes
    more = run_bench([*argv[:-1], f"{methods},effnet[normalize=max]"], tmp_path)
    assert "HEAVY=timm,torch" in more.stderr
    assert f"cached: effnet+crf on {name}/test" in more.stderr, more.stderr[-3000:]
    assert f"cached: effnet[normalize=max] on {name}/test" not in more.stderr
    assert {k: v for k, v in numbers(out).items() if k in fresh} == fresh


def test_plan_keys_equal_the_keys_the_plugin_classes_give(tmp_path: Path) -> None:
    """Every pipeline of the default run (methods ``*``): the cache keys computed from its plan
    (no plugin imported) equal those computed from the plugin classes, and so do the stage
    configs, outputs, weights and not-runnable answers."""
    from bench.data import discover_datasets
    from bench.plans import PlanStore
    from bench.plugins import discover
    from bench.runner import Cell, CellRunner, RunOptions
    from bench.spec import expand_methods

    name = tiny_dataset(tmp_path / "data")
    include = [str(tmp_path / "data")]
    discover(include)
    discover_datasets(include)
    options = RunOptions(out=tmp_path / "out", include=include, progress=False)
    specs = expand_methods("*")
    assert len(specs) > 10
    for spec in specs:
        cell = Cell(spec.text, name, "test", options, optional=True)
        store = PlanStore(options.out / "cache", include)
        classes = CellRunner(cell, store=store)
        assert not classes.planned
        store.save_infos(spec.text, options.profile, classes.infos)
        planned = CellRunner(cell, plan=True, store=PlanStore(options.out / "cache", include))
        assert planned.planned, spec.text
        data = classes.load_data()
        want = [(s.key, s.model_key, s.trains, s.spec_text) for s in classes.stage_states(data)]
        got = [(s.key, s.model_key, s.trains, s.spec_text) for s in planned.stage_states(data)]
        assert got == want, spec.text
        assert json.dumps(planned.configs, sort_keys=True) == \
            json.dumps(classes.configs, sort_keys=True)
        assert planned.outputs == classes.outputs and planned.weights == classes.weights
        assert [str(e) if e else None for e in planned.not_runnable] == \
            [str(e) if e else None for e in classes.not_runnable]
        assert planned.spec.text == classes.spec.text


def test_a_stale_plan_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited plugin file makes every plan stale: the rerun asks the classes again and
    recomputes the edited stage (its code digest changed)."""
    name = tiny_dataset(tmp_path / "data")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "plan_cam.py").write_text(PLUGIN.format(gain=1.0), encoding="utf-8")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("BENCH_TEST_LOG", str(log))
    argv = ["run", "--include", str(tmp_path / "data"), "--include", str(plugins),
            "--datasets", name, "--out", str(tmp_path / "out"), "--n-boot", "20",
            "--no-progress", "--methods", "plan_cam"]
    assert main(argv) == 0 and log.read_text().count("cam") > 0
    log.unlink()
    assert main(argv) == 0 and not log.exists()  # cached
    before = numbers(tmp_path / "out")["plan_cam"]
    (plugins / "plan_cam.py").write_text(PLUGIN.format(gain=0.5), encoding="utf-8")
    assert main(argv) == 0 and log.read_text().count("cam") > 0  # recomputed
    after = numbers(tmp_path / "out")["plan_cam"]
    assert after[-1] != before[-1]  # another cache key


def test_plan_follows_files_that_parameters_name(tmp_path: Path) -> None:
    """``not_runnable`` may depend on a file a parameter names: a plan is stale once that file
    appears (or disappears)."""
    from bench.plans import PlanStore, StageInfo

    checkpoint = tmp_path / "weights.pt"
    info = StageInfo(name="x", text=f"x[checkpoint={checkpoint}]", kind="refiner",
                     output="soft", config={"name": "x", "kind": "refiner",
                                            "params": {"checkpoint": str(checkpoint)}},
                     code="c0de", trainable=False, baseline=False, segmenter=False,
                     needs_pseudo_labels=True, uses_input_threshold=False,
                     inference_params=(), weights=None,
                     not_runnable=("checkpoint file not found", "pass checkpoint=PATH"))
    store = PlanStore(tmp_path / "cache", tree="t")
    store._write(store._path("stages", spec=info.text, profile="quick"),
                 {"paths": {str(checkpoint): False}, "stages": [info.__dict__]})
    (got,) = store.infos(info.text, "quick") or [None]
    assert got == info and got.blocked() is not None
    checkpoint.write_bytes(b"weights")
    assert store.infos(info.text, "quick") is None
    assert PlanStore(tmp_path / "cache", tree="other").infos(info.text, "quick") is None


def test_cli_start_and_plans_module_stay_torch_free() -> None:
    code = textwrap.dedent("""
        import sys
        import bench.cli, bench.plans, bench.runner, bench.executors
        import bench.data.synthetic_cache
        heavy = [m for m in ("torch", "timm", "pandas") if m in sys.modules]
        assert not heavy, heavy
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT / "tests", env=env())
    assert done.returncode == 0, done.stderr
