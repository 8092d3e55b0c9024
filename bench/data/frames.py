"""Frames (what a loader finds) and lazily loaded samples (what stages see)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np

from bench.data.file_index import FileIndex, as_index
from bench.data.io import read_image
from bench.data.tiling import Box
from bench.errors import InputError
from bench.sample import Sample
from bench.stitch import FrameView


@dataclass
class Frame:
    """One image as a loader finds it: a file to decode lazily, or pixels already in memory.

    ``mask`` is decoded eagerly (0, 1, 255) so bad masks fail before any work starts and image
    labels can be derived without touching the pixels.
    """

    id: str
    size: tuple[int, int]
    image_path: Path | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    label: int | None = None
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    #: content digest, set by the first `content_key` call (the file is hashed once per load)
    digest: str | None = field(default=None, repr=False, compare=False)

    def content_key(self, index: FileIndex | None = None) -> str:
        """A hash of the frame's content: its file's bytes (memoised by ``index``, default the
        in-memory `bench.data.file_index.MEMORY_INDEX`) or the pixels held in memory."""
        if self.digest is None:
            if self.image_path is not None:
                self.digest = as_index(index).digest(self.image_path)
            else:
                assert self.image is not None
                self.digest = hashlib.sha1(np.ascontiguousarray(self.image)).hexdigest()
        return self.digest

    @property
    def unit(self) -> str:
        """The bootstrap unit the frame belongs to: the frame itself (video frames: their clip)."""
        return self.id

    def pixels(self) -> np.ndarray:
        """The full frame, uint8 HxWx3."""
        if self.image is not None:
            return self.image
        assert self.image_path is not None
        image = read_image(self.image_path)
        if image.shape[:2] != self.size:
            raise InputError(self.image_path, f"decoded size {image.shape[:2]} differs from its "
                                              f"header {self.size}")
        return image


@dataclass
class SampleRef:
    """A sample that knows its id and label but decodes its pixels only when loaded."""

    id: str
    frame: Frame
    box: Box
    label: int | None

    @property
    def source_id(self) -> str:
        return self.frame.id

    def load(self) -> Sample:
        y, x, h, w = self.box
        crop = (slice(y, y + h), slice(x, x + w))
        image = self.frame.pixels()[crop]
        mask = None if self.frame.mask is None else self.frame.mask[crop]
        aux = {k: v[crop] for k, v in self.frame.aux.items()}
        return Sample(self.id, image, self.label, mask, aux, self.frame.id)


class SampleList(Sequence[Sample]):
    """A sequence of samples loaded on access; ids and labels are known without decoding."""

    def __init__(self, refs: list[SampleRef], name: str = "") -> None:
        self.refs = refs
        self.name = name

    def __len__(self) -> int:
        return len(self.refs)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [ref.load() for ref in self.refs[index]]
        return self.refs[index].load()

    def __iter__(self) -> Iterator[Sample]:
        for ref in self.refs:
            yield ref.load()

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.refs]

    @property
    def labels(self) -> list[int | None]:
        return [r.label for r in self.refs]

    @property
    def source_ids(self) -> set[str]:
        return {r.source_id for r in self.refs}

    def frame_views(self, per_tile: bool = False) -> list[FrameView]:
        """The scored units of the split, in order of first appearance, with their tiles.

        By default one view per frame, listing every tile cut from it, so that stitching can
        put the tile maps back together and each pixel of a frame counts once. With
        ``per_tile`` every tile is its own unit (a data set scored per crop).
        """
        views: dict[str, FrameView] = {}
        for index, ref in enumerate(self.refs):
            frame = ref.frame
            if per_tile:
                y, x, h, w = ref.box
                crop = (slice(y, y + h), slice(x, x + w))
                mask = None if frame.mask is None else frame.mask[crop]
                views[ref.id] = FrameView(ref.id, (h, w), mask,
                                          {k: v[crop] for k, v in frame.aux.items()},
                                          [(index, (0, 0, h, w))], frame.unit)
                continue
            view = views.get(frame.id)
            if view is None:
                view = views[frame.id] = FrameView(frame.id, frame.size, frame.mask,
                                                   dict(frame.aux), [], frame.unit)
            view.parts.append((index, ref.box))
        return list(views.values())

    def content_keys(self) -> set[str]:
        """Content hashes of the frames behind the samples (for leakage checks)."""
        frames = {id(r.frame): r.frame for r in self.refs}
        return {f.content_key() for f in frames.values()}

    def subset(self, keep: Sequence[bool] | np.ndarray, name: str = "") -> SampleList:
        """The samples where ``keep`` is true."""
        return SampleList([r for r, k in zip(self.refs, keep, strict=True) if k],
                          name or self.name)

    def labelled(self) -> SampleList:
        """Only samples with an image-level label (classifier training data)."""
        return self.subset([r.label is not None for r in self.refs])

    @property
    def has_masks(self) -> bool:
        return bool(self.refs) and all(r.frame.mask is not None for r in self.refs)
