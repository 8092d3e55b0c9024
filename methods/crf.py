"""Dense CRF refiner: a soft CAM snapped to image edges by mean-field inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import ConfigError, Refiner, Sample, register_method


@register_method("crf")
class DenseCRF(Refiner):
    """Fully connected CRF (Krähenbühl & Koltun 2011) that aligns a soft CAM with image edges.

    The CAM is first put on a probability scale: a CAM's values are scores, not probabilities
    (a min-max normalised CAM whose best threshold is 0.04 would otherwise read as "certainly
    background" almost everywhere), so ``p = cam ** (log 0.5 / log t)`` maps the input's
    calibrated threshold ``t`` (chosen on the calibration split, as in its record; or
    ``center``) to 0.5, keeping 0, 1 and the order of values. ``p`` becomes a two-label unary
    ``-log(clip([1 - p, p]))``; mean-field inference with a Gaussian smoothness kernel and a
    bilateral appearance kernel (Potts) returns the CRF's smoke probability as a soft map.

    Defaults are the settings the weakly supervised segmentation literature uses to refine CAMs
    (``crf_inference`` of AffinityNet/PSA, Ahn & Kwak 2018, reused by IRN and its successors),
    which are Krähenbühl & Koltun's published demo settings: smoothness ``sxy=3``, weight 3;
    appearance ``sxy=80``, ``srgb=13``, weight 10; 10 iterations (mean field has converged by
    then in practice). DeepLab's settings (appearance weight 3–4, ``sxy`` 67–121, ``srgb``
    3–5) were tuned on the outputs of fully supervised networks, not on CAMs, so we keep the
    former; every value can be overridden in the spec, e.g. ``crf[bilateral_srgb=5]``.
    """

    output = "soft"
    accepts = ("soft",)
    uses_input_threshold = True
    demo = "effnet+crf"

    @dataclass
    class Params:
        iterations: int = 10  # mean-field steps
        gauss_sxy: float = 3.0  # smoothness kernel width in pixels
        gauss_weight: float = 3.0  # smoothness kernel weight (0 disables it)
        bilateral_sxy: float = 80.0  # appearance kernel spatial width in pixels
        bilateral_srgb: float = 13.0  # appearance kernel colour width in intensity levels
        bilateral_weight: float = 10.0  # appearance kernel weight (0 disables it)
        clip: float = 1e-5  # probabilities are clipped to [clip, 1 - clip] before the log
        backend: str = "bench"  # "bench" (compiled lattice) or "pydensecrf2" (reference)
        #: CAM value read as p = 0.5; 0: the input's calibrated threshold (0.5 without one)
        center: float = 0.0

        def __post_init__(self) -> None:
            from bench import CRF_BACKENDS

            if self.iterations < 0:
                raise ValueError(f"iterations must be >= 0, got {self.iterations}")
            for name in ("gauss_sxy", "bilateral_sxy", "bilateral_srgb"):
                if not getattr(self, name) > 0:
                    raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
            if not 0 <= self.center < 1:
                raise ValueError(f"center must be in [0, 1), got {self.center}")
            if not 0 < self.clip < 0.5:
                raise ValueError(f"clip must be in (0, 0.5), got {self.clip}")
            if self.backend not in CRF_BACKENDS:
                raise ValueError(f"backend must be one of {', '.join(CRF_BACKENDS)}, "
                                 f"got '{self.backend}'")

    def center(self) -> float:
        """The CAM value that reads as probability 0.5."""
        if self.params.center:
            return float(self.params.center)
        return 0.5 if self.input_threshold is None else float(self.input_threshold)

    def refine(self, sample: Sample, cam: np.ndarray) -> np.ndarray:
        """The CRF's smoke probability (float32 HxW in [0, 1]) for a soft CAM of ``sample``."""
        from bench import PYDENSECRF_HINT, dense_crf

        p = self.params
        smoke = calibrate(np.asarray(cam, dtype=np.float32), self.center())
        smoke = np.clip(smoke, p.clip, 1.0 - p.clip)
        probs = np.stack([1.0 - smoke, smoke])
        try:
            q = dense_crf(sample.image, probs, iterations=p.iterations, gauss_sxy=p.gauss_sxy,
                          gauss_weight=p.gauss_weight, bilateral_sxy=p.bilateral_sxy,
                          bilateral_srgb=p.bilateral_srgb, bilateral_weight=p.bilateral_weight,
                          clip=p.clip, backend=p.backend)  # type: ignore[arg-type]
        except ImportError:
            if p.backend != "pydensecrf2":
                raise
            raise ConfigError(f"crf[backend=pydensecrf2] needs the pydensecrf2 package: "
                              f"{PYDENSECRF_HINT}") from None
        return np.clip(q[1], 0.0, 1.0).astype(np.float32)


def calibrate(cam: np.ndarray, center: float) -> np.ndarray:
    """Monotone map of [0, 1] onto itself that sends ``center`` to 0.5: ``cam ** gamma``.

    ``center`` is clamped to [0.01, 0.99] (a threshold of 1 means "nothing is smoke" and would
    need an infinite exponent).
    """
    t = min(max(float(center), 0.01), 0.99)
    gamma = np.log(0.5) / np.log(t)
    return np.power(np.clip(cam, 0.0, 1.0), gamma, dtype=np.float32)
