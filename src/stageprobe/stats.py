"""Bootstrap confidence intervals over test images (percentile method), and what they can detect.

Per-item arrays hold one score per test image; NaN marks an image the score does not apply to
(e.g. an image with no object pair for the relation probe) and is skipped by the means.
mAP is not a mean of per-image scores, so its bootstrap re-accumulates COCOeval's per-image
matching with resampled image multiplicities (`CocoDetectionEval.resampled`).

Items are not always independent: camera pans and photo crops are cut from a handful of source
photos. Given each item's `groups` (its source), the bootstrap resamples whole groups (cluster
bootstrap), so the CI carries the photo-to-photo spread; each group appears as often as it is drawn,
with all its items. Probe seeds are a second source of variation: `seeded_bootstrap_ci` resamples
seeds and test items (or groups) together.
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
    #: number of independent groups (source photos) resampled; None when items were resampled
    n_groups: int | None = None


def _counts(rng: np.random.Generator, n: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n) multiplicity of each item in each resample of n items drawn with replacement."""
    draws = rng.integers(0, n, size=(n_resamples, n))
    flat = (draws + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def _item_counts(rng: np.random.Generator, n: int, n_resamples: int,
                 groups: Sequence[object] | None) -> tuple[np.ndarray, int | None]:
    """(n_resamples, n) multiplicity of each item: of the item itself, or of its group when
    `groups` are given (cluster bootstrap), and the number of groups (None without groups)."""
    if groups is None:
        return _counts(rng, n, n_resamples), None
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} items: give one group per item")
    names, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return _counts(rng, len(names), n_resamples)[:, index], len(names)


def _weighted_nanmean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    w = counts * finite
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ v) / total


def _interval(estimate: float, stats: np.ndarray, n: int, confidence: float, n_resamples: int,
              n_groups: int | None = None) -> BootstrapCI:
    alpha = (1 - confidence) / 2
    stats = stats[np.isfinite(stats)]
    low, high = (np.quantile(stats, [alpha, 1 - alpha]) if stats.size else (np.nan, np.nan))
    return BootstrapCI(float(estimate), float(low), float(high), n, confidence, n_resamples, n_groups)


def bootstrap_ci(per_item: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 groups: Sequence[object] | None = None) -> BootstrapCI:
    """CI of the mean of `per_item`, resampling items (images) with replacement — or, with
    `groups` (one per item, e.g. the source photo of each clip), whole groups (cluster bootstrap)."""
    values = np.asarray(per_item, dtype=np.float64).ravel()
    n = int(np.isfinite(values).sum())
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one finite per-item score")
    counts, n_groups = _item_counts(np.random.default_rng(seed), len(values), n_resamples, groups)
    return _interval(float(np.nanmean(values)), _weighted_nanmean(values, counts), n, confidence, n_resamples,
                     n_groups)


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                          confidence: float = 0.95, groups: Sequence[object] | None = None) -> BootstrapCI:
    """CI of mean(a) − mean(b) for scores on the same images (e.g. two stages), resampling images
    (or their `groups`) jointly so the pairing is kept. Images where either score is NaN are dropped."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must align: {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    diff = np.where(both, a - b, np.nan)
    return bootstrap_ci(diff, n_resamples=n_resamples, seed=seed, confidence=confidence, groups=groups)


def seeded_bootstrap_ci(per_seed: Sequence[np.ndarray], n_resamples: int = 1000, seed: int = 0,
                        confidence: float = 0.95, groups: Sequence[object] | None = None) -> BootstrapCI:
    """CI of the mean over probe seeds of the mean test score, from seed and test variation together.

    `per_seed` holds one per-item score array per probe seed, all on the same test items. Each
    bootstrap draw resamples the seeds with replacement *and* the test items (or their `groups`)
    once, shared by the drawn seeds because every seed is scored on the same items, and takes the
    mean over the drawn seeds: a crossed two-way bootstrap. With one seed it is `bootstrap_ci`."""
    matrix = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in per_seed])
    n = int(np.isfinite(matrix[0]).sum())
    if n == 0:
        raise ValueError("seeded_bootstrap_ci needs at least one finite per-item score")
    rng = np.random.default_rng(seed)
    counts, n_groups = _item_counts(rng, matrix.shape[1], n_resamples, groups)
    seed_counts = _counts(rng, len(matrix), n_resamples)
    per_draw = np.stack([_weighted_nanmean(row, counts) for row in matrix], axis=1)  # (draws, seeds)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw of groups with no finite score: NaN, skipped
        stats = (seed_counts * np.nan_to_num(per_draw)).sum(1) / (seed_counts * np.isfinite(per_draw)).sum(1)
    estimate = float(np.mean([np.nanmean(row) for row in matrix]))
    return _interval(estimate, stats, n, confidence, n_resamples, n_groups)


def bootstrap_map_ci(evaluation: CocoDetectionEval, metric: str = "map_50", n_resamples: int = 1000,
                     seed: int = 0, confidence: float = 0.95) -> BootstrapCI:
    """CI of a COCO detection metric, resampling test images and re-accumulating."""
    return bootstrap_map_cis(evaluation, [metric], n_resamples, seed, confidence)[metric]


def bootstrap_map_cis(evaluation: CocoDetectionEval, metrics: Sequence[str], n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95,
                      groups: Sequence[object] | None = None) -> dict[str, BootstrapCI]:
    """CIs of several COCO detection metrics from one set of resamples: each draw re-accumulates the
    matching once and gives all six stats, so asking for them together costs what one costs.
    `groups` (one per test image): resample whole groups, as `bootstrap_ci` does."""
    summary = evaluation.summary()
    counts, n_groups = _item_counts(np.random.default_rng(seed), evaluation.n_images, n_resamples, groups)
    draws = [evaluation.resampled(c) for c in counts]
    return {metric: _interval(summary[metric], np.array([d[metric] for d in draws]), evaluation.n_images,
                              confidence, n_resamples, n_groups) for metric in metrics}


def seeded_map_cis(evaluations: Sequence[CocoDetectionEval], metrics: Sequence[str], n_resamples: int = 1000,
                   seed: int = 0, confidence: float = 0.95,
                   groups: Sequence[object] | None = None) -> dict[str, BootstrapCI]:
    """CIs of COCO detection metrics averaged over probe seeds (one evaluation per seed, on the same
    test images), resampling seeds and test images (or groups) together as `seeded_bootstrap_ci`
    does; the estimate is the mean over seeds of each seed's metric."""
    n_images = evaluations[0].n_images
    if any(e.n_images != n_images for e in evaluations):
        raise ValueError("every seed's evaluation must cover the same test images")
    rng = np.random.default_rng(seed)
    counts, n_groups = _item_counts(rng, n_images, n_resamples, groups)
    seed_counts = _counts(rng, len(evaluations), n_resamples)
    draws = {metric: np.zeros(n_resamples) for metric in metrics}
    for b in range(n_resamples):
        drawn = [(evaluations[k].resampled(counts[b]), w) for k, w in enumerate(seed_counts[b]) if w]
        for metric in metrics:
            draws[metric][b] = sum(w * d[metric] for d, w in drawn) / sum(w for _, w in drawn)
    return {metric: _interval(float(np.mean([e.summary()[metric] for e in evaluations])), draws[metric], n_images,
                              confidence, n_resamples, n_groups) for metric in metrics}


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


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down rule: which hypotheses are rejected with family-wise error ≤ alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def familywise_beyond(estimates: Sequence[tuple[float, float, float]], null: float = 0.0,
                      above: bool | None = True, alpha: float = 0.05, confidence: float = 0.95) -> list[bool]:
    """Which of several (estimate, ci_low, ci_high) lie beyond `null` on the given side (`above=None`:
    either side), with Holm's family-wise control over all of them (a claim that scans stages pays for
    every stage scanned). With one estimate this is the CI test itself (normal approximation, the
    standard error read off each CI)."""
    p_values = []
    for estimate, low, high in estimates:
        right_side = estimate != null if above is None else estimate > null if above else estimate < null
        if not right_side or not np.isfinite([estimate, low, high]).all():
            p_values.append(1.0)
            continue
        se = standard_error_from_ci(low, high, confidence)
        p_values.append(0.0 if se <= 0.0 else 2 * (1 - NormalDist().cdf(abs(estimate - null) / se)))
    return holm(p_values, alpha)
