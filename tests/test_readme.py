"""The README's examples run: the "Adding a method" plugin goes through `bench run --include`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_adding_a_method_example_trains_caches_and_scores(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    text = section("Adding a method")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    code = blocks[0]
    name = re.search(r'@register_method\("(\w+)"\)', code).group(1)
    assert "trainable = True" in code
    for hook in ("fit", "compute", "save", "load"):
        assert f"    def {hook}(self" in code, hook
    include = tmp_path / "plugins"
    include.mkdir()
    (include / f"{name}.py").write_text(code, encoding="utf-8")
    out = tmp_path / "out"
    # the spec the README's text runs, with a refiner after it
    spec = re.search(rf"--methods '({name}\[[^']*\]\+crf)'", text).group(1)
    run = ["run", "--include", str(include), "--datasets", "synthetic", "--limit", "8",
           "--n-boot", "10", "--out", str(out), "--no-progress"]
    assert main([*run, "--methods", f"{name},{spec}"]) == 0
    capsys.readouterr()
    records = sorted((out / "records").rglob("*.json"))
    methods = {json.loads(p.read_text())["method"] for p in records}
    assert {name, spec, spec.rsplit("+", 1)[0]} <= methods
    saved = sorted(out.glob("cache/*/model/*.npy"))
    assert len(saved) == 2  # one trained state per parameter setting, written by save()
    first = {p: p.stat().st_mtime_ns for p in saved}

    assert main([*run, "--methods", name]) == 0  # a rerun loads the trained state
    assert {p: p.stat().st_mtime_ns for p in sorted(out.glob("cache/*/model/*.npy"))} == first
    capsys.readouterr()

    assert main(["show", name, "--include", str(include)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{name}: cam, trainable\n")
    assert re.search(r"\n  bins +int +16 +8 +16 +histogram bins per RGB channel\n", shown)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """`.ci/run` and the README's second fresh-machine command stay one command."""
    blocks = re.findall(r"```bash\n(.*?)\n```", section("Fresh machine: two commands"), re.S)
    assert len(blocks) == 2
    main_job, tests = blocks
    assert main_job.endswith("bench run && bench report")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == tests
