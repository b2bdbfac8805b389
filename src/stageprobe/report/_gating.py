"""Ceiling gating: a target can FAIL only where the same probe could have passed.

The pixel baseline holds every bit of the input at a grid, so the same probe on raw pixels at the
verdict stage's grid is the most that probe can read there. A model value that misses the target is
evidence against the model only when that ceiling clears the target with its whole 95 % CI; else
the verdict is INCONCLUSIVE (METHODOLOGY #19). The same CI test decides whether the decision matrix
may call RED a PIVOT.
"""

from __future__ import annotations

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report.fmt import fmt, fmt_ci, fmt_target
from stageprobe.report.schema import MetricRow, pixel_stage_for


def ceiling_grid(stage: str) -> str:
    """The pixel stage on the grid of `stage` (a pixel stage is its own grid)."""
    return stage if stage.startswith("pixels.") else pixel_stage_for(stage)


def clears(ceiling: MetricRow | None, metric: str, threshold: float) -> bool:
    """The ceiling's whole 95 % CI lies on the passing side of the threshold (strictly)."""
    if ceiling is None or ceiling.value is None or not ceiling.has_ci:
        return False
    if higher_is_better(metric):
        return ceiling.ci_low > threshold  # type: ignore[operator]
    return ceiling.ci_high < threshold  # type: ignore[operator]


def ceiling_shortfall(ceiling: MetricRow | None, metric: str, probe: str, stage: str, threshold: float) -> str:
    """Why the probe cannot judge the target at `stage`'s grid (call only when `clears` is False)."""
    grid = ceiling_grid(stage)
    if ceiling is None or ceiling.value is None:
        return (f"{probe} has no pixel ceiling at {grid} (the grid of {stage}): it cannot show it could pass "
                f"the {fmt_target(threshold)} target there")
    side = "above" if higher_is_better(metric) else "below"
    ci = fmt_ci(ceiling.ci_low, ceiling.ci_high) if ceiling.has_ci else "(no CI)"
    return (f"the probe reaches only {fmt(ceiling.value)} {ci} on raw pixels at this grid ({grid}), not "
            f"{side} the {fmt_target(threshold)} target with its CI: a low score cannot be told from the "
            "probe's own limit")


def below_target(row: MetricRow | None, metric: str, threshold: float) -> bool:
    """The row's whole 95 % CI lies on the failing side of the threshold."""
    if row is None or row.value is None or not row.has_ci:
        return False
    if higher_is_better(metric):
        return row.ci_high < threshold  # type: ignore[operator]
    return row.ci_low > threshold  # type: ignore[operator]
