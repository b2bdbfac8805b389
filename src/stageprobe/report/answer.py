"""The answer first: the one verdict line, the "which stage to read for what" table, the smallest
drop a run can detect, and the calibration section — all read from rows and results.yaml, so
`stageprobe report` re-renders them without the run's objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageprobe.report._keeps import no_stage_keeps
from stageprobe.report.analysis import Analysis
from stageprobe.report.document import Block, Heading, Para, Table
from stageprobe.report.fmt import MISSING, fmt, fmt_row
from stageprobe.report.schema import MetricRow, stage_sort_key
from stageprobe.report.verdicts import Verdict, pixel_ceiling, studies_pixels
from stageprobe.stats import mde_from_ci, minimum_detectable_effect, standard_error_from_ci

if TYPE_CHECKING:
    from stageprobe.suites._spec import InformationType


#: what a connector is, by the output stage of the pair its adapter declares (`StageModel.connector_stages`);
#: the block of patches it folds into one token is measured (the run's token compression), not assumed
CONNECTOR_KINDS: dict[str, str] = {
    "vision.post_merge": "merger", "vision.post_pool": "average pool",
    "vision.post_shuffle": "pixel shuffle", "vision.post_projector": "projector",
}
PIXEL_COARSENING = "the coarsening of the pixel grid"


def connector_name(rows: Sequence[MetricRow], post_stage: str | None = None) -> str:
    """The model's own connector in words — "the 4×4 average pool", "the 2×2 pixel shuffle", "the projector":
    the kind its declared pair names (`post_stage`, the decision's, else the first declared output among the
    rows' stages) and, where it folds k×k tokens into one, k from the measured token compression."""
    if studies_pixels(rows):
        return PIXEL_COARSENING
    own = {r.stage for r in rows if r.of_model}
    post = post_stage if post_stage in CONNECTOR_KINDS else next((s for s in CONNECTOR_KINDS if s in own), None)
    if post is None:
        return "the connector"
    ratio = connector_compression(rows, post)
    side = round(math.sqrt(ratio)) if ratio is not None else 0
    block = f"{side}×{side} " if side > 1 and math.isclose(side * side, ratio or 0.0) else ""
    return f"the {block}{CONNECTOR_KINDS[post]}"


def connector_compression(rows: Sequence[MetricRow], post_stage: str | None) -> float | None:
    """Tokens before ÷ after the connector whose output is `post_stage`, as the run measured it (None: not
    measured)."""
    return next((r.value for r in rows if r.metric == "compression_ratio" and r.stage == post_stage and r.value),
                None)


def _standard_error(row: MetricRow | None) -> float | None:
    if row is None or not row.has_ci:
        return None
    return standard_error_from_ci(row.ci_low, row.ci_high)  # type: ignore[arg-type]


def unpaired_detectable(a: MetricRow | None, b: MetricRow | None = None) -> float | None:
    """Minimum detectable effect (α = 0.05, 80 % power) of the difference between two stage values,
    their standard errors read off their own 95 % CIs and combined as if independent (√(s₁² + s₂²));
    `b` omitted: two stages as wide as `a`. The paired drop over the same test images is tighter,
    so this errs on the side of caution."""
    first, second = _standard_error(a), _standard_error(b if b is not None else a)
    if first is None or second is None:
        return None
    return minimum_detectable_effect(math.sqrt(first**2 + second**2))


def detectable_phrase(drop: float | None, n: int) -> str:
    if drop is None:
        return "no CI: the detectable drop is unknown"
    if fmt(drop) == fmt(0.0):
        return "a zero-width CI: the detectable drop is unknown"
    return (f"drops ≥ {fmt(drop)} detectable at n={n} with 80 % power" if n
            else f"drops ≥ {fmt(drop)} detectable with 80 % power")


def paired_detectable(drop_row: MetricRow | None) -> str:
    """The paired drop's minimum detectable effect (α = 0.05, 80 % power) from its own CI."""
    if drop_row is None:
        return ""
    if not drop_row.has_ci:
        return detectable_phrase(None, drop_row.n)
    return detectable_phrase(mde_from_ci(drop_row.ci_low, drop_row.ci_high), drop_row.n)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StageAnswer:
    information: InformationType
    verdict: Verdict | None
    ceiling: MetricRow | None
    detectable: float | None
    #: where the detectable drop comes from: the calibration's reading of exactly this row, or its own CI
    detectable_source: str = ""
    #: no stage beats its chance and control-task rows (CIs apart): nothing to read
    nothing_kept: bool = False


def stage_answers(rows: Sequence[MetricRow], analysis: Analysis,
                  calibration: Mapping[str, Any] | None = None) -> list[StageAnswer]:
    """Per information type of the suite: the first of its targets with a best-on-validation stage, its
    pixel ceiling, and the smallest drop the run can detect for it (calibration's when it measured that
    probe and metric at that stage on the same data)."""
    answers = []
    for info in analysis.suite.information:
        verdicts = [analysis.verdicts[t.key] for t in info.targets if t.key in analysis.verdicts]
        chosen = next((v for v in verdicts if v.best_val is not None and v.best_val.value is not None), None)
        if chosen is None or chosen.best_val is None:
            answers.append(StageAnswer(info, None, None, None))
            continue
        best = chosen.best_val
        calibrated = calibrated_drop(calibration, info, best, analysis.suite.family_of(best.experiment))
        detectable = calibrated if calibrated is not None else unpaired_detectable(best)
        source = "calibration" if calibrated is not None else "its CI" if detectable is not None else ""
        nothing = no_stage_keeps(rows, best.probe, best.metric, chosen.target.experiments, best)
        answers.append(StageAnswer(info, chosen, pixel_ceiling(rows, best), detectable, source, nothing))
    return answers


def calibrated_drop(calibration: Mapping[str, Any] | None, info: InformationType, best: MetricRow,
                    family: str | None) -> float | None:
    """The calibration's detectable drop for exactly this row: the same information type, probe and
    metric, at the same stage, on the same data family; None where calibration did not read it."""
    entry = ((((calibration or {}).get("detectable_drop") or {}).get(info.name) or {})
             .get(f"{best.probe}/{best.metric}") or {})
    if not isinstance(entry, Mapping) or entry.get("family") != family:
        return None
    drop = (entry.get("stages") or {}).get(best.stage)
    return float(drop) if drop is not None else None


def _detectable_cell(drop: float | None, source: str = "") -> str:
    if drop is None:
        return MISSING
    # every test item scored alike (e.g. 100 % accuracy): the bootstrap cannot size a drop
    return f"≥ {fmt(drop)}" + (f" ({source})" if source else "") if fmt(drop) != fmt(0.0) else "n/a (zero-width CI)"


def which_stage_table(rows: Sequence[MetricRow], analysis: Analysis,
                      calibration: Mapping[str, Any] | None = None) -> Table:
    body = []
    for answer in stage_answers(rows, analysis, calibration):
        label = f"**{answer.information.label}** ({answer.information.what})"
        if answer.verdict is None or answer.verdict.best_val is None:
            body.append([label, MISSING, "not measured (no validation scores)", MISSING, MISSING, MISSING])
            continue
        best = answer.verdict.best_val
        ceiling = ("this stage is the pixel baseline" if best.stage.startswith("pixels.")
                   else f"{fmt_row(answer.ceiling)} at `{answer.ceiling.stage}`" if answer.ceiling else "not measured")
        read = ("**no stage keeps it** (no stage beats its chance and control-task rows, CIs apart; "
                f"best on validation: `{best.stage}`)" if answer.nothing_kept else f"`{best.stage}`")
        body.append([label, f"{answer.verdict.target.label} ({best.probe})", read, fmt_row(best),
                     ceiling, _detectable_cell(answer.detectable, answer.detectable_source)])
    return Table(["Information", "Metric (probe)", "Read this stage", "Its test value [95% CI]",
                  "Pixel ceiling (same probe, same grid)", "Minimum detectable drop (5 % level, 80 % power)"], body,
                 caption="The stage is the one whose validation score is best; the value is its test score. "
                         "The pixel ceiling is what the same probe reaches on raw pixels at that stage's grid. "
                         "A stage-to-stage difference smaller than the last column is within noise at this "
                         "sample size (calibration: the paired CI of the unplanted model between that stage and "
                         "the one before, same probe, metric and data; its CI: the value's own CI as if "
                         "unpaired).")


def verdict_line(analysis: Analysis) -> str:
    """One line that says the recommendation, the decision colour, the targets and the confidence —
    so no count of passed targets stands beside a colour or a confidence it disagrees with."""
    advice, decision = analysis.advice, analysis.decision
    unavailable = len(analysis.verdicts) - analysis.measured
    targets = (f"targets at their verdict stage: {analysis.passed} pass, {analysis.failed} fail, "
               f"{analysis.inconclusive} inconclusive, {unavailable} unavailable")
    why = analysis.confidence_reason
    where = loss_location(analysis)
    return (f"**Verdict: {advice.headline}.** {information_outcomes(analysis)}. Decision matrix {decision.colour}"
            f"{'' if decision.conclusive or decision.colour == 'UNAVAILABLE' else ' (CIs do not settle it)'}"
            + (f"; {where}" if where else "") + f"; {targets}; confidence {analysis.confidence}"
            + (f": {why}" if why else "") + ".")


def loss_location(analysis: Analysis) -> str:
    """Where the decision located a loss of its information type, with the number that locates it (the
    excess drop beyond the pixel grid's where measured); empty when it located none."""
    decision = analysis.decision
    if decision.colour != "YELLOW" or not decision.conclusive or decision.pre is None or decision.post is None:
        return ""
    lost = f"{analysis.suite.row(analysis.suite.decision.information).label.lower()} lost between " \
           f"{decision.pre.stage} and {decision.post.stage}"
    if decision.excess is not None:
        return f"{lost}: an excess drop of {fmt_row(decision.excess)} beyond the grid's"
    return f"{lost}: a drop of {fmt_row(decision.drop)}"


def information_outcomes(analysis: Analysis) -> str:
    """Each information type's outcome over its targets at their verdict stages, so the headline never
    stands above a failing or inconclusive target it does not name: "Location FAIL (1 of 3 pass; mAP@0.5
    fails, …)". A type with a FAIL fails; else one with an INCONCLUSIVE target is INCONCLUSIVE."""
    parts = []
    for info in analysis.suite.information:
        verdicts = [analysis.verdicts[t.key] for t in info.targets if t.key in analysis.verdicts]
        measured = [v for v in verdicts if v.status != "UNAVAILABLE"]
        if not measured:
            parts.append(f"{info.label} unavailable")
            continue
        named = {status: [v.target.label for v in verdicts if v.status == status]
                 for status in ("PASS", "FAIL", "INCONCLUSIVE", "UNAVAILABLE")}
        notes = [f"{len(named['PASS'])} of {len(measured)} pass"]
        failed = named["FAIL"]
        notes += [f"{' and '.join(failed)} fail{'s' if len(failed) == 1 else ''}"] if failed else []
        notes += [f"{' and '.join(named[status])} {status.lower()}" for status in ("INCONCLUSIVE", "UNAVAILABLE")
                  if named[status]]
        outcome = "FAIL" if failed else "INCONCLUSIVE" if named["INCONCLUSIVE"] else "PASS"
        parts.append(f"{info.label} {outcome} ({'; '.join(notes)})")
    return " · ".join(parts)


def _stage_cell(check: Mapping[str, Any]) -> str:
    drop = check.get("drop_at_plant") or {}
    if drop.get("estimate") is None:
        return MISSING
    return f"{fmt(drop['estimate'])} [{fmt(drop.get('ci_low'))}, {fmt(drop.get('ci_high'))}]"


def calibration_blocks(calibration: Mapping[str, Any]) -> list[Block]:
    """The Calibration section from results.yaml's `calibration` key."""
    body = []
    for plant in calibration.get("plants") or []:
        for check in plant.get("checks") or []:
            deciding = str(check.get("role", "deciding")) in ("deciding", "primary")
            body.append([f"`{plant.get('plant')}`", f"{check.get('probe')} · {check.get('metric')}"
                         + ("" if deciding else " (secondary)"),
                         f"`{check['found_at']}`" if check.get("found_at") else "not found",
                         _stage_cell(check), "yes" if check.get("earlier_stages_unchanged") else "**no**",
                         str(check.get("verdict")) if deciding else "shown beside (does not decide)"])
    body.sort(key=lambda r: stage_sort_key(r[0].strip("`").split("@")[-1]))
    drops = [f"{info}: {key} drops ≥ {fmt(entry.get('drop'))} detectable with {int(entry.get('n_test', 0))} "
             "test items" for info, table in (calibration.get("detectable_drop") or {}).items()
             for key, entry in table.items()]
    return [
        Heading(2, "Calibration"),
        Para(f"Known losses planted in `{calibration.get('model')}` one stage at a time; each must be found at "
             "its stage (paired drop above 0, with Holm's family-wise control over every stage scanned), leave "
             "earlier stages unchanged and stay down. "
             f"**Calibration: {calibration.get('verdict')}.** A FAIL means the probe family is blind to that loss "
             "on this architecture: do not read a flat curve of that information type as \"kept\"."),
        Table(["Plant", "Probe · metric", "First drop found at", "Drop at plant [95% CI]", "Earlier unchanged",
               "Verdict"], body),
        Para("**Minimum detectable drop** (two-sided 5 % level, 80 % power, from the standard error of the "
             "paired difference; the largest over neighbouring stages of the unplanted model): "
             + ("; ".join(drops) if drops else "not measured") + "."),
    ]
