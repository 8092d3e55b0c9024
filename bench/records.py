"""Run records: one JSON file per (method, data set, split, stage), plus per-image areas.

Layout under the run folder::

    records/<profile>/seed<seed>/<dataset>/<split>/<method-slug>.json
    records/<profile>/seed<seed>/<dataset>/<split>/<method-slug>.areas.npz   # for bootstraps
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import write_npz


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


def save_areas(record_file: Path, areas: np.ndarray, ids: list[str]) -> Path:
    """Store per-image areas beside a record (for paired bootstrap comparisons)."""
    path = record_file.with_suffix(".areas.npz")
    write_npz(path, {"areas": areas, "ids": np.array(ids)})
    return path


def load_areas(record_file: Path) -> tuple[np.ndarray, list[str]]:
    """Per-image areas and ids stored beside a record."""
    with np.load(record_file.with_suffix(".areas.npz")) as npz:
        return npz["areas"], [str(i) for i in npz["ids"]]


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
