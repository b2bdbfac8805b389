"""Bootstrap confidence intervals over test images (percentile method), and what they can detect.

Per-item arrays hold one score per test image; NaN marks an image the score does not apply to
(e.g. an image with no object pair for the relation probe) and is skipped by the means.
mAP is not a mean of per-image scores, so its bootstrap re-accumulates COCOeval's per-image
matching with resampled image multiplicities (`CocoDetectionEval.resampled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

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
    flat = (draws + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


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


#: the power and two-sided level at which `minimum_detectable_effect` sizes an effect
MDE_POWER = 0.8
MDE_ALPHA = 0.05


def mde_multiplier(alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
    """z(1 − α/2) + z(power): the effect, in standard errors, that a two-sided level-α test
    detects with probability `power` (2.80 at α = 0.05 and 80 % power)."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) + z(power)


def minimum_detectable_effect(standard_error: float, alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
    """Minimum detectable effect (MDE) at level α and the given power: the true difference whose
    estimate clears a two-sided level-α test in `power` of repeated runs. The CI half-width is only
    the difference that clears it half the time."""
    return mde_multiplier(alpha, power) * float(standard_error)


def standard_error_from_ci(low: float, high: float, confidence: float = 0.95) -> float:
    """The standard error a (roughly normal) CI of this width and confidence implies."""
    return (high - low) / (2 * NormalDist().inv_cdf(0.5 + confidence / 2))


def mde_from_ci(low: float, high: float, confidence: float = 0.95, alpha: float = MDE_ALPHA,
                power: float = MDE_POWER) -> float:
    """MDE of the difference a CI was computed for (e.g. a paired drop), from the CI's width."""
    return minimum_detectable_effect(standard_error_from_ci(low, high, confidence), alpha, power)


def paired_mde(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0, alpha: float = MDE_ALPHA,
               power: float = MDE_POWER) -> tuple[int, float]:
    """(n paired items, MDE of mean(a) − mean(b)) with the standard error of the paired difference
    taken from its bootstrap distribution over the same images."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align: {a.shape} vs {b.shape}")
    diff = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if diff.size == 0:
        raise ValueError("paired_mde needs at least one image where both scores are finite")
    counts = _counts(np.random.default_rng(seed), diff.size, n_resamples)
    means = counts @ diff / diff.size
    return int(diff.size), minimum_detectable_effect(float(np.std(means, ddof=1)), alpha, power)
