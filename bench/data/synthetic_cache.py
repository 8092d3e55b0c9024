"""Rendered synthetic frames kept on disk, so that a rerun does not render them again.

`load_synthetic` (`bench.data.loaders`) renders a split's scenes once and stores them under the
run folder's cache, ``<out>/cache/synthetic/<key>.npz``: pixels (uint8), the smoke mask and the
``chimney`` / ``steam`` aux masks (packed bits), image labels and each frame's content digest
(the one `bench.data.frames.Frame.content_key` computes from the pixels). One file per
(split stream, number of scenes, knobs), uncompressed, so reading it costs little more than a
file copy.

The key hashes everything the pixels depend on:

- the generator's code: every file of the `bench.data.synthetic` package
  (`bench.code_digest.folder_digest`), so an edited generator renders again, never reads a
  stale file;
- the NumPy version (the generator's bytes are pinned per NumPy version, see its docstring);
- the knobs (`SyntheticConfig`, every field), the stream's ``seed`` and the number of scenes.

Writes are atomic (`bench.atomic`) and taken under the file's lock (`bench.locks`): parallel
workers render a split once, the others wait and read it. A file that cannot be read (removed
half way, a foreign format) is rendered again and replaced.

Without a cache folder (a `load_splits` call outside a run folder) nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.data.synthetic.config import SyntheticConfig

#: format of the stored file; bumping it renders every split again
FORMAT = 1
#: sub-folder of the run's cache folder that holds rendered splits
FOLDER = "synthetic"


@dataclass
class RenderedSplit:
    """The scenes ``0 .. n-1`` of one stream, as arrays (frame ``i`` is row ``i``).

    Attributes:
        images: uint8 (n, H, W, 3).
        masks: uint8 (n, H, W), 1 for smoke, else 0.
        chimney: bool (n, H, W), visible chimney pixels.
        steam: bool (n, H, W), steam pixels.
        labels: int64 (n,), 1 iff the frame has a smoke pixel.
        digests: each frame's content digest (sha1 of its pixels, hex).
        cached: whether the split was read from the disk cache (False: rendered now).
    """

    images: np.ndarray
    masks: np.ndarray
    chimney: np.ndarray
    steam: np.ndarray
    labels: np.ndarray
    digests: list[str]
    cached: bool = False


def generator_digest() -> str:
    """Digest of the generator's code: every ``.py`` file of `bench.data.synthetic`."""
    from bench.code_digest import folder_digest

    return folder_digest(Path(__file__).resolve().parent / "synthetic")


def split_key(config: SyntheticConfig, seed: int, n: int) -> str:
    """The cache key of scenes ``0 .. n-1`` of stream ``seed`` under ``config`` (see module doc)."""
    blob = json.dumps({"format": FORMAT, "generator": generator_digest(),
                       "numpy": np.__version__, "config": asdict(config), "seed": int(seed),
                       "n": int(n)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(cache_dir: Path, config: SyntheticConfig, seed: int, n: int) -> Path:
    """Where the scenes of ``(config, seed, n)`` are stored under a run's cache folder."""
    return cache_dir / FOLDER / f"{split_key(config, seed, n)}.npz"


def render_split(config: SyntheticConfig, seed: int, n: int) -> RenderedSplit:
    """Render scenes ``0 .. n-1`` of stream ``seed`` (no cache)."""
    from bench.data.synthetic import render

    h, w = config.shape
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.empty((n, h, w), np.uint8)
    chimney = np.empty((n, h, w), bool)
    steam = np.empty((n, h, w), bool)
    labels = np.empty(n, np.int64)
    digests = []
    for index in range(n):
        item = render(index, seed, config)
        images[index], masks[index] = item.image, item.mask
        chimney[index], steam[index] = item.chimney, item.steam
        labels[index] = int(item.label)
        digests.append(hashlib.sha1(np.ascontiguousarray(item.image)).hexdigest())
    return RenderedSplit(images, masks, chimney, steam, labels, digests)


def _write(path: Path, split: RenderedSplit) -> None:
    from bench.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=split.images, masks=np.packbits(split.masks.astype(bool), axis=-1),
                 chimney=np.packbits(split.chimney, axis=-1),
                 steam=np.packbits(split.steam, axis=-1), labels=split.labels,
                 digests=np.array(split.digests), format=np.array(FORMAT))


def _read(path: Path, config: SyntheticConfig, n: int) -> RenderedSplit | None:
    """The stored split, or None if the file is missing or unreadable (rendered again)."""
    h, w = config.shape
    try:
        with np.load(path, allow_pickle=False) as npz:
            if int(npz["format"]) != FORMAT:
                return None
            images = npz["images"]
            unpack = lambda name: np.unpackbits(npz[name], axis=-1, count=w).astype(bool)  # noqa: E731
            split = RenderedSplit(images, unpack("masks").view(np.uint8), unpack("chimney"),
                                  unpack("steam"), npz["labels"],
                                  [str(d) for d in npz["digests"]], cached=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if split.images.shape != (n, h, w, 3) or len(split.digests) != n:
        return None
    return split


def cached_split(config: SyntheticConfig, seed: int, n: int,
                 cache_dir: Path | None) -> RenderedSplit:
    """Scenes ``0 .. n-1`` of stream ``seed``: read from ``cache_dir`` when stored there, else
    rendered (and stored, atomically and under the file's lock). ``cache_dir`` None: rendered."""
    if cache_dir is None:
        return render_split(config, seed, n)
    path = cache_path(cache_dir, config, seed, n)
    found = _read(path, config, n) if path.exists() else None
    if found is not None:
        return found
    from bench.locks import artifact_lock

    with artifact_lock(cache_dir, path, f"the synthetic frames of stream {seed}"):
        found = _read(path, config, n) if path.exists() else None  # another process wrote it
        if found is not None:
            return found
        split = render_split(config, seed, n)
        _write(path, split)
    return split
