"""Segmenter-recipe diagnostics (docs/segmenter-recipe.md, issue 11).

Trains the quick ``deeplabv3plus`` on the cached ``effnet+crf`` pseudo labels of a SMOKE5K
sample's training part, with one change at a time, and scores the validation tiles (areas
summed over tiles): argmax, fixed probability thresholds, inference at the training scale, and
how much of its own training labels it reproduces. Run ``bench run --methods effnet+crf
--datasets smoke5k --data-root smoke5k=ROOT --split val --out OUT`` first, then::

    SMOKE5K_ROOT=ROOT BENCH_OUT=OUT python benchmarks/segmenter_diagnostics.py base 0
    WSMOKE=3 SMOKE5K_ROOT=ROOT BENCH_OUT=OUT python benchmarks/segmenter_diagnostics.py bal3 0
    OVR=crop_size=256 ... python benchmarks/segmenter_diagnostics.py crop256 0

Variants: ``base``; ``bal*`` (smoke weight ``WSMOKE`` in the cross-entropy); ``dice*`` (CE +
soft Dice); ``frozenbn*`` (encoder batch norm frozen); ``band_LO_HI`` (pseudo labels set to 255
where the soft map lies in (LO, HI)). ``OVR`` overrides segmenter parameters. Writes
``<variant>-<seed>.json`` into ``DIAG_OUT`` (default: the current folder).
"""

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.pipeline import build_stage
from bench.runner import Cell, CellRunner, RunOptions, seed_everything

variant = sys.argv[1]
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
opts = RunOptions(
    out=Path(os.environ["BENCH_OUT"]),
    data_roots={"smoke5k": os.environ["SMOKE5K_ROOT"]},
    progress=False,
    seed=seed,
)
overrides = {}
for kv in os.environ.get("OVR", "").split(","):
    if kv:
        k, v = kv.split("=")
        overrides[k] = v
spec = "effnet+crf+deeplabv3plus" + (
    ("[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]") if overrides else ""
)
r = CellRunner(Cell(spec, "smoke5k", "val", opts))
data = r.load_data()
states = r.stage_states(data)
labels = r.training_labels(states, 2, data)
soft = r.maps(states, 1, "train", data)
thr = r.stage_threshold(states, 1, data)
train = data["train"]
val = data["val"]
ctx = r.context(states[2])
out_dir = Path(os.environ.get("DIAG_OUT", "."))
ctx = replace(ctx, workdir=out_dir / f"work-{variant}-{seed}")
plugin = build_stage(r.spec.stages[2], ctx)
cls = type(plugin)


def mkband(lo, hi):
    out = []
    for m, lab in zip(soft, labels, strict=True):
        lab = lab.copy()
        lab[(m > lo) & (m < hi)] = 255
        out.append(lab)
    return out


lab_smoke = sum(int((lab == 1).sum()) for lab in labels)
lab_all = sum(int((lab != 255).sum()) for lab in labels)
info = {
    "variant": variant,
    "seed": seed,
    "threshold": thr,
    "label_smoke_share": lab_smoke / lab_all,
    "params": overrides,
}
# agreement of pseudo labels with train gt
tp = fp = fn = 0
for s, lab in zip(train, labels, strict=True):
    g = s.mask == 1
    p = lab == 1
    tp += int((g & p).sum())
    fp += int((~g & p).sum())
    fn += int((g & ~p).sum())
info["labels_vs_gt_train"] = {"P": tp / (tp + fp), "R": tp / (tp + fn), "IoU": tp / (tp + fp + fn)}
# soft-map histogram
allv = np.concatenate([m.ravel()[::7] for m in soft])
info["soft_quantiles"] = np.quantile(allv, [0.5, 0.8, 0.9, 0.95, 0.97, 0.99]).round(4).tolist()

if variant.startswith("band"):
    lo, hi = map(float, variant.split("_")[1:3])
    labels = mkband(lo, hi)


def loss_balanced(self, logits, target, raw, valid, crf=None):
    logits = logits.float()
    w = torch.tensor([1.0, float(os.environ.get("WSMOKE", "3"))])
    ce = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    return ce, {"loss": float(ce.detach()), "ce": float(ce.detach()), "crf": 0.0}


def loss_dice(self, logits, target, raw, valid, crf=None):
    logits = logits.float()
    n = (target != 255).sum().clamp(min=1)
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="sum") / n
    p = torch.softmax(logits, 1)[:, 1]
    m = (target != 255).float()
    t = (target == 1).float()
    inter = (p * t * m).sum()
    dice = 1 - (2 * inter + 1) / ((p * m).sum() + (t * m).sum() + 1)
    total = ce + dice
    return total, {
        "loss": float(total.detach()),
        "ce": float(ce.detach()),
        "crf": float(dice.detach()),
    }


if variant.startswith("bal"):
    cls.loss = loss_balanced
if variant.startswith("dice"):
    cls.loss = loss_dice
if variant.startswith("frozenbn"):
    orig_build = cls.build_model

    def build(self, pretrained):
        m = orig_build(self, pretrained)
        for mod in m.encoder.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eval()
                mod.train = lambda mode=True, _m=mod: _m
                for q in mod.parameters():
                    q.requires_grad_(False)
        return m

    cls.build_model = build

seed_everything(seed)
t = time.perf_counter()
plugin.fit(list(train), labels, [])
info["fit_s"] = time.perf_counter() - t


def score(pred_fn):
    a = np.zeros(3)
    share = [0, 0]
    for s in val:
        p = pred_fn(s.image) == 1
        g = s.mask == 1
        v = s.mask != 255
        a += [(p & g & v).sum(), (p & ~g & v).sum(), (~p & g & v).sum()]
        share[0] += (p & v).sum()
        share[1] += v.sum()
    tp, fp, fn = a
    return {
        "IoU": tp / (tp + fp + fn),
        "P": tp / max(tp + fp, 1),
        "R": tp / (tp + fn),
        "pred_share": share[0] / share[1],
    }


info["val_argmax"] = score(lambda im: plugin.predict([im])[0])
probs = [plugin.predict_proba([s.image])[0] for s in val]
best = None
for th in [0.1, 0.2, 0.3, 0.4, 0.5]:
    it = iter(probs)
    sc = score(lambda im, it=it, th=th: (next(it) >= th).astype(np.uint8))
    info[f"val_p>={th}"] = sc
# inference at the mean training scale
p = plugin.params
sc_inf = 0.5 * (p.scale_min + p.scale_max)
if sc_inf != 1.0:

    def pred_scaled(im):
        h, w = im.shape[:2]
        x = torch.tensor(im).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, scale_factor=sc_inf, mode="bilinear", antialias=True).clamp(0, 255)
        small = x[0].permute(1, 2, 0).round().byte().numpy()
        lg = plugin.logits(small)[None]
        lg = F.interpolate(lg, size=(h, w), mode="bilinear")[0]
        return lg.argmax(0).numpy()

    info[f"val_infer_scale_{sc_inf}"] = score(pred_scaled)
# prediction share on train (does it reproduce its labels?)
tp = fp = fn = 0
for s, lab in list(zip(train, labels, strict=True))[::4]:
    q = plugin.predict([s.image])[0] == 1
    lv = lab != 255
    g = lab == 1
    tp += int((q & g & lv).sum())
    fp += int((q & ~g & lv).sum())
    fn += int((~q & g & lv).sum())
info["train_vs_labels"] = {
    "P": tp / max(tp + fp, 1),
    "R": tp / (tp + fn),
    "IoU": tp / (tp + fp + fn),
}
info["history"] = plugin.history
print(json.dumps(info, default=float))
(out_dir / f"{variant}-{seed}.json").write_text(json.dumps(info, default=float, indent=1))
