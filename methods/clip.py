"""CLIP-aided smoke maps: a CLIP-ES CAM source (``clip``), a CLIP region verifier
(``clip_verify``) and its ignore variant (``clip_ignore``), on ``open_clip_torch``
(``pip install 'smoke-wsss-bench[clip]'``). Prompts, weights and parameters: docs/clip.md.

``clip`` follows CLIP-ES (Lin et al., CVPR 2023, github.com/linyq2117/CLIP-ES), training-free:

- **Softmax over prompts.** The smoke prompts (an ensemble: their normalised text embeddings
  averaged into one class) and every background prompt (a class each) meet in one softmax over
  CLIP's scaled cosine similarities; the CAM is the Grad-CAM of the smoke probability. The
  background classes are what makes it work: CLIP-ES's VOC pseudo-mask mIoU falls from 70.8 to
  29.5 without them. Both lists and the template are parameters (defaults below, each
  background class with the reason it is there).
- **Grad-CAM** at the last residual block's ``ln_1`` over the patch tokens (class token
  removed): channel weights are the gradients averaged over the patches, the map is the ReLU
  of the weighted sum, normalised per image as pytorch-grad-cam normalises (`minmax`),
  upsampled bilinearly to the image and normalised again (pytorch-grad-cam's ``GradCAM`` with
  a reshape transform gives the same maps; tests/test_clip.py checks them to 1e-5). The image
  feature is, as in CLIP-ES, the mean of the final patch tokens after ``ln_post`` projected
  (``pool=patch_mean``), or CLIP's own class token (``pool=class_token``).
- **Input.** The image keeps its aspect ratio; each side is resized up to the next multiple of
  the patch size (CLIP-ES at scale 1), the positional embeddings are resized to that grid as
  open_clip resizes them (bicubic). Multi-scale is the ``multiscale`` wrapper's job
  (``clip+multiscale``). Images of one size are one batch; on CUDA the image tower runs under
  float16 autocast. The first blocks run without autograd; the backward pass goes from the
  smoke probability to the hooked ``ln_1`` output only (no parameter gradients).
- **``caa=true``** (default): CLIP-ES's class-aware attention affinity. Patch-to-patch
  attention (heads averaged) of the last ``caa_layers`` blocks is averaged, normalised by
  columns then rows ``caa_sinkhorn`` times (Sinkhorn), symmetrised and squared; only the
  columns inside the boxes of the connected regions (8-connected) of CAM > ``caa_threshold``
  × its maximum propagate, and the refined CAM is that matrix times the CAM, normalised
  again. (CLIP-ES's boxes drop a box's last row and column at the image border; here a box
  covers its region whole.)

``clip_verify`` asks CLIP about each connected smoke component (8-connected) of its input (a
soft map read at its input's calibrated threshold, or a label map's 1s): the component's box
with a margin on each side, made square and resized to the model's input size, goes through
CLIP's own image encoder; the same softmax gives its smoke probability. The output is a soft
map: every pixel of a component holds its component's smoke probability (components under
``min_area`` pixels are not asked and hold 1), everything else 0. The runner thresholds it at
the value that maximises mIoU on the calibration split, so the components whose smoke
probability is below a threshold chosen on the calibration split are dropped, there and in the
pseudo labels a segmenter downstream trains on (``effnet+crf+clip_verify``); the record's
``threshold.value`` is that probability. Per frame, every component's box, area, smoke
probability and the background class CLIP prefers for it ("as": steam, cloud, ...) go to
``clip_verify-components.json`` in the stage's cache folder; the components dropped in a frame
are those whose ``smoke`` is below the threshold. ``clip_ignore`` after it
(``effnet+crf+clip_verify+clip_ignore``) marks those components 255 (ignored by segmenter
training) instead of background, at the same calibrated threshold.

No CLIP weights ship in any package: ``pretrained=TAG`` (an open_clip tag such as ``openai``)
or ``checkpoint=PATH`` (an open_clip state dict, or OpenAI's original TorchScript file such as
``ViT-B-16.pt``). Without either the stages do not run (`bench.Plugin.not_runnable`); they are
never run on random weights. A tag's file is the one open_clip would download (its pretrained
config's Hugging Face file, `clip_hub_weight`): the stages declare it (``hub_weights``) so that
``bench fetch-weights`` stores it in the weights cache (``$BENCH_WEIGHTS``), and load it from
there (`bench.hub_weight_file`: the cache, else a download into the cache when online, else an
error naming the ``fetch-weights`` command) with the tag's QuickGELU and image mean and std, as
``open_clip.create_model(model, pretrained=TAG)`` would.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench import (
    IGNORE,
    METHODS,
    CamSource,
    ConfigError,
    HubWeight,
    NotRunnableError,
    Refiner,
    Sample,
    WeightsError,
    hub_weight_file,
    parse_pipeline,
    register_method,
)

#: The smoke prompts, averaged into one class: industrial emissions in the words people use for
#: them (plume, stack, exhaust) and in the colours they come in.
SMOKE_PROMPTS = (
    "industrial smoke",
    "smoke plume from a chimney",
    "exhaust smoke",
    "smoke from a factory stack",
    "dark smoke emission",
    "brown smoke",
)

#: The background classes, each its own class in the softmax. A class is here because without
#: it that kind of pixel has nowhere to go but smoke.
BACKGROUND_PROMPTS = (
    "steam",  # white cooling- and quench-tower plumes: the distractor the benchmark measures
    "water vapour",  # steam again in other words: CLIP's text encoder splits synonyms
    "cloud",  # white and grey fractal texture overhead, the closest look-alike of a plume
    "sky",  # the backdrop of nearly every plume (clear, overcast or low-sun)
    "chimney",  # plumes rise from stacks, so CAMs learn the stack (the chimney column)
    "industrial building",  # halls, tanks and conveyors of the plant around the stacks
    "factory",  # the plant as a whole, for frames showing more of it
    "crane",  # orange cranes and lattice masts against orange and brown smoke
    "tree",  # tree lines in front of plants; CLIP-ES's generic scene background from here on
    "ground",  # the lower part of wide frames
    "road",  # roads and yards in front of the plant
    "water",  # harbours and rivers next to steel works and power plants
)

#: The sentence every prompt is put into ("{}" marks the prompt). CLIP-ES used "a clean origami
#: {}." on VOC; a plain photo template suits photographs of plants.
TEMPLATE = "a photo of {}."

#: OpenAI's ViT-B/16 (MIT licence), the weights CLIP-ES used; open_clip's tag ``openai``.
OPENAI_VIT_B_16 = ("https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101e"
                   "abd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")
INSTALL_HINT = "pip install 'smoke-wsss-bench[clip]'"
#: A Hugging Face file's download URL; ``$HF_ENDPOINT`` replaces the host, as it does for
#: huggingface_hub (and the tests point it at a ``file://`` folder).
HF_FILE_URL = "{endpoint}/{repo}/resolve/main/{file}"
HF_ENDPOINT = "https://huggingface.co"
NO_WEIGHTS = ("", "none")
#: the value a verified component never goes below, so that clip_ignore tells it from background
MIN_SCORE = 1e-3
COMPONENTS_FILE = "clip_verify-components.json"


@dataclass
class ClipSettings:
    """The CLIP model and the prompts, shared by ``clip`` and ``clip_verify``.

    model: an open_clip architecture (``open_clip.list_models()``: ViT-B-16, ViT-L-14, ...).
    pretrained: an open_clip pretrained tag of that model (openai, laion2b_s34b_b88k, ...),
        read from the weights cache (``bench fetch-weights``; downloaded into it when online);
        none: not given.
    checkpoint: a weights file: an open_clip state dict, or OpenAI's TorchScript file
        (ViT-B-16.pt); none: not given. Without pretrained or checkpoint the stage is not run.
    quick_gelu: the network uses QuickGELU (OpenAI's and some other weights were trained with
        it; a pretrained tag and OpenAI's file set it themselves).
    smoke: the smoke prompts, averaged into one class (``smoke=industrial smoke:exhaust``).
    background: the background prompts, one class each.
    template: the sentence each prompt is put into; ``{}`` marks the prompt.
    half: run the image tower under float16 autocast on CUDA (no effect on the CPU).
    """

    model: str = "ViT-B-16"
    pretrained: str = "none"
    checkpoint: str = "none"
    quick_gelu: bool = False
    smoke: tuple[str, ...] = SMOKE_PROMPTS
    background: tuple[str, ...] = BACKGROUND_PROMPTS
    template: str = TEMPLATE
    half: bool = True

    def __post_init__(self) -> None:
        if has_weights(self.pretrained) and has_weights(self.checkpoint):
            raise ValueError(f"pass pretrained= or checkpoint=, not both (pretrained="
                             f"{self.pretrained}, checkpoint={self.checkpoint})")
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain '{{}}' once (where the prompt goes), "
                             f"got '{self.template}'")
        if not self.smoke:
            raise ValueError("smoke needs at least one prompt")
        if not self.background:
            raise ValueError("background needs at least one prompt: without background "
                             "classes the softmax has nothing to compete with (CLIP-ES: "
                             "70.8 -> 29.5 mIoU)")
        for name in ("smoke", "background"):
            if any(not p.strip() for p in getattr(self, name)):
                raise ValueError(f"{name} has an empty prompt: {':'.join(getattr(self, name))}")


def has_weights(value: str) -> bool:
    """Whether a ``pretrained`` or ``checkpoint`` value names weights (not empty or none)."""
    return str(value).strip().lower() not in NO_WEIGHTS


def clip_not_runnable(name: str, params: Any) -> NotRunnableError | None:
    """Why a CLIP stage named ``name`` cannot run under ``params`` (no weights given, or the
    checkpoint file missing), with what to pass and where to get it; None when it can."""
    hint = (f"pass {name}[checkpoint=/path/to/ViT-B-16.pt] (OpenAI's ViT-B/16, MIT licence, "
            f"the weights CLIP-ES used: {OPENAI_VIT_B_16}) or {name}[pretrained=openai] (or "
            "another open_clip tag of model=; 'bench fetch-weights' stores it, a run downloads "
            "it when online); docs/clip.md")
    if has_weights(params.checkpoint):
        path = Path(str(params.checkpoint).strip()).expanduser()
        if not path.is_file():
            return NotRunnableError(f"CLIP checkpoint file not found: {path}", hint)
        return None
    if has_weights(params.pretrained):
        return None
    return NotRunnableError("needs CLIP weights", hint)


def clip_initial_weights(params: Any) -> str | None:
    """``hub`` (a pretrained tag) or ``file`` (a checkpoint); None without weights."""
    if has_weights(params.checkpoint):
        return "file"
    return "hub" if has_weights(params.pretrained) else None


# --------------------------------------------------------------------------- the model
@dataclass
class ClipModel:
    """A loaded open_clip model with what the stages need around it."""

    model: Any
    tokenizer: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: the image encoder's input size (height, width), where crops are resized to
    input_size: tuple[int, int]
    key: tuple[Any, ...]
    texts: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def text_features(self, smoke: Sequence[str], background: Sequence[str],
                      template: str) -> Any:
        """Unit text embeddings (1 + len(background), D): row 0 is the smoke ensemble (the
        normalised embeddings of the smoke prompts, averaged and normalised again), then one
        row per background prompt. Computed once per model and prompt set, then cached."""
        import torch
        import torch.nn.functional as F

        key = (tuple(smoke), tuple(background), template)
        cached = self.texts.get(key)
        if cached is not None:
            return cached
        prompts = [template.format(p.strip()) for p in (*smoke, *background)]
        with torch.no_grad():
            tokens = self.tokenizer(prompts).to(self.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        n = len(smoke)
        ensemble = F.normalize(emb[:n].mean(0, keepdim=True), dim=-1)
        out = torch.cat([ensemble, emb[n:]]).detach()
        self.texts[key] = out
        return out

    def logit_scale(self) -> float:
        """CLIP's learned temperature ``exp(logit_scale)`` (at most 100, as in training)."""
        return float(min(float(self.model.logit_scale.exp()), 100.0))

    def preprocess(self, batch: np.ndarray, size: tuple[int, int]) -> Any:
        """uint8 images (B, H, W, 3) -> normalised float tensor (B, 3, *size) on the device."""
        return self.normalize(self.resized(batch, size))

    def resized(self, batch: np.ndarray, size: tuple[int, int]) -> Any:
        """uint8 images (B, H, W, 3) -> float tensor (B, 3, *size) in [0, 1] on the device
        (bicubic, antialiased when shrinking)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.array(batch[..., :3], np.uint8, order="C")).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        if tuple(x.shape[-2:]) != tuple(size):
            shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False,
                              antialias=shrink).clamp_(0, 1)
        return x

    def normalize(self, x: Any) -> Any:
        """``(x - mean) / std`` per channel, for a (B, 3, H, W) tensor in [0, 1]."""
        import torch

        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


_MODELS: dict[tuple[Any, ...], ClipModel] = {}


def clip_hub_weights(stage: str, params: Any) -> list[HubWeight]:
    """What a CLIP stage reads from the hub under ``params``: the file of ``pretrained=TAG``
    (`clip_hub_weight`); nothing for ``checkpoint=PATH`` or without weights."""
    if has_weights(params.checkpoint) or not has_weights(params.pretrained):
        return []
    weight = clip_hub_weight(stage, params.model.strip(), params.pretrained.strip())
    return [weight] if weight is not None else []


def tag_config(stage: str, name: str, tag: str) -> dict[str, Any]:
    """open_clip's pretrained config of ``tag`` for model ``name``; a `ConfigError` listing
    the model's tags when it has no such tag (or open_clip is missing)."""
    try:
        import open_clip
    except ImportError:
        raise ConfigError(f"{stage} needs the open_clip_torch package: {INSTALL_HINT}") from None
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        choices = ", ".join(tags) if tags else "none known to open_clip"
        raise ConfigError(f"{stage}[pretrained={tag}]: not a pretrained tag of model={name} "
                          f"(tags: {choices}); a weights file is checkpoint=PATH")
    return dict(open_clip.get_pretrained_cfg(name, tag))


def clip_hub_weight(stage: str, name: str, tag: str) -> HubWeight | None:
    """The file open_clip downloads for ``create_model(name, pretrained=tag)``, as a
    weights-cache entry (``url`` kind), or None when the tag names a local ``file``.

    open_clip (with huggingface_hub, one of its requirements) prefers the config's ``hf_hub``
    entry, ``org/repo/`` (file ``open_clip_pytorch_model.bin``) or ``org/repo/file``, over its
    ``url``; so does this. The file is cached as ``url/<org>--<repo>--<file>`` (the name keeps
    the file's suffix, which says how to read it). open_clip first tries a ``.safetensors``
    twin of the file where the repository has one; this takes the file the config names, the
    same weights.
    """
    cfg = tag_config(stage, name, tag)
    if cfg.get("file"):
        return None
    hub = str(cfg.get("hf_hub") or "")
    if hub:
        from open_clip.constants import HF_WEIGHTS_NAME

        repo, file = os.path.split(hub)  # as open_clip splits it
        file = file or HF_WEIGHTS_NAME
        endpoint = (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")
        return HubWeight("url", f"{repo.replace('/', '--')}--{file}",
                         HF_FILE_URL.format(endpoint=endpoint, repo=repo, file=file))
    url = str(cfg.get("url") or "")
    if not url:
        raise ConfigError(f"{stage}[pretrained={tag}]: open_clip's config of this tag names "
                          "no download; a weights file is checkpoint=PATH")
    from urllib.parse import urlparse

    return HubWeight("url", os.path.basename(urlparse(url).path), url)


def load_clip(stage: str, params: ClipSettings, device: Any, spec: str = "",
              profile: str = "quick") -> ClipModel:
    """The open_clip model of ``params`` on ``device``, loaded once per process (``clip`` and
    ``clip_verify`` of one run share it) with every weight of the file (strict loading), in
    eval mode, without parameter gradients. ``stage`` names the stage in error messages;
    ``spec`` (the pipeline) and ``profile`` go into the ``fetch-weights`` command an offline
    run without the tag's cached file is told to run."""
    problem = clip_not_runnable(stage, params)
    if problem is not None:
        raise problem
    try:
        import open_clip
    except ImportError:
        raise ConfigError(f"{stage} needs the open_clip_torch package: {INSTALL_HINT}") from None
    name = params.model.strip()
    checkpoint = Path(params.checkpoint.strip()).expanduser().resolve() \
        if has_weights(params.checkpoint) else None
    stamp = (checkpoint.stat().st_size, checkpoint.stat().st_mtime_ns) if checkpoint else ()
    key = (name, params.pretrained.strip(), str(checkpoint), stamp, params.quick_gelu, str(device))
    if key in _MODELS:
        return _MODELS[key]
    if ":" not in name and open_clip.get_model_config(name) is None:
        from difflib import get_close_matches

        close = get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"{stage}[model={name}]: unknown open_clip model.{hint} "
                          "(open_clip.list_models() lists them)")
    if checkpoint is not None:
        model = _model_from_file(stage, name, checkpoint, params.quick_gelu)
    else:
        model = _model_from_tag(stage, name, params.pretrained.strip(), params.quick_gelu,
                                spec or f"clip[model={name},pretrained={params.pretrained}]",
                                profile)
    model = model.float().eval().requires_grad_(False).to(device)
    visual = model.visual
    mean = tuple(float(v) for v in (getattr(visual, "image_mean", None)
                                    or open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in (getattr(visual, "image_std", None)
                                   or open_clip.OPENAI_DATASET_STD))
    size = getattr(visual, "image_size", 224)
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    bundle = ClipModel(model, open_clip.get_tokenizer(name), mean, std,  # type: ignore[arg-type]
                       size, key)
    _MODELS[key] = bundle
    return bundle


def _model_from_tag(stage: str, name: str, tag: str, quick_gelu: bool, spec: str,
                    profile: str) -> Any:
    """``pretrained=TAG``: the tag's file from the weights cache (`clip_hub_weight`,
    `bench.hub_weight_file`), loaded as ``open_clip.create_model(name, pretrained=tag)`` loads
    it (the tag's QuickGELU, its image mean and std)."""
    import open_clip

    config = tag_config(stage, name, tag)
    gelu = quick_gelu or bool(config.get("quick_gelu", False))
    weight = clip_hub_weight(stage, name, tag)
    if weight is None:  # the tag names a local file: open_clip reads it itself
        try:
            return open_clip.create_model(name, pretrained=tag, device="cpu",
                                          force_quick_gelu=gelu)
        except Exception as exc:
            raise WeightsError(f"{stage}[pretrained={tag}]: cannot get the weights: "
                               f"{one_line_of(exc)}") from None
    try:
        path = hub_weight_file(weight, [spec], profile)
    except ConfigError as exc:  # offline, proxy, disk: one line saying what to do instead
        raise WeightsError(f"{stage}[pretrained={tag}]: {exc}; or download {weight.url} "
                           "elsewhere and pass checkpoint=PATH") from None
    # open_clip's preprocessing of a tag: its defaults, overlaid with the tag's config (the
    # image size stays the model's)
    preprocess = {k: v for k, v in config.items() if k != "size"}
    return _model_from_file(stage, name, path, gelu, preprocess)


def one_line_of(exc: BaseException) -> str:
    """An exception's first line (its type when it has no message), at most 300 characters."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first[:300]


def _model_from_file(stage: str, name: str, path: Path, quick_gelu: bool,
                     preprocess: dict[str, Any] | None = None) -> Any:
    """A model of architecture ``name`` with the weights of ``path`` (OpenAI's TorchScript
    file, or a state dict); ``preprocess`` (a tag's config) sets the image mean and std."""
    import open_clip

    if _is_torchscript(path):  # OpenAI's original files (ViT-B-16.pt) are TorchScript archives
        import warnings

        import torch
        from open_clip.model import build_model_from_openai_state_dict

        try:
            with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's files need it
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
        except Exception as exc:
            raise WeightsError(f"{stage}: cannot read OpenAI CLIP file {path} "
                               f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
        config = open_clip.get_model_config(name) if ":" not in name else None
        if config is not None and _model_dims(model) not in (None, _dims(config)):
            raise WeightsError(f"{stage}: {path} is an OpenAI CLIP file of another "
                               f"architecture than model={name} ({_model_dims(model)} vs "
                               f"{_dims(config)}: embed_dim, vision width, layers, patch)")
        model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN  # what `load_clip` reads
        model.visual.image_std = open_clip.OPENAI_DATASET_STD
        return _with_preprocess(model, preprocess)
    try:
        model = open_clip.create_model(name, pretrained=str(path), device="cpu",
                                       force_quick_gelu=quick_gelu)
    except Exception as exc:
        raise WeightsError(f"{stage}: CLIP checkpoint {path} does not load into model={name} "
                           f"({path.stat().st_size} bytes; a corrupt file or another "
                           f"architecture?): {type(exc).__name__}: {one_line_of(exc)}") from None
    return _with_preprocess(model, preprocess)


def _with_preprocess(model: Any, preprocess: dict[str, Any] | None) -> Any:
    """``model`` with a tag's image mean and std (and the rest of its preprocessing config,
    where this open_clip keeps one), as ``create_model(pretrained=TAG)`` sets them."""
    if not preprocess:
        return model
    visual = model.visual
    for key, attr in (("mean", "image_mean"), ("std", "image_std")):
        if preprocess.get(key) is not None:
            setattr(visual, attr, tuple(preprocess[key]))
    current = getattr(visual, "preprocess_cfg", None)
    if isinstance(current, dict):
        visual.preprocess_cfg = {**current, **{k: v for k, v in preprocess.items()
                                               if k in current and v is not None}}
    return model


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip file with a ``code/`` folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.startswith("code/") for n in archive.namelist()[:200])


def _dims(config: dict[str, Any]) -> tuple[int, int, int, int]:
    """(embed_dim, vision width, vision layers, patch size) of an open_clip model config."""
    vision = config.get("vision_cfg", {})
    return (int(config.get("embed_dim", 0)), int(vision.get("width", 0)),
            int(vision.get("layers", 0)), int(vision.get("patch_size", 0)))


def _model_dims(model: Any) -> tuple[int, int, int, int] | None:
    """The same four numbers of a built model (None: not a ViT image tower)."""
    visual = model.visual
    if not all(hasattr(visual, a) for a in ("proj", "conv1", "transformer")):
        return None
    return (int(visual.proj.shape[1]), int(visual.conv1.weight.shape[0]),
            len(visual.transformer.resblocks), int(visual.conv1.kernel_size[0]))


def vision_transformer(stage: str, model: Any) -> Any:
    """The model's image tower if it is an open_clip ViT the CAM can hook, else ConfigError."""
    visual = model.visual
    needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post")
    if not all(hasattr(visual, a) for a in needed) or getattr(visual, "attn_pool", None) \
            is not None:
        raise ConfigError(f"{stage}: CLIP-ES needs an open_clip ViT image tower (class token, "
                          f"patch tokens, ln_1 in each block), not {type(visual).__name__}; "
                          "use a ViT model (model=ViT-B-16)")
    return visual


# --------------------------------------------------------------------------- Grad-CAM
def positional_embedding(visual: Any, grid: tuple[int, int]) -> Any:
    """The tower's positional embeddings resized to a ``grid`` of patches (bicubic, as open_clip
    resizes them when loading weights into another image size); class token's unchanged."""
    import torch
    import torch.nn.functional as F

    pos = visual.positional_embedding
    old = tuple(int(v) for v in visual.grid_size)
    if tuple(grid) == old:
        return pos
    tok, img = pos[:1], pos[1:]
    img = img.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=tuple(grid), mode="bicubic", antialias=True,
                        align_corners=False)
    img = img.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
    return torch.cat([tok, img])


def _tokens(visual: Any, x: Any, grid: tuple[int, int]) -> Any:
    """Patch embedding, class token, positional embedding and ``ln_pre``: (B, 1 + h*w, C)."""
    import torch

    t = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], 1, -1)
    t = torch.cat([cls, t], dim=1) + positional_embedding(visual, grid).to(t.dtype)
    return visual.ln_pre(visual.patch_dropout(t))


@dataclass
class GradCamOutput:
    """What `clip_gradcam` returns for a batch."""

    #: ReLU of the weighted patch activations (B, h, w), before normalisation
    cam: Any
    #: softmax over [smoke, *background] of each image (B, K)
    probs: Any
    #: patch-to-patch attention averaged over heads and the last blocks (B, h*w, h*w), or None
    attention: Any = None


def clip_gradcam(visual: Any, x: Any, text: Any, scale: float,
                 pool: str = "patch_mean", attention_blocks: int = 0) -> GradCamOutput:
    """Grad-CAM of the softmax smoke probability (class 0 of ``text``) at the last block's
    ``ln_1`` over the patch tokens, for a normalised batch ``x`` (B, 3, H, W) whose sides are
    multiples of the patch size. ``attention_blocks`` > 0 also returns the attention of that
    many last blocks, averaged. Blocks before the last run without autograd; the gradient is
    taken with respect to the hooked ``ln_1`` output only."""
    import torch
    import torch.nn.functional as F

    patch = visual.conv1.kernel_size
    grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
    blocks = list(visual.transformer.resblocks)
    batch_first = bool(getattr(visual.transformer, "batch_first", True))
    first_hooked = len(blocks) - min(attention_blocks, len(blocks))
    attention: list[Any] = []
    hooks = []
    if attention_blocks > 0:
        for blk in blocks[first_hooked:]:
            if not isinstance(getattr(blk, "attn", None), torch.nn.MultiheadAttention):
                raise ConfigError("caa=true reads attention weights from "
                                  "torch.nn.MultiheadAttention blocks; this model's blocks are "
                                  f"{type(blk).__name__} (use caa=false)")
            hooks.append(blk.attn.register_forward_pre_hook(_want_weights, with_kwargs=True))
            hooks.append(blk.attn.register_forward_hook(
                lambda _m, _a, out: attention.append(out[1].detach().float())))
    leaf: list[Any] = []

    def grab(_module: Any, _args: Any, out: Any) -> Any:
        a = out.detach().requires_grad_(True)
        leaf.append(a)
        return a

    hooks.append(blocks[-1].ln_1.register_forward_hook(grab))
    try:
        with torch.no_grad():
            t = _tokens(visual, x, grid)
            t = t if batch_first else t.transpose(0, 1)
            for blk in blocks[:-1]:
                t = blk(t)
        with torch.enable_grad():
            y = blocks[-1](t)
            y = visual.ln_post(y if batch_first else y.transpose(0, 1))
            feat = y[:, 1:].mean(1) if pool == "patch_mean" else y[:, 0]
            if visual.proj is not None:
                feat = feat @ visual.proj
            with torch.autocast(x.device.type, enabled=False):  # the softmax in float32
                feat = F.normalize(feat.float(), dim=-1)
                probs = (scale * feat @ text.float().T).softmax(dim=-1)
            (grad,) = torch.autograd.grad(probs[:, 0].sum(), leaf[0])
    finally:
        for h in hooks:
            h.remove()
    act = leaf[0].detach()
    if not batch_first:
        act, grad = act.transpose(0, 1), grad.transpose(0, 1)
    act, grad = act[:, 1:].float(), grad[:, 1:].float()
    with torch.autocast(x.device.type, enabled=False):
        weights = grad.mean(1)  # (B, C): gradients averaged over the patch positions
        cam = torch.relu(torch.einsum("bnc,bc->bn", act, weights)).view(-1, *grid)
    attn = None
    if attention:
        attn = torch.stack(attention).mean(0)[:, 1:, 1:]
    return GradCamOutput(cam.detach(), probs.detach(), attn)


def _want_weights(_module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """Forward pre-hook: make ``nn.MultiheadAttention`` return head-averaged weights."""
    return args, {**kwargs, "need_weights": True, "average_attn_weights": True}


def minmax(cam: Any, eps: float = 1e-7) -> Any:
    """Per-image normalisation of (B, h, w) maps as pytorch-grad-cam's ``scale_cam_image``:
    ``(c - min) / (eps + max(c - min))``. The ``eps`` keeps a map of near-zero gradients (an
    image CLIP finds no smoke in) near 0 instead of stretching its noise to [0, 1]."""
    lo = cam.flatten(1).min(1).values.view(-1, 1, 1)
    shifted = cam - lo
    return shifted / (eps + shifted.flatten(1).max(1).values.view(-1, 1, 1))


# --------------------------------------------------------------------------- CAA
def box_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """The union of the bounding boxes of the 8-connected regions of ``cam > threshold *
    cam.max()`` (a whole box each, edges included): CLIP-ES's affinity mask."""
    from scipy import ndimage as ndi

    out = np.zeros(cam.shape, bool)
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0:
        return out
    regions, n = ndi.label(cam > threshold * peak, structure=np.ones((3, 3), bool))
    for box in ndi.find_objects(regions)[:n]:
        if box is not None:
            out[box] = True
    return out


def caa_refine(cam: Any, attention: Any, threshold: float = 0.4, sinkhorn: int = 3) -> Any:
    """CLIP-ES's class-aware attention affinity for a batch: ``cam`` (B, h, w) in [0, 1],
    ``attention`` (B, n, n) with n = h*w (row: query patch, column: key patch).

    The attention is normalised by columns then by rows ``sinkhorn`` times, symmetrised
    ``(T + Tᵀ) / 2`` and squared (T²); columns outside the boxes of CAM > ``threshold`` × max
    (`box_mask`) are zeroed and the CAM is multiplied by it, then min-max normalised. T² is
    never formed: ``(T² ⊙ mask) @ c = T @ (T @ (mask ⊙ c))``."""
    import torch

    b, h, w = cam.shape
    masks = np.stack([box_mask(c, threshold) for c in cam.detach().float().cpu().numpy()])
    mask = torch.from_numpy(masks.reshape(b, h * w, 1)).to(cam.device)
    t = attention.float()
    for _ in range(max(1, sinkhorn)):
        t = t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)
        t = t / t.sum(dim=2, keepdim=True).clamp_min(1e-12)
    t = (t + t.transpose(1, 2)) / 2
    c = cam.float().reshape(b, h * w, 1) * mask
    refined = torch.bmm(t, torch.bmm(t, c)).view(b, h, w)
    return minmax(refined)


# --------------------------------------------------------------------------- clip
@register_method("clip")
class ClipCam(CamSource):
    """CLIP-ES CAM: Grad-CAM of CLIP's smoke-vs-background softmax, attention affinity
    (training-free; needs CLIP weights)."""

    label = "CLIP-ES"
    requires = ("open_clip:clip",)

    @dataclass
    class Params(ClipSettings):
        """The model and prompts (`ClipSettings`), and how the CAM is read.

        pool: the image feature the softmax scores: patch_mean (CLIP-ES: the mean of the
            final patch tokens) or class_token (CLIP's own).
        caa: refine the CAM with CLIP-ES's class-aware attention affinity.
        caa_layers: blocks whose attention is averaged (the last ones).
        caa_threshold: CAM level (share of its maximum) whose regions' boxes may propagate.
        caa_sinkhorn: rounds of column-then-row normalisation of the attention.
        batch_infer: images per forward pass.
        """

        pool: Literal["patch_mean", "class_token"] = "patch_mean"
        caa: bool = True
        caa_layers: int = 8
        caa_threshold: float = 0.4
        caa_sinkhorn: int = 3
        batch_infer: int = 8

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.caa_layers < 1 or self.caa_sinkhorn < 1 or self.batch_infer < 1:
                raise ValueError("caa_layers, caa_sinkhorn and batch_infer must be >= 1")
            if not 0.0 <= self.caa_threshold < 1.0:
                raise ValueError(f"caa_threshold must be in [0, 1), got {self.caa_threshold}")

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self._clip: ClipModel | None = None
        self._images = 0
        self._seconds = 0.0

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """``hub`` or ``file``; None without weights (the stage does not run then)."""
        return clip_initial_weights(params)

    @classmethod
    def not_runnable(cls, params: Any, profile: str) -> NotRunnableError | None:
        """No CLIP weights given (or the checkpoint file missing): what to pass."""
        return clip_not_runnable(cls.name or "clip", params)

    @classmethod
    def hub_weights(cls, params: Any, profile: str) -> list[HubWeight]:
        """The file of ``pretrained=TAG`` (``bench fetch-weights``), else nothing."""
        return clip_hub_weights(cls.name or "clip", params)

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return int(self.params.batch_infer)

    def clip(self) -> ClipModel:
        """The loaded model (shared with other CLIP stages of the process)."""
        if self._clip is None:
            self._clip = load_clip(self.name or "clip", self.params, self.ctx.torch_device(),
                                   self.ctx.extra.get("stage", ""), self.ctx.profile)
            vision_transformer(self.name or "clip", self._clip.model)
        return self._clip

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """The size an image is fed at: each side up to the next multiple of the patch."""
        ph, pw = self.clip().model.visual.conv1.kernel_size
        return (max(ph, -(-height // ph) * ph), max(pw, -(-width // pw) * pw))

    def compute(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One CLIP-ES map in [0, 1] per image, at the image's size."""
        import contextlib

        import torch
        import torch.nn.functional as F

        clip = self.clip()
        p = self.params
        text = clip.text_features(p.smoke, p.background, p.template)
        visual = clip.model.visual
        device = clip.device
        half = bool(p.half and device.type == "cuda")
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[0]), int(image.shape[1])), []).append(i)
        start = time.perf_counter()
        for (h, w), idx in groups.items():
            x = clip.preprocess(np.stack([images[i] for i in idx]), self.input_shape(h, w))
            autocast = torch.autocast("cuda", dtype=torch.float16) if half \
                else contextlib.nullcontext()
            with autocast:
                res = clip_gradcam(visual, x, text, clip.logit_scale(), p.pool,
                                   p.caa_layers if p.caa else 0)
            cam = minmax(res.cam)
            if p.caa:
                cam = caa_refine(cam, res.attention, p.caa_threshold, p.caa_sinkhorn)
            maps = minmax(F.interpolate(cam[:, None], size=(h, w), mode="bilinear",
                                        align_corners=False)[:, 0]).clamp(0, 1)
            for j, i in enumerate(idx):
                out[i] = maps[j].cpu().numpy().astype(np.float32)
        self._seconds += time.perf_counter() - start
        self._images += len(images)
        return out  # type: ignore[return-value]

    def summary(self) -> str:
        """Images and images/s since the last summary."""
        if not self._images:
            return ""
        line = (f"CLIP-ES CAMs of {self._images} images, "
                f"{self._images / max(self._seconds, 1e-9):.1f} images/s")
        self._images, self._seconds = 0, 0.0
        return line


# --------------------------------------------------------------------------- clip_verify
@dataclass
class Component:
    """One connected smoke component and CLIP's answer about its crop."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, inclusive)
    area: int
    smoke: float  # CLIP's smoke probability of the crop (1.0: not asked, under min_area)
    as_: str  # the background class CLIP prefers for it ("" when not asked)
    as_p: float  # that class's probability

    def as_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "area": self.area, "smoke": round(self.smoke, 6),
                "as": self.as_, "as_p": round(self.as_p, 6)}


def crop_box(box: tuple[int, int, int, int], shape: tuple[int, int],
             margin: float) -> tuple[int, int, int, int]:
    """The crop asked about for a component's inclusive ``box`` (x0, y0, x1, y1): grown by
    ``margin`` × its size on each side, then its shorter side grown to the longer one (a square
    around the same centre), shifted to lie inside an image of ``shape`` (h, w) and clipped to
    it; half-open (x0, y0, x1, y1)."""
    h, w = shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    side = max(bw, bh) * (1 + 2 * margin)
    side = round(min(side, max(h, w)))
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    out = []
    for c, limit in ((cx, w), (cy, h)):
        lo = round(c - side / 2)
        lo = min(max(lo, 0), max(limit - side, 0))
        out.append((lo, min(lo + side, limit)))
    (ax0, ax1), (ay0, ay1) = out
    return ax0, ay0, ax1, ay1


@register_method("clip_verify")
class ClipVerify(Refiner):
    """Asks CLIP whether each smoke component is smoke or background; the runner drops those
    below a threshold chosen on the calibration split (needs CLIP weights)."""

    output = "soft"
    accepts = ("soft", "labels")
    uses_input_threshold = True
    demo = "effnet+crf+clip_verify"
    label = "CLIP verify"
    requires = ("open_clip:clip",)

    @dataclass
    class Params(ClipSettings):
        """The model and prompts (`ClipSettings`), and what is asked.

        margin: the crop around a component's box grows by this share of the box's size on
            each side (context for CLIP), before it is made square.
        min_area: components smaller than this (pixels) are not asked and kept (value 1).
        threshold: input value read as smoke; 0: the input's calibrated threshold (0.5
            without one).
        batch_infer: crops per forward pass.
        """

        margin: float = 0.25
        min_area: int = 16
        threshold: float = 0.0
        batch_infer: int = 32

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.margin < 0 or self.min_area < 0 or self.batch_infer < 1:
                raise ValueError("margin and min_area must be >= 0 and batch_infer >= 1")
            if not 0.0 <= self.threshold < 1.0:
                raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        self._clip: ClipModel | None = None
        #: frame id -> its components, since the last summary
        self.records: dict[str, list[Component]] = {}
        self._asked = 0
        self._seconds = 0.0

    @classmethod
    def initial_weights(cls, params: Any, profile: str) -> str | None:
        """``hub`` or ``file``; None without weights (the stage does not run then)."""
        return clip_initial_weights(params)

    @classmethod
    def not_runnable(cls, params: Any, profile: str) -> NotRunnableError | None:
        """No CLIP weights given (or the checkpoint file missing): what to pass."""
        return clip_not_runnable(cls.name or "clip_verify", params)

    @classmethod
    def hub_weights(cls, params: Any, profile: str) -> list[HubWeight]:
        """The file of ``pretrained=TAG`` (``bench fetch-weights``), else nothing."""
        return clip_hub_weights(cls.name or "clip_verify", params)

    def clip(self) -> ClipModel:
        """The loaded model (shared with other CLIP stages of the process)."""
        if self._clip is None:
            self._clip = load_clip(self.name or "clip_verify", self.params,
                                   self.ctx.torch_device(), self.ctx.extra.get("stage", ""),
                                   self.ctx.profile)
        return self._clip

    def smoke_region(self, cam: np.ndarray) -> np.ndarray:
        """The input's smoke pixels: a soft map at or above its threshold, a label map's 1s."""
        cam = np.asarray(cam)
        if np.issubdtype(cam.dtype, np.floating):
            t = self.params.threshold or (0.5 if self.input_threshold is None
                                          else float(self.input_threshold))
            return cam >= t
        return cam == 1

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """A soft map: each smoke component's pixels hold its CLIP smoke probability (at least
        `MIN_SCORE`; 1 for components under ``min_area``), other pixels 0."""
        from scipy import ndimage as ndi

        region = self.smoke_region(cam)
        out = np.zeros(region.shape, np.float32)
        comps, n = ndi.label(region, structure=np.ones((3, 3), bool))
        found: list[Component] = []
        if n:
            slices = ndi.find_objects(comps)
            areas = np.bincount(comps.ravel(), minlength=n + 1)[1:]
            asked = [i for i in range(n) if areas[i] >= max(self.params.min_area, 1)]
            boxes = {i: (slices[i][1].start, slices[i][0].start, slices[i][1].stop - 1,
                         slices[i][0].stop - 1) for i in range(n)}
            answers = self.ask(sample.image, [boxes[i] for i in asked]) if asked else []
            answer = dict(zip(asked, answers, strict=True))
            values = np.zeros(n + 1, np.float32)
            for i in range(n):
                smoke, as_, as_p = answer.get(i, (1.0, "", 0.0))
                values[i + 1] = max(smoke, MIN_SCORE) if i in answer else 1.0
                found.append(Component(boxes[i], int(areas[i]), float(smoke), as_, float(as_p)))
            out = values[comps]
        self.records[sample.id] = found
        return out

    def ask(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]]
            ) -> list[tuple[float, str, float]]:
        """CLIP's answer about each box's crop (`crop_box`): (smoke probability, the background
        class it prefers, that class's probability)."""
        import contextlib

        import torch
        import torch.nn.functional as F

        clip = self.clip()
        p = self.params
        text = clip.text_features(p.smoke, p.background, p.template)
        half = bool(p.half and clip.device.type == "cuda")
        start = time.perf_counter()
        out: list[tuple[float, str, float]] = []
        for first in range(0, len(boxes), p.batch_infer):
            crops = []
            for box in boxes[first:first + p.batch_infer]:
                x0, y0, x1, y1 = crop_box(box, image.shape[:2], p.margin)
                crops.append(clip.resized(image[None, y0:y1, x0:x1], clip.input_size))
            x = clip.normalize(torch.cat(crops))
            autocast = torch.autocast("cuda", dtype=torch.float16) if half \
                else contextlib.nullcontext()
            with torch.no_grad(), autocast:
                feat = F.normalize(clip.model.encode_image(x).float(), dim=-1)
            probs = (clip.logit_scale() * feat @ text.T).softmax(dim=-1).cpu().numpy()
            for row in probs:
                best = int(np.argmax(row[1:]))
                out.append((float(row[0]), p.background[best].strip(), float(row[1 + best])))
        self._seconds += time.perf_counter() - start
        self._asked += len(boxes)
        return out

    def summary(self) -> str:
        """Components asked about since the last summary, CLIP's answers, where they are
        written (``clip_verify-components.json`` in the stage's folder, merged by frame id)."""
        if not self.records:
            return ""
        path = self.ctx.workdir / COMPONENTS_FILE
        stored: dict[str, Any] = {}
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8")).get("frames", {})
        stored.update({k: [c.as_dict() for c in v] for k, v in self.records.items()})
        doc = {"about": "per frame: each smoke component's box (x0, y0, x1, y1, inclusive), "
                        "area, CLIP smoke probability and the background class CLIP prefers "
                        "('as'); the components dropped are those whose 'smoke' is below the "
                        "stage's threshold (its record's threshold.value)",
               "frames": dict(sorted(stored.items()))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        comps = [c for v in self.records.values() for c in v]
        asked = [c for c in comps if c.as_]
        votes: dict[str, int] = {}
        for c in asked:
            answer = "smoke" if c.smoke >= c.as_p else c.as_
            votes[answer] = votes.get(answer, 0) + 1
        said = ", ".join(f"{k} {v}" for k, v in sorted(votes.items(), key=lambda kv: -kv[1]))
        cost = (f", {1000 * self._seconds / self._asked:.1f} ms each" if self._asked else "")
        line = (f"CLIP asked about {len(asked)} of {len(comps)} components in "
                f"{len(self.records)} frames{cost}; its top answer: {said or 'none'}; per "
                f"frame in {path}")
        self.records = {}
        self._asked, self._seconds = 0, 0.0
        return line


# --------------------------------------------------------------------------- clip_ignore
@register_method("clip_ignore")
class ClipIgnore(Refiner):
    """After clip_verify: the components it scored below its calibrated threshold become 255
    (ignored by segmenter training) instead of background."""

    output = "labels"
    accepts = ("soft",)
    uses_input_threshold = True
    demo = "effnet+crf+clip_verify+clip_ignore"
    label = "CLIP ignore"

    @dataclass
    class Params:
        """threshold: smoke probability a component keeps smoke at; 0: clip_verify's threshold
        chosen on the calibration split."""

        threshold: float = 0.0

        def __post_init__(self) -> None:
            if not 0.0 <= self.threshold <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def __init__(self, params: Any | None = None, ctx: Any | None = None) -> None:
        super().__init__(params, ctx)
        stage = self.ctx.extra.get("stage", "")
        if stage:
            stages = parse_pipeline(stage).stages
            before = stages[-2].name if len(stages) > 1 else ""
            if not before or not issubclass(METHODS.get(before).cls, ClipVerify):
                raise ConfigError(f"clip_ignore must follow clip_verify (its input is "
                                  f"clip_verify's component scores), not '{before or stage}'")
        self.marked: dict[str, int] = {}

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """1 where the score reaches the threshold, 255 on components below it, 0 elsewhere."""
        t = self.params.threshold or (0.5 if self.input_threshold is None
                                      else float(self.input_threshold))
        cam = np.asarray(cam, np.float32)
        labels = np.zeros(cam.shape, np.uint8)
        labels[cam >= t] = 1
        below = (cam > 0) & (cam < t)
        labels[below] = IGNORE
        if below.any():
            from scipy import ndimage as ndi

            self.marked[sample.id] = int(ndi.label(below, structure=np.ones((3, 3), bool))[1])
        return labels

    def summary(self) -> str:
        """Components marked 255 since the last summary."""
        if not self.marked:
            return ""
        line = (f"{sum(self.marked.values())} components in {len(self.marked)} frames marked "
                "255 (below the threshold)")
        self.marked = {}
        return line
