"""`MultiSourceCam`: a CAM source built on other pipelines (``fusion``, a teacher, ...).

Import-light (no torch): the sources are whole pipelines the runner prepares (`bench.runner`
calls ``sources()`` and ``bind_sources()``); this class only declares them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.sample import Sample
from bench.spec import split_top_level
from bench.stages import CamSource, RunContext


class MultiSourceCam(CamSource):
    """A CAM source built on other pipelines (``fusion`` of several sources, a teacher, ...).

    `sources` returns pipeline specs; the runner trains (or loads from the cache) each of them
    under its own cache key, exactly as if it ran alone, and hands the ready CAM sources to
    `bind_sources` before `fit` or `load`. The class is trainable only so that the runner loads
    the training split its sources may need; `fit` itself learns nothing.
    """

    trainable: ClassVar[bool] = True

    def __init__(self, params: Any | None = None, ctx: RunContext | None = None) -> None:
        super().__init__(params, ctx)
        self.source_plugins: list[CamSource] = []

    def sources(self) -> list[str]:
        """Pipeline specs of the CAM sources this one is built on."""
        return []

    def bind_sources(self, plugins: Sequence[CamSource]) -> None:
        """Receive the ready sources, in the order of `sources`."""
        self.source_plugins = list(plugins)

    def fit(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        return None

    def save(self, directory: Path) -> None:
        (directory / "sources.json").write_text(json.dumps(self.sources()))

    def load(self, directory: Path) -> None:
        return None


def split_sources(text: str) -> list[str]:
    """Split a ``sources`` parameter on ``:`` outside brackets (specs may hold ``a:b`` values)."""
    return [s for s in split_top_level(text, ":") if s]
