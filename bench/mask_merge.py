"""Merge strategies: how a frame's SAM masks S and its pseudo smoke region P make a label map.

A strategy is a function ``(masks: MaskSet, smoke: bool HxW) -> bool HxW`` returning the new
smoke region, registered by name in `MERGES` with ``@register_merge("name")``. Built-ins,
written after SEPL (Chen et al. 2023, "Segment Anything Model (SAM) Enhanced Pseudo Labels for
Weakly Supervised Semantic Segmentation", github.com/cskyl/SAM_WSSS, ``merge/``):

- ``max_iou``: keep S when more than half of it lies in P (``2|S∩P| − |S| > 0``); the result
  is the union of the kept masks, and P's other pixels become background;
- ``max_iou_imp``: as ``max_iou``, plus the pixels of P that no SAM mask covers (SEPL: "trust
  the CAM where SAM has no prediction");
- ``max_iou_imp2``: as ``max_iou_imp``, and also keep S when it covers at least `COVERAGE`
  (0.85) of P (``|S∩P| / |P| ≥ 0.85``; never for an empty P);
- ``union`` / ``intersection``: P with the single best mask (highest IoU with P; the first
  one on ties) added or intersected: simple references. When no mask overlaps P, ``union``
  returns P and ``intersection`` nothing.

Every strategy is vectorised over the frame's masks: one ``&`` and a popcount over the packed
bits (`MaskSet.overlaps`) give ``|S∩P|`` for all masks, and one ``|``-reduction their union.

A user adds a strategy in a file of an ``--include`` folder (or ``methods/``)::

    from bench import MaskSet, register_merge

    @register_merge("largest")
    def largest(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
        ...

The plugin scan finds the decorator without importing the file; ``sam[merge=largest]`` imports
it when used. `merge_labels` applies a strategy to a label map (0, 1, 255 ignore) and
`ignore_disagreement` is the ``ignore_band`` rule of the ``sam`` refiner.

NumPy only (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from bench.mask_set import MaskSet
from bench.registry import Registry

MergeFn = Callable[[MaskSet, np.ndarray], np.ndarray]
F = TypeVar("F", bound=MergeFn)

#: merge strategies by name (lazy entries for include files found by the plugin scan)
MERGES: Registry[MergeFn] = Registry("merge strategy")

#: ``max_iou_imp2`` also keeps a mask that covers at least this share of P (SEPL's 0.85)
COVERAGE = 0.85

SMOKE, BACKGROUND, IGNORE = 1, 0, 255


def register_merge(name: str) -> Callable[[F], F]:
    """Function decorator registering a merge strategy under ``name`` in `MERGES`."""

    def decorate(fn: F) -> F:
        import sys
        from pathlib import Path

        module = sys.modules.get(fn.__module__)
        path = getattr(module, "__file__", None)
        origin = str(Path(path).resolve()) if path else fn.__module__
        doc = (fn.__doc__ or "").strip()
        MERGES.register(name, fn, summary=doc.splitlines()[0] if doc else "", origin=origin)
        return fn

    return decorate


def get_merge(name: str) -> MergeFn:
    """The strategy registered as ``name`` (unknown names: a one-line "did you mean" error)."""
    return MERGES.get(name)


# --------------------------------------------------------------------------- the strategies
def _majority_inside(masks: MaskSet, p_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, |S∩P|)``: masks with more than half of their pixels in P (packed)."""
    inside = masks.overlaps(p_bits)
    return 2 * inside - masks.areas > 0, inside


@register_merge("max_iou")
def max_iou(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
    """Union of the masks with more than half of their pixels in P (SEPL ``MaxIoU``)."""
    keep, _ = _majority_inside(masks, masks.pack(smoke))
    return masks.union(keep)


@register_merge("max_iou_imp")
def max_iou_imp(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
    """``max_iou`` plus the pixels of P no mask covers (SEPL ``MaxIoU_IMP``)."""
    p_bits = masks.pack(smoke)
    keep, _ = _majority_inside(masks, p_bits)
    return masks.unpack(masks.union_bits(keep) | (p_bits & ~masks.union_bits()))


@register_merge("max_iou_imp2")
def max_iou_imp2(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
    """``max_iou_imp`` that also keeps masks covering >= 85% of P (SEPL ``MaxIoU_IMP2``)."""
    p_bits = masks.pack(smoke)
    keep, inside = _majority_inside(masks, p_bits)
    p_area = int(np.count_nonzero(smoke))
    if p_area:
        keep |= inside >= COVERAGE * p_area
    return masks.unpack(masks.union_bits(keep) | (p_bits & ~masks.union_bits()))


def best_mask(masks: MaskSet, smoke: np.ndarray) -> int | None:
    """Index of the mask with the highest IoU with P (first on ties); None if none overlaps."""
    if not len(masks):
        return None
    inside = masks.overlaps(smoke)
    union = masks.areas + int(np.count_nonzero(smoke)) - inside
    iou = np.where(union > 0, inside / np.maximum(union, 1), 0.0)
    i = int(np.argmax(iou))
    return i if iou[i] > 0 else None


@register_merge("union")
def union(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
    """P together with the single mask of highest IoU with P."""
    i = best_mask(masks, smoke)
    return smoke.copy() if i is None else smoke | masks.mask(i)


@register_merge("intersection")
def intersection(masks: MaskSet, smoke: np.ndarray) -> np.ndarray:
    """P within the single mask of highest IoU with P (nothing when no mask overlaps P)."""
    i = best_mask(masks, smoke)
    return np.zeros_like(smoke) if i is None else smoke & masks.mask(i)


# --------------------------------------------------------------------------- label maps
def merge_labels(strategy: str | MergeFn, masks: MaskSet, labels: np.ndarray) -> np.ndarray:
    """A label map (uint8: 0, 1, 255) from a strategy applied to ``labels``' smoke region.

    P is ``labels == 1``. A pixel is smoke where the strategy says so; elsewhere it keeps the
    input's ignore label (255) if it had one, else becomes background. So an ignore pixel
    covered by a kept mask becomes smoke, and one that no kept mask covers stays ignored (SEPL,
    which handles no ignore label, would make it background).
    """
    fn = get_merge(strategy) if isinstance(strategy, str) else strategy
    labels = np.asarray(labels)
    if labels.shape != masks.shape:
        raise ValueError(f"label map of shape {labels.shape} for masks of shape {masks.shape}")
    smoke = labels == SMOKE
    new = np.asarray(fn(masks, smoke))
    if new.shape != smoke.shape or new.dtype != bool:
        raise ValueError(f"merge strategy returned {new.dtype} {new.shape}, expected a boolean "
                         f"{smoke.shape} smoke region")
    # new -> 1, else ignore -> 255, else 0; in uint8 arithmetic (no nested where)
    ignore = (labels == IGNORE) & ~new
    return ignore.view(np.uint8) * np.uint8(IGNORE) + new.view(np.uint8)


def ignore_disagreement(merged: np.ndarray, prob: np.ndarray, band: float) -> np.ndarray:
    """The ``ignore_band`` rule: where the merge overrules a confident input, label 255.

    ``prob`` is the input's smoke probability on the scale where its threshold is 0.5 (a soft
    map calibrated as ``crf`` does; a label map gives 0 and 1, its ignore pixels 0.5). A pixel
    the merge made smoke while ``prob < band``, or made background while ``prob > 1 − band``,
    becomes 255: SAM and the CAM disagree strongly there. ``band = 0`` changes nothing;
    ``band = 0.5`` ignores every pixel whose label the merge flipped.
    """
    if not 0.0 <= band <= 0.5:
        raise ValueError(f"ignore_band must be in [0, 0.5], got {band}")
    if band == 0:
        return merged
    out = merged.copy()
    out[(merged == SMOKE) & (prob < band)] = IGNORE
    out[(merged == BACKGROUND) & (prob > 1.0 - band)] = IGNORE
    return out
