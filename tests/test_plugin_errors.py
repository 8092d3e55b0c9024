"""A plugin's exception is one line (plugin, stage, data set, what), exit code 2; --debug shows
the traceback; stages and records finished before it stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records

PLUGINS = '''
import os
from dataclasses import dataclass

import numpy as np

from bench import CamSource, Refiner, register_method


@register_method("err_good_cam")
class GoodCam(CamSource):
    """Brightness; logs each batch to $ERR_LOG."""

    @dataclass
    class Params:
        pass

    def compute(self, images):
        with open(os.environ["ERR_LOG"], "a") as fh:
            fh.write("cam\\n")
        return [im.mean(axis=2).astype(np.float32) / 255.0 for im in images]


@register_method("err_hot_cam")
class HotCam(CamSource):
    """Returns values up to 2."""

    @dataclass
    class Params:
        pass

    def compute(self, images):
        return [np.full(im.shape[:2], 2.0, np.float32) for im in images]


@register_method("err_small_refiner")
class SmallRefiner(Refiner):
    """Returns a map of the wrong shape."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        return cam[:-1]


@register_method("err_fixed_refiner")
class FixedRefiner(Refiner):
    """Passes the map through."""

    @dataclass
    class Params:
        pass

    def refine(self, sample, cam):
        return cam


@register_method("err_no_checkpoint")
class NoCheckpoint(CamSource):
    """Trainable; its fit reads a checkpoint that is not there."""

    trainable = True

    @dataclass
    class Params:
        checkpoint: str = "/nonexistent/model.pt"

    def fit(self, train, val):
        open(self.params.checkpoint, "rb")

    def compute(self, images):
        return [np.zeros(im.shape[:2], np.float32) for im in images]
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("errplugins")
    (folder / "errplugins.py").write_text(PLUGINS)
    return folder


def _run(plugin_dir: Path, root: Path, out: Path, methods: str, *extra: str) -> int:
    return main(["run", "--include", str(plugin_dir), "--methods", methods, "--datasets",
                 "smoke5k", "--data-root", f"smoke5k={root}", "--out", str(out),
                 "--n-boot", "10", *extra])


def _error_line(capsys: pytest.CaptureFixture) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("bench: error")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize(("method", "expected"), [
    ("err_hot_cam", "plugin 'err_hot_cam' (stage 1 of 'err_hot_cam', cam) on smoke5k, "
                    "computing maps of split 'test': ValueError: HotCam returned values "
                    "outside [0, 1] (min 2, max 2)"),
    ("err_good_cam+err_small_refiner",
     "plugin 'err_small_refiner' (stage 2 of 'err_good_cam+err_small_refiner', refiner) on "
     "smoke5k, computing maps of split 'test': ValueError: SmallRefiner.refine (sample "),
    ("err_no_checkpoint", "plugin 'err_no_checkpoint' (stage 1 of 'err_no_checkpoint', cam) on "
                          "smoke5k, training: FileNotFoundError: [Errno 2] No such file or "
                          "directory: '/nonexistent/model.pt'"),
])
def test_a_plugin_exception_is_one_line(plugin_dir: Path, smoke5k_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture, monkeypatch,
                                        method: str, expected: str) -> None:
    monkeypatch.setenv("ERR_LOG", str(tmp_path / "log"))
    monkeypatch.delenv("BENCH_DEBUG", raising=False)
    assert _run(plugin_dir, smoke5k_root, tmp_path / "out", method) == 2
    line = _error_line(capsys)
    assert expected in line
    assert line.endswith("(--debug shows the traceback)")


def test_debug_shows_the_traceback(plugin_dir: Path, smoke5k_root: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("BENCH_DEBUG", raising=False)
    assert _run(plugin_dir, smoke5k_root, tmp_path / "out", "err_hot_cam", "--debug") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in check_cam" in err
    monkeypatch.setenv("BENCH_DEBUG", "1")
    assert _run(plugin_dir, smoke5k_root, tmp_path / "out", "err_hot_cam") == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_import_error_in_a_plugin_file_names_the_file(smoke5k_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken_plugin.py").write_text(
        "import no_such_module_xyz\nfrom bench import CamSource, register_method\n\n\n"
        '@register_method("err_broken_import")\nclass Broken(CamSource):\n'
        '    """Never imports."""\n')
    assert _run(folder, smoke5k_root, tmp_path / "out", "err_broken_import") == 2
    line = _error_line(capsys)
    assert f"{folder.resolve() / 'broken_plugin.py'}: importing the plugin file failed: " \
           "ModuleNotFoundError: No module named 'no_such_module_xyz'" in line


def test_finished_stages_and_records_stay_valid(plugin_dir: Path, smoke5k_root: Path,
                                                tmp_path: Path, monkeypatch,
                                                capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("ERR_LOG", str(log))
    out = tmp_path / "out"
    assert _run(plugin_dir, smoke5k_root, out, "all_smoke") == 0
    before = load_records(out)
    assert _run(plugin_dir, smoke5k_root, out, "err_good_cam+err_small_refiner") == 2
    capsys.readouterr()
    after = load_records(out)
    assert [r for r in after if r["method"] == "all_smoke"] == before
    # the finished CAM stage is recorded, the failed refiner stage is not
    assert sorted(r["method"] for r in after) == ["all_smoke", "err_good_cam"]
    cam_calls = log.read_text().count("cam")
    assert cam_calls > 0
    # the CAM stage finished and is cached: the fixed pipeline reuses it
    assert _run(plugin_dir, smoke5k_root, out, "err_good_cam+err_fixed_refiner") == 0
    assert log.read_text().count("cam") == cam_calls
    methods = {r["method"] for r in load_records(out)}
    assert {"all_smoke", "err_good_cam", "err_good_cam+err_fixed_refiner"} <= methods
