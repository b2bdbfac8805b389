"""Number formatting shared by every rendered output.

Measured numbers are always printed with exactly three decimals and targets with their
natural short form (0.7, 0.75), so a reader — and the test suite — can tell a measurement
from a threshold and trace every printed measurement back to `metrics.csv`.
"""

from __future__ import annotations

from stageprobe.report.schema import MetricRow

MISSING = "n/a"


def fmt(value: float | None) -> str:
    """A measured number: three decimals, no negative zero, `n/a` when missing."""
    if value is None:
        return MISSING
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def fmt_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return ""
    return f"[{fmt(low)}, {fmt(high)}]"


def fmt_row(row: MetricRow | None, with_n: bool = False) -> str:
    """`0.853 [0.801, 0.902]` (+ ` n=200`); `n/a` with no row or no value."""
    if row is None or row.value is None:
        return MISSING
    text = fmt(row.value)
    if row.has_ci:
        text += " " + fmt_ci(row.ci_low, row.ci_high)
    if with_n and row.n:
        text += f" n={row.n}"
    return text


def fmt_target(threshold: float) -> str:
    return f"{threshold:g}"
