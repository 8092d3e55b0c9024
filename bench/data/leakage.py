"""Test-set leakage: frames of a scored split that training or calibration has seen.

Frames are compared by id and by content (`Frame.content_key`: the file's digest, memoised by
the run's file index, or the pixels' hash), so a copy of a test image under another name is
caught too. The error names the files on both sides and the ``[exclude]`` entry that resolves it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.data.config import DatasetConfig
from bench.data.frames import Frame, SampleList

#: pairs named in full in the message; the rest are counted
SHOW_PAIRS = 5
#: ids written out in the suggested ``[exclude]`` entry
SHOW_IDS = 20


@dataclass
class Leak:
    """A frame of the training/calibration split that is also a scored frame."""

    seen: Frame
    scored: Frame
    why: str  # "same frame id" or "same image content"


def find_leaks(seen: SampleList, scored: SampleList) -> list[Leak]:
    """Pairs of frames of ``seen`` and ``scored`` with the same id or the same content."""
    seen_frames = _frames(seen)
    by_id: dict[str, list[Frame]] = {}
    by_content: dict[str, list[Frame]] = {}
    for frame in seen_frames:
        by_id.setdefault(frame.id, []).append(frame)
        by_content.setdefault(frame.content_key(), []).append(frame)
    leaks: dict[tuple[int, int], Leak] = {}
    for frame in _frames(scored):
        for other in by_id.get(frame.id, []):
            leaks[(id(other), id(frame))] = Leak(other, frame, "same frame id")
        for other in by_content.get(frame.content_key(), []):
            leaks.setdefault((id(other), id(frame)), Leak(other, frame, "same image content"))
    return sorted(leaks.values(), key=lambda leak: (leak.scored.id, leak.seen.id))


def describe(frame: Frame, root: Path | None) -> str:
    """A frame as a user finds it: its file relative to the data root, else its frame id."""
    if frame.image_path is None:
        return f"frame '{frame.id}'"
    path = Path(frame.image_path)
    if root is not None:
        rel = os.path.relpath(path, root)
        path = Path(rel) if not rel.startswith("..") else path
    index = getattr(frame, "index", None)  # a frame of a video clip
    return path.as_posix() + (f"#{index}" if index is not None else "")


def exclude_split(config: DatasetConfig, split: str) -> str:
    """The split whose ``[exclude]`` entry removes frames of ``split`` (a carved val: train)."""
    declared = [s for s in config.splits if isinstance(s, str)]
    if split not in declared and split == "val" and "train" in declared:
        return "train"
    return split


def leakage_message(leaks: list[Leak], *, scored_split: str, scored_name: str,
                    seen_split: str, seen_config: DatasetConfig, scored_root: Path | None,
                    seen_root: Path | None) -> str:
    """A one-line error: how many scored frames leak, which files on both sides, and the
    ``[exclude]`` entry of the training data set's file that leaves them out of ``seen_split``."""
    scored_frames = {id(leak.scored) for leak in leaks}
    pairs = [f"{describe(leak.seen, seen_root)} = {describe(leak.scored, scored_root)} "
             f"({leak.why})" for leak in leaks[:SHOW_PAIRS]]
    more = f" and {len(leaks) - SHOW_PAIRS} more" if len(leaks) > SHOW_PAIRS else ""
    if seen_root is not None and seen_root == scored_root:
        where = f" (paths under {seen_root})"
    else:
        roots = [f"{name} under {root}" for name, root in ((seen_split, seen_root),
                                                            (scored_split, scored_root)) if root]
        where = f" (paths: {'; '.join(roots)})" if roots else ""
    target = exclude_split(seen_config, seen_split)
    ids = list(dict.fromkeys([*seen_config.exclude.get(target, []),
                              *sorted({leak.seen.id for leak in leaks})]))
    listed = ", ".join(f'"{i}"' for i in ids[:SHOW_IDS])
    if len(ids) > SHOW_IDS:
        listed += f", ... ({len(ids)} ids; are two splits the same folder?)"
    return (f"test-set leakage: {len(scored_frames)} frame(s) of split '{scored_split}' of "
            f"{scored_name} are also in '{seen_split}' of {seen_config.name}: "
            f"{'; '.join(pairs)}{more}{where}; to leave them out of '{target}', add to "
            f"{seen_config.path}: [exclude] {target} = [{listed}]")


def _frames(samples: SampleList) -> list[Frame]:
    return list({id(ref.frame): ref.frame for ref in samples.refs}.values())
