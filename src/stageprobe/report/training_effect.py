"""Architecture or training? Per information type, the trained model − its random-init twin (same
architecture, random weights), the same deciding probe on the same test images (issue 27).

Read at the verdict stage and at the best-on-validation stage, with the 80 %-power detectable effect;
the first stage where the difference leaves 0 is found with Holm's family-wise rule over the stages
scanned. A cause is named only where a CI supports it:

* **added by training** — the difference is above 0 (in the metric's better direction);
* **lost by training** — below 0: the twin keeps more than the trained model;
* **lost by the architecture** — the difference covers 0 and both the model and its twin miss the target
  at that stage (the model's FAIL is gated by its pixel ceiling, the twin's CI lies below the target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report._gating import below_target
from stageprobe.report._paired import rows_beyond
from stageprobe.report.analysis import Analysis
from stageprobe.report.document import Para, Table
from stageprobe.report.fmt import MISSING, fmt, fmt_ci
from stageprobe.report.schema import TRAINING_EFFECT, MetricRow, sort_stages
from stageprobe.report.verdicts import Verdict, row_at
from stageprobe.stats import mde_from_ci

if TYPE_CHECKING:
    from stageprobe.suites._spec import InformationType

Cause = Literal["added by training", "lost by training", "lost by the architecture"]
NEEDS_PRETRAINED = ("the trained-vs-twin comparison needs pretrained weights: this model's weights are random, "
                    "so it has no random-init twin to be compared with")
NO_TWIN = "the random-init twin was not run (--no-twin or --no-controls): what training did is not measured"


@dataclass(frozen=True)
class TrainingEffect:
    #: the information type's name (results.yaml's key) and label (the report's words)
    name: str
    information: str
    verdict: Verdict
    at_verdict: MetricRow | None
    at_best: MetricRow | None
    #: the first stage (pipeline order) whose difference leaves 0 under Holm over `scanned` stages
    first_change: MetricRow | None
    scanned: int
    cause: Cause | None

    @property
    def metric(self) -> str:
        return self.verdict.target.metric

    def as_dict(self) -> dict[str, Any]:
        def cell(row: MetricRow | None) -> dict[str, Any] | None:
            if row is None:
                return None
            return {"stage": row.stage, "value": row.value, "ci": [row.ci_low, row.ci_high] if row.has_ci else None,
                    "detectable_effect_80": _mde(row), "n": row.n}

        return {"metric": self.metric, "probe": self.verdict.target.probe, "at_verdict_stage": cell(self.at_verdict),
                "at_best_stage": cell(self.at_best), "cause": self.cause, "stages_scanned": self.scanned,
                "first_stage_differing": self.first_change.stage if self.first_change else None,
                "familywise_rule": "Holm over the stages scanned"}


def _mde(row: MetricRow) -> float | None:
    """The minimum detectable effect (α = 0.05, 80 % power) of a paired difference, from its CI."""
    return mde_from_ci(row.ci_low, row.ci_high) if row.has_ci else None  # type: ignore[arg-type]


def _effect_rows(rows: Sequence[MetricRow], verdict: Verdict) -> list[MetricRow]:
    target = verdict.target
    found: dict[str, MetricRow] = {}
    for experiment in target.experiments:
        for r in rows:
            if (r.control == TRAINING_EFFECT and r.experiment == experiment and r.probe == target.probe
                    and r.metric == target.metric and r.value is not None):
                found.setdefault(r.stage, r)
    return [found[s] for s in sort_stages(set(found))]


def _signed(row: MetricRow) -> tuple[float, float | None, float | None]:
    """(value, low, high) with > 0 meaning better for the trained model, whatever the metric's direction."""
    if higher_is_better(row.metric):
        return row.value, row.ci_low, row.ci_high  # type: ignore[return-value]
    return -row.value, (-row.ci_high if row.ci_high is not None else None), \
        (-row.ci_low if row.ci_low is not None else None)  # type: ignore[operator]


def _cause(rows: Sequence[MetricRow], verdict: Verdict, effect: MetricRow | None) -> Cause | None:
    if effect is None or not effect.has_ci or verdict.row is None:
        return None
    _, low, high = _signed(effect)
    if low is not None and low > 0:
        return "added by training"
    if high is not None and high < 0:
        return "lost by training"
    target = verdict.target
    twin = row_at(rows, target.metric, target.probe, effect.stage, target.experiments, variant="random-init")
    if verdict.status == "FAIL" and below_target(twin, target.metric, target.threshold):
        return "lost by the architecture"
    return None


def training_effects(rows: Sequence[MetricRow], information: Sequence[InformationType],
                     verdicts: Mapping[str, Verdict]) -> list[TrainingEffect]:
    """Per information type, its first target with a verdict and trained − twin rows: the differences
    and the cause."""
    effects = []
    for info in information:
        for target in info.targets:
            verdict = verdicts.get(target.key)
            measured = _effect_rows(rows, verdict) if verdict is not None else []
            if verdict is None or verdict.row is None or not measured:
                continue
            at = {r.stage: r for r in measured}
            beyond = rows_beyond(measured, above=None)
            first = next((r for r, differs in zip(measured, beyond, strict=True) if differs), None)
            best = at.get(verdict.best_val.stage) if verdict.best_val is not None else None
            effects.append(TrainingEffect(info.name, info.label, verdict, at.get(verdict.row.stage), best, first,
                                          len(measured), _cause(rows, verdict, at.get(verdict.row.stage))))
            break
    return effects


def absence_reason(rows: Sequence[MetricRow], weights_random: bool) -> str | None:
    """Why there are no trained − twin differences (said once), or None when there are some."""
    if any(r.control == TRAINING_EFFECT for r in rows):
        return None
    return NEEDS_PRETRAINED if weights_random else NO_TWIN


def _difference(row: MetricRow | None) -> str:
    if row is None or row.value is None:
        return MISSING
    mde = _mde(row)
    return (f"{'+' if row.value > 0 else ''}{fmt(row.value)} {fmt_ci(row.ci_low, row.ci_high)} at `{row.stage}`"
            + (f" (≥ {fmt(mde)} detectable at 80 % power)" if mde is not None and fmt(mde) != fmt(0.0) else ""))


def effect_sentence(effect: TrainingEffect) -> str:
    """"training keeps / adds / removes location here: +X [CI]", then the cause where a CI supports one."""
    row, info = effect.at_verdict, effect.information.lower()
    if row is None or not row.has_ci:
        return f"{effect.information}: the twin was not measured at the verdict stage"
    _, low, high = _signed(row)
    verb = "adds" if low is not None and low > 0 else "removes" if high is not None and high < 0 else "keeps"
    text = (f"{effect.information} ({effect.verdict.target.label}): training {verb} {info} here: "
            f"{_difference(row)}, trained − random-init twin")
    if effect.cause == "lost by the architecture":
        text += "; lost by the architecture: the twin misses the target at the same stage too"
    elif effect.cause is not None:
        text += f"; {effect.cause}"
    elif verb == "keeps":
        text += "; the CI covers 0, so no cause is claimed"
    if effect.first_change is not None:
        text += (f"; the difference first leaves 0 at `{effect.first_change.stage}` (Holm over the "
                 f"{effect.scanned} stages scanned)")
    return text


def training_table(effects: Sequence[TrainingEffect]) -> Table:
    body = [[f"**{e.information}**", f"{e.verdict.target.label} ({e.verdict.target.probe})", _difference(e.at_verdict),
             _difference(e.at_best), f"`{e.first_change.stage}`" if e.first_change else f"none of {e.scanned}",
             e.cause or "no cause claimed"] for e in effects]
    return Table(["Information", "Metric (probe)", "Trained − twin at the verdict stage [95% CI]",
                  "At the best stage", "First stage differing (Holm)", "Cause"], body,
                 caption="The same deciding probe on the trained model and on its random-init twin (same "
                         "architecture, random weights), paired over the same test images. Positive: training "
                         "adds (for LPIPS, lower is better, so a negative difference is what training adds).")


def training_blocks(rows: Sequence[MetricRow], analysis: Analysis, weights_random: bool) -> list[Any]:
    """The table and its one-line absence note, for the answer section."""
    effects = training_effects(rows, analysis.suite.information, analysis.verdicts)
    if not effects:
        reason = absence_reason(rows, weights_random) or NO_TWIN
        return [Para(f"**What training did:** {reason}.")]
    return [Para("**What training did** (trained − random-init twin):"), training_table(effects)]


def training_results(rows: Sequence[MetricRow], analysis: Analysis, weights_random: bool) -> dict[str, Any]:
    """The `training_effect` key of results.yaml."""
    effects = training_effects(rows, analysis.suite.information, analysis.verdicts)
    reason = None if effects else (absence_reason(rows, weights_random) or NO_TWIN)
    return {"per_information": {e.name: e.as_dict() for e in effects},
            **({"not_measured": reason} if reason else {})}


def cause_notes(rows: Sequence[MetricRow], analysis: Analysis) -> str:
    """The recommendation's sentence on causes: each stated only where its CI supports it."""
    effects = training_effects(rows, analysis.suite.information, analysis.verdicts)
    return " ".join(effect_sentence(e) + "." for e in effects)
