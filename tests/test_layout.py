"""The code's shape: imports point one way (no cycles, lazy imports included), plugin kinds are
read from the source without a hand-kept list, include files may subclass each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import load_records

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Edges module -> project module it imports (top-level and lazy; TYPE_CHECKING aside)."""
    files = [*ROOT.glob("bench/**/*.py"), *ROOT.glob("methods/*.py")]
    mods = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING"
                       for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_bench_and_methods() -> None:
    graph = import_graph()
    assert graph.get("bench.runner")  # the graph is real
    assert cycles(graph) == []


def test_methods_import_only_the_public_api() -> None:
    import bench

    public = set(bench._EXPORTS)
    for path in sorted(ROOT.glob("methods/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench"):
                assert node.module == "bench", f"{path.name} imports {node.module}"
                assert {a.name for a in node.names} <= public, path.name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("bench.") for a in node.names), path.name


BASE = '''
from dataclasses import dataclass

import numpy as np

from bench import CamSource, register_method


@register_method("inc_base")
class BrightCam(CamSource):
    """Brightness as the smoke map (a base for another include file)."""

    @dataclass
    class Params:
        gain: float = 1.0

    def compute(self, images):
        return [np.clip(im.mean(axis=2) / 255.0 * self.params.gain, 0, 1).astype(np.float32)
                for im in images]
'''

CHILD = '''
from base_cam import BrightCam

from bench import register_method


@register_method("inc_child", gain=0.5)
class DimCam(BrightCam):
    """Half as bright: a subclass of a class in another include file."""

    demo = "inc_child+crf"
'''


def test_an_include_file_subclasses_another(tmp_path: Path, smoke5k_root: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from bench.plugins import METHODS

    folder = tmp_path / "inc"
    folder.mkdir()
    (folder / "base_cam.py").write_text(BASE)
    (folder / "child_cam.py").write_text(CHILD)
    assert main(["list", "--include", str(folder), "inc_*"]) == 0
    listing = capsys.readouterr().out
    assert "inc_child                cam" in listing and "inc_base                 cam" in listing
    # the kind and demo came from the source: nothing was imported to list them
    assert METHODS.entry("inc_child").obj is None
    assert METHODS.entry("inc_child").meta["demo"] == "inc_child+crf"
    out = tmp_path / "out"
    assert main(["run", "--include", str(folder), "--methods", "inc_base,inc_child",
                 "--datasets", "smoke5k", "--data-root", f"smoke5k={smoke5k_root}",
                 "--out", str(out), "--n-boot", "10"]) == 0
    child = METHODS.get("inc_child").cls
    base = METHODS.get("inc_base").cls
    assert issubclass(child, base)  # one class object: the base file was imported once
    recs = {r["method"]: r for r in load_records(out)}
    assert recs["inc_child"]["config"]["stages"][0]["params"] == {"gain": 0.5}
    assert set(recs) == {"inc_base", "inc_child"}
