"""Synthetic industrial smoke scenes: the embedded default data set (no download needed).

Each image is a pure function of ``(index, seed, config)``. A scene has

- a sky (clear, overcast, hazy, low sun or dark overcast; a gradient and fractal clouds),
- a hazy far skyline; a near skyline of halls, tanks, conveyors, masts, cranes and sometimes a
  blast furnace (tapered shaft, lattice scaffold, downcomer pipe); tiers of low plant buildings
  below it; sometimes a tree line in front,
- chimneys (concrete, dark steel or brick, sometimes red/white bands; cylindrical shading),
- semi-transparent smoke plumes (brown, orange, yellow-brown, grey, dark) with fractal edges and
  texture, bent by one wind per scene, rising from chimney tops, roofs or from behind the skyline,
- white steam plumes (billowy, light grey in the creases, often over-exposed) that count as *no
  smoke*, as in IJmond's labelling: an image with steam and no smoke is a negative (a hard one),
- a camera: haze, exposure, white balance, contrast, tone curve, vignetting, blur, sensor grain.

Colours are chosen to overlap on purpose: grey smoke vs overcast sky, light grey smoke vs steam
shadows, brown smoke vs rusty structures, orange smoke vs a low-sun horizon or a crane.

Every image comes with its smoke opacity (``smoke_alpha``), the smoke mask
(``smoke_alpha > alpha_threshold``), the image label (``mask.any()``, by construction) and
auxiliary masks of the visible chimney and steam pixels (both disjoint from the smoke mask), so
that a CAM's mass on distractors can be measured.

The knobs (`SyntheticConfig`):

- ``smoke_rate``: fraction of images with smoke; the rest are negatives.
- ``smoke_coverage``: target mean fraction of smoke-mask pixels in smoky images (real smoke covers
  a few percent of a frame; at most 0.3, where plumes fill the sky). Per image it varies by a
  factor 0.3 ... 2.3 around the target; the mean is calibrated (``plumes._COVERAGE_TABLE``).
- ``edge_softness``: width of the plume's opacity ramp at its edge, 0 crisp ... 1 very diffuse.
- ``steam_rate``: fraction of images with steam plumes (independent of smoke).
- ``chimney_given_smoke`` / ``chimney_given_no_smoke``: **the spurious-correlation knob**.
  ``chimney_given_smoke`` is P(the scene shows chimneys | smoke); the first plume then rises from
  a chimney top, otherwise the scene has no chimney at all and plumes rise from roofs or from
  behind the skyline. ``chimney_given_no_smoke`` is P(the scene shows chimneys | no smoke). When
  the two are equal, chimneys carry no information about smoke. Training data with them far apart
  (e.g. 0.95 / 0.2) makes "chimney means smoke" a shortcut that works; test data with them equal
  (0.5 / 0.5) or reversed (0.5 / 0.9, 0.1 / 0.9) punishes a method that learned it: false
  positives on smoke-free chimneys, misses on chimney-free plumes, and CAM mass on the
  ``chimney`` aux mask show it directly.
- ``alpha_threshold``: opacity above which a pixel is labelled smoke (or counted as steam).

**Determinism.** Random numbers come from four Philox streams keyed by (seed, index, part):
labels, scene and camera / chimneys / steam / smoke. A knob changes only what it governs (raising
``smoke_coverage`` leaves sky, skyline, chimneys and steam of scene ``index`` as they were).
Textures come from a bank of noise tiles built once per image size from a fixed seed and
quantised to multiples of 1/4096 (so last-bit differences while building it cannot show).
Geometry and pixels use only ``+ - * /``, ``sqrt``, ``abs``, ``min``/``max`` and comparisons:
no ``exp``/``pow``/``sin`` (their results may differ between CPUs and math libraries), no
floating-point reductions (SIMD summation order differs), no BLAS, no FFT, no threads. The same
(index, seed, config) gives the same bytes on any machine with the same NumPy version; a
golden-bytes test pins them.

**Speed.** Channels-first float32 canvases; structures drawn as vectorised rows of blocks;
plumes evaluated at half resolution over their (generous) bounding box, then only in the tight
box where they are non-zero; textures taken as views of the bank; random numbers drawn in
blocks. On the 2-vCPU development VM: about 3.7 ms per 256x256 image (270 images/s) with light
background load, about 5 ms of CPU time when other processes saturate the machine (see
``benchmarks/test_bench_synthetic.py``). The bank takes ~0.4 s to build at 256 px, once per
process.

**Modules.** `config` (the knobs and the result type), `draws` (the random streams), `canvas`
(the float32 image being drawn and its pixel geometry), `textures` (the noise bank), `scenery`
(sky, skyline, buildings, furnace, chimneys, trees), `plumes` (smoke and steam), `render` (one
scene: scenery, plumes, camera; `generate`, `contact_sheet`). ``python -m bench.data.synthetic
OUT.png`` writes a contact sheet.
"""

from __future__ import annotations

from bench.data.synthetic.config import SyntheticConfig, SyntheticImage
from bench.data.synthetic.plumes import SMOKE_COLOURS
from bench.data.synthetic.render import contact_sheet, generate, render

__all__ = ["SMOKE_COLOURS", "SyntheticConfig", "SyntheticImage", "contact_sheet", "generate",
           "render"]
