"""From rows to conclusions: verdicts, decision matrix, recommendation, and each experiment's
finding written from the numbers. `results.yaml`, `FINDINGS.md`, the HTML page and the validator
all call `analyse`, so they can never disagree with each other about the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stageprobe.report.fmt import fmt_row
from stageprobe.report.schema import ExperimentStatus, MetricRow, Protocol, RunContext
from stageprobe.report.targets import Advice, Decision, Verdict, best_row, compute_verdicts, decide, recommend
from stageprobe.suites import get_suite

if TYPE_CHECKING:
    from stageprobe.suites._spec import FindingInput, Suite

Verdicts = Mapping[str, Verdict]


@dataclass(frozen=True)
class RunMeta:
    """The part of a run's context that changes what the numbers mean."""

    model: str
    weights_random: bool
    protocol: Protocol = "stageprobe"
    experiment_status: Mapping[str, ExperimentStatus] = field(default_factory=dict)
    experiment_errors: Mapping[str, str] = field(default_factory=dict)
    suite: str = "q2"
    #: `--verdict-stage`: judge every target at this stage instead of the suite's
    verdict_stage: str | None = None

    @classmethod
    def from_context(cls, context: RunContext) -> RunMeta:
        return cls(context.model, context.weights_random, context.protocol,
                   dict(context.experiment_status), dict(context.experiment_errors), context.suite,
                   (context.config or {}).get("verdict_stage"))

    @classmethod
    def from_results(cls, results: Mapping[str, Any]) -> RunMeta:
        experiments = (results.get("results") or {}).get("experiments") or {}
        status = {k: v.get("status", "completed") for k, v in experiments.items() if isinstance(v, dict)}
        errors = {k: v["error"] for k, v in experiments.items() if isinstance(v, dict) and v.get("error")}
        return cls(str(results.get("model", "")), bool(results.get("weights_random", False)),
                   results.get("protocol", "stageprobe"), status, errors, str(results.get("suite") or "q2"),
                   (results.get("config") or {}).get("verdict_stage"))


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
    suite: Suite
    #: why confidence is not high, in a few words ("" when it is high)
    confidence_reason: str = ""

    @property
    def passed(self) -> int:
        return sum(v.status == "PASS" for v in self.verdicts.values())

    @property
    def measured(self) -> int:
        return sum(v.status != "UNAVAILABLE" for v in self.verdicts.values())

    @property
    def failed(self) -> int:
        return sum(v.status == "FAIL" for v in self.verdicts.values())

    @property
    def inconclusive(self) -> int:
        """Targets the model missed where the same probe misses them on raw pixels too."""
        return sum(v.status == "INCONCLUSIVE" for v in self.verdicts.values())


def model_rows(rows: Sequence[MetricRow], experiment: str) -> list[MetricRow]:
    return [r for r in rows if r.experiment == experiment and r.control == "none"]


def best_per_metric(rows: Sequence[MetricRow], experiment: str) -> dict[str, MetricRow]:
    own = model_rows(rows, experiment)
    best: dict[str, MetricRow] = {}
    for metric in dict.fromkeys(r.metric for r in own):
        row = best_row(own, metric)
        if row is not None:
            best[metric] = row
    return best


def _confidence(verdicts: Mapping[str, Verdict], decision: Decision, meta: RunMeta) -> tuple[str, str, str]:
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
    inconclusive = [v.target.label for v in verdicts.values() if v.status == "INCONCLUSIVE"]
    if inconclusive:
        notes.append("Inconclusive (pixel ceiling does not clear the target): " + ", ".join(inconclusive) + ".")
    unsettled = missing or crossing or inconclusive or not decision.conclusive or decision.ceiling_problem
    level = "low" if low else ("medium" if unsettled else "high")
    return level, " ".join(notes), _confidence_reason(verdicts, decision, meta)


def _confidence_reason(verdicts: Mapping[str, Verdict], decision: Decision, meta: RunMeta) -> str:
    """The few words that say why confidence is not high (the verdict line prints them)."""
    reasons = [text for applies, text in (
        (meta.weights_random, "random weights"), (meta.protocol == "seed", "seed protocol (pooled probes)"),
        (decision.colour == "UNAVAILABLE", "no decision matrix"),
        (decision.ceiling_problem is not None, "the deciding probe has no pixel ceiling above the target"),
        (decision.colour != "UNAVAILABLE" and not decision.conclusive, "the CIs do not settle the colour"),
        (any(v.ci_crosses_target for v in verdicts.values()), "some CIs cross their target"),
        (any(v.status == "UNAVAILABLE" for v in verdicts.values()), "some targets unavailable"),
        (any(v.status == "INCONCLUSIVE" for v in verdicts.values()),
         "some targets inconclusive (the probe misses them on raw pixels too)"),
    ) if applies]
    return ", ".join(reasons)


def _finding(suite: Suite, experiment: str, inputs: FindingInput) -> str:
    spec = next((e for e in suite.experiments if e.id == experiment), None)
    if spec is not None and spec.finding is not None:
        return spec.finding(inputs)
    best = best_per_metric(inputs.all_rows, experiment)
    return "; ".join(f"{metric} {fmt_row(r)} at {r.stage} ({r.probe})" for metric, r in best.items()) + "."


def analyse(rows: Sequence[MetricRow], meta: RunMeta) -> Analysis:
    # imported here: the suite modules import the report's types, so the report loads first
    from stageprobe.suites._spec import FindingInput

    suite = get_suite(meta.suite)
    verdicts = compute_verdicts(suite.targets, rows, meta.verdict_stage)
    decision = decide(rows, suite.decision)
    advice = recommend(decision, meta.weights_random, meta.protocol)
    status: dict[str, ExperimentStatus] = {}
    findings: dict[str, str] = {}
    best: dict[str, dict[str, MetricRow]] = {}
    issues: list[str] = []
    ids = list(suite.experiment_ids)
    for experiment in ids + sorted({r.experiment for r in rows} - set(ids)):
        own = model_rows(rows, experiment)
        state = meta.experiment_status.get(experiment) or ("completed" if own else "skipped")
        status[experiment] = state
        best[experiment] = best_per_metric(rows, experiment)
        error = meta.experiment_errors.get(experiment)
        if state in ("failed", "skipped") and not own:
            findings[experiment] = f"Not measured ({state}){': ' + error if error else ''}."
        else:
            findings[experiment] = _finding(suite, experiment, FindingInput(own, rows, verdicts, decision))
        if state == "failed":
            issues.append(f"{experiment} failed{': ' + error if error else ''}")
    for verdict in verdicts.values():
        if verdict.status == "UNAVAILABLE":
            issues.append(f"{verdict.target.label} unavailable: {verdict.reason}")
        if verdict.status == "INCONCLUSIVE":
            issues.append(f"{verdict.target.label} inconclusive: {verdict.reason}")
    if meta.weights_random:
        issues.append(f"{meta.model} has random weights: numbers describe the architecture and the probes")
    if decision.ceiling_problem:
        issues.append(decision.ceiling_problem)
    confidence, notes, reason = _confidence(verdicts, decision, meta)
    return Analysis(verdicts, decision, advice, status, findings, best, confidence, notes, issues, suite, reason)
