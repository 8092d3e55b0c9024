"""``bench export``: a run's maps as PNG files any other code can read.

One PNG per frame of a split, named ``<frame id>.png`` (the data set's own naming: SMOKE5K's
``test/gt/<stem>.png`` becomes ``<stem>.png``; a class-folder id ``smoke/x`` a subfolder),
frames whole (tiles stitched back as the scorer stitches them):

- label maps (``--stage pseudo`` or ``final``) as palette PNGs whose pixel values are the
  labels, 0 background, 1 smoke, 255 ignore (VOC's convention; the palette colours them like
  VOC); a soft map is binarised at its record's calibrated threshold first;
- CAMs (``--stage cam``) as 16-bit grayscale, ``round(cam * 65535)``.

So pseudo labels of the training split (``--split train``) can train an external segmenter
(mmsegmentation, another team's code). Maps come from the run's cache; missing ones are
recomputed from the cached trained state (`bench.record_maps`), never trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError
from bench.record_maps import Missing, RunMaps, binarize_at, record_threshold

#: VOC's colours of the label values written (others black)
PALETTE = {0: (0, 0, 0), 1: (128, 0, 0), 255: (224, 224, 192)}
CAM_SCALE = 65535


@dataclass
class Exported:
    """What `export_maps` wrote."""

    method: str
    what: str
    files: list[Path] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.files)


def palette_png(labels: np.ndarray, path: Path) -> None:
    """Write a label map (uint8 0, 1, 255) as a palette PNG, atomically."""
    from PIL import Image

    from bench.atomic import atomic_path

    labels = np.ascontiguousarray(labels, np.uint8)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    palette = [0] * (256 * 3)
    for value, rgb in PALETTE.items():
        palette[3 * value:3 * value + 3] = rgb
    image.putpalette(palette)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def cam_png(soft: np.ndarray, path: Path) -> None:
    """Write a soft map in [0, 1] as a 16-bit grayscale PNG (``round(x * 65535)``),
    atomically."""
    from PIL import Image

    from bench.atomic import atomic_path

    values = np.round(np.clip(np.asarray(soft, np.float64), 0.0, 1.0) * CAM_SCALE)
    with atomic_path(path) as tmp:
        Image.fromarray(values.astype(np.uint16)).save(tmp, format="PNG")


def find_record(maps: RunMaps, method: str, dataset: str, split: str, profile: str,
                seed: int) -> dict[str, Any]:
    """The in-domain record of ``method`` on ``dataset``: scored on ``split`` if there is one,
    else on ``test``, then ``val`` (stage keys, and so the cached maps of every split, are the
    same)."""
    from bench.spec import parse_pipeline

    canonical = parse_pipeline(method).text
    found = {r["split"]: r for r in maps.records
             if r["method"] == canonical and r["dataset"] == dataset and r["profile"] == profile
             and int(r["seed"]) == seed and r.get("train_dataset", dataset) == dataset}
    for which in (split, "test", "val", *sorted(found)):
        if which in found:
            return found[which]
    known = sorted({r["method"] for r in maps.records if r["dataset"] == dataset})
    raise ConfigError(f"no record of '{canonical}' on {dataset} (profile {profile}, seed {seed}) "
                      f"in {maps.out / 'records'}; recorded there: {', '.join(known) or 'none'}")


def export_maps(out: Path, method: str, dataset: str, split: str, stage: str, to: Path,
                profile: str = "quick", seed: int = 0,
                data_roots: dict[str, str] | None = None) -> Exported:
    """Write the maps of stage ``stage`` (``cam``, ``pseudo`` or ``final``) of ``method`` on
    ``dataset``/``split`` into folder ``to``; returns what was written. Stops with a
    `ConfigError` on the first map that is neither cached nor recomputable."""
    if stage not in ("cam", "pseudo", "final"):
        raise ConfigError(f"--stage must be cam, pseudo or final, not '{stage}'")
    with RunMaps(Path(out), data_roots, whole_frames=True) as maps:
        rec = find_record(maps, method, dataset, split, profile, seed)
        if rec.get("not_run"):
            raise ConfigError(f"'{rec['method']}' on {dataset} was {rec['not_run']}")
        target = maps.roles(rec)[stage]
        if target is None:
            raise ConfigError(f"'{rec['method']}' has no {stage} stage (a segmenter alone "
                              "trains on ground-truth masks)")
        if isinstance(target, Missing):
            raise ConfigError(target.reason)
        frames = maps.frames(target, split)
        if isinstance(frames, Missing):
            raise ConfigError(frames.reason)
        soft = target.get("output") == "soft"
        threshold = record_threshold(target) if soft and stage != "cam" else None
        what = (f"{target['method']}, 16-bit CAM" if stage == "cam" else
                f"{target['method']}, labels" + (f" at threshold {threshold:.2f}"
                                                  if threshold is not None else ""))
        result = Exported(rec["method"], what)
        to = Path(to)
        for view in frames.views:
            m = maps.frame_map(target, view.id, split)
            if isinstance(m, Missing):
                raise ConfigError(f"frame {view.id}: {m.reason}")
            path = to / f"{view.id}.png"
            if stage == "cam":
                if not soft:
                    raise ConfigError(f"'{target['method']}' outputs labels, not a CAM")
                cam_png(m, path)
            else:
                palette_png(m if threshold is None else binarize_at(m, threshold), path)
            result.files.append(path)
        maps.print_notes()
    return result
