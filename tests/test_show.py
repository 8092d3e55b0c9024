"""`bench show NAME` / `bench list NAME`: a plugin's parameters with types, defaults and profile
values, read without importing torch; names listed in natural order everywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.describe import _from_class, describe
from bench.plugins import METHODS, discover


def rows(out: str) -> dict[str, list[str]]:
    """The parameter table of `bench show` output: name -> its cells (split on 2+ spaces)."""
    import re

    table = out.split("parameters (set as", 1)[1].splitlines()[2:]
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in table)
            if cells and cells[0]}


def test_show_prints_types_defaults_and_profile_values(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "effnet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("effnet: cam, trainable\n")
    assert "registered with: backbone=tf_efficientnet_lite0, weights=package" in out
    assert "EfficientNet-Lite0 CAM, ImageNet-pretrained offline" in out  # the docstring
    header = out.split("parameters (set as", 1)[1].splitlines()[1].split()
    assert header == ["parameter", "type", "default", "quick", "full", "help"]
    table = rows(out)
    # class default 224; effnet's quick profile sets 128; full keeps the default
    assert table["input_size"][:5] == ["input_size", "int", "224", "128", "224"]
    assert table["input_size"][5] == "training resolution (square); crops are taken at this size."
    assert table["lr"][:5] == ["lr", "float", "0.0001", "0.001", "0.0001"]
    # registered defaults beat the class default and the profiles
    assert table["backbone"][2:5] == ["tf_efficientnet_lite0"] * 3
    assert table["layers"][1:3] == ["tuple[str, ...]", '""']
    assert table["amp"][1:3] == ["bool", "true"]


def test_show_of_a_name_registered_with_defaults(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "resnet101", "crf"]) == 0
    out = capsys.readouterr().out
    resnet, crf = out.split("\ncrf: refiner\n")
    assert rows(resnet)["backbone"][2:5] == ["resnet101"] * 3  # the class default is resnet50
    assert rows(resnet)["weights"][2:5] == ["hub", "none", "hub"]
    assert rows(crf)["iterations"] == ["iterations", "int", "10", "10", "10", "mean-field steps"]


def test_list_with_an_exact_name_shows_it(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "supervised"]) == 0
    shown = capsys.readouterr().out
    assert main(["list", "supervised"]) == 0
    assert capsys.readouterr().out == shown
    table = rows(shown)
    assert table["encoder"][2:5] == ["resnet101", "efficientnet_lite2", "resnet101"]
    assert table["atrous_rates"][1:5] == ["tuple[int, ...]", "6:12:18", "6:12:18", "6:12:18"]


def test_show_unknown_name_suggests(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "efnet"]) == 2
    assert "unknown method 'efnet'. Did you mean 'effnet'" in capsys.readouterr().err


def test_show_a_data_set(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("synthetic: data set\n")
    assert "loader:" in out and "synthetic.toml" in out


def test_show_does_not_import_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from bench.cli import main
        assert main(["show", "effnet", "consistency", "supervised", "mmseg", "fusion"]) == 0
        assert main(["list", "resnet50"]) == 0
        heavy = [m for m in ("torch", "timm", "pandas", "segmentation_models_pytorch")
                 if m in sys.modules]
        assert not heavy, heavy
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    assert "teacher" in out.stdout and "config" in out.stdout


def test_files_read_agree_with_the_imported_classes() -> None:
    """The ast reading of every built-in plugin gives what its imported class holds."""
    from bench.plugins import builtin_dir

    discover()
    builtin = builtin_dir("methods").resolve()
    names = [e.name for e in METHODS.entries() if Path(e.origin).parent == builtin]
    assert len(names) >= 15 and "effnet" in names and "crf" in names
    for name in names:
        read, imported = describe(name), _from_class(name)
        assert read.source == "ast", name
        assert (read.kind, read.trainable, read.registered, read.profiles) == (
            imported.kind, imported.trainable, imported.registered, imported.profiles), name
        assert [(p.name, p.type, p.default, p.profiles) for p in read.params] == [
            (p.name, p.type, p.default, p.profiles) for p in imported.params], name


HELPER = '''
from dataclasses import dataclass
from bench import CamSource

LEVEL = 0.25


class Constant(CamSource):
    @dataclass
    class Params:
        level: float = LEVEL * 2  # the constant value
        note: str = ""

    profiles = {"quick": {"level": 0.1}}
'''

PLUGIN = '''
"""Plugins built on a helper file of the include folder."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np

from bench import register_method
from helper_base import Constant

SCALES = (0.5, 1.0)


@register_method("typed_show", note="registered")
class Typed(Constant):
    """A typed plugin.

    More text.
    """

    trainable = True

    @dataclass
    class Params(Constant.Params):
        """center: CAM value read as 0.5; none: calibrated.
        mode: how to merge; scales: the factors."""

        center: Optional[float] = None
        mode: Literal["mean", "max"] = "max"
        scales: tuple[float, ...] = SCALES
        ids: list[int] = field(default_factory=list)
        out_dir: Path = Path("maps")

    profiles: ClassVar[dict[str, Any]] = {
        "quick": {**Constant.profiles["quick"], "scales": (1.0,)},
        "full": {"mode": "mean", "center": 0.5},
    }

    def compute(self, images):
        return [np.full(im.shape[:2], self.params.level, np.float32) for im in images]


def _profile() -> dict[str, Any]:
    return {"quick": {"level": 0.3}}


@register_method("computed_show")
class Computed(Constant):
    """Profiles computed by a call: described from the imported class."""

    profiles = _profile()

    def compute(self, images):
        return [np.full(im.shape[:2], self.params.level, np.float32) for im in images]
'''


def test_show_an_include_plugin(tmp_path: Path, capsys: pytest.CaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "helper_base.py").write_text(HELPER)  # registers nothing: no plugin in it
    (tmp_path / "typed_show.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))  # so that the plugin file's import works
    assert main(["show", "typed_show", "--include", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("typed_show: cam, trainable\n")
    assert "registered with: note=registered" in out and "More text." in out
    table = rows(out)
    assert table["level"] == ["level", "float", "0.5", "0.1", "0.5", "the constant value"]
    assert table["note"][:5] == ["note", "str", "registered", "registered", "registered"]
    assert table["center"] == ["center", "float or None", "none", "none", "0.5",
                               "CAM value read as 0.5; none: calibrated."]
    assert table["mode"] == ["mode", "one of 'mean', 'max'", "max", "max", "mean",
                             "how to merge"]
    assert table["scales"] == ["scales", "tuple[float, ...]", "0.5:1.0", "1.0", "0.5:1.0",
                               "the factors."]
    assert table["ids"][:5] == ["ids", "list[int]", '""', '""', '""']
    assert table["out_dir"][:5] == ["out_dir", "Path", "maps", "maps", "maps"]
    assert describe("typed_show").source == "ast"

    computed = describe("computed_show")
    assert computed.source == "class"
    assert {p.name: p.profiles["quick"] for p in computed.params} == {"level": 0.3, "note": ""}


def test_names_are_listed_in_natural_order(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "res*"]) == 0
    out = capsys.readouterr().out
    assert out.index("resnet50 ") < out.index("resnet101 ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    epilog = capsys.readouterr().out
    assert epilog.index("  resnet50 ") < epilog.index("  resnet101 ")


def test_tables_order_names_naturally() -> None:
    from bench.table import grid, leaderboard

    base = {"stage": "", "stage_kind": "cam", "split": "test", "profile": "quick", "seed": 0,
            "n": 4, "level": "pixel", "date": "", "thr": 0.5, "ci_lo": 0.4, "ci_hi": 0.6,
            "IoU_smoke": 0.1, "precision": 0.1, "recall": 0.1, "F1": 0.1, "accuracy": 0.9}
    recs = [{**base, "method": m, "pipeline": m, "dataset": d, "train_dataset": d, "mIoU": v}
            for m, d, v in [("resnet101", "set10", 0.5), ("resnet50", "set10", 0.5),
                            ("resnet152", "set10", 0.6), ("resnet101", "set9", 0.5),
                            ("resnet50", "set9", 0.5)]]
    board = leaderboard(pd.DataFrame(recs))
    assert list(zip(board["dataset"], board["method"], strict=True)) == [
        ("set9", "resnet50"), ("set9", "resnet101"),  # ties: natural name order
        ("set10", "resnet152"), ("set10", "resnet50"), ("set10", "resnet101")]

    lams = [10, 2, 0.5, 1]
    recs = [{**base, "method": f"c[lam={lam}]", "pipeline": f"c[lam={lam}]",
             "dataset": "set9", "mIoU": 0.5, "stages": [{"name": "c", "params": {"lam": lam}}]}
            for lam in lams]
    table = grid(pd.DataFrame(recs), "c", ["lam"])
    assert list(table["lam"]) == [0.5, 1, 2, 10]  # by value, not as text ("10" < "2")
