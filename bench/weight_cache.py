"""The weights cache: hub weights fetched on a machine that is online, read where none is.

Cluster compute nodes (Snellius's) are offline; login nodes are not. ``bench fetch-weights
--methods SPECS`` downloads every hub weight the named pipelines need into the weights cache,
``$BENCH_WEIGHTS`` (default ``$XDG_CACHE_HOME/smoke-wsss-bench/weights``, i.e.
``~/.cache/...``), and prints each file with its SHA-256. Runs resolve ``weights=hub`` in this
order (`resolve`): the cache, then the hub (a download, when online), else a `WeightsError`
naming the ``fetch-weights`` command to run. ``bench run --executor slurm`` checks the cache
before it submits anything.

What a pipeline needs comes from its plugins: a plugin class may define the class method
``hub_weights(params, profile)`` returning `HubWeight` objects or plain dicts
(``{"kind": "url", "name": "sam_vit_b.pth", "url": "https://..."}``), so plugin files need no
import from here. Kinds:

- ``timm``: a timm model's pretrained weights (``name`` = the model), stored as the state dict
  of ``timm.create_model(name, pretrained=True)``, i.e. after timm's own conversions;
- ``url``: a file downloaded as it is (``file://`` URLs work too). A Hugging Face file is the
  URL ``https://huggingface.co/<repo>/resolve/main/<file>``.

Who declares what: classifier CAMs their timm backbone (``weights=hub``); ``sam`` the official
checkpoint (``checkpoint=hub``); ``clip`` / ``clip_verify`` the file open_clip would download
for ``pretrained=TAG``; ``mmseg`` the pretrained backbone of its config and a URL
``checkpoint=``. Plugins that read a URL weight at run time call `hub_weight_file` (exported as
``bench.hub_weight_file``): the cached file, else a download into the cache, else the error.

Layout: ``<cache>/<kind>/<file>`` and ``<cache>/manifest.json`` (relative path → sha256, bytes,
source), written atomically under a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import atomic_path, write_json
from bench.errors import ConfigError

ENV = "BENCH_WEIGHTS"
KINDS = ("timm", "url")


class WeightsError(ConfigError):
    """A hub weight that is not cached (offline), cannot be fetched, or is badly declared."""


def weights_dir() -> Path:
    """The weights cache folder (``$BENCH_WEIGHTS``, else under the user cache folder)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smoke-wsss-bench" / "weights"


@dataclass(frozen=True)
class HubWeight:
    """One hub weight a plugin needs: ``kind`` (`KINDS`), ``name``, and a ``url`` for urls."""

    kind: str
    name: str
    url: str = ""

    @classmethod
    def of(cls, obj: Any, who: str = "a plugin") -> HubWeight:
        """A `HubWeight` from itself or from a dict with the same keys."""
        if isinstance(obj, HubWeight):
            return obj
        if isinstance(obj, dict) and set(obj) <= {"kind", "name", "url"} and "kind" in obj \
                and "name" in obj:
            weight = cls(str(obj["kind"]), str(obj["name"]), str(obj.get("url", "")))
        else:
            raise WeightsError(f"{who}: hub_weights returned {obj!r}, not a HubWeight or a "
                               "dict with kind, name (and url)")
        if weight.kind not in KINDS:
            raise WeightsError(f"{who}: hub weight kind '{weight.kind}' is not one of "
                               f"{', '.join(KINDS)}")
        if weight.kind == "url" and not weight.url:
            raise WeightsError(f"{who}: url weight '{weight.name}' has no url")
        if "/" in weight.name or weight.name.startswith("."):
            raise WeightsError(f"{who}: weight name '{weight.name}' must be a plain file name")
        return weight

    @property
    def relpath(self) -> str:
        """Its path inside the cache."""
        return f"timm/{self.name}.pth" if self.kind == "timm" else f"url/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def cached(weight: HubWeight, root: Path | None = None) -> Path | None:
    """The cached file of ``weight``, or None."""
    path = (root or weights_dir()) / weight.relpath
    return path if path.is_file() else None


def offline() -> bool:
    """Whether hub downloads are switched off (``HF_HUB_OFFLINE`` or ``BENCH_OFFLINE``)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE",
                                                                 "BENCH_OFFLINE"))


def fetch_command(specs: Sequence[str], profile: str) -> str:
    """The ``bench fetch-weights`` command that fetches what ``specs`` need."""
    cmd = f"bench fetch-weights --methods {shlex.quote(','.join(specs))}"
    return cmd + (f" --profile {profile}" if profile != "quick" else "")


def resolve(weight: HubWeight, specs: Sequence[str] = (), profile: str = "quick"
            ) -> tuple[str, Path | None]:
    """Where ``weight`` comes from: ``("cache", path)``, ``("hub", None)`` when it is not
    cached and downloads are allowed, else a `WeightsError` with the command to fetch it."""
    path = cached(weight)
    if path is not None:
        return "cache", path
    if not offline():
        return "hub", None
    raise WeightsError(f"{weight} is not in the weights cache {weights_dir()} and this machine "
                       f"is offline: run \"{fetch_command(specs or [weight.name], profile)}\" "
                       "where the internet is reachable (a login node)")


def hub_weight_file(weight: HubWeight | dict[str, str], specs: Sequence[str] = (),
                    profile: str = "quick") -> Path:
    """The local file of ``weight`` for a run: the cached one; else, when downloads are
    allowed, downloaded into the cache first (`fetch`, which says so on stderr); else the
    `WeightsError` of `resolve`, naming the ``fetch-weights`` command for ``specs``.

    The same bytes either way, so a stage's results do not depend on where they came from.
    """
    import sys

    weight = HubWeight.of(weight)
    _, path = resolve(weight, specs, profile)
    if path is not None:
        return path
    path, digest, fetched = fetch(weight)
    if fetched:
        print(f"bench: fetched {weight} into the weights cache: {path} sha256 {digest}",
              file=sys.stderr)
    return path


# --------------------------------------------------------------------------- what pipelines need
def pipeline_hub_weights(spec: Any, profile: str) -> list[HubWeight]:
    """The hub weights of every stage of a pipeline (`hub_weights` hooks), in order."""
    from bench.pipeline import stage_params
    from bench.plugins import METHODS
    from bench.spec import parse_pipeline

    if isinstance(spec, str):
        spec = parse_pipeline(spec)
    out: list[HubWeight] = []
    for stage in spec.stages:
        cls = METHODS.get(stage.name).cls
        hook = getattr(cls, "hub_weights", None)
        if hook is None:
            continue
        for obj in hook(stage_params(stage, profile), profile) or ():
            weight = HubWeight.of(obj, f"plugin '{stage.name}'")
            if weight not in out:
                out.append(weight)
    return out


def missing_weights(specs: Iterable[Any], profile: str) -> list[HubWeight]:
    """The hub weights ``specs`` need that the cache lacks."""
    out: list[HubWeight] = []
    for spec in specs:
        for weight in pipeline_hub_weights(spec, profile):
            if cached(weight) is None and weight not in out:
                out.append(weight)
    return out


# --------------------------------------------------------------------------- fetching
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path) -> str:
    """Download ``url`` (http(s), ``file://``) to ``target`` atomically; its SHA-256."""
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as tmp, \
                open(tmp, "wb") as fh:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                fh.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot download {url}: {exc}") from None
    return digest.hexdigest()


def _save_timm(name: str, target: Path) -> None:
    import timm
    import torch

    try:
        model = timm.create_model(name, pretrained=True)
    except (RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot fetch timm weights of '{name}': {first}") from None
    with atomic_path(target) as tmp:
        torch.save(model.state_dict(), tmp)


def _manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def fetch(weight: HubWeight, root: Path | None = None) -> tuple[Path, str, bool]:
    """Put ``weight`` into the cache (unless it is there); returns (path, sha256, fetched)."""
    from filelock import FileLock

    root = root or weights_dir()
    target = root / weight.relpath
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".manifest.lock")):
        manifest = _manifest(root)
        entry = manifest.get(weight.relpath)
        if target.is_file():
            if entry and entry.get("bytes") == target.stat().st_size:
                return target, str(entry["sha256"]), False
            digest = sha256_of(target)
            fetched = False
        else:
            if weight.kind == "url":
                digest = download(weight.url, target)
            else:
                _save_timm(weight.name, target)
                digest = sha256_of(target)
            fetched = True
        manifest[weight.relpath] = {"sha256": digest, "bytes": target.stat().st_size,
                                    "source": weight.url or f"timm:{weight.name}"}
        write_json(root / "manifest.json", manifest)
    return target, digest, fetched
