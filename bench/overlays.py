"""Pictures of maps for people: heat maps and label maps laid over their image, outlines of the
distractor masks, and small encoded images for the report and the demo.

- `heat_overlay`: a soft map (CAM) through a matplotlib colour map, blended over the image;
- `label_overlay`: a label map (0 background, 1 smoke, 255 ignore) as a tinted fill;
- `outline`: the one-pixel border of boolean masks (``chimney``, ``steam`` on the synthetic set)
  drawn in a colour of its own (`OUTLINE_COLOURS`);
- `fit_size`, `shrink_image`, `shrink_map`: display sizes (maps shrink with the same geometry as
  their image: bilinear for soft maps, nearest for labels);
- `encode`: PNG or JPEG bytes; `data_uri`: the same as a ``data:`` URI for a self-contained page.

NumPy, Pillow, SciPy (binary erosion) and matplotlib's colour maps; no torch.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np

#: colour of smoke in label overlays (RGB) and of pixels labelled 255 (ignore)
SMOKE_RGB = (255, 48, 48)
IGNORE_RGB = (255, 214, 0)
#: outline colour of each auxiliary mask (others: white)
OUTLINE_COLOURS: dict[str, tuple[int, int, int]] = {"chimney": (0, 229, 255),
                                                    "steam": (255, 0, 255)}
#: the matplotlib colour map of heat maps
HEAT_CMAP = "turbo"


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) of ``size`` shrunk so its longer side is at most ``max_side`` (never
    enlarged; at least one pixel per side)."""
    h, w = int(size[0]), int(size[1])
    scale = min(1.0, max_side / max(h, w)) if max_side > 0 else 1.0
    return max(1, round(h * scale)), max(1, round(w * scale))


def shrink_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 HxWx3 image resized to ``size`` = (height, width) (area-averaged)."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return np.asarray(image, np.uint8)
    pil = Image.fromarray(np.asarray(image, np.uint8))
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BOX))


def shrink_map(m: np.ndarray, size: tuple[int, int], labels: bool) -> np.ndarray:
    """A map resized to ``size``: label maps by nearest neighbour (values stay 0, 1, 255),
    soft maps bilinearly (float32)."""
    from PIL import Image

    if m.shape == tuple(size):
        return m
    if labels:
        pil = Image.fromarray(np.asarray(m, np.uint8))
        return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.NEAREST))
    pil = Image.fromarray(np.asarray(m, np.float32), mode="F")
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)


def heat_overlay(image: np.ndarray, soft: np.ndarray, alpha: float = 0.55,
                 cmap: str = HEAT_CMAP) -> np.ndarray:
    """The soft map ``soft`` (values in [0, 1]) through colour map ``cmap``, blended over
    ``image`` with weight ``alpha`` (uint8 HxWx3)."""
    from matplotlib import colormaps

    rgb = colormaps[cmap](np.clip(np.asarray(soft, np.float32), 0.0, 1.0))[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * rgb
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A label map over ``image``: smoke (1) tinted `SMOKE_RGB`, ignore (255) `IGNORE_RGB`,
    background left as it is (uint8 HxWx3)."""
    out = image.astype(np.float32).copy()
    for value, colour in ((1, SMOKE_RGB), (255, IGNORE_RGB)):
        where = labels == value
        out[where] = (1.0 - alpha) * out[where] + alpha * np.asarray(colour, np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def outline(image: np.ndarray, masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """``image`` with the border pixels of each boolean mask painted in its
    `OUTLINE_COLOURS` colour (a copy; masks must have the image's height and width)."""
    from scipy.ndimage import binary_erosion

    out = np.array(image, np.uint8, copy=True)
    for name, mask in masks.items():
        m = np.asarray(mask, bool)
        if m.shape != out.shape[:2]:
            raise ValueError(f"mask '{name}' is {m.shape[0]}x{m.shape[1]}, its image "
                             f"{out.shape[0]}x{out.shape[1]}")
        if not m.any():
            continue
        edge = m & ~binary_erosion(m, border_value=0)
        out[edge] = OUTLINE_COLOURS.get(name, (255, 255, 255))
    return out


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized to ``size`` (nearest neighbour)."""
    return shrink_map(np.asarray(mask, np.uint8), size, labels=True).astype(bool)


def encode(image: np.ndarray, fmt: str = "JPEG", quality: int = 85) -> bytes:
    """``image`` (uint8 HxW or HxWx3) as ``PNG`` or ``JPEG`` bytes."""
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(np.asarray(image, np.uint8))
    if fmt == "JPEG":
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format=fmt, optimize=False)
    return buf.getvalue()


def data_uri(payload: bytes, fmt: str) -> str:
    """``payload`` (image bytes of format ``fmt``: PNG, JPEG) as a ``data:`` URI."""
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt.upper()]
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
