"""Reading images and masks with errors that name the file and the problem."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.errors import InputError

MASK_ENCODINGS = {
    "binary255": "0 background, 255 smoke (SMOKE5K)",
    "binary01": "0 background, 1 smoke",
    "binary01_ignore255": "0 background, 1 smoke, 255 ignore",
    "threshold": "grey levels, >= 128 smoke (anti-aliased masks)",
}


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from None
    return height, width


@lru_cache(maxsize=4)
def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB; corrupt files raise `InputError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise InputError(path, f"cannot decode image ({exc.__class__.__name__}: {exc})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    array.setflags(write=False)
    return array


def read_mask(path: Path, encoding: str, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a mask file to uint8 HxW with 0 background, 1 smoke, 255 ignore.

    Raises `InputError` for an unreadable file, a size other than ``expect_size`` (height,
    width), or values outside the encoding.
    """
    from PIL import Image, UnidentifiedImageError

    if encoding not in MASK_ENCODINGS:
        raise InputError(path, f"unknown mask encoding '{encoding}' (choices: "
                               f"{', '.join(MASK_ENCODINGS)})")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"))
                if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                        and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise InputError(path, "mask has colour (RGB channels differ); expected a "
                                           "single-channel mask")
                raw = rgb[..., 0]
            elif im.mode == "P":
                raw = np.asarray(im)  # palette indices are the class values
            else:
                raw = np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise InputError(path, f"cannot decode mask ({exc.__class__.__name__}: {exc})") from None
    if expect_size is not None and raw.shape != tuple(expect_size):
        raise InputError(path, f"mask is {raw.shape[1]}x{raw.shape[0]} but its image is "
                               f"{expect_size[1]}x{expect_size[0]} (width x height)")
    return encode_mask(raw, encoding, path)


def encode_mask(raw: np.ndarray, encoding: str, path: object = "<mask>") -> np.ndarray:
    """Map raw mask values to 0/1/255 according to ``encoding``; bad values raise `InputError`."""
    values = np.unique(raw)
    allowed = {"binary255": {0, 255}, "binary01": {0, 1},
               "binary01_ignore255": {0, 1, 255}}.get(encoding)
    if allowed is not None:
        bad = sorted(set(values.tolist()) - allowed)
        if bad:
            shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise InputError(path, f"mask values {shown} are outside encoding '{encoding}' "
                                   f"(allowed {sorted(allowed)})")
    out = np.zeros(raw.shape, np.uint8)
    if encoding == "binary255":
        out[raw == 255] = 1
    elif encoding in ("binary01", "binary01_ignore255"):
        out[:] = raw
    elif encoding == "threshold":
        out[raw >= 128] = 1
    return out
