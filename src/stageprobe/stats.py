"""Bootstrap confidence intervals over test images (percentile method).

Per-item arrays hold one score per test image; NaN marks an image the score does not apply to
(e.g. an image with no object pair for the relation probe) and is skipped by the means.
mAP is not a mean of per-image scores, so its bootstrap re-accumulates COCOeval's per-image
matching with resampled image multiplicities (`CocoDetectionEval.resampled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stageprobe.metrics.detection import CocoDetectionEval


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate on all items, and the percentile interval of the bootstrap distribution."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    n_resamples: int


def _counts(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n) multiplicity of each item in each resample of n items drawn with replacement."""
    draws = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), n), draws.ravel()), 1)
    return counts


def _weighted_nanmean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    w = counts * finite
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ v) / total


def _interval(estimate: float, stats: np.ndarray, n: int, confidence: float, n_resamples: int) -> BootstrapCI:
    alpha = (1 - confidence) / 2
    stats = stats[np.isfinite(stats)]
    low, high = (np.quantile(stats, [alpha, 1 - alpha]) if stats.size else (np.nan, np.nan))
    return BootstrapCI(float(estimate), float(low), float(high), n, confidence, n_resamples)


def bootstrap_ci(per_item: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> BootstrapCI:
    """CI of the mean of `per_item`, resampling items (images) with replacement."""
    values = np.asarray(per_item, dtype=np.float64).ravel()
    n = int(np.isfinite(values).sum())
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one finite per-item score")
    counts = _counts(np.random.default_rng(seed), len(values), n_resamples)
    return _interval(float(np.nanmean(values)), _weighted_nanmean(values, counts), n, confidence, n_resamples)


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                          confidence: float = 0.95) -> BootstrapCI:
    """CI of mean(a) − mean(b) for scores on the same images (e.g. two stages), resampling images
    jointly so the pairing is kept. Images where either score is NaN are dropped."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align: {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    diff = np.where(both, a - b, np.nan)
    return bootstrap_ci(diff, n_resamples=n_resamples, seed=seed, confidence=confidence)


def bootstrap_map_ci(evaluation: CocoDetectionEval, metric: str = "map_50", n_resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95) -> BootstrapCI:
    """CI of a COCO detection metric, resampling test images and re-accumulating."""
    return bootstrap_map_cis(evaluation, [metric], n_resamples, seed, confidence)[metric]


def bootstrap_map_cis(evaluation: CocoDetectionEval, metrics: Sequence[str], n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, BootstrapCI]:
    """CIs of several COCO detection metrics from one set of resamples: each draw re-accumulates the
    matching once and gives all six stats, so asking for them together costs what one costs."""
    summary = evaluation.summary()
    counts = _counts(np.random.default_rng(seed), evaluation.n_images, n_resamples)
    draws = [evaluation.resampled(c) for c in counts]
    return {metric: _interval(summary[metric], np.array([d[metric] for d in draws]), evaluation.n_images,
                              confidence, n_resamples) for metric in metrics}


def paired_bootstrap_map_diff(a: CocoDetectionEval, b: CocoDetectionEval, metric: str = "map_50",
                              n_resamples: int = 1000, seed: int = 0,
                              confidence: float = 0.95) -> BootstrapCI:
    """CI of metric(a) − metric(b) for two prediction sets on the same test images."""
    if a.n_images != b.n_images:
        raise ValueError(f"paired evaluations must cover the same images: {a.n_images} vs {b.n_images}")
    estimate = a.summary()[metric] - b.summary()[metric]
    counts = _counts(np.random.default_rng(seed), a.n_images, n_resamples)
    stats = np.array([a.resampled(c)[metric] - b.resampled(c)[metric] for c in counts])
    return _interval(estimate, stats, a.n_images, confidence, n_resamples)
