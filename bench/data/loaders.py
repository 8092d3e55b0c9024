"""Loader kinds: functions that find the frames of one split of a data set.

A loader is ``fn(config, split, root, profile) -> list[Frame]`` registered with
``@register_loader("kind")``; a dataset file names it as ``loader = "kind"`` and passes options in
a table of the same name. Tiling, validation carve-outs and image labels are generic
(`bench.data.splits`), so a loader only finds images and decodes masks.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

from bench.data.config import DatasetConfig
from bench.data.frames import Frame
from bench.data.io import image_size, read_mask
from bench.errors import ConfigError, InputError
from bench.registry import Registry

Loader = Callable[[DatasetConfig, str, "Path | None", str], list[Frame]]
LOADERS: Registry[Loader] = Registry("loader kind")

#: the run's cache folder (``<out>/cache``) while `bench.data.splits.load_splits` calls a
#: loader, for loaders that keep what they compute on disk (`load_synthetic`); None outside a
#: run folder
CACHE_DIR: ContextVar[Path | None] = ContextVar("bench_loader_cache_dir", default=None)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register_loader(kind: str) -> Callable[[Loader], Loader]:
    """Decorator registering a loader function under ``kind``."""

    def decorate(fn: Loader) -> Loader:
        LOADERS.register(kind, fn, summary=(fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorate


def split_location(config: DatasetConfig, split: str) -> str:
    """What the dataset file says about ``split`` (a folder, a file, ...)."""
    if split not in config.splits:
        raise ConfigError(f"data set '{config.name}' has no split '{split}' (splits: "
                          f"{', '.join(config.split_names)})")
    return str(config.splits[split])


@register_loader("folder_pairs")
def load_folder_pairs(config: DatasetConfig, split: str, root: Path | None,
                      profile: str) -> list[Frame]:
    """Image and mask folders with matching file stems (SMOKE5K's ``{split}/{img,gt}`` layout)."""
    assert root is not None
    opts = config.options
    where = split_location(config, split)
    image_dir = root / str(opts.get("images", "{split}/img")).format(split=where)
    mask_pattern = opts.get("masks", "{split}/gt")
    mask_dir = root / str(mask_pattern).format(split=where) if mask_pattern else None
    if not image_dir.is_dir():
        raise InputError(image_dir, f"image folder of split '{split}' not found")
    if mask_dir is not None and not mask_dir.is_dir():
        raise InputError(mask_dir, f"mask folder of split '{split}' not found")
    suffixes = tuple(s.lower() for s in opts.get("image_suffixes", IMAGE_SUFFIXES))
    mask_suffix = str(opts.get("mask_suffix", ".png"))
    encoding = str(config.masks.get("encoding", "binary255"))
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in suffixes)
    if not images:
        raise InputError(image_dir, f"no images ({', '.join(suffixes)}) in split '{split}'")
    frames = []
    for path in images:
        size = image_size(path)
        mask = None
        if mask_dir is not None:
            mask_path = mask_dir / f"{path.stem}{mask_suffix}"
            if not mask_path.is_file():
                raise InputError(path, f"no mask {mask_path.name} in {mask_dir}")
            mask = read_mask(mask_path, encoding, expect_size=size)
        frames.append(Frame(path.stem, size, image_path=path, mask=mask))
    return frames


@register_loader("class_folders")
def load_class_folders(config: DatasetConfig, split: str, root: Path | None,
                       profile: str) -> list[Frame]:
    """One folder per image label (``smoke/``, ``no_smoke/``), no masks (image-level only).

    A split may be a table ``{ folder = ".", range = [0.6, 0.8] }`` that carves a deterministic,
    label-stratified share of one folder (`bench.data.split_rules.Carve`).
    """
    assert root is not None
    carve = None
    if isinstance(config.splits.get(split), dict):
        from bench.data.split_rules import parse_carve

        folder, carve = parse_carve(config, split, config.splits[split])
        where = root / folder
    else:
        where = root / split_location(config, split)
    folders = config.options.get("classes", {"smoke": 1, "no_smoke": 0})
    frames = []
    for folder, label in folders.items():
        path = where / folder
        if not path.is_dir():
            raise InputError(path, f"class folder of split '{split}' not found")
        for image in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            frames.append(Frame(f"{folder}/{image.stem}", image_size(image), image_path=image,
                                label=int(label)))
    if carve is not None:
        frames = carve.apply(frames)
    if not frames:
        raise InputError(where, f"no images in split '{split}'")
    return frames


@register_loader("synthetic")
def load_synthetic(config: DatasetConfig, split: str, root: Path | None,
                   profile: str) -> list[Frame]:
    """Synthetic industrial smoke scenes rendered on the fly (`bench.data.synthetic`).

    Inside a run the rendered frames are kept in the run's cache folder (`CACHE_DIR`), keyed by
    the generator's code and the knobs (`bench.data.synthetic_cache`), so a rerun reads them.
    """
    from bench.data.synthetic import SyntheticConfig
    from bench.data.synthetic_cache import cached_split

    spec = config.splits.get(split)
    if not isinstance(spec, dict):
        raise ConfigError(f"data set '{config.name}' has no split '{split}'")
    spec = dict(spec)
    sizes = config.options.get(profile, {})
    n = int(sizes.get(split, spec.pop("n", 100)))
    spec.pop("n", None)
    seed = int(spec.pop("seed", 0))
    base = {k: v for k, v in config.options.items() if not isinstance(v, dict)}
    try:
        syn = SyntheticConfig(**{**base, **spec})
    except TypeError as exc:
        raise ConfigError(f"{config.path}: bad synthetic option: {exc}") from None
    rendered = cached_split(syn, seed, n, CACHE_DIR.get())
    for array in (rendered.images, rendered.masks, rendered.chimney, rendered.steam):
        array.setflags(write=False)  # shared by the cells of a run (bench.data.splits)
    return [Frame(f"syn-{split}-{seed}-{index:05d}", rendered.masks[index].shape,
                  image=rendered.images[index], mask=rendered.masks[index],
                  label=int(rendered.labels[index]),
                  aux={"chimney": rendered.chimney[index], "steam": rendered.steam[index]},
                  digest=rendered.digests[index])
            for index in range(n)]
