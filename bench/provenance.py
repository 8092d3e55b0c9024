"""What every record carries so a number can be traced: versions, git commit, date, host."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("smoke-wsss-bench", "torch", "torchvision", "timm", "numpy",
            "segmentation-models-pytorch", "pydensecrf2", "pandas", "scipy", "pillow")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a number (None if absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout ``bench`` runs from (None outside a checkout)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                     "--untracked-files=no"], check=True, capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def threads() -> dict[str, Any]:
    """The thread settings learned stages' last digits depend on: torch's intra-op threads
    (None where this process has not imported torch, e.g. a fully cached cell), the
    ``OMP_NUM_THREADS`` variable and the machine's CPU count."""
    torch = sys.modules.get("torch")
    return {"torch": torch.get_num_threads() if torch is not None else None,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}


def provenance() -> dict[str, Any]:
    """Versions, git state, date (UTC, ISO 8601), host, command line and thread settings."""
    return {
        "versions": package_versions(),
        "git": git_state(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "command": " ".join(sys.argv),
        "threads": threads(),
    }
