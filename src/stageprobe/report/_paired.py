"""Paired comparisons the report's claims rest on: the excess drop over the pixel pair (difference in
differences over the same test images), and Holm's family-wise rule (`stats.familywise_beyond`) over
rows for claims that scan several stages.

Everything here reads per-image arrays or (value, CI) rows; nothing picks a stage on test data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stageprobe.report.schema import MetricRow
from stageprobe.stats import BootstrapCI, familywise_beyond, paired_bootstrap_diff


def excess_drop(model_pre: np.ndarray, model_post: np.ndarray, pixel_pre: np.ndarray, pixel_post: np.ndarray,
                n_resamples: int = 1000, seed: int = 0) -> BootstrapCI:
    """(model pre − post) − (pixels pre − post), paired over the same test images: the part of the
    model's drop the coarser grid alone does not explain. Images where any score is NaN are dropped."""
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (model_pre, model_post, pixel_pre, pixel_post)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"excess drop needs scores on the same images: shapes {[a.shape for a in arrays]}")
    return paired_bootstrap_diff(arrays[0] - arrays[1], arrays[2] - arrays[3], n_resamples, seed)


def rows_beyond(rows: Sequence[MetricRow], null: float = 0.0, above: bool | None = True) -> list[bool]:
    """`familywise_beyond` over rows; a row without a value or CI is never beyond (and still counted)."""
    estimates = [(r.value, r.ci_low, r.ci_high) if r.value is not None and r.has_ci else (null, null, null)
                 for r in rows]
    return familywise_beyond(estimates, null, above)  # type: ignore[arg-type]
