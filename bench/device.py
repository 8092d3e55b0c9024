"""Which torch device a run uses: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

from bench.errors import ConfigError


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` if available else ``cpu``; asking for CUDA without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not '{device}'")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ConfigError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    return "cpu"
