"""From rows to conclusions: verdicts, decision matrix, recommendation, and each experiment's
finding written from the numbers. `results.yaml`, `FINDINGS.md`, the HTML page and the validator
all call `analyse`, so they can never disagree with each other about the same rows.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stageprobe.report.fmt import fmt_row
from stageprobe.report.schema import ExperimentStatus, MetricRow, Protocol, RunContext, sort_stages
from stageprobe.report.verdicts import (
    DEFAULT_VERDICT_STAGES,
    VALIDATION,
    Advice,
    Decision,
    Verdict,
    best_row,
    compute_verdicts,
    decide,
    is_pixel_or_embedding,
    studies_pixels,
)
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
    #: the suite whose rows, targets and words read the run (results.yaml's `suite`)
    suite: str = ""
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
                   results.get("protocol", "stageprobe"), status, errors, str(results.get("suite") or ""),
                   (results.get("config") or {}).get("verdict_stage"))


@dataclass(frozen=True)
class Analysis:
    verdicts: dict[str, Verdict]
    decision: Decision
    advice: Advice
    experiment_status: dict[str, ExperimentStatus]
    findings: dict[str, str]
    #: experiment → metric → its value at the declared stage with the deciding probe (results.yaml's seed block)
    best: dict[str, dict[str, SeedRead]]
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


def model_rows(rows: Sequence[MetricRow], experiment: str | None = None) -> list[MetricRow]:
    """The studied model's own rows (no control, no variant beside it), of one experiment or all."""
    return [r for r in rows if (experiment is None or r.experiment == experiment) and r.of_model]


@dataclass(frozen=True)
class SeedRead:
    """One metric of the seed-compatible block: its test value at the experiment's declared stage with the
    probe that decides it, and the stage whose validation score of that probe is best."""

    row: MetricRow
    best_val_stage: str | None

    @property
    def note(self) -> str:
        best = f"; best stage on validation: {self.best_val_stage}" if self.best_val_stage else \
            "; no validation scores to choose a stage with"
        return f"{self.row.probe} at {self.row.stage} (declared stage), test split{best}"


def _probe_order(suite: Suite, experiment: str) -> list[str]:
    """Which probe's value a metric is read from: the information types' deciding probes, then their
    secondary probes, then the experiment's own probes in the order it declares them."""
    order = [info.probe for info in suite.information]
    order += [read.probe for info in suite.information for read in info.secondary]
    order += [p.probe for spec in suite.experiments if spec.id == experiment for p in spec.probes]
    return list(dict.fromkeys(order))


def _declared_stage(patterns: Sequence[str], measured: Sequence[str]) -> str | None:
    """The first pattern that matches a measured stage; a glob (`language.layer.*`) reads its deepest stage."""
    for pattern in patterns:
        found = [s for s in sort_stages(list(measured)) if fnmatch.fnmatchcase(s, pattern)]
        if found:
            return found[-1]
    return None


def seed_reads(rows: Sequence[MetricRow], suite: Suite, experiment: str) -> dict[str, SeedRead]:
    """metric → where the seed's table reads it: the experiment's declared stage (never a pixel stage or
    the patch embedding of a model), the deciding probe; its best stage chosen on validation."""
    spec = next((e for e in suite.experiments if e.id == experiment), None)
    patterns = spec.read_at if spec is not None else DEFAULT_VERDICT_STAGES
    own = [r for r in model_rows(rows, experiment) if r.value is not None]
    allowed = (lambda stage: True) if studies_pixels(rows) else (lambda stage: not is_pixel_or_embedding(stage))
    order = _probe_order(suite, experiment)
    reads: dict[str, SeedRead] = {}
    for metric in dict.fromkeys(r.metric for r in own):
        candidates = [r for r in own if r.metric == metric and allowed(r.stage)]
        probes = [p for p in order if any(r.probe == p for r in candidates)]
        probes += sorted({r.probe for r in candidates} - set(probes))
        if not probes:
            continue
        probe = probes[0]
        stage = _declared_stage(patterns, [r.stage for r in candidates if r.probe == probe])
        if stage is None:
            continue
        row = next(r for r in candidates if r.probe == probe and r.stage == stage)
        validation = [r for r in rows if r.experiment == experiment and r.control == VALIDATION and r.variant == "model"
                      and r.probe == probe and allowed(r.stage)]
        best = best_row(validation, metric, control=VALIDATION)
        reads[metric] = SeedRead(row, best.stage if best is not None else None)
    return reads


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
    reads = seed_reads(inputs.all_rows, suite, experiment)
    return "; ".join(f"{metric} {fmt_row(r.row)} at {r.row.stage} ({r.row.probe})" for metric, r in reads.items()) + "."


def analyse(rows: Sequence[MetricRow], meta: RunMeta, suite: Suite | None = None) -> Analysis:
    """Verdicts, decision, advice and findings of `rows` under `suite` (default: the run's, by name)."""
    # imported here: the suite modules import the report's types, so the report loads first
    from stageprobe.suites._spec import FindingInput

    suite = suite or get_suite(meta.suite)
    verdicts = compute_verdicts(suite.targets, rows, meta.verdict_stage)
    decision = decide(rows, suite.decision)
    advice = suite.advise(decision, meta.weights_random, meta.protocol)
    status: dict[str, ExperimentStatus] = {}
    findings: dict[str, str] = {}
    best: dict[str, dict[str, SeedRead]] = {}
    issues: list[str] = []
    ids = list(suite.experiment_ids)
    for experiment in ids + sorted({r.experiment for r in rows} - set(ids)):
        own = model_rows(rows, experiment)
        state = meta.experiment_status.get(experiment) or ("completed" if own else "skipped")
        status[experiment] = state
        best[experiment] = seed_reads(rows, suite, experiment)
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
