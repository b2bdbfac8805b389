"""Paired comparisons the report's claims rest on: the excess drop over the pixel pair (difference in
differences over the same test images), the 80 %-power detectable effect of a paired difference, and
Holm's family-wise rule for claims that scan several stages.

Everything here reads per-image arrays or (value, CI) rows; nothing picks a stage on test data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from stageprobe.report.schema import MetricRow
from stageprobe.stats import BootstrapCI, paired_bootstrap_diff

#: z-values of a two-sided 95 % interval and of 80 % power: a true effect of (z_α/2 + z_β)·SE is found
#: 80 % of the time (≈ 2.8 standard errors)
Z_95 = float(norm.ppf(0.975))
Z_POWER_80 = float(norm.ppf(0.80))


def excess_drop(model_pre: np.ndarray, model_post: np.ndarray, pixel_pre: np.ndarray, pixel_post: np.ndarray,
                n_resamples: int = 1000, seed: int = 0) -> BootstrapCI:
    """(model pre − post) − (pixels pre − post), paired over the same test images: the part of the
    model's drop the coarser grid alone does not explain. Images where any score is NaN are dropped."""
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (model_pre, model_post, pixel_pre, pixel_post)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"excess drop needs scores on the same images: shapes {[a.shape for a in arrays]}")
    return paired_bootstrap_diff(arrays[0] - arrays[1], arrays[2] - arrays[3], n_resamples, seed)


def standard_error(row: MetricRow | None) -> float | None:
    """The standard error a 95 % percentile CI implies (its width ÷ 2·1.96)."""
    if row is None or not row.has_ci:
        return None
    return (row.ci_high - row.ci_low) / (2 * Z_95)  # type: ignore[operator]


def detectable_effect(row: MetricRow | None) -> float | None:
    """The smallest true paired difference found at α = 0.05 (two-sided) with 80 % power:
    (z_0.975 + z_0.80) × its standard error ≈ 2.8 SE."""
    se = standard_error(row)
    return None if se is None else (Z_95 + Z_POWER_80) * se


def rows_beyond(rows: Sequence[MetricRow], null: float = 0.0, above: bool | None = True) -> list[bool]:
    """`familywise_beyond` over rows; a row without a value or CI is never beyond (and still counted)."""
    estimates = [(r.value, r.ci_low, r.ci_high) if r.value is not None and r.has_ci else (null, null, null)
                 for r in rows]
    return familywise_beyond(estimates, null, above)  # type: ignore[arg-type]


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
                      above: bool | None = True, alpha: float = 0.05) -> list[bool]:
    """Which of several (estimate, ci_low, ci_high) lie beyond `null` on the given side (`above=None`:
    either side), with Holm's family-wise control over all of them (a claim that scans stages pays for
    every stage scanned). With one estimate this is the CI test itself (normal approximation)."""
    p_values = []
    for estimate, low, high in estimates:
        se = (high - low) / (2 * Z_95)
        right_side = estimate != null if above is None else estimate > null if above else estimate < null
        if not right_side or not np.isfinite([estimate, low, high]).all():
            p_values.append(1.0)
        elif se <= 0.0:
            p_values.append(0.0)
        else:
            p_values.append(float(2 * norm.sf(abs(estimate - null) / se)))
    return holm(p_values, alpha)
