"""PASCAL-VOC-style data sets: an image folder, a mask folder and one id list file per split.

``loader = "voc"`` (FoSp's SmokeSeg, and any set exported in the VOC layout)::

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png            # palette (mode P) or grey PNG masks
    <root>/ImageSets/Segmentation/<split>.txt    # one id per line

Each ``[splits]`` value is the stem of a list file, filled into the ``lists`` pattern
(``test = "test"`` reads ``ImageSets/Segmentation/test.txt``). A list line holds one id (its
first whitespace-separated word; blank lines are skipped), and the id is the frame id.
Palette PNGs are read as their palette indices, so a mask with palette entries 0 (background)
and 1 (smoke) reads as {0, 1} whatever colours the palette gives them. Masks default to
``binary01_ignore255`` (VOC's 255 "void" border is ignored); ``[masks] encoding`` overrides it.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.config import DatasetConfig, check_options
from bench.data.frames import Frame
from bench.data.io import image_size, read_mask
from bench.data.loaders import register_loader, split_location
from bench.data.subsets import read_id_list
from bench.errors import ConfigError, InputError

#: the ``[voc]`` table's keys and defaults
DEFAULTS = {
    "images": "JPEGImages",
    "masks": "SegmentationClass",
    "lists": "ImageSets/Segmentation/{split}.txt",
    "image_suffix": ".jpg",
    "mask_suffix": ".png",
}
DEFAULT_ENCODING = "binary01_ignore255"


def _options(config: DatasetConfig) -> dict[str, str]:
    check_options(config, DEFAULTS, {})
    opts = {**DEFAULTS, **config.options}
    for key, value in opts.items():
        if not isinstance(value, str):
            raise ConfigError(f"{config.path}: [voc] {key} must be a string, not {value!r}")
    if "{split}" not in opts["lists"]:
        raise ConfigError(f"{config.path}: [voc] lists must contain '{{split}}' (the split's "
                          f"list stem), got {opts['lists']!r}")
    return opts


@register_loader("voc")
def load_voc(config: DatasetConfig, split: str, root: Path | None,
             profile: str) -> list[Frame]:
    """PASCAL-VOC layout: ``JPEGImages/``, ``SegmentationClass/`` and a list file per split."""
    assert root is not None
    opts = _options(config)
    where = split_location(config, split)
    list_path = root / opts["lists"].format(split=where)
    ids = read_id_list(list_path, f"list file of split '{split}'")
    image_dir = root / opts["images"]
    mask_dir = root / opts["masks"] if opts["masks"] else None
    if not image_dir.is_dir():
        raise InputError(image_dir, f"image folder of split '{split}' not found")
    if mask_dir is not None and not mask_dir.is_dir():
        raise InputError(mask_dir, f"mask folder of split '{split}' not found")
    encoding = str(config.masks.get("encoding", DEFAULT_ENCODING))
    frames = []
    for frame_id in ids:
        image = image_dir / f"{frame_id}{opts['image_suffix']}"
        if not image.is_file():
            raise InputError(image, f"image of id '{frame_id}' (listed in {list_path.name}) "
                                    "not found")
        size = image_size(image)
        mask = None
        if mask_dir is not None:
            mask_path = mask_dir / f"{frame_id}{opts['mask_suffix']}"
            if not mask_path.is_file():
                raise InputError(mask_path, f"mask of id '{frame_id}' (listed in "
                                            f"{list_path.name}) not found")
            mask = read_mask(mask_path, encoding, expect_size=size)
        frames.append(Frame(frame_id, size, image_path=image, mask=mask))
    return frames
