"""The CLIP stages (``clip``, ``clip_verify``, ``clip_ignore``) on tiny open_clip models.

No CLIP weights are reachable here, so the tests register small model configs with open_clip
and save their weights as checkpoint files; everything else is the real code path
(``open_clip.create_model`` with ``pretrained=PATH``, the tokenizer, the CLI):

- ``tiny-test``: random weights, 2 blocks of width 64. Its CAM is compared with
  pytorch-grad-cam's ``GradCAM`` on open_clip's own forward pass.
- ``hand-test``: width 4, weights set by hand so that every answer is known in closed form.
  The patch embedding maps a pure red, green or blue patch to one of three orthonormal
  directions ``E`` ("smoke", "steam", "sky"); the first block is the identity, the last one
  attends uniformly (q = k = 0, v and the output projection the identity), so the class token
  leaves as the mean of the patch tokens and the gradient of the smoke probability with respect
  to every patch's ``ln_1`` output is one vector ``g``. The text tower is built the same way
  (zero token embeddings except the prompt words, uniform causal attention): a prompt's
  embedding is its word's vector.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from open_clip import factory

from bench.cli import main
from bench.errors import ConfigError, NotRunnableError
from bench.plugins import METHODS, discover
from bench.records import load_records
from bench.sample import Sample
from bench.stages import RunContext
from bench.weights import WeightsError


def tiny_config(image_size: int = 64, layers: int = 2) -> dict[str, Any]:
    """A 2-block ViT of width 64 on 16-px patches; a 2-block text tower of width 32."""
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": 64,
                           "head_width": 32, "patch_size": 16, "mlp_ratio": 2.0},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 2, "mlp_ratio": 2.0}}


HAND = {"embed_dim": 4,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 4, "head_width": 4,
                       "patch_size": 8, "mlp_ratio": 1.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 4, "heads": 1,
                     "layers": 1, "mlp_ratio": 1.0}}
#: the hand-set model's directions for a red, a green and a blue patch (zero-mean, orthonormal)
E = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]], np.float64) / 2
SMOKE, STEAM, SKY = (204, 0, 0), (0, 204, 0), (0, 0, 204)  # red, green, blue
#: prompt word -> its embedding: "smoke" lies halfway between the smoke and the steam patches
#: (a CLIP that cannot tell them apart), "steam" and "sky" are their patches' directions, and
#: "cloud" is the sky's with a little smoke in it
WORDS = {"smoke": E[0] + E[1], "steam": E[1], "sky": E[2], "cloud": E[2] + 0.1 * E[0]}
SCALE = 5.0  # exp(logit_scale)


def build_tiny(image_size: int = 64, layers: int = 2) -> Any:
    """The random ``tiny-test`` model (registers its config; seeded)."""
    factory._MODEL_CONFIGS["tiny-test"] = tiny_config(image_size, layers)
    torch.manual_seed(0)
    return open_clip.create_model("tiny-test").eval()


def _uniform_attention(block: Any) -> None:
    width = block.attn.embed_dim
    block.attn.in_proj_weight.zero_()
    block.attn.in_proj_bias.zero_()
    block.attn.in_proj_weight[2 * width:].copy_(torch.eye(width))  # v = x, q = k = 0
    block.attn.out_proj.weight.copy_(torch.eye(width))
    block.attn.out_proj.bias.zero_()
    block.mlp.c_proj.weight.zero_()
    block.mlp.c_proj.bias.zero_()


def _identity(block: Any) -> None:
    block.attn.out_proj.weight.zero_()
    block.attn.out_proj.bias.zero_()
    block.mlp.c_proj.weight.zero_()
    block.mlp.c_proj.bias.zero_()


def build_hand() -> Any:
    """The ``hand-test`` model (see the module docstring)."""
    factory._MODEL_CONFIGS["hand-test"] = HAND
    model = open_clip.create_model("hand-test").eval()
    v = model.visual
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)
    colours = torch.tensor(E.T, dtype=torch.float32)  # (4, 3): rgb -> direction
    k = v.conv1.kernel_size[0]
    tokenizer = open_clip.get_tokenizer("hand-test")
    with torch.no_grad():
        # token = colours @ mean(rgb / 255) of the patch: the conv sees normalised pixels
        # (x - mean) / std, so it weighs by std and the positional embedding adds the mean back
        v.conv1.weight.copy_((colours * std)[:, :, None, None].expand(-1, -1, k, k) / (k * k))
        v.class_embedding.zero_()
        v.positional_embedding.zero_()
        v.positional_embedding[1:] = colours @ mean
        _identity(v.transformer.resblocks[0])
        _uniform_attention(v.transformer.resblocks[1])
        v.proj.copy_(torch.eye(4))
        model.token_embedding.weight.zero_()
        for word, vec in WORDS.items():
            (token,) = tokenizer.encode(word)
            model.token_embedding.weight[token] = torch.tensor(vec, dtype=torch.float32)
        model.positional_embedding.zero_()
        _uniform_attention(model.transformer.resblocks[0])
        model.text_projection.copy_(torch.eye(4))
        model.logit_scale.fill_(math.log(SCALE))
    return model


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(build_tiny().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def hand_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "hand.pt"
    torch.save(build_hand().state_dict(), path)
    return path


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tiny_file: Path) -> Path:
    """``model=tiny-test`` registered with open_clip for this test; its checkpoint."""
    monkeypatch.setitem(factory._MODEL_CONFIGS, "tiny-test", tiny_config())
    return tiny_file


@pytest.fixture
def hand(monkeypatch: pytest.MonkeyPatch, hand_file: Path) -> Path:
    """``model=hand-test`` registered with open_clip for this test; its checkpoint."""
    monkeypatch.setitem(factory._MODEL_CONFIGS, "hand-test", HAND)
    return hand_file


def stage(name: str, **params: Any) -> Any:
    discover()
    cls = METHODS.get(name).cls
    return cls(cls.Params(**params), RunContext(progress=False))


def module() -> Any:
    """The loaded plugin module (methods/clip.py)."""
    discover()
    return sys.modules[METHODS.get("clip").cls.__module__]


def images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# --------------------------------------------------------------------------- Grad-CAM
class SoftmaxHead(torch.nn.Module):
    """open_clip's own forward pass, then the softmax over the prompts (what GradCAM hooks)."""

    def __init__(self, model: Any, text: torch.Tensor, pool: str) -> None:
        super().__init__()
        self.model, self.text, self.pool = model, text, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "class_token":
            feat = self.model.encode_image(x, normalize=True)
        else:  # CLIP-ES: the final patch tokens (after ln_post) averaged, then projected
            self.model.visual.output_tokens = True
            _, tokens = self.model.visual(x)
            feat = torch.nn.functional.normalize(tokens.mean(1) @ self.model.visual.proj, dim=-1)
        scale = self.model.logit_scale.exp().clamp(max=100)
        return (scale * feat @ self.text.T).softmax(dim=-1)


def gradcam_reference(model: Any, text: torch.Tensor, x: torch.Tensor, pool: str) -> np.ndarray:
    """pytorch-grad-cam's GradCAM of class 0 at the last block's ln_1 (class token dropped)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    grid = (x.shape[-2] // 16, x.shape[-1] // 16)

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)

    head = SoftmaxHead(model, text, pool)
    with GradCAM(model=head, target_layers=[model.visual.transformer.resblocks[-1].ln_1],
                 reshape_transform=reshape) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * x.shape[0])


@pytest.mark.parametrize("pool", ["patch_mean", "class_token"])
def test_clip_cam_equals_pytorch_grad_cam(tiny: Path, pool: str) -> None:
    cam = stage("clip", model="tiny-test", checkpoint=str(tiny), caa=False, pool=pool)
    batch = images(3, 64, 64)
    ours = cam.compute(batch)
    clip = cam.clip()
    text = clip.text_features(cam.params.smoke, cam.params.background, cam.params.template)
    reference = open_clip.create_model("tiny-test", pretrained=str(tiny)).eval()
    theirs = gradcam_reference(reference, text, clip.preprocess(np.stack(batch), (64, 64)), pool)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (64, 64)
        assert np.ptp(a) > 0.9 and np.ptp(b) > 0.9  # non-trivial maps
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_clip_cam_keeps_the_aspect_ratio(tiny: Path) -> None:
    """At 48x80 the patch grid is 3x5 and the positional embeddings are resized as open_clip
    resizes them for a model built at that size: the CAMs are equal."""
    cam = stage("clip", model="tiny-test", checkpoint=str(tiny), caa=False)
    assert cam.input_shape(48, 80) == (48, 80) and cam.input_shape(50, 70) == (64, 80)
    batch = images(2, 48, 80, seed=1)
    ours = cam.compute(batch)
    clip = cam.clip()
    text = clip.text_features(cam.params.smoke, cam.params.background, cam.params.template)
    wide = open_clip.create_model("tiny-test", pretrained=str(tiny), force_image_size=(48, 80))
    assert tuple(wide.visual.grid_size) == (3, 5)
    theirs = gradcam_reference(wide.eval(), text, clip.preprocess(np.stack(batch), (48, 80)),
                               "patch_mean")
    np.testing.assert_allclose(np.stack(ours), theirs, atol=1e-5)
    odd = cam.compute([images(1, 50, 70)[0], images(1, 64, 64)[0]])  # two sizes, two batches
    assert [m.shape for m in odd] == [(50, 70), (64, 64)]
    assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 for m in odd)


def test_caa_cam_runs_in_batches_and_matches_one_by_one(tiny: Path) -> None:
    cam = stage("clip", model="tiny-test", checkpoint=str(tiny), caa=True, caa_layers=8)
    batch = images(3, 64, 64, seed=2)
    together = cam.compute(batch)
    alone = [cam.compute([im])[0] for im in batch]
    np.testing.assert_allclose(np.stack(together), np.stack(alone), atol=1e-4)  # BLAS order
    assert all(np.ptp(m) > 0.5 for m in together)
    assert torch.is_grad_enabled()  # no global autograd switch left behind
    assert not any(p.requires_grad for p in cam.clip().model.parameters())


def test_low_precision_autocast_keeps_the_maps(tiny: Path) -> None:
    """On CUDA the image tower runs under float16 autocast; the CPU's bfloat16 autocast stands
    in for it here: the softmax and the CAM arithmetic stay float32, the maps stay close."""
    cam = stage("clip", model="tiny-test", checkpoint=str(tiny), caa=True, caa_layers=2)
    clip = cam.clip()
    text = clip.text_features(cam.params.smoke, cam.params.background, cam.params.template)
    x = clip.preprocess(np.stack(images(2, 48, 80, seed=4)), (48, 80))
    full = module().clip_gradcam(clip.model.visual, x, text, clip.logit_scale(), "patch_mean", 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module().clip_gradcam(clip.model.visual, x, text, clip.logit_scale(),
                                    "patch_mean", 2)
    assert low.cam.dtype == low.probs.dtype == low.attention.dtype == torch.float32
    a, b = module().minmax(full.cam), module().minmax(low.cam)
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.999
    torch.testing.assert_close(low.probs, full.probs, atol=2e-2, rtol=0)


# --------------------------------------------------------------------------- the softmax
def expected_hand_cam(counts: tuple[int, int, int], background: tuple[str, ...]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The hand-set model's answer in closed form: (softmax, normalised CAM of a smoke, a
    steam and a sky patch) for an image of ``counts`` smoke, steam and sky patches.

    The image feature is the unit mean direction ``f`` of its patches; the smoke probability's
    gradient with respect to it is ``v = s p_0 (t_0 - sum_k p_k t_k)``; normalising ``f``
    removes the component along it, and the same ``g = (I - f fᵀ) v`` reaches every patch's
    ``ln_1`` output, which for a patch of kind ``j`` is ``2 E[j]``: its CAM is ``relu(g · E[j])``.
    """
    f = np.asarray(counts, np.float64) @ E
    f /= np.linalg.norm(f)
    text = np.stack([WORDS["smoke"], *(WORDS[b] for b in background)])
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    z = SCALE * text @ f
    p = np.exp(z - z.max())
    p /= p.sum()
    v = SCALE * p[0] * (text[0] - p @ text)
    g = (np.eye(4) - np.outer(f, f)) @ v
    cam = np.maximum(E @ g, 0)
    return p, cam / cam.max()


def hand_scene() -> np.ndarray:
    """32x32, 8-px patches: the top row sky (4 patches), below it smoke on the left (6) and
    steam on the right (6)."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:8] = SKY
    image[8:, :16] = SMOKE
    image[8:, 16:] = STEAM
    return image


def test_a_background_prompt_that_matches_lowers_the_smoke_map(hand: Path) -> None:
    image = hand_scene()
    out = {}
    for background in (("sky",), ("sky", "steam")):
        cam = stage("clip", model="hand-test", checkpoint=str(hand), caa=False,
                    pool="class_token", smoke=("smoke",), background=background)
        clip = cam.clip()
        text = clip.text_features(("smoke",), background, cam.params.template)
        res = module().clip_gradcam(clip.model.visual, clip.preprocess(image[None], (32, 32)),
                                    text, clip.logit_scale(), "class_token")
        p, expected = expected_hand_cam((6, 6, 4), background)
        np.testing.assert_allclose(res.probs[0].numpy(), p, atol=1e-4)
        grid = res.cam[0].numpy()
        got = np.array([grid[1:, :2].mean(), grid[1:, 2:].mean(), grid[0].mean()]) / grid.max()
        np.testing.assert_allclose(got, expected, atol=1e-3)
        out[background] = cam.compute([image])[0]
    # without a steam class, steam is as much "smoke" as smoke; with it, the steam half is off
    np.testing.assert_allclose(expected_hand_cam((6, 6, 4), ("sky",))[1], [1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(expected_hand_cam((6, 6, 4), ("sky", "steam"))[1], [1, 0, 0],
                               atol=1e-6)
    before, after = out[("sky",)], out[("sky", "steam")]
    assert before[12:, 20:].min() > 0.9 and after[12:, 20:].max() < 1e-3  # steam, inside
    assert before[12:, :12].min() > 0.9 and after[12:, :12].min() > 0.9  # smoke, inside


# --------------------------------------------------------------------------- CAA
def test_box_mask_covers_the_boxes_of_8_connected_regions() -> None:
    cam = np.zeros((6, 6), np.float32)
    cam[1, 1] = 1.0
    cam[2, 2] = 0.5  # diagonal neighbour: the same region, so the box is rows/cols 1..2
    cam[4, 5] = 0.41
    cam[5, 0] = 0.4  # not above 0.4 x max
    expected = np.zeros((6, 6), bool)
    expected[1:3, 1:3] = True
    expected[4, 5] = True
    np.testing.assert_array_equal(module().box_mask(cam, 0.4), expected)
    assert not module().box_mask(np.zeros((3, 3), np.float32), 0.4).any()


def test_caa_on_a_hand_made_attention_matrix() -> None:
    """Patches {0, 1} attend to each other, as do {2, 3} (a 1x4 grid). The attention is doubly
    stochastic and symmetric, so T = T² = the attention; only patch 0 is above 0.4, so only
    column 0 propagates: the CAM spreads to patch 1, and patch 2 (0.3, outside the box) goes."""
    attn = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0],
                         [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])[None]
    cam = torch.tensor([[[1.0, 0.0, 0.3, 0.0]]])
    refined = module().caa_refine(cam, attn, threshold=0.4, sinkhorn=3)
    np.testing.assert_allclose(refined[0, 0].numpy(), [1, 1, 0, 0], atol=1e-6)


def test_caa_is_blind_to_row_and_column_scaling() -> None:
    """Sinkhorn's fixed point is the same for A and D1 A D2 (positive diagonals): with enough
    rounds CAA gives the same map for both."""
    rng = np.random.default_rng(0)
    attn = torch.tensor(rng.uniform(0.1, 1.0, (1, 6, 6)), dtype=torch.float32)
    scaled = attn * torch.tensor(rng.uniform(0.2, 5, (1, 6, 1)), dtype=torch.float32) \
        * torch.tensor(rng.uniform(0.2, 5, (1, 1, 6)), dtype=torch.float32)
    cam = torch.tensor(rng.uniform(0, 1, (1, 2, 3)), dtype=torch.float32)
    a = module().caa_refine(cam, attn, threshold=0.4, sinkhorn=200)
    b = module().caa_refine(cam, scaled, threshold=0.4, sinkhorn=200)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_caa_equals_the_clip_es_recipe_on_the_models_attention(tiny: Path) -> None:
    """The attention the CAM hooks is nn.MultiheadAttention's own (heads averaged) for the
    last blocks; CAA then follows CLIP-ES's loop (T² formed, columns masked)."""
    cam = stage("clip", model="tiny-test", checkpoint=str(tiny), caa=True, caa_layers=2)
    clip = cam.clip()
    visual = clip.model.visual
    text = clip.text_features(cam.params.smoke, cam.params.background, cam.params.template)
    x = clip.preprocess(np.stack(images(1, 64, 64, seed=3)), (64, 64))
    res = module().clip_gradcam(visual, x, text, clip.logit_scale(), "patch_mean", 2)
    with torch.no_grad():  # the attention of both blocks, straight from the modules
        cls = visual.class_embedding.view(1, 1, -1)
        t = torch.cat([cls, visual.conv1(x).flatten(2).transpose(1, 2)], 1)
        t = visual.ln_pre(t + visual.positional_embedding)  # 64 px: the native 4x4 grid
        weights = []
        for blk in visual.transformer.resblocks:
            a = blk.ln_1(t)
            weights.append(blk.attn(a, a, a, need_weights=True)[1])
            t = blk(t)
    attn = torch.stack(weights).mean(0)[0, 1:, 1:]
    torch.testing.assert_close(res.attention[0], attn, atol=1e-6, rtol=1e-5)
    grid = module().minmax(res.cam)[0]
    mask = torch.from_numpy(module().box_mask(grid.numpy(), 0.4)).view(1, -1).float()
    trans = attn / attn.sum(0, keepdim=True)
    trans = trans / trans.sum(1, keepdim=True)
    for _ in range(2):
        trans = trans / trans.sum(0, keepdim=True)
        trans = trans / trans.sum(1, keepdim=True)
    trans = (trans + trans.T) / 2
    trans = (trans @ trans) * mask
    refined = (trans @ grid.reshape(-1, 1)).view(1, 4, 4)
    expected = module().minmax(refined)
    got = module().caa_refine(module().minmax(res.cam), res.attention, 0.4, 3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- clip_verify
def verify_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 64x96 sky with two smoke blocks and one steam block (and a 2-pixel speck), and a label
    map of all four as smoke."""
    image = np.zeros((64, 96, 3), np.uint8)
    image[:] = SKY
    labels = np.zeros((64, 96), np.uint8)
    for (y, x), colour in (((8, 8), SMOKE), ((8, 56), STEAM), ((40, 32), SMOKE)):
        image[y:y + 16, x:x + 16] = colour
        labels[y:y + 16, x:x + 16] = 1
    labels[60, 90:92] = 1
    return image, labels


def verify_probability(direction: np.ndarray, background: tuple[str, ...]) -> float:
    """The hand-set model's smoke probability for a crop of one colour (direction)."""
    text = np.stack([WORDS["smoke"], *(WORDS[b] for b in background)])
    z = SCALE * (text / np.linalg.norm(text, axis=1, keepdims=True)) @ direction
    return float(np.exp(z[0]) / np.exp(z).sum())


def test_clip_verify_scores_exactly_the_steam_components_low(hand: Path, tmp_path: Path
                                                             ) -> None:
    background = ("cloud", "steam")
    verify = stage("clip_verify", model="hand-test", checkpoint=str(hand), smoke=("smoke",),
                   background=background, margin=0.0, min_area=4)
    verify.ctx.workdir = tmp_path
    image, labels = verify_scene()
    out = verify.refine(Sample("f1", image), labels)
    # margin 0: each crop is its block alone, one colour: the answer in closed form
    p_smoke, p_steam = verify_probability(E[0], background), verify_probability(E[1], background)
    assert p_smoke == pytest.approx(0.9284, abs=1e-4) and p_steam == pytest.approx(0.1868,
                                                                                   abs=1e-4)
    for y, x, p in ((10, 10, p_smoke), (10, 60, p_steam), (42, 34, p_smoke)):
        assert out[y, x] == pytest.approx(p, abs=1e-4)
    assert out[60, 90] == 1.0  # a speck under min_area is kept as it is, unasked
    assert (out[labels == 0] == 0).all()
    assert len(np.unique(out)) == 4  # 0, 1 and the two answers
    # the crop of a smoke block: 16 px grown by 25% on each side -> 24 px around it
    assert module().crop_box((8, 8, 23, 23), (64, 96), 0.25) == (4, 4, 28, 28)
    assert module().crop_box((0, 0, 95, 3), (64, 96), 0.25) == (0, 0, 96, 64)  # clipped
    records = verify.records["f1"]
    assert [(r.box, r.area, r.as_) for r in records] == [
        ((8, 8, 23, 23), 256, "cloud"), ((56, 8, 71, 23), 256, "steam"),
        ((32, 40, 47, 55), 256, "cloud"), ((90, 60, 91, 60), 2, "")]
    line = verify.summary()
    assert line.startswith("CLIP asked about 3 of 4 components in 1 frames, ")
    assert "its top answer: smoke 2, steam 1" in line
    import json

    stored = json.loads((tmp_path / "clip_verify-components.json").read_text())["frames"]
    assert [c["as"] for c in stored["f1"]] == ["cloud", "steam", "cloud", ""]
    assert stored["f1"][1]["smoke"] == pytest.approx(p_steam, abs=1e-4)


def test_clip_verify_reads_a_soft_map_at_its_calibrated_threshold(hand: Path) -> None:
    verify = stage("clip_verify", model="hand-test", checkpoint=str(hand))
    cam = np.array([[0.1, 0.3, 0.35, 0.0]], np.float32)
    verify.input_threshold = 0.3
    np.testing.assert_array_equal(verify.smoke_region(cam), [[False, True, True, False]])
    verify.input_threshold = None  # no calibrated threshold: 0.5
    assert not verify.smoke_region(cam).any()


def test_clip_ignore_marks_the_components_below_the_threshold() -> None:
    ignore = stage("clip_ignore")
    ignore.input_threshold = 0.4
    scores = np.array([[0.0, 0.9, 0.9, 0.0, 0.2, 0.2, 0.0, 0.001]], np.float32)
    out = ignore.refine(Sample("f", np.zeros((1, 8, 3), np.uint8)), scores)
    np.testing.assert_array_equal(out, [[0, 1, 1, 0, 255, 255, 0, 255]])
    assert ignore.summary() == "2 components in 1 frames marked 255 (below the threshold)"


# --------------------------------------------------------------------------- weights
def test_without_weights_both_stages_are_not_runnable() -> None:
    discover()
    for name in ("clip", "clip_verify"):
        cls = METHODS.get(name).cls
        problem = cls.not_runnable(cls.Params(), "quick")
        assert isinstance(problem, NotRunnableError) and problem.reason == "needs CLIP weights"
        assert f"pass {name}[checkpoint=/path/to/ViT-B-16.pt]" in str(problem)
        assert f"or {name}[pretrained=openai]" in str(problem)
        assert cls.initial_weights(cls.Params(), "quick") is None
        assert cls.initial_weights(cls.Params(pretrained="openai"), "quick") == "hub"
        assert cls.not_runnable(cls.Params(pretrained="openai"), "quick") is None
        missing = cls.not_runnable(cls.Params(checkpoint="/nowhere/ViT-B-16.pt"), "quick")
        assert missing is not None
        assert missing.reason == "CLIP checkpoint file not found: /nowhere/ViT-B-16.pt"
        with pytest.raises(ValueError, match="not both"):
            cls.Params(pretrained="openai", checkpoint="x.pt")
        with pytest.raises(ValueError, match=r"template must contain '\{\}' once"):
            cls.Params(template="a photo")
        with pytest.raises(ValueError, match=r"background has an empty prompt: steam::sky"):
            cls.Params(background=("steam", "", "sky"))


def test_loading_errors_are_one_line(tiny: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(WeightsError, match=r"CLIP checkpoint .*corrupt\.pt does not load into "
                                           r"model=tiny-test \(128 bytes"):
        stage("clip", model="tiny-test", checkpoint=str(bad)).clip()
    monkeypatch.setitem(factory._MODEL_CONFIGS, "tiny-wide", {**tiny_config(), "embed_dim": 48})
    with pytest.raises(WeightsError, match=r"does not load into model=tiny-wide"):
        stage("clip", model="tiny-wide", checkpoint=str(tiny)).clip()  # another architecture
    with pytest.raises(ConfigError, match=r"unknown open_clip model\. Did you mean 'ViT-B-16'"):
        stage("clip", model="ViT-B-61", checkpoint=str(tiny)).clip()
    with pytest.raises(ConfigError, match=r"not a pretrained tag of model=ViT-B-16 \(tags: "
                                          r"openai, "):
        stage("clip", pretrained="opneai").clip()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest sets it for huggingface_hub too
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))  # empty
    with pytest.raises(WeightsError, match=r"clip\[pretrained=openai\]: url:timm--vit_base_"
                                           r"patch16_clip_224\.openai--open_clip_pytorch_model"
                                           r"\.bin is not in the weights cache .* offline: run "
                                           r"\"bench fetch-weights --methods 'clip\[model="
                                           r"ViT-B-16,pretrained=openai\]'\" where .*pass "
                                           r"checkpoint=PATH$"):
        stage("clip", pretrained="openai").clip()


def test_openai_torchscript_files_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's own files (ViT-B-16.pt) are TorchScript archives of fp16 weights with QuickGELU;
    a tiny one is built the same way (widths of 64: OpenAI's files have 64-wide heads)."""
    import warnings

    config = {"embed_dim": 32, "quick_gelu": True,
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1,
                           "layers": 1}}
    monkeypatch.setitem(factory._MODEL_CONFIGS, "tiny-openai", config)
    monkeypatch.setitem(factory._MODEL_CONFIGS, "tiny-openai-deep",
                        {**config, "vision_cfg": {**config["vision_cfg"], "layers": 3}})
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-openai").eval()
    mask = model.attn_mask  # a plain attribute in OpenAI's model, not in its state dict
    del model._buffers["attn_mask"]
    model.attn_mask = mask
    path = tmp_path / "tiny-openai.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(path))
    verify = stage("clip_verify", model="tiny-openai", checkpoint=str(path))
    loaded = verify.clip().model
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x), atol=2e-3,
                                   rtol=0)  # the file's weights, rounded to float16
    assert verify.clip().mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    with pytest.raises(WeightsError, match=r"OpenAI CLIP file of another architecture than "
                                           r"model=tiny-openai-deep"):
        stage("clip_verify", model="tiny-openai-deep", checkpoint=str(path)).clip()


# --------------------------------------------------------------------------- weights cache
TAG = "tinytag"
#: the tag's Hugging Face file (repo bench-test/tiny-clip, open_clip's default file name) as
#: the weights cache names it
HF_FILE = "bench-test--tiny-clip--open_clip_pytorch_model.bin"
TAG_MEAN, TAG_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def tagged(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """``model=tiny-test`` gets open_clip pretrained tags: ``tinytag`` (a Hugging Face file,
    served from a ``file://`` folder through ``$HF_ENDPOINT``; QuickGELU and its own image mean
    and std) and ``local`` (the same config naming the checkpoint as a local ``file``, which
    open_clip reads itself: the reference). Empty weights cache, offline, no loaded models."""
    config = {"url": "", "hf_hub": "bench-test/tiny-clip/", "mean": TAG_MEAN, "std": TAG_STD,
              "interpolation": "bicubic", "resize_mode": "shortest", "quick_gelu": True}
    monkeypatch.setitem(sys.modules["open_clip.pretrained"]._PRETRAINED, "tiny-test", {
        TAG: config, "local": {**config, "hf_hub": "", "file": str(tiny)}})
    server = tmp_path / "hf"
    target = server / "bench-test" / "tiny-clip" / "resolve" / "main" / \
        "open_clip_pytorch_model.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny.read_bytes())
    monkeypatch.setenv("HF_ENDPOINT", server.as_uri())
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(module(), "_MODELS", {})
    return {"cache": tmp_path / "weights", "stored": tmp_path / "weights" / "url" / HF_FILE,
            "sha256": hashlib.sha256(tiny.read_bytes()).hexdigest()}


def test_pretrained_tags_declare_the_file_open_clip_downloads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.weight_cache import HubWeight, pipeline_hub_weights

    discover()
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    hf = "https://huggingface.co"
    openai = HubWeight(
        "url", "timm--vit_base_patch16_clip_224.openai--open_clip_pytorch_model.bin",
        f"{hf}/timm/vit_base_patch16_clip_224.openai/resolve/main/open_clip_pytorch_model.bin")
    assert pipeline_hub_weights("clip[pretrained=openai]", "quick") == [openai]
    assert pipeline_hub_weights("effnet+crf+clip_verify[pretrained=openai]", "full") == [openai]
    assert pipeline_hub_weights("clip[pretrained=openai]+clip_verify[pretrained=openai]",
                                "quick") == [openai]  # once
    assert pipeline_hub_weights("clip[pretrained=laion2b_s34b_b88k]", "quick") == [HubWeight(
        "url", "laion--CLIP-ViT-B-16-laion2B-s34B-b88K--open_clip_pytorch_model.bin",
        f"{hf}/laion/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/main/open_clip_pytorch_model.bin")]
    assert pipeline_hub_weights("clip[model=ViTamin-S,pretrained=datacomp1b]", "quick") == [
        HubWeight("url", "jienengchen--ViTamin-S--pytorch_model.bin",
                  f"{hf}/jienengchen/ViTamin-S/resolve/main/pytorch_model.bin")]  # a named file
    assert pipeline_hub_weights("clip[checkpoint=/x/ViT-B-16.pt]", "quick") == []
    assert pipeline_hub_weights("clip", "quick") == []  # not run without weights
    with pytest.raises(ConfigError, match=r"not a pretrained tag of model=ViT-B-16"):
        pipeline_hub_weights("clip[pretrained=opneai]", "quick")


def test_fetch_weights_stores_a_tags_file_and_it_loads_as_open_clip_loads_the_tag(
        tagged: dict, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-weights", "--methods", f"clip[model=tiny-test,pretrained={TAG}]"]) == 0
    stored = tagged["stored"]
    assert capsys.readouterr().out.strip() == (
        f"stored url:{HF_FILE}: {stored} sha256 {tagged['sha256']} "
        f"({stored.stat().st_size / 2**20:.1f} MiB)")
    manifest = json.loads((tagged["cache"] / "manifest.json").read_text())
    assert manifest[f"url/{HF_FILE}"]["sha256"] == tagged["sha256"]
    assert manifest[f"url/{HF_FILE}"]["source"].endswith(
        "/bench-test/tiny-clip/resolve/main/open_clip_pytorch_model.bin")

    ours = stage("clip", model="tiny-test", pretrained=TAG).clip()  # offline: the cache
    # open_clip's own loading of the tag, with its QuickGELU forced as the stage has always
    # loaded tags (open_clip itself only warns when a tag's quick_gelu differs from the model's)
    reference = open_clip.create_model("tiny-test", pretrained="local",
                                       force_quick_gelu=True).eval()
    assert tuple(ours.model.visual.image_mean) == tuple(reference.visual.image_mean) == TAG_MEAN
    assert ours.mean == TAG_MEAN and ours.std == TAG_STD
    assert ours.model.visual.preprocess_cfg == reference.visual.preprocess_cfg
    act = ours.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(act) is type(reference.visual.transformer.resblocks[0].mlp.gelu)
    assert type(act).__name__ == "QuickGELU"  # the tag's quick_gelu
    theirs = reference.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.model.state_dict().items())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.model.encode_image(x), reference.encode_image(x))


def test_cli_pretrained_tag_runs_the_same_from_the_hub_and_from_the_cache(
        tagged: dict, cli: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Offline and not cached: one line naming fetch-weights. Online: downloaded into the
    weights cache. Offline again: read from it. Both runs record the same cache key, weights
    origin (hub) and metrics: the same bytes."""
    spec = f"clip[model=tiny-test,pretrained={TAG}]"
    assert main([*cli["base"], "--methods", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bench: error:")]
    assert errors == err[-1:] and errors[0].startswith(
        f"bench: error: clip[pretrained={TAG}]: url:{HF_FILE} is not in the weights cache")
    assert f"run \"bench fetch-weights --methods '{spec}'\" where the internet" in errors[0]

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main([*cli["base"], "--methods", spec]) == 0
    assert f"bench: fetched url:{HF_FILE} into the weights cache" in capsys.readouterr().err
    assert tagged["stored"].is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module()._MODELS.clear()
    again = tmp_path / "again"
    assert main([*cli["base"], "--out", str(again), "--methods", spec]) == 0
    assert "fetched" not in capsys.readouterr().err
    first, second = (next(r for r in load_records(out) if r["method"] == spec)
                     for out in (cli["out"], again))
    assert first["weights"] == second["weights"] == {"clip": "hub"}
    assert first["config"]["cache_key"] == second["config"]["cache_key"]
    assert first["metrics"] == second["metrics"] and "mIoU" in first["metrics"]


# --------------------------------------------------------------------------- through the CLI
@pytest.fixture
def cli(write_dataset: Any, tmp_path: Path, smoke5k_root: Path) -> dict:
    name, _ = write_dataset(tmp_path / "datasets", "tinyclip", smoke5k_root,
                            "val_fraction = 0.3\n")
    out = tmp_path / "results"
    base = ["run", "--include", str(tmp_path / "datasets"), "--datasets", name, "--out",
            str(out), "--n-boot", "20", "--no-progress"]
    return {"base": base, "out": out, "name": name}


def test_cli_wildcard_run_shows_not_run_rows_and_exits_0(
        cli: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    discover()
    # the demos start from effnet+crf; a CAM source without training keeps this test fast
    monkeypatch.setitem(METHODS.entry("clip_verify").meta, "demo", "dark_channel+clip_verify")
    monkeypatch.setitem(METHODS.entry("clip_ignore").meta, "demo",
                        "dark_channel+clip_verify+clip_ignore")
    assert main([*cli["base"], "--methods", "clip*"]) == 0
    err = capsys.readouterr().err
    board = (cli["out"] / "leaderboard.md").read_text()
    for method in ("clip", "dark_channel+clip_verify", "dark_channel+clip_verify+clip_ignore"):
        assert f"bench: not running '{method}': needs CLIP weights: pass " in err
        row = next(line for line in board.splitlines() if line.startswith(f"| {method} "))
        assert "not run: needs CLIP weights" in row
    records = {r["method"]: r for r in load_records(cli["out"])}
    assert records["clip"]["metrics"] == {} and records["dark_channel+clip_verify"]["metrics"] == {}
    assert records["dark_channel"]["metrics"]["mIoU"] > 0  # the runnable prefix was scored
    assert main(["table", "--out", str(cli["out"]), "--ablation",
                 "dark_channel+clip_verify"]) == 0
    table = capsys.readouterr().out
    assert "| +CLIP verify" in table and "not run: needs CLIP weights" in table


def test_cli_named_clip_without_weights_is_one_line(cli: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for spec in ("clip", "dark_channel+clip_verify"):
        assert main([*cli["base"], "--methods", spec]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        name = spec.rpartition("+")[2]
        assert err[0].startswith(f"bench: error: needs CLIP weights: pass {name}[checkpoint="
                                 "/path/to/ViT-B-16.pt]")
    assert not (cli["out"] / "records").exists()


def test_cli_runs_the_three_stages_from_a_checkpoint_file(
        tiny: Path, cli: dict, capsys: pytest.CaptureFixture[str]) -> None:
    weights = f"model=tiny-test,checkpoint={tiny}"
    prompts = "smoke=industrial smoke:exhaust smoke,background=steam:sky"
    spec = f"clip[{weights},{prompts}]+clip_verify[{weights}]+clip_ignore"
    assert main([*cli["base"], "--methods", spec]) == 0
    err = capsys.readouterr().err
    assert "CLIP-ES CAMs of 4 images" in err and "CLIP asked about" in err
    records = {r["method"]: r for r in load_records(cli["out"])}
    first = records[f"clip[{weights},{prompts}]"]
    assert first["weights"] == {"clip": "file"} and 0 <= first["metrics"]["mIoU"] <= 100
    params = first["config"]["stages"][0]["params"]
    assert params["smoke"] == ["industrial smoke", "exhaust smoke"]
    assert params["background"] == ["steam", "sky"]
    last = records[spec]
    assert last["weights"] == {"clip": "file", "clip_verify": "file"}
    assert last["output"] == "labels" and "mIoU" in last["metrics"]


def test_cli_clip_ignore_must_follow_clip_verify(cli: dict,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli["base"], "--methods", "dark_channel+clip_ignore"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("bench: error: clip_ignore must follow clip_verify (its input is "
                       "clip_verify's component scores), not 'dark_channel'")


ORACLE = '''
import numpy as np
from bench import CamSource, register_method


@register_method("not_sky")
class NotSky(CamSource):
    """1 on every pixel that is not the sky's blue: smoke and steam alike."""

    def compute(self, images):
        return [(np.abs(im.astype(int) - (0, 0, 204)).sum(axis=2) > 60).astype(np.float32)
                for im in images]
'''


def test_cli_clip_verify_drops_the_steam_at_the_calibrated_threshold(
        hand: Path, tmp_path: Path, write_dataset: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Frames of sky with smoke and steam blocks, only the smoke labelled. The upstream map
    marks both; clip_verify's threshold, chosen on the calibration split, drops exactly the
    steam blocks (what the hand-set model calls steam): the smoke IoU becomes 1."""
    from PIL import Image

    root = tmp_path / "scenes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for i in range(n):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:] = SKY
            mask = np.zeros((48, 64), np.uint8)
            y, x = rng.integers(2, 12), rng.integers(2, 12)
            image[y:y + 14, x:x + 14] = SMOKE
            mask[y:y + 14, x:x + 14] = 255
            y, x = rng.integers(24, 32), rng.integers(36, 48)
            image[y:y + 14, x:x + 14] = STEAM
            for sub, array in (("img", image), ("gt", mask)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / sub / f"{split}{i}.png")
    name, _ = write_dataset(tmp_path / "datasets", "scenes", root, "val_fraction = 0.5\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "not_sky.py").write_text(ORACLE)
    out = tmp_path / "out"
    verify = (f"clip_verify[model=hand-test,checkpoint={hand},smoke=smoke,"
              "background=sky:steam,margin=0.1]")
    assert main(["run", "--include", str(tmp_path / "datasets"), "--include",
                 str(tmp_path / "plugins"), "--datasets", name, "--out", str(out),
                 "--n-boot", "10", "--no-progress", "--methods", f"not_sky+{verify}"]) == 0
    records = {r["method"]: r for r in load_records(out)}
    before, after = records["not_sky"], records[f"not_sky+{verify}"]
    assert before["metrics"]["IoU_smoke"] < 0.6  # steam counted as smoke
    assert after["metrics"]["IoU_smoke"] == pytest.approx(1.0)
    threshold = after["threshold"]["value"]
    import json

    key = after["config"]["cache_key"]
    frames = json.loads((out / "cache" / key / "clip_verify-components.json").read_text())
    comps = [c for cs in frames["frames"].values() for c in cs]
    n = len(frames["frames"])  # the test frames and the calibration (val) frames
    assert n >= 4 and len(comps) == 2 * n  # a smoke and a steam block each
    dropped = [c["as"] for c in comps if c["smoke"] < threshold]
    kept = [c["as"] for c in comps if c["smoke"] >= threshold]
    assert dropped == ["steam"] * n and kept == ["sky"] * n
    capsys.readouterr()
