"""Deterministic hashing of frame ids into [0, 1): the validation carve-out and split rules."""

from __future__ import annotations

import hashlib


def hash_unit(text: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a string (stable across machines and runs)."""
    digest = hashlib.sha1(f"{salt}{text}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)
