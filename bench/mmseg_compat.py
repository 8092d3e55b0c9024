"""Run mmsegmentation 1.2.2 on ``mmcv-lite`` and current torch (no compiled mmcv ops).

Why this module exists:

1. **mmcv.** mmsegmentation 1.2.2 requires ``mmcv>=2.0.0rc4,<2.2.0``. The full mmcv 2.1 has no
   wheels for current torch and building it from source needs a CUDA toolchain, but
   ``mmcv-lite`` 2.1.0 (pure Python, same code without the compiled ``mmcv._ext``) installs
   anywhere. What breaks is ``import mmcv.ops``: its ``__init__`` loads compiled kernels, and
   mmseg imports two ops at start-up, ``point_sample`` (``mmseg.models.utils``,
   ``mmseg.utils.mask_classification``) and ``sigmoid_focal_loss``
   (``mmseg.models.losses.focal_loss``). `install` registers a small pure-torch ``mmcv.ops`` in
   ``sys.modules`` with those two functions (same signatures and results as mmcv's) when the
   compiled extension is missing, and nothing when a full mmcv is installed. Every other op
   (``CrissCrossAttention``, ``PSAMask``, deformable convolutions, ...) raises
   ``ModuleNotFoundError`` naming the op; mmseg already catches that for the heads that use
   them, so only configs built on those heads (CCNet, PSANet, Mask2Former, ...) cannot run.
2. **Checkpoints.** Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``; mmengine
   0.10 calls it without the argument, so any OpenMMLab checkpoint whose ``meta`` holds
   non-tensor objects (``HistoryBuffer``, numpy scalars, ...) fails to unpickle, with a
   confusing error. `safe_load` loads tensors-only first and unpickles arbitrary objects only
   when the caller trusts the file (``trust=True``), raising a clear error otherwise;
   `patch_checkpoint_loading` routes mmengine's local-file and http(s) checkpoint loaders
   (used by backbone ``init_cfg=dict(type='Pretrained', ...)``, ``open-mmlab://`` names and
   ``load_checkpoint``) through it.

Import-light: nothing here imports mmcv, mmengine or mmseg until a function is called.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: mmseg 1.2.2's accepted mmcv range (``mmseg/__init__.py``).
MMCV_RANGE = ("2.0.0rc4", "2.2.0")
INSTALL_HINT = ("pip install 'mmcv-lite>=2.0.0rc4,<2.2.0' mmengine 'mmsegmentation==1.2.2' "
                "ftfy regex  (or: pip install -e '.[mmseg]')")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded safely (it holds more than tensors and is not trusted)."""


# --------------------------------------------------------------------------- pure-torch ops
def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs: Any) -> torch.Tensor:
    """``mmcv.ops.point_sample``: `F.grid_sample` at points given in ``[0, 1] x [0, 1]``.

    Args:
        input: feature map ``(N, C, H, W)``.
        points: normalised ``(x, y)`` coordinates ``(N, P, 2)`` or ``(N, Hg, Wg, 2)``.
        align_corners: as in `F.grid_sample`.
        **kwargs: passed to `F.grid_sample` (``mode``, ``padding_mode``).

    Returns:
        ``(N, C, P)`` or ``(N, C, Hg, Wg)`` sampled features.
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25, weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """``mmcv.ops.sigmoid_focal_loss``: per-class sigmoid focal loss with integer targets.

    Args:
        input: logits ``(N, C)``.
        target: class indices ``(N,)``; a value outside ``0..C-1`` is negative for every class
            (mmcv's kernel compares ``target == c`` per class).
        gamma, alpha: focal-loss parameters (Lin et al., ICCV 2017).
        weight: optional per-sample weight ``(N,)``.
        reduction: ``none`` (``(N, C)``), ``sum``, or ``mean`` (sum divided by ``N``, as mmcv).
    """
    num_classes = input.size(1)
    classes = torch.arange(num_classes, device=input.device)
    one_hot = (target.long().unsqueeze(1) == classes).to(input.dtype)
    prob = input.sigmoid()
    pt = (1 - prob) * one_hot + prob * (1 - one_hot)
    focal = (alpha * one_hot + (1 - alpha) * (1 - one_hot)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(input, one_hot, reduction="none") * focal
    if weight is not None:
        loss = loss * weight.view(-1, 1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / input.size(0)
    raise ValueError(f"reduction must be none, mean or sum, not {reduction!r}")


def _missing_op(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise ModuleNotFoundError(
        f"mmcv.ops.{name} needs mmcv's compiled extension, which mmcv-lite does not have; "
        "bench.mmseg_compat provides only point_sample and sigmoid_focal_loss",
        name=f"mmcv.ops.{name}")


# --------------------------------------------------------------------------- installation
def mmcv_has_compiled_ops() -> bool:
    """True when a full mmcv (with ``mmcv._ext``) is installed."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install() -> bool:
    """Make ``import mmseg.models`` work on mmcv-lite; returns True if the shim was installed.

    Idempotent. Does nothing when mmcv's compiled ops exist. Raises ImportError with the
    install command when mmcv, mmengine or mmseg is missing or mmcv is outside mmseg's range.
    """
    for module in ("mmcv", "mmengine", "mmseg"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"the mmseg backend needs {module}: {INSTALL_HINT}")
    import mmcv
    from mmengine.utils import digit_version  # what mmseg's own version check uses

    version = digit_version(mmcv.__version__)
    if not digit_version(MMCV_RANGE[0]) <= version < digit_version(MMCV_RANGE[1]):
        raise ImportError(f"mmsegmentation 1.2.2 needs mmcv >={MMCV_RANGE[0]},<{MMCV_RANGE[1]}; "
                          f"installed: mmcv {mmcv.__version__}. {INSTALL_HINT}")
    existing = sys.modules.get("mmcv.ops")
    if existing is not None and getattr(existing, "__bench_shim__", False):
        return True
    if mmcv_has_compiled_ops():
        return False
    ops = types.ModuleType("mmcv.ops", "Pure-torch stand-ins for mmcv.ops (bench.mmseg_compat)")
    ops.__bench_shim__ = True  # type: ignore[attr-defined]
    ops.__file__ = __file__
    ops.point_sample = point_sample  # type: ignore[attr-defined]
    ops.sigmoid_focal_loss = sigmoid_focal_loss  # type: ignore[attr-defined]
    ops.__getattr__ = _missing_op  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops  # type: ignore[attr-defined]
    return True


def import_models() -> Any:
    """`install`, then import and return ``mmseg.models`` with all its modules registered.

    mmcv-lite's warning that ``MultiScaleDeformableAttention`` is unavailable is silenced (the
    docstring above says which ops are missing).
    """
    install()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        import mmseg.models
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
    return mmseg.models


@contextmanager
def quiet_mmengine(level: int = logging.WARNING) -> Iterator[None]:
    """Raise mmengine's current logger to ``level`` (``init_weights`` logs every tensor)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def available() -> tuple[bool, str]:
    """(True, "") when mmseg's models import (after `install`), else (False, the reason)."""
    try:
        import_models()
    except Exception as exc:  # the reason is reported, not raised
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


# --------------------------------------------------------------------------- checkpoints
def safe_load(source: Any, map_location: Any = "cpu", trust: bool = False) -> Any:
    """``torch.load`` tensors-only; arbitrary pickled objects only for trusted files.

    Args:
        source: a path or file-like object.
        map_location: as in ``torch.load``.
        trust: allow ``weights_only=False`` (runs pickled code: only for files you trust).
            ``BENCH_TRUST_CHECKPOINTS=1`` sets it for every call.

    Raises:
        CheckpointError: the file holds non-tensor objects and is not trusted.
    """
    trust = trust or os.environ.get("BENCH_TRUST_CHECKPOINTS", "") in ("1", "true", "yes")
    if hasattr(source, "seek"):
        start = source.tell()
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise CheckpointError(
                f"{source if isinstance(source, (str, Path)) else 'checkpoint'} holds objects "
                "other than tensors, which torch.load(weights_only=True) refuses. If you trust "
                "its source, pass trust_checkpoint=true (or set BENCH_TRUST_CHECKPOINTS=1). "
                f"Details: {str(exc).splitlines()[0]}") from None
    if hasattr(source, "seek"):
        source.seek(start)
    return torch.load(source, map_location=map_location, weights_only=False)


def patch_checkpoint_loading(trust: bool = False) -> None:
    """Route mmengine's local and http(s) checkpoint loaders through `safe_load`."""
    from mmengine.runner import checkpoint as ck

    def load_from_local(filename: str, map_location: Any = None) -> Any:
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        return safe_load(filename, map_location, trust)

    def load_from_http(filename: str, map_location: Any = None, model_dir: str | None = None,
                       progress: bool = False) -> Any:
        from urllib.parse import urlparse

        hub_dir = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"
        hub_dir.mkdir(parents=True, exist_ok=True)
        cached = hub_dir / os.path.basename(urlparse(filename).path)
        if not cached.exists():
            torch.hub.download_url_to_file(filename, str(cached), progress=progress)
        return safe_load(cached, map_location, trust)

    ck.CheckpointLoader.register_scheme(prefixes="", force=True)(load_from_local)
    ck.CheckpointLoader.register_scheme(prefixes=("http://", "https://"),
                                        force=True)(load_from_http)
    # load_from_openmmlab / load_from_mmcls call these module globals
    ck.load_from_local = load_from_local
    ck.load_from_http = load_from_http


__all__ = ["INSTALL_HINT", "CheckpointError", "available", "import_models", "install",
           "mmcv_has_compiled_ops", "patch_checkpoint_loading", "point_sample", "quiet_mmengine",
           "safe_load", "sigmoid_focal_loss"]
