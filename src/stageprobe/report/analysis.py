"""From rows to conclusions: verdicts, decision matrix, recommendation, and each experiment's
finding written from the numbers. `results.yaml`, `FINDINGS.md`, the HTML page and the validator
all call `analyse`, so they can never disagree with each other about the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stageprobe.report.fmt import fmt, fmt_row, fmt_target
from stageprobe.report.schema import (
    EXPERIMENTS,
    LOWER_IS_BETTER,
    POOLED_PROBE,
    SPATIAL_PROBES,
    ExperimentStatus,
    MetricRow,
    Protocol,
    RunContext,
    sort_stages,
)
from stageprobe.report.targets import (
    TARGETS_BY_KEY,
    Advice,
    Decision,
    Verdict,
    best_row,
    compute_verdicts,
    decide,
    merge_pair,
    recommend,
)

Verdicts = Mapping[str, Verdict]


@dataclass(frozen=True)
class RunMeta:
    """The part of a run's context that changes what the numbers mean."""

    model: str
    weights_random: bool
    protocol: Protocol = "stageprobe"
    experiment_status: Mapping[str, ExperimentStatus] = field(default_factory=dict)
    experiment_errors: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_context(cls, context: RunContext) -> RunMeta:
        return cls(context.model, context.weights_random, context.protocol,
                   dict(context.experiment_status), dict(context.experiment_errors))

    @classmethod
    def from_results(cls, results: Mapping[str, Any]) -> RunMeta:
        experiments = (results.get("results") or {}).get("experiments") or {}
        status = {k: v.get("status", "completed") for k, v in experiments.items() if isinstance(v, dict)}
        errors = {k: v["error"] for k, v in experiments.items() if isinstance(v, dict) and v.get("error")}
        return cls(str(results.get("model", "")), bool(results.get("weights_random", False)),
                   results.get("protocol", "stageprobe"), status, errors)


@dataclass(frozen=True)
class Analysis:
    verdicts: dict[str, Verdict]
    decision: Decision
    advice: Advice
    experiment_status: dict[str, ExperimentStatus]
    findings: dict[str, str]
    best: dict[str, dict[str, MetricRow]]  # experiment → metric → best row
    confidence: str
    confidence_notes: str
    issues: list[str]

    @property
    def passed(self) -> int:
        return sum(v.status == "PASS" for v in self.verdicts.values())

    @property
    def measured(self) -> int:
        return sum(v.status != "UNAVAILABLE" for v in self.verdicts.values())


def model_rows(rows: Sequence[MetricRow], experiment: str) -> list[MetricRow]:
    return [r for r in rows if r.experiment == experiment and r.control == "none"]


def best_per_metric(rows: Sequence[MetricRow], experiment: str) -> dict[str, MetricRow]:
    own = model_rows(rows, experiment)
    best: dict[str, MetricRow] = {}
    for metric in dict.fromkeys(r.metric for r in own):
        row = best_row(own, metric, metric not in LOWER_IS_BETTER)
        if row is not None:
            best[metric] = row
    return best


def spatial_row(rows: Sequence[MetricRow], stage: str, metric: str = "iou") -> MetricRow | None:
    """Best spatially honest probe at a stage; the pooled probe only when no other was run."""
    return (best_row(rows, metric, stages=[stage], probes=SPATIAL_PROBES)
            or best_row(rows, metric, stages=[stage], probes=[POOLED_PROBE]))


def _at(row: MetricRow | None, what: str) -> str:
    if row is None or row.value is None:
        return f"{what}: not measured"
    return f"{what} {fmt_row(row)} at {row.stage} ({row.probe})"


def _against(key: str, verdicts: Mapping[str, Verdict]) -> str:
    verdict = verdicts[key]
    return f"target {verdict.target.display}: {verdict.display}"


def _finding_e_q2_1(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    pre_stage, post_stage = merge_pair(all_rows)
    pre = spatial_row(rows, pre_stage)
    pooled = best_row(rows, "iou", stages=[pre_stage], probes=[POOLED_PROBE])
    vision = [r for r in rows if r.stage.startswith(("vision.", "pixels.")) and r.stage != post_stage]
    best = best_row(vision, "iou", probes=SPATIAL_PROBES) or best_row(vision, "iou")
    parts = [_at(pre, "Pre-merge bbox IoU")]
    if pooled is not None and pooled is not pre:
        parts.append(f"the pooled-linear probe (seed protocol) gets {fmt_row(pooled)} on the same tokens")
    if best is not None and best is not pre:
        parts.append(_at(best, "best vision stage"))
    ceiling = best_row(all_rows, "iou", stages=["pixels.patch", pre_stage], control="pixels",
                       probes=[pre.probe] if pre else None)
    if ceiling is not None:
        parts.append(f"pixel baseline {fmt_row(ceiling)} ({ceiling.probe})")
    relation = best_row(rows, "relation_acc")
    if relation is not None:
        parts.append(_at(relation, "relative-position accuracy") + f", {_against('relation_acc', verdicts)}")
    patch = best_row(rows, "patch_class_acc", stages=[pre_stage]) or best_row(rows, "patch_class_acc")
    if patch is not None:
        parts.append(_at(patch, "per-patch class accuracy"))
    return "; ".join(parts) + "."


def _finding_e_q2_2(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    pre_stage, post_stage = merge_pair(all_rows)
    post = spatial_row(rows, post_stage)
    pre = spatial_row(rows, pre_stage) or spatial_row(model_rows(all_rows, "e_q2_1"), pre_stage)
    parts = [_at(post, "Post-merge bbox IoU")]
    if pre is not None:
        parts.append(_at(pre, "against pre-merge"))
    drop = best_row(rows, "iou_drop", higher_is_better=False)
    if drop is not None:
        parts.append(f"measured IoU drop {fmt_row(drop)} ({drop.probe})")
    ratio = best_row(rows, "compression_ratio")
    if ratio is not None:
        parts.append(f"token compression ratio {fmt(ratio.value)}")
    shuffle = best_row(all_rows, "iou", stages=[post_stage], control="token-shuffle",
                       probes=[post.probe] if post else None)
    if shuffle is not None:
        parts.append(f"with tokens shuffled the same probe gets {fmt_row(shuffle)}")
    return "; ".join(parts) + "."


def _finding_e_q2_3(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    _, post_stage = merge_pair(all_rows)
    layers = sort_stages({r.stage for r in rows if r.stage.startswith("language.") and r.metric == "iou"})
    if not layers:
        return "No LLM layer reported a bbox IoU."
    per_layer = [row for row in (spatial_row(rows, s) for s in layers) if row is not None]
    best = max(per_layer, key=lambda r: r.value or 0.0)
    parts = [_at(per_layer[0], "First LLM layer bbox IoU")]
    if best is not per_layer[0]:
        parts.append(_at(best, "best layer"))
    if per_layer[-1] is not per_layer[0] and per_layer[-1] is not best:
        parts.append(_at(per_layer[-1], "last layer"))
    post = spatial_row(model_rows(all_rows, "e_q2_2"), post_stage) or spatial_row(rows, post_stage)
    if post is not None:
        parts.append(f"the merger output it starts from has {fmt_row(post)}")
    return "; ".join(parts) + "."


def _finding_e_q2_4(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    best = best_row(rows, "map_50")
    if best is None:
        return "No stage reported mAP@0.5."
    parts = [_at(best, "Best mAP@0.5") + f", {_against('map_50', verdicts)}"]
    for metric, label in (("map_75", "mAP@0.75"), ("map", "mAP@[.5:.95]"), ("map_small", "mAP small")):
        row = best_row(rows, metric, stages=[best.stage], probes=[best.probe])
        if row is not None:
            parts.append(f"{label} {fmt_row(row)}")
    return "; ".join(parts) + "."


def _verdict_parts(keys: Sequence[str], verdicts: Verdicts, prefix: str = "") -> list[str]:
    """Each target's best measured value against its target, or why it is unavailable."""
    parts = []
    for key in keys:
        verdict = verdicts[key]
        if verdict.row is None:
            parts.append(f"{verdict.target.label} unavailable ({verdict.reason})")
        else:
            parts.append(_at(verdict.row, f"{prefix}{verdict.target.label}") + f", {_against(key, verdicts)}")
    return parts


def _finding_e_q2_5(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    parts = _verdict_parts(("lpips", "edge_f1", "irs"), verdicts, prefix="best ")
    ssim = best_row(rows, "ssim")
    if ssim is not None:
        parts.append(_at(ssim, "best SSIM"))
    return "; ".join(parts) + "."


def _finding_e_q2_6(rows: list[MetricRow], all_rows: Sequence[MetricRow], verdicts: Verdicts) -> str:
    return "; ".join(_verdict_parts(("direction_acc", "speed_acc", "order_acc"), verdicts)) + "."


_FINDERS = {
    "e_q2_1": _finding_e_q2_1, "e_q2_2": _finding_e_q2_2, "e_q2_3": _finding_e_q2_3,
    "e_q2_4": _finding_e_q2_4, "e_q2_5": _finding_e_q2_5, "e_q2_6": _finding_e_q2_6,
}


def _confidence(verdicts: Mapping[str, Verdict], decision: Decision, meta: RunMeta) -> tuple[str, str]:
    """low: random weights, seed protocol or no decision; medium: gaps or CIs on the target."""
    crossing = [v.target.label for v in verdicts.values() if v.ci_crosses_target]
    missing = [v.target.label for v in verdicts.values() if v.status == "UNAVAILABLE"]
    measured = sum(v.status != "UNAVAILABLE" for v in verdicts.values())
    notes = [f"Measured {measured}/{len(verdicts)} criteria."]
    if missing:
        notes.append("Unavailable: " + ", ".join(missing) + ".")
    if crossing:
        notes.append("95 % CI crosses the target: " + ", ".join(crossing) + ".")
    low = meta.weights_random or meta.protocol == "seed" or decision.colour == "UNAVAILABLE"
    if meta.weights_random:
        notes.append("Weights are random.")
    if meta.protocol == "seed":
        notes.append("Seed protocol: pooled probes.")
    level = "low" if low else ("medium" if missing or crossing or not decision.conclusive else "high")
    return level, " ".join(notes)


def analyse(rows: Sequence[MetricRow], meta: RunMeta) -> Analysis:
    verdicts = compute_verdicts(rows)
    decision = decide(rows, TARGETS_BY_KEY["bbox_iou"].threshold)
    advice = recommend(decision, meta.weights_random, meta.protocol)
    status: dict[str, ExperimentStatus] = {}
    findings: dict[str, str] = {}
    best: dict[str, dict[str, MetricRow]] = {}
    issues: list[str] = []
    experiments = list(EXPERIMENTS) + sorted({r.experiment for r in rows} - set(EXPERIMENTS))
    for experiment in experiments:
        own = model_rows(rows, experiment)
        state = meta.experiment_status.get(experiment) or ("completed" if own else "skipped")
        status[experiment] = state
        best[experiment] = best_per_metric(rows, experiment)
        error = meta.experiment_errors.get(experiment)
        if state in ("failed", "skipped") and not own:
            findings[experiment] = f"Not measured ({state}){': ' + error if error else ''}."
        elif experiment in _FINDERS:
            findings[experiment] = _FINDERS[experiment](own, rows, verdicts)
        else:
            findings[experiment] = "; ".join(_at(r, r.metric) for r in best[experiment].values()) + "."
        if state == "failed":
            issues.append(f"{experiment} failed{': ' + error if error else ''}")
    for verdict in verdicts.values():
        if verdict.status == "UNAVAILABLE":
            issues.append(f"{verdict.target.label} unavailable: {verdict.reason}")
    if meta.weights_random:
        issues.append(f"{meta.model} has random weights: numbers describe the architecture and the probes")
    ceiling = decision.pixel_ceiling
    if ceiling is not None and ceiling.value is not None and ceiling.value < decision.target:
        issues.append(f"{ceiling.probe} reaches only {fmt(ceiling.value)} IoU on pixels "
                      f"(target {fmt_target(decision.target)})")
    confidence, notes = _confidence(verdicts, decision, meta)
    return Analysis(verdicts, decision, advice, status, findings, best, confidence, notes, issues)
