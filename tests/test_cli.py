"""The command line: one-line errors with exit code 2, tables from records, comparisons."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records


def run_tiny(tmp_path: Path, root: Path, methods: str, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "results"
    code = main(["run", "--methods", methods, "--datasets", "smoke5k", "--data-root",
                 f"smoke5k={root}", "--out", str(out), "--n-boot", "50", *extra])
    return code, out


def test_missing_data_root_says_what_to_set(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMOKE5K_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--methods", "all_smoke", "--datasets", "smoke5k", "--out",
                 str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "--data-root smoke5k=PATH or set SMOKE5K_ROOT" in err


def test_bad_data_root_flag(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--data-root", "smoke5k", "--methods", "all_smoke"]) == 2
    assert "--data-root expects NAME=PATH" in capsys.readouterr().err


def test_unknown_method_and_dataset(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--methods", "all_smok"]) == 2
    assert "Did you mean 'all_smoke'" in capsys.readouterr().err
    assert main(["run", "--methods", "all_smoke", "--datasets", "smoke5"]) == 2
    assert "Did you mean 'smoke5k'" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["corrupt image", "mask size", "mask values"])
def test_bad_input_names_the_file_and_keeps_records(tmp_path: Path, smoke5k_root: Path,
                                                    problem: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    code, out = run_tiny(tmp_path, smoke5k_root, "all_smoke")
    assert code == 0
    before = {p: p.read_bytes() for p in (out / "records").rglob("*")if p.is_file()}
    if problem == "corrupt image":
        bad = smoke5k_root / "test" / "img" / "test_01.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif problem == "mask size":
        bad = smoke5k_root / "test" / "gt" / "test_01.png"
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad)
    else:
        bad = smoke5k_root / "test" / "gt" / "test_01.png"
        Image.fromarray(np.full((48, 64), 7, np.uint8)).save(bad)
    capsys.readouterr()
    code, _ = run_tiny(tmp_path, smoke5k_root, "random")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) <= 3 and err[-1].startswith(f"bench: error: {bad}: ")
    expected = {"corrupt image": "cannot", "mask size": "mask is 10x10 but its image is 64x48",
                "mask values": "mask values 7 are outside encoding 'binary255'"}[problem]
    assert expected in err[-1]
    after = {p: p.read_bytes() for p in (out / "records").rglob("*") if p.is_file()}
    assert after == before


def test_tables_from_records(tmp_path: Path, smoke5k_root: Path,
                             capsys: pytest.CaptureFixture) -> None:
    code, out = run_tiny(tmp_path, smoke5k_root, "all_smoke,random,dark_channel+threshold")
    assert code == 0
    capsys.readouterr()
    assert main(["table", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| method") and "dark_channel+threshold" in md
    assert main(["table", "--out", str(out), "--format", "latex"]) == 0
    assert "\\toprule" in capsys.readouterr().out
    assert main(["table", "--out", str(out), "--format", "csv", "--pivot", "datasets"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0] == "method,smoke5k" and len(csv) == 4
    assert main(["table", "--out", str(out), "--ablation", "dark_channel+threshold"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "dark_channel " in rows[2] and "+threshold" in rows[3]
    recs = {r["method"]: r for r in load_records(out)}
    shown = f"{100 * recs['dark_channel+threshold']['metrics']['mIoU']:.2f}"
    assert shown in rows[3]
    # a pipeline whose records are not in the run folder is an error, not a row of NaN
    assert main(["table", "--out", str(out), "--ablation", "dark_channel+crf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench: error: --ablation 'dark_channel+crf': no records of "
                   "'dark_channel+crf' (bench run --methods 'dark_channel+crf' with the same "
                   "options writes them)"]


def test_compare_paired_bootstrap(tmp_path: Path, smoke5k_root: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    code, out = run_tiny(tmp_path, smoke5k_root, "all_smoke,all_background")
    assert code == 0
    capsys.readouterr()
    assert main(["compare", "all_smoke", "all_smoke", "--dataset", "smoke5k", "--out",
                 str(out)]) == 0
    assert "= +0.00 (95% CI [+0.00, +0.00]" in capsys.readouterr().out
    assert main(["compare", "all_smoke", "nothing", "--dataset", "smoke5k", "--out",
                 str(out)]) == 2
    assert "no record of 'nothing'" in capsys.readouterr().err
