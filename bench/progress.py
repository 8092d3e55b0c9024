"""Progress bars (tqdm) that go quiet when disabled or when output is not a terminal in CI."""

from __future__ import annotations

import os
import sys
from typing import Any


def progress(iterable: Any = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar on stderr (wrapping ``iterable`` if given); off with ``enabled=False`` or
    ``BENCH_PROGRESS=0``, and when stderr is not a terminal."""
    from tqdm.auto import tqdm

    if os.environ.get("BENCH_PROGRESS", "1") == "0":
        enabled = False
    # disable=None: tqdm hides the bar when stderr is not a terminal (CI logs stay readable)
    disable = True if not enabled else None
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, file=sys.stderr,
                dynamic_ncols=True, **kw)
