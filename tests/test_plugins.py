"""Plugin discovery: ast scan without imports, include folders, entry points, fast CLI start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.plugins import METHODS, discover, method_kind, scan_file

PLUGIN = '''
"""A user plugin in its own folder."""
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method

IMPORTED = True


class Half(CamSource):
    @dataclass
    class Params:
        value: float = 0.5

    def compute(self, images):
        return [np.full(im.shape[:2], self.params.value, np.float32) for im in images]


@register_method("{name}")
class UserCam(Half):
    """Constant map: the user's own method."""
'''


def test_scan_reads_name_kind_summary_without_importing(tmp_path: Path) -> None:
    path = tmp_path / "user_cam.py"
    path.write_text(PLUGIN.format(name="user_cam_scan"))
    assert scan_file(path) == ["user_cam_scan"]
    entry = METHODS.entry("user_cam_scan")
    assert entry.obj is None  # not imported yet
    assert entry.summary == "Constant map: the user's own method."
    assert entry.meta["kind"] == "cam"  # via the local base class Half(CamSource)
    info = METHODS.get("user_cam_scan")
    assert info.cls.__name__ == "UserCam" and info.cls.kind == "cam"
    assert method_kind("user_cam_scan") == "cam"


def test_include_folder_adds_method(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(PLUGIN.format(name="user_cam_include"))
    discover([tmp_path])
    assert "user_cam_include" in METHODS.names("user_*")


def test_include_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        discover([tmp_path / "missing"])


def test_duplicate_plugin_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(PLUGIN.format(name="user_cam_dup"))
    (tmp_path / "b.py").write_text(PLUGIN.format(name="user_cam_dup"))
    with pytest.raises(ConfigError, match="duplicate method name 'user_cam_dup'"):
        discover([tmp_path])


def test_entry_point_plugins_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site"
    (pkg / "extpkg").mkdir(parents=True)
    (pkg / "extpkg" / "__init__.py").write_text(PLUGIN.format(name="ext_cam"))
    dist = pkg / "extpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[smoke_wsss_bench.plugins]\next_cam = extpkg:UserCam\n")
    monkeypatch.syspath_prepend(str(pkg))
    discover()
    assert METHODS.entry("ext_cam").obj is None
    assert METHODS.get("ext_cam").cls.__name__ == "UserCam"


def test_cli_list_does_not_import_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from bench.cli import main
        assert main(["list"]) == 0
        heavy = [m for m in ("torch", "timm", "pandas") if m in sys.modules]
        assert not heavy, heavy
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    assert "random" in out.stdout and "synthetic" in out.stdout
