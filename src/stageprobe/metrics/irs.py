"""The information retention score of the Q2 plan, exactly as defined there."""

from __future__ import annotations

from stageprobe.metrics.base import MetricValue


def irs(iou: MetricValue, lpips: MetricValue, edge_f1: MetricValue) -> MetricValue:
    """IRS = 0.4·(IoU/0.85) + 0.3·((1−LPIPS)/0.7) + 0.3·(EdgeF1/0.8), from one stage's measured
    parts; unavailable, naming the missing parts, when any part is."""
    missing = [f"{m.name}: {m.reason}" for m in (iou, lpips, edge_f1) if m.value is None]
    if missing:
        return MetricValue.unavailable("irs", "needs IoU, LPIPS and edge F1; missing " + "; ".join(missing))
    assert iou.value is not None and lpips.value is not None and edge_f1.value is not None
    value = 0.4 * (iou.value / 0.85) + 0.3 * ((1 - lpips.value) / 0.7) + 0.3 * (edge_f1.value / 0.8)
    return MetricValue("irs", value)
