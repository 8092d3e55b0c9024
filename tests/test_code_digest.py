"""Editing a plugin recomputes it (and everything downstream); unchanged code keeps its cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.code_digest import source_files
from bench.records import load_records

PLUGIN = '''
"""A CAM source for the code-digest tests; its map comes from the helper module beside it."""
from dataclasses import dataclass

import numpy as np
from helper_{tag} import brightness

from bench import CamSource, register_method


@register_method("edited_cam_{tag}")
class EditedCam(CamSource):
    """Brightness (or its inverse) as the smoke map."""

    @dataclass
    class Params:
        pass

    def compute(self, images):
        return [{expr} for im in images]
'''

HELPER = '''
import numpy as np


def brightness(im):
    return np.clip({offset} + im.mean(axis=2) / 255.0 * {gain}, 0, 1).astype(np.float32)
'''


def _write(folder: Path, tag: str, expr: str, gain: float, offset: float = 0.0) -> None:
    (folder / f"edited_{tag}.py").write_text(PLUGIN.format(tag=tag, expr=expr))
    (folder / f"helper_{tag}.py").write_text(HELPER.format(gain=gain, offset=offset))


def _cache_state(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in (out / "cache").rglob("*") if p.is_file() and p.name != "file-index.json"}


def _run(include: Path, method: str, dataset_dir: Path, root: Path, out: Path) -> float:
    """``bench run`` in a new process, as a user reruns it (the plugin file imports its helper
    beside it by name: include folders resolve sibling imports)."""
    env = {**os.environ, "BENCH_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--include", str(include), "--include",
         str(dataset_dir), "--methods", method, "--datasets", "digest", "--data-root",
         f"digest={root}", "--out", str(out), "--n-boot", "20"],
        env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    recs = {r["method"]: r for r in load_records(out)}
    return recs[method]["metrics"]["mIoU"]


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "digest.toml").write_text(
        'name = "digest"\nloader = "folder_pairs"\n[splits]\ntrain = "train"\ntest = "test"\n')
    return folder


def test_editing_a_plugin_file_recomputes_it(tmp_path: Path, smoke5k_root: Path,
                                             dataset_dir: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    tag = "a"
    _write(plugins, tag, "brightness(im)", 1.0)
    out = tmp_path / "results"
    method = f"edited_cam_{tag}+crf"
    first = _run(plugins, method, dataset_dir, smoke5k_root, out)
    cached = _cache_state(out)

    _write(plugins, tag, "1.0 - brightness(im)", 1.0)
    second = _run(plugins, method, dataset_dir, smoke5k_root, out)
    assert second != first
    after_edit = _cache_state(out)
    new = set(after_edit) - set(cached)
    # both the edited CAM and the CRF downstream of it computed new maps
    assert len({p.split(os.sep)[1] for p in new if "maps-" in p}) == 2

    third = _run(plugins, method, dataset_dir, smoke5k_root, out)
    assert third == second
    assert _cache_state(out) == after_edit  # nothing recomputed, nothing rewritten


def test_editing_a_helper_module_recomputes_too(tmp_path: Path, smoke5k_root: Path,
                                                dataset_dir: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    tag = "b"
    _write(plugins, tag, "brightness(im)", 1.0)
    out = tmp_path / "results"
    first = _run(plugins, f"edited_cam_{tag}", dataset_dir, smoke5k_root, out)
    _write(plugins, tag, "brightness(im)", -1.0, 1.0)  # only the helper changes: inverted
    second = _run(plugins, f"edited_cam_{tag}", dataset_dir, smoke5k_root, out)
    assert second != first


def test_source_files_cover_the_plugin_its_bases_and_helpers() -> None:
    from bench.plugins import METHODS, builtin_dir, discover

    discover()
    methods = builtin_dir("methods")
    names = {p.relative_to(methods.parent).as_posix()
             for p in source_files(METHODS.get("resnet50").cls, (methods,))}
    assert {"methods/resnet.py", "bench/nn/classifier_cam.py", "bench/nn/timm_net.py",
            "bench/nn/train.py", "bench/weights.py", "bench/stages.py"} <= names
    assert "bench/runner.py" not in names and "bench/table.py" not in names
    # harness modules that cannot change a plugin's output are left out
    assert not names & {"bench/plugins.py", "bench/registry.py", "bench/__init__.py"}
    # a subpackage's __init__ stands for the modules it re-exports
    seg = {p.relative_to(methods.parent).as_posix()
           for p in source_files(METHODS.get("deeplabv3plus").cls, (methods,))
           if methods.parent in p.parents}
    assert "bench/metrics/areas.py" in seg


def test_the_compiled_extension_counts_for_the_plugins_that_call_it() -> None:
    from bench.code_digest import extension_file
    from bench.plugins import METHODS, discover

    discover()
    built = extension_file("_bilateral")
    assert built is not None and built.suffix in (".so", ".pyd")
    for name in ("crf", "affinity", "deeplabv3plus"):  # deeplabv3plus: infer_crf, crf loss
        assert built in source_files(METHODS.get(name).cls), name
    assert built not in source_files(METHODS.get("effnet").cls)


def test_plans_go_stale_when_the_compiled_extension_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.code_digest as cd
    from bench.plans import tree_digest

    fake = tmp_path / "_bilateral.so"
    fake.write_bytes(b"one build")
    monkeypatch.setattr(cd, "extension_file", lambda name: fake)
    before = tree_digest()
    fake.write_bytes(b"another build")
    assert tree_digest() != before
