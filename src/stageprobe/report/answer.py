"""The answer first: the one verdict line, the "which stage to read for what" table, the smallest
drop a run can detect, and the calibration section — all read from rows and results.yaml, so
`stageprobe report` re-renders them without the run's objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stageprobe.report.analysis import Analysis
from stageprobe.report.document import Block, Heading, Para, Table
from stageprobe.report.fmt import MISSING, fmt, fmt_row
from stageprobe.report.schema import MetricRow, pixel_stage_for, stage_sort_key
from stageprobe.report.targets import Verdict, studies_pixels
from stageprobe.stats import mde_from_ci, minimum_detectable_effect, standard_error_from_ci

#: information type → the targets that answer it, first measured wins (LPIPS may be unavailable offline)
INFORMATION_TARGETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Spatial", "where objects are", ("bbox_iou", "relation_acc", "map_50")),
    ("Detail", "appearance, edges, texture", ("lpips", "edge_f1", "irs")),
    ("Motion", "direction, speed, order", ("direction_acc", "speed_acc", "order_acc")),
)
#: calibration information types by the report's information names
CALIBRATION_INFORMATION = {"Spatial": "position", "Detail": "detail", "Motion": "time"}


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
    information: str
    what: str
    verdict: Verdict | None
    ceiling: MetricRow | None
    detectable: float | None


def _pixel_ceiling(rows: Sequence[MetricRow], best: MetricRow) -> MetricRow | None:
    """The same probe and metric on raw pixels at the grid of `best` (any experiment of the same data)."""
    grid = best.stage if best.stage.startswith("pixels.") else pixel_stage_for(best.stage)
    control = "none" if best.stage.startswith("pixels.") else "pixels"
    found = [r for r in rows if r.stage == grid and r.probe == best.probe and r.metric == best.metric
             and r.control == control and r.value is not None]
    return next((r for r in found if r.experiment == best.experiment), found[0] if found else None)


def stage_answers(rows: Sequence[MetricRow], analysis: Analysis,
                  calibration: Mapping[str, Any] | None = None) -> list[StageAnswer]:
    """Per information type: the first target with a best-on-validation stage, its pixel ceiling,
    and the smallest drop the run can detect for it (calibration's when it measured one)."""
    answers = []
    for information, what, keys in INFORMATION_TARGETS:
        verdicts = [analysis.verdicts[k] for k in keys if k in analysis.verdicts]
        chosen = next((v for v in verdicts if v.best_val is not None and v.best_val.value is not None), None)
        if chosen is None:
            answers.append(StageAnswer(information, what, None, None, None))
            continue
        best = chosen.best_val
        assert best is not None
        detectable = _calibrated_drop(calibration, information, best.metric) or unpaired_detectable(best)
        answers.append(StageAnswer(information, what, chosen, _pixel_ceiling(rows, best), detectable))
    return answers


def _calibrated_drop(calibration: Mapping[str, Any] | None, information: str, metric: str) -> float | None:
    table = ((calibration or {}).get("detectable_drop") or {}).get(CALIBRATION_INFORMATION[information]) or {}
    wanted = "matched_iou" if metric == "iou" else metric
    drops = [entry.get("drop") for key, entry in table.items() if key.split("/", 1)[-1] == wanted]
    return next((float(d) for d in drops if d is not None), None)


def _detectable_cell(drop: float | None) -> str:
    if drop is None:
        return MISSING
    # every test item scored alike (e.g. 100 % accuracy): the bootstrap cannot size a drop
    return f"≥ {fmt(drop)}" if fmt(drop) != fmt(0.0) else "n/a (zero-width CI)"


def which_stage_table(rows: Sequence[MetricRow], analysis: Analysis,
                      calibration: Mapping[str, Any] | None = None) -> Table:
    body = []
    for answer in stage_answers(rows, analysis, calibration):
        label = f"**{answer.information}** ({answer.what})"
        if answer.verdict is None or answer.verdict.best_val is None:
            body.append([label, MISSING, "not measured (no validation scores)", MISSING, MISSING, MISSING])
            continue
        best = answer.verdict.best_val
        ceiling = ("this stage is the pixel baseline" if best.stage.startswith("pixels.")
                   else f"{fmt_row(answer.ceiling)} at `{answer.ceiling.stage}`" if answer.ceiling else "not measured")
        body.append([label, f"{answer.verdict.target.label} ({best.probe})", f"`{best.stage}`", fmt_row(best),
                     ceiling, _detectable_cell(answer.detectable)])
    return Table(["Information", "Metric (probe)", "Read this stage", "Its test value [95% CI]",
                  "Pixel ceiling (same probe, same grid)", "Minimum detectable drop (5 % level, 80 % power)"], body,
                 caption="The stage is the one whose validation score is best; the value is its test score. "
                         "The pixel ceiling is what the same probe reaches on raw pixels at that stage's grid. "
                         "A stage-to-stage difference smaller than the last column is within noise at this "
                         "sample size.")


def verdict_line(analysis: Analysis) -> str:
    """One line that says the recommendation, the decision colour, the targets and the confidence —
    so no count of passed targets stands beside a colour or a confidence it disagrees with."""
    advice, decision = analysis.advice, analysis.decision
    unavailable = len(analysis.verdicts) - analysis.measured
    targets = (f"{analysis.passed} of {analysis.measured} measured targets pass at their verdict stage"
               + (f" ({unavailable} unavailable)" if unavailable else ""))
    why = analysis.confidence_reason
    return (f"**Verdict: {advice.headline}.** Decision matrix {decision.colour}"
            f"{'' if decision.conclusive or decision.colour == 'UNAVAILABLE' else ' (CIs do not settle it)'}; "
            f"{targets}; confidence {analysis.confidence}" + (f": {why}" if why else "") + ".")


def merge_words(rows: Sequence[MetricRow]) -> str:
    """How the report names the 14 px → 28 px step: the pixel baseline has no merger."""
    return "the 14 px → 28 px coarsening of the pixel grid" if studies_pixels(rows) else "the 2×2 merger"


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
            primary = str(check.get("role", "primary")) == "primary"
            body.append([f"`{plant.get('plant')}`", f"{check.get('probe')} · {check.get('metric')}",
                         f"`{check['found_at']}`" if check.get("found_at") else "not found",
                         _stage_cell(check), "yes" if check.get("earlier_stages_unchanged") else "**no**",
                         str(check.get("verdict")) if primary else "shown beside (seed protocol)"])
    body.sort(key=lambda r: stage_sort_key(r[0].strip("`").split("@")[-1]))
    drops = [f"{info}: {key} drops ≥ {fmt(entry.get('drop'))} detectable with {int(entry.get('n_test', 0))} "
             "test items" for info, table in (calibration.get("detectable_drop") or {}).items()
             for key, entry in table.items()]
    return [
        Heading(2, "Calibration"),
        Para(f"Known losses planted in `{calibration.get('model')}` one stage at a time; each must be found at "
             "its stage (paired 95% CI of the drop above 0), leave earlier stages unchanged and stay down. "
             f"**Calibration: {calibration.get('verdict')}.** A FAIL means the probe family is blind to that loss "
             "on this architecture: do not read a flat curve of that information type as \"kept\"."),
        Table(["Plant", "Probe · metric", "First drop found at", "Drop at plant [95% CI]", "Earlier unchanged",
               "Verdict"], body),
        Para("**Minimum detectable drop** (two-sided 5 % level, 80 % power, from the standard error of the "
             "paired difference; the largest over neighbouring stages of the unplanted model): "
             + ("; ".join(drops) if drops else "not measured") + "."),
    ]
