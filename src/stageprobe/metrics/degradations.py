"""Reference reconstructions: known degradations of the test images, scored with every E-Q2.5
metric, so a reader sees what a metric's value means on its own scale (what a σ = 4 px blur or a
flat mean-colour image scores) before reading a stage's number against a target.

- `identity`: the image itself — passes every target by construction.
- `blur-1px`, `blur-2px`, `blur-4px`: Gaussian blur of σ = 1, 2, 4 px at the input resolution
  (`scipy.ndimage.gaussian_filter`, reflect borders).
- `down-up-2x`: half resolution (anti-aliased) and back (bilinear), `skimage.transform.resize`.
- `constant-mean`: every pixel the image's mean colour — no structure at all.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from stageprobe.metrics.base import MetricValue
from stageprobe.metrics.reconstruction import (
    LpipsMetric,
    ReferenceImages,
    load_lpips,
    reconstruction_scores,
)


def _blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")
    return apply


def _down_up(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    small = resize(image, (h // 2, w // 2), order=1, anti_aliasing=True)
    return resize(small, (h, w), order=1, anti_aliasing=False)


def _constant_mean(image: np.ndarray) -> np.ndarray:
    return np.broadcast_to(image.mean(axis=(0, 1)), image.shape).copy()


REFERENCE_DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": np.copy,
    "blur-1px": _blur(1.0),
    "blur-2px": _blur(2.0),
    "blur-4px": _blur(4.0),
    "down-up-2x": _down_up,
    "constant-mean": _constant_mean,
}


def degrade(images: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W, 3) images in [0, 1] under the reference degradation `name`."""
    if name not in REFERENCE_DEGRADATIONS:
        raise ValueError(f"unknown reference degradation {name!r}; choose one of {list(REFERENCE_DEGRADATIONS)}")
    fn = REFERENCE_DEGRADATIONS[name]
    return np.clip(np.stack([fn(np.asarray(image, dtype=np.float64)) for image in images]), 0, 1)


def reference_scores(references: np.ndarray, lpips_metric: LpipsMetric | MetricValue | None = None
                     ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
    """Every reference degradation of `references` (N, H, W, 3) scored against them with
    `reconstruction_scores`: name → (per-image scores, unavailable metrics with reasons)."""
    refs = ReferenceImages(references)  # each metric's reference side computed once for all six
    metric = load_lpips() if lpips_metric is None else lpips_metric
    return {name: reconstruction_scores(refs, degrade(refs.images, name), metric)
            for name in REFERENCE_DEGRADATIONS}
