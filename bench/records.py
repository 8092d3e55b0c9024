"""Run records: one JSON file per (method, data set, split, stage), plus per-image areas.

Layout under the run folder::

    records/<profile>/seed<seed>/<dataset>/<split>/<method-slug>.json
    records/<profile>/seed<seed>/<dataset>/<split>/<method-slug>.areas.npz   # per frame
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import write_json, write_npz


def slug(method: str) -> str:
    """A file name for a method spec: readable, and unique thanks to a short hash."""
    readable = re.sub(r"[^A-Za-z0-9_.+-]+", "-", method).strip("-")[:80]
    digest = hashlib.sha1(method.encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def record_dir(out: Path, profile: str, seed: int, dataset: str, split: str) -> Path:
    return out / "records" / profile / f"seed{seed}" / dataset / split


def record_path(out: Path, rec: dict[str, Any]) -> Path:
    """Where the record ``rec`` is stored."""
    name = rec["method"]
    if rec.get("train_dataset", rec["dataset"]) != rec["dataset"]:
        name = f"{name}@{rec['train_dataset']}"  # trained elsewhere: out of distribution
    return record_dir(out, rec["profile"], rec["seed"], rec["dataset"], rec["split"]) / (
        slug(name) + ".json")


def write_record(out: Path, rec: dict[str, Any], areas: np.ndarray, ids: list[str],
                 units: list[str] | None = None) -> Path:
    """Write one stage's record (atomically) with its per-frame areas; returns its path.

    A longer pipeline that recomputes a prefix must not demote a method that was run on its
    own: the leaderboard lists records whose ``pipeline`` is the method itself, so such a
    record keeps ``pipeline == method``.
    """
    path = record_path(out, rec)
    if path.exists() and rec["pipeline"] != rec["method"]:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("pipeline") == old.get("method"):
            rec["pipeline"] = rec["method"]
    save_areas(path, areas, ids, units)
    write_json(path, rec)
    return path


def write_not_run_record(out: Path, rec: dict[str, Any]) -> Path:
    """Write the record of a stage that did not run (``rec["not_run"]`` says why): no areas,
    and the areas of an earlier scored record at the same place are removed."""
    path = record_path(out, rec)
    path.with_suffix(".areas.npz").unlink(missing_ok=True)
    write_json(path, rec)
    return path


def save_areas(record_file: Path, areas: np.ndarray, ids: list[str],
               units: list[str] | None = None) -> Path:
    """Store per-frame areas beside a record (for paired bootstrap comparisons).

    ``units`` gives each frame's bootstrap unit (the frame itself, or its video clip).
    """
    path = record_file.with_suffix(".areas.npz")
    write_npz(path, {"areas": areas, "ids": np.array(ids),
                     "units": np.array(ids if units is None else units)})
    return path


def load_areas(record_file: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Per-frame areas, frame ids and bootstrap units stored beside a record."""
    with np.load(record_file.with_suffix(".areas.npz")) as npz:
        ids = [str(i) for i in npz["ids"]]
        units = [str(u) for u in npz["units"]] if "units" in npz.files else ids
        return npz["areas"], ids, units


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every record under ``out/records`` (unreadable files are reported, not skipped silently)."""
    from bench.errors import InputError

    records = []
    for path in sorted((out / "records").rglob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(path, f"unreadable record ({exc})") from None
        rec["_path"] = str(path)
        records.append(rec)
    return records
