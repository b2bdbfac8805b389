"""The seed study's targets, verdicts per target, and the GREEN / YELLOW / RED decision matrix.

Verdict rule (one place, used by results, findings, html and validate):

* The verdict reads the **best stage**: the most favourable measured value of the metric over
  every stage and probe of the target's experiments, for the model itself (control "none").
* PASS when that value beats the threshold strictly (`> 0.7`, or `< 0.3` for LPIPS), FAIL
  otherwise, UNAVAILABLE when no stage has a value (with the rows' reasons).
* When the value's 95 % CI contains the threshold the verdict keeps its point-estimate status
  but is shown as "PASS (CI crosses target)" / "FAIL (CI crosses target)": the data cannot
  tell the two apart, and the run's confidence and recommendation take that into account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from stageprobe.report.fmt import fmt, fmt_ci, fmt_target
from stageprobe.report.schema import (
    POOLED_PROBE,
    SPATIAL_PROBES,
    MetricRow,
    Protocol,
    Recommendation,
    stage_sort_key,
)

VerdictStatus = Literal["PASS", "FAIL", "UNAVAILABLE"]
Colour = Literal["GREEN", "YELLOW", "RED", "UNAVAILABLE"]

PRE_MERGE = "vision.pre_merge"
POST_MERGE = "vision.post_merge"
SEED_PIVOT_WORDING = "PIVOT - Use hybrid approach with dedicated spatial models"


@dataclass(frozen=True)
class Target:
    key: str
    metric: str
    label: str
    what: str
    threshold: float
    higher_is_better: bool
    experiments: tuple[str, ...]
    criterion_key: str  # the seed's `success_criteria` spelling

    @property
    def display(self) -> str:
        return f"{'>' if self.higher_is_better else '<'} {fmt_target(self.threshold)}"

    def passes(self, value: float) -> bool:
        return value > self.threshold if self.higher_is_better else value < self.threshold

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


TARGETS: tuple[Target, ...] = (
    Target("bbox_iou", "iou", "Bbox IoU", "Can we locate objects?", 0.7, True,
           ("e_q2_1", "e_q2_2", "e_q2_3"), "bbox_iou_threshold"),
    Target("lpips", "lpips", "LPIPS", "Reconstruction quality (perceptual distance)", 0.3, False,
           ("e_q2_5",), "lpips_threshold"),
    Target("edge_f1", "edge_f1", "Edge F1", "Are boundaries preserved?", 0.6, True,
           ("e_q2_5",), "edge_f1_threshold"),
    Target("irs", "irs", "IRS", "Information Retention Score (IoU, LPIPS, edge F1)", 0.6, True,
           ("e_q2_5",), "irs_threshold"),
    Target("map_50", "map_50", "mAP@0.5", "Detection accuracy", 0.4, True,
           ("e_q2_4",), "mAP_threshold"),
    Target("direction_acc", "direction_acc", "Direction Acc", "Motion direction", 0.8, True,
           ("e_q2_6",), "direction_acc_threshold"),
    Target("speed_acc", "speed_acc", "Speed Acc", "Motion speed", 0.75, True,
           ("e_q2_6",), "speed_acc_threshold"),
    Target("order_acc", "order_acc", "Order Acc", "Temporal ordering", 0.75, True,
           ("e_q2_6",), "order_acc_threshold"),
    Target("relation_acc", "relation_acc", "Relative position Acc",
           "Which object is left of / above the other?", 0.9, True, ("e_q2_1", "e_q2_2"),
           "relative_position_acc_threshold"),
)
TARGETS_BY_KEY: dict[str, Target] = {t.key: t for t in TARGETS}
BBOX_IOU = TARGETS_BY_KEY["bbox_iou"]


def success_criteria() -> dict[str, float]:
    """The seed-compatible `success_criteria` block: flat thresholds."""
    return {t.criterion_key: t.threshold for t in TARGETS}


def ci_crosses(threshold: float, row: MetricRow) -> bool:
    return row.has_ci and row.ci_low <= threshold <= row.ci_high  # type: ignore[operator]


@dataclass(frozen=True)
class Verdict:
    target: Target
    status: VerdictStatus
    row: MetricRow | None = None
    ci_crosses_target: bool = False
    reason: str | None = None

    @property
    def display(self) -> str:
        if self.status != "UNAVAILABLE" and self.ci_crosses_target:
            return f"{self.status} (CI crosses target)"
        return self.status

    def as_dict(self) -> dict[str, object]:
        row = self.row
        return {
            "metric": self.target.metric, "label": self.target.label, "status": self.status,
            "display": self.display, "target": self.target.display,
            "value": row.value if row else None, "ci_low": row.ci_low if row else None,
            "ci_high": row.ci_high if row else None, "ci_crosses_target": self.ci_crosses_target,
            "stage": row.stage if row else None, "probe": row.probe if row else None,
            "experiment": row.experiment if row else None, "reason": self.reason,
        }


def best_row(rows: Iterable[MetricRow], metric: str, higher_is_better: bool = True,
             experiments: Sequence[str] | None = None, stages: Sequence[str] | None = None,
             probes: Sequence[str] | None = None, control: str = "none") -> MetricRow | None:
    """The most favourable available row; ties go to the earlier pipeline stage."""
    candidates = [
        r for r in rows
        if r.metric == metric and r.control == control and r.value is not None
        and (experiments is None or r.experiment in experiments)
        and (stages is None or r.stage in stages)
        and (probes is None or r.probe in probes)
    ]
    if not candidates:
        return None
    sign = 1.0 if higher_is_better else -1.0

    def preference(row: MetricRow) -> tuple[float, int, int]:
        rank, index, _ = stage_sort_key(row.stage)
        return sign * row.value, -rank, -index  # type: ignore[operator]

    return max(candidates, key=preference)


def verdict_for(target: Target, rows: Sequence[MetricRow]) -> Verdict:
    row = best_row(rows, target.metric, target.higher_is_better, experiments=target.experiments)
    if row is None or row.value is None:
        reasons = sorted({
            r.unavailable_reason or "" for r in rows
            if r.metric == target.metric and r.control == "none" and r.experiment in target.experiments
        } - {""})
        reason = "; ".join(reasons) if reasons else "no stage reported this metric"
        return Verdict(target, "UNAVAILABLE", None, False, reason)
    status: VerdictStatus = "PASS" if target.passes(row.value) else "FAIL"
    return Verdict(target, status, row, ci_crosses(target.threshold, row))


def compute_verdicts(rows: Sequence[MetricRow]) -> dict[str, Verdict]:
    return {t.key: verdict_for(t, rows) for t in TARGETS}


# ---------------------------------------------------------------------------------------------
# Decision matrix


@dataclass(frozen=True)
class Decision:
    colour: Colour
    pre: MetricRow | None
    post: MetricRow | None
    conclusive: bool
    pooled_only: bool
    pixel_ceiling: MetricRow | None
    reason: str
    target: float = BBOX_IOU.threshold
    #: the same probe on raw pixels at the merged grid (pixels.merged)
    post_pixel_ceiling: MetricRow | None = None

    @property
    def grid_limited(self) -> bool:
        """YELLOW, and the probe also falls below the target on raw pixels at the merged grid: the
        drop across the merger is then (at least partly) the coarser token grid, not the model."""
        return self.colour == "YELLOW" and _below(self.post_pixel_ceiling, self.target)

    def as_dict(self) -> dict[str, object]:
        def ci(row: MetricRow | None) -> list[float] | None:
            return [row.ci_low, row.ci_high] if row is not None and row.has_ci else None  # type: ignore[list-item]

        probes = sorted({r.probe for r in (self.pre, self.post) if r is not None})
        return {
            "colour": self.colour, "probe": " / ".join(probes) or None, "target": self.target,
            "pre_merge_iou": self.pre.value if self.pre else None, "pre_merge_ci": ci(self.pre),
            "post_merge_iou": self.post.value if self.post else None, "post_merge_ci": ci(self.post),
            "conclusive": self.conclusive,
            "pixel_ceiling": self.pixel_ceiling.value if self.pixel_ceiling else None,
            "post_merge_pixel_ceiling": self.post_pixel_ceiling.value if self.post_pixel_ceiling else None,
            "reason": self.reason,
        }


def _below(row: MetricRow | None, target: float) -> bool:
    """A measured value under the target (a missing row is not below anything)."""
    return row is not None and row.value is not None and row.value < target


def _describe(row: MetricRow) -> str:
    ci = fmt_ci(row.ci_low, row.ci_high)
    return f"{row.probe} IoU at {row.stage} is {fmt(row.value)}" + (f" {ci}" if ci else "")


def merge_pair(rows: Sequence[MetricRow]) -> tuple[str, str]:
    """The stages on either side of the 2×2 merge: the model's own, or — when the model studied is
    the pixel baseline itself — its 14 px and 28 px patches, which play the same roles."""
    own = {r.stage for r in rows if r.control == "none"}
    if PRE_MERGE not in own and POST_MERGE not in own and "pixels.patch" in own:
        return "pixels.patch", "pixels.merged"
    return PRE_MERGE, POST_MERGE


def decide(rows: Sequence[MetricRow], target: float = BBOX_IOU.threshold) -> Decision:
    """GREEN / YELLOW / RED from the spatial probes' IoU before and after the 2×2 merger."""
    probes: tuple[str, ...] = SPATIAL_PROBES
    pre_stage, post_stage = merge_pair(rows)
    pre = best_row(rows, "iou", stages=[pre_stage], probes=probes)
    post = best_row(rows, "iou", stages=[post_stage], probes=probes)
    pooled_only = False
    if pre is None and post is None:
        # Only the seed protocol's pooled probe was run: usable for a colour, but flagged.
        pre = best_row(rows, "iou", stages=[pre_stage], probes=[POOLED_PROBE])
        post = best_row(rows, "iou", stages=[post_stage], probes=[POOLED_PROBE])
        pooled_only = pre is not None or post is not None
    used_probes = [r.probe for r in (pre, post) if r is not None]
    ceiling = best_row(rows, "iou", stages=["pixels.patch", pre_stage], probes=used_probes or None,
                       control="pixels")
    post_ceiling = best_row(rows, "iou", stages=["pixels.merged", post_stage], probes=used_probes or None,
                            control="pixels")
    t = fmt_target(target)
    if pre is None or post is None:
        missing = [s for s, r in ((pre_stage, pre), (post_stage, post)) if r is None]
        return Decision("UNAVAILABLE", pre, post, False, pooled_only, ceiling,
                        f"no spatial-probe IoU at {', '.join(missing)}: the decision matrix needs both "
                        "sides of the 2×2 merger")
    assert pre.value is not None and post.value is not None
    if post.value >= target:
        colour: Colour = "GREEN"
        deciding = [post]
        reason = f"{_describe(post)}, at or above the {t} target: the merger keeps location"
    elif pre.value >= target:
        colour = "YELLOW"
        deciding = [pre, post]
        if post_ceiling is not None and _below(post_ceiling, target):
            reason = (f"{_describe(pre)}, at or above the {t} target, but {_describe(post)}; on raw pixels "
                      f"at the same merged grid the probe also falls below the target ({_describe(post_ceiling)}), "
                      "so the coarser token grid accounts for (part of) the drop, not the merger alone")
        else:
            reason = (f"{_describe(pre)}, at or above the {t} target, but {_describe(post)}: "
                      "location is lost in the merger")
    else:
        colour = "RED"
        deciding = [pre]
        reason = f"{_describe(pre)}, below the {t} target: location is weak before the merger"
    conclusive = not any(ci_crosses(target, r) for r in deciding)
    return Decision(colour, pre, post, conclusive, pooled_only, ceiling, reason, target, post_ceiling)


@dataclass(frozen=True)
class Advice:
    recommendation: Recommendation
    headline: str
    notes: str
    blockers: tuple[str, ...] = ()


def recommend(decision: Decision, weights_random: bool, protocol: Protocol) -> Advice:
    """Turn the decision matrix into proceed / pivot / investigate / block, with the reason.

    A RED only becomes the seed's PIVOT when it is evidence about the model: a spatial probe
    (not the pooled seed protocol), a CI clear of the target, and a probe that does reach the
    target on raw pixels when that control was run.
    """
    t = fmt_target(decision.target)
    caveat = ""
    if weights_random:
        caveat = (" The model's weights are random, so this describes the architecture and the "
                  "probes, not a trained model.")
    if decision.colour == "UNAVAILABLE":
        return Advice("block", "BLOCK - decision matrix cannot be computed",
                      f"Decision matrix unavailable: {decision.reason}.{caveat}", (decision.reason,))
    base = f"Decision matrix {decision.colour}: {decision.reason}."
    if decision.pooled_only or protocol == "seed":
        return Advice("investigate", "INVESTIGATE - pooled probes cannot measure location",
                      base + " These IoUs come from mean-pooled probes (seed protocol, defect 1), which "
                      "cannot localise even on raw pixels; rerun with the stageprobe protocol's spatial "
                      "probes before deciding." + caveat)
    ceiling = decision.pixel_ceiling
    if decision.colour == "RED" and ceiling is not None and _below(ceiling, decision.target):
        return Advice("investigate", "INVESTIGATE - the probe misses the target even on pixels",
                      base + f" The same probe reaches only {fmt(ceiling.value)} IoU on the pixel baseline "
                      f"({ceiling.stage}), below the {t} target, so a low score is a limit of the probe, "
                      "not evidence about the model." + caveat)
    if decision.grid_limited:
        return Advice("investigate", "INVESTIGATE - the post-merge probe misses the target even on pixels",
                      base + " Compare the model's measured IoU drop across the merger with the pixel "
                      "baseline's (E-Q2.2) before blaming the merger; pre-merge features are the safe choice "
                      "for spatial needs until a finer post-merge probe settles it." + caveat)
    if not decision.conclusive:
        return Advice("investigate", "INVESTIGATE - confidence interval crosses the target",
                      base + f" The 95 % CI contains the {t} target, so the colour is not settled; "
                      "evaluate on more test items." + caveat)
    if decision.colour == "GREEN":
        return Advice("proceed", "PROCEED - VLM features keep object location through the merger",
                      base + " Spatial features can be taken from the post-merge tokens." + caveat)
    if decision.colour == "YELLOW":
        return Advice("investigate", "INVESTIGATE - take pre-merge features for spatial needs",
                      base + " Use pre-merge features for spatial needs and investigate the merger." + caveat)
    return Advice("pivot", SEED_PIVOT_WORDING,
                  base + " Location is not recoverable from the vision tower with a spatial probe that "
                  "works on pixels; add a dedicated spatial model (detector or grounding model)." + caveat)
