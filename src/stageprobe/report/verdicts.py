"""Targets, verdicts per target, and the GREEN / YELLOW / RED decision matrix — generic rules; the
suite's information rows declare which targets, probes and stages they read, and the suite words
the recommendation.

Verdict rule (one place, used by results, findings, html and validate):

* A target is judged at a **declared stage** (the suite's, e.g. `vision.post_merge` — what the LLM
  receives; a ViT's last stage; `pixels.merged` for the pixel baseline; `--verdict-stage`
  overrides) with the target's **declared probe**. Pixel stages and `vision.patch_embed` never
  decide a verdict about a model.
* PASS when that value beats the threshold strictly (`> 0.7`, or `< 0.3` for LPIPS); FAIL when it
  does not and the same probe's pixel ceiling at that grid clears the threshold with its 95 % CI;
  INCONCLUSIVE when it does not and the ceiling does not clear it (the probe could not have passed,
  METHODOLOGY #19); UNAVAILABLE when the stage has no value (with the reason).
* A second column names the stage whose **validation** score is best, with its **test** value.
* When the 95 % CI contains the threshold the verdict keeps its point-estimate status but is
  shown as "PASS (CI crosses target)" / "FAIL (CI crosses target)".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report._gating import below_target, ceiling_grid, ceiling_shortfall, clears
from stageprobe.report.fmt import fmt, fmt_ci, fmt_target
from stageprobe.report.schema import CONNECTOR_PAIRS, MetricRow, pixel_stage_for, stage_sort_key

VerdictStatus = Literal["PASS", "FAIL", "INCONCLUSIVE", "UNAVAILABLE"]
Colour = Literal["GREEN", "YELLOW", "RED", "UNAVAILABLE"]

#: where a target is judged unless the suite or the user says otherwise, first present wins
DEFAULT_VERDICT_STAGES = (*(post for _, post in CONNECTOR_PAIRS), "vision.final", "pixels.merged")
#: the control under which the runner records validation-split scores (they only pick a stage)
VALIDATION = "validation"


@dataclass(frozen=True)
class Target:
    key: str
    metric: str
    label: str
    what: str
    threshold: float
    criterion_key: str  # the seed's `success_criteria` spelling
    #: the probe family whose value at the verdict stage decides the target (empty in a suite's row:
    #: the row's deciding probe)
    probe: str = ""
    #: the experiments it is read from, first wins (empty in a suite's row: its data family's)
    experiments: tuple[str, ...] = ()
    stages: tuple[str, ...] = DEFAULT_VERDICT_STAGES

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    @property
    def display(self) -> str:
        return f"{'>' if self.higher_is_better else '<'} {fmt_target(self.threshold)}"

    def passes(self, value: float) -> bool:
        return value > self.threshold if self.higher_is_better else value < self.threshold


def ci_crosses(threshold: float, row: MetricRow) -> bool:
    return row.has_ci and row.ci_low <= threshold <= row.ci_high  # type: ignore[operator]


#: every family's embedding stage: a (position-coded) linear re-encoding of each patch's pixels
EMBEDDING_STAGES = ("vision.patch_embed", "vision.embed", "vision.pos_embed")


def is_pixel_or_embedding(stage: str) -> bool:
    """Stages that re-encode pixels: they never decide a verdict about a model nor its best stage."""
    return stage.startswith("pixels.") or stage in EMBEDDING_STAGES


def studies_pixels(rows: Iterable[MetricRow]) -> bool:
    """The model studied is the pixel baseline itself (its own stages are pixels.*)."""
    own = {r.stage for r in rows if r.of_model}
    return bool(own) and all(s.startswith("pixels.") for s in own)


@dataclass(frozen=True)
class Verdict:
    target: Target
    status: VerdictStatus
    row: MetricRow | None = None
    ci_crosses_target: bool = False
    reason: str | None = None
    #: the stage whose validation score is best, and the test row at that stage
    best_val: MetricRow | None = None
    #: the same probe on raw pixels at the verdict stage's grid (what gates FAIL against INCONCLUSIVE)
    ceiling: MetricRow | None = None

    @property
    def display(self) -> str:
        if self.status != "UNAVAILABLE" and self.ci_crosses_target:
            return f"{self.status} (CI crosses target)"
        return self.status

    def as_dict(self) -> dict[str, object]:
        row, best = self.row, self.best_val
        return {
            "metric": self.target.metric, "label": self.target.label, "status": self.status,
            "display": self.display, "target": self.target.display,
            "value": row.value if row else None, "ci_low": row.ci_low if row else None,
            "ci_high": row.ci_high if row else None, "ci_crosses_target": self.ci_crosses_target,
            "stage": row.stage if row else None, "probe": self.target.probe,
            "experiment": row.experiment if row else None, "reason": self.reason,
            "best_val_stage": best.stage if best else None, "best_val_test_value": best.value if best else None,
            **self._ceiling_dict(),
        }

    def _ceiling_dict(self) -> dict[str, object]:
        ceiling = self.ceiling
        if ceiling is None:
            return {}
        return {"pixel_ceiling": ceiling.value, "pixel_ceiling_stage": ceiling.stage,
                "pixel_ceiling_ci": [ceiling.ci_low, ceiling.ci_high] if ceiling.has_ci else None}


def best_row(rows: Iterable[MetricRow], metric: str, higher: bool | None = None,
             experiments: Sequence[str] | None = None, stages: Sequence[str] | None = None,
             probes: Sequence[str] | None = None, control: str = "none", variant: str = "model") -> MetricRow | None:
    """The most favourable available row (direction from the metric catalogue unless given);
    ties go to the earlier pipeline stage."""
    candidates = [
        r for r in rows
        if r.metric == metric and r.control == control and r.variant == variant and r.value is not None
        and (experiments is None or r.experiment in experiments)
        and (stages is None or r.stage in stages)
        and (probes is None or r.probe in probes)
    ]
    if not candidates:
        return None
    sign = 1.0 if (higher_is_better(metric) if higher is None else higher) else -1.0

    def preference(row: MetricRow) -> tuple[float, int, int]:
        rank, index, _ = stage_sort_key(row.stage)
        return sign * row.value, -rank, -index  # type: ignore[operator]

    return max(candidates, key=preference)


def row_at(rows: Iterable[MetricRow], metric: str, probe: str, stage: str, experiments: Sequence[str],
           control: str = "none", variant: str = "model") -> MetricRow | None:
    """The row of `probe`'s `metric` at `stage` (first experiment in the given order that has it)."""
    found = {r.experiment: r for r in rows if r.metric == metric and r.probe == probe and r.stage == stage
             and r.control == control and r.variant == variant}
    return next((found[e] for e in experiments if e in found), None)


def stage_line(rows: Iterable[MetricRow], metric: str, probe: str, experiments: Sequence[str],
               control: str = "none", variant: str = "model") -> list[MetricRow]:
    """One probe's measured `metric` at every stage, in pipeline order, each stage's row from the first of
    `experiments` that has it (experiments sharing a stage share its fit): never a maximum over probes or
    experiments."""
    rank = {experiment: i for i, experiment in enumerate(experiments)}
    by_stage: dict[str, MetricRow] = {}
    for r in rows:
        if (r.metric == metric and r.probe == probe and r.control == control and r.variant == variant
                and r.value is not None
                and r.experiment in rank):
            kept = by_stage.get(r.stage)
            if kept is None or rank[r.experiment] < rank[kept.experiment]:
                by_stage[r.stage] = r
    return sorted(by_stage.values(), key=lambda r: stage_sort_key(r.stage))


def pixel_ceiling(rows: Sequence[MetricRow], row: MetricRow, experiments: Sequence[str] = ()) -> MetricRow | None:
    """The same probe and metric on raw pixels at the grid of `row`'s stage (a pixel stage is its own),
    from `row`'s experiment, else the first of `experiments` (else any) that measured it."""
    grid = ceiling_grid(row.stage)
    variant = "model" if row.stage.startswith("pixels.") else "pixels"
    found = [r for r in rows if r.stage == grid and r.probe == row.probe and r.metric == row.metric
             and r.control == "none" and r.variant == variant and r.value is not None]
    for experiment in (row.experiment, *experiments):
        match = next((r for r in found if r.experiment == experiment), None)
        if match is not None:
            return match
    return None if experiments else (found[0] if found else None)


def verdict_stage(target: Target, rows: Sequence[MetricRow], override: str | None = None) -> str | None:
    """The stage a target is judged at: the override, else the first declared stage measured."""
    if override:
        return override
    own = {r.stage for r in rows if r.metric == target.metric and r.probe == target.probe
           and r.of_model and r.experiment in target.experiments}
    return next((s for s in target.stages if s in own), None)


def verdict_for(target: Target, rows: Sequence[MetricRow], override: str | None = None) -> Verdict:
    best_val = _best_on_validation(target, rows)
    stage = verdict_stage(target, rows, override)
    if stage is None:
        return Verdict(target, "UNAVAILABLE", None, False,
                       f"{target.probe} did not measure {target.metric} at any of "
                       f"{', '.join(target.stages)}", best_val)
    if is_pixel_or_embedding(stage) and not studies_pixels(rows):
        return Verdict(target, "UNAVAILABLE", None, False,
                       f"{stage} re-encodes pixels: it cannot decide a verdict about the model", best_val)
    row = row_at(rows, target.metric, target.probe, stage, target.experiments)
    if row is None or row.value is None:
        reason = (row.unavailable_reason if row is not None else None) or \
            f"{target.probe} did not measure {target.metric} at {stage}"
        return Verdict(target, "UNAVAILABLE", None, False, reason, best_val)
    ceiling = pixel_ceiling(rows, row, target.experiments)
    status: VerdictStatus = "PASS" if target.passes(row.value) else "FAIL"
    reason = None
    if status == "FAIL" and not clears(ceiling, target.metric, target.threshold):
        status, reason = "INCONCLUSIVE", ceiling_shortfall(ceiling, target.metric, target.probe, stage,
                                                           target.threshold)
    return Verdict(target, status, row, ci_crosses(target.threshold, row), reason, best_val, ceiling)


def _best_on_validation(target: Target, rows: Sequence[MetricRow]) -> MetricRow | None:
    """The test row at the stage whose validation score of the target's probe is best."""
    judged = [r for r in rows if not is_pixel_or_embedding(r.stage)] if not studies_pixels(rows) else rows
    chosen = best_row(judged, target.metric, experiments=target.experiments, probes=[target.probe],
                      control=VALIDATION)
    if chosen is None:
        return None
    return row_at(rows, target.metric, target.probe, chosen.stage, target.experiments)


def compute_verdicts(targets: Sequence[Target], rows: Sequence[MetricRow],
                     override: str | None = None) -> dict[str, Verdict]:
    return {t.key: verdict_for(t, rows, override) for t in targets}


# ---------------------------------------------------------------------------------------------
# Decision matrix


@dataclass(frozen=True)
class DecisionRule:
    """One probe family decides both sides. `pairs` are (before, after) stage pairs tried in order;
    when none is measured, the first and last stage the probe measured form the pair (a ViT
    encoder has no merger). `fallback_probe` (the seed protocol's pooled probe) is used for both
    sides only when the deciding probe was not run, and the decision is then flagged."""

    threshold: float
    drop_metric: str
    #: the suite's information row this rule reads: its probe, metric and (unless given) experiments
    information: str = ""
    metric: str = ""
    probe: str = ""
    experiments: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = (*CONNECTOR_PAIRS, ("pixels.patch", "pixels.merged"))
    fallback_probe: str | None = None
    #: the drop beyond the pixel pair's (difference in differences): what YELLOW's "lost in the merger" reads
    excess_metric: str | None = None


@dataclass(frozen=True)
class Decision:
    colour: Colour
    probe: str | None
    pre: MetricRow | None
    post: MetricRow | None
    conclusive: bool
    reason: str
    target: float
    pooled_only: bool = False
    drop: MetricRow | None = None
    #: the same probe on raw pixels at the same grid as `pre` / `post`
    pre_ceiling: MetricRow | None = None
    post_ceiling: MetricRow | None = None
    #: why the probe cannot judge this model here (no or failed pixel ceiling), else None
    ceiling_problem: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the model's drop beyond the pixel pair's, paired over the same test images (difference in differences)
    excess: MetricRow | None = None

    def as_dict(self) -> dict[str, object]:
        def ci(row: MetricRow | None) -> list[float] | None:
            return [row.ci_low, row.ci_high] if row is not None and row.has_ci else None  # type: ignore[list-item]

        def value(row: MetricRow | None) -> float | None:
            return row.value if row is not None else None

        return {
            "colour": self.colour, "probe": self.probe, "target": self.target,
            "pre_stage": self.pre.stage if self.pre else None,
            "post_stage": self.post.stage if self.post else None,
            "pre_merge_iou": value(self.pre), "pre_merge_ci": ci(self.pre),
            "post_merge_iou": value(self.post), "post_merge_ci": ci(self.post),
            "drop": value(self.drop), "drop_ci": ci(self.drop),
            "conclusive": self.conclusive,
            "pixel_ceiling": value(self.pre_ceiling), "post_merge_pixel_ceiling": value(self.post_ceiling),
            "ceiling_problem": self.ceiling_problem, "reason": self.reason,
            "excess_drop": value(self.excess), "excess_drop_ci": ci(self.excess),
        }


def _describe(row: MetricRow) -> str:
    ci = fmt_ci(row.ci_low, row.ci_high)
    return f"{row.probe} {row.metric} at {row.stage} is {fmt(row.value)}" + (f" {ci}" if ci else "")


def _measured(rows: Sequence[MetricRow], rule: DecisionRule, probe: str) -> list[str]:
    stages = {r.stage for r in rows if r.metric == rule.metric and r.probe == probe and r.control == "none"
              and r.variant == "model"
              and r.value is not None and r.experiment in rule.experiments}
    return sorted(stages, key=stage_sort_key)


def decision_pair(rows: Sequence[MetricRow], rule: DecisionRule, probe: str) -> tuple[str, str] | None:
    measured = _measured(rows, rule, probe)
    for pre, post in rule.pairs:
        if pre in measured and post in measured:
            return pre, post
    return (measured[0], measured[-1]) if len(measured) >= 2 else None


def _ceiling(rows: Sequence[MetricRow], rule: DecisionRule, probe: str, stage: str) -> MetricRow | None:
    """The same probe on raw pixels at the same grid; a pixel stage is its own ceiling."""
    if stage.startswith("pixels."):
        return row_at(rows, rule.metric, probe, stage, rule.experiments)
    return row_at(rows, rule.metric, probe, pixel_stage_for(stage), rule.experiments, variant="pixels")


def _ceiling_problem(rule: DecisionRule, probe: str, pairs: Sequence[tuple[str, MetricRow | None]],
                     by_ci: bool = False) -> str | None:
    """Why the probe cannot judge the target at these grids; `by_ci` (RED, a PIVOT's ground): the
    ceiling's whole CI must clear the target, not only its point estimate."""
    t = fmt_target(rule.threshold)
    for stage, ceiling in pairs:
        grid = ceiling_grid(stage)
        if ceiling is None or ceiling.value is None:
            return f"{probe} has no pixel ceiling at {grid} (the grid of {stage}): it cannot show it would see a loss"
        if by_ci and not clears(ceiling, rule.metric, rule.threshold):
            return ceiling_shortfall(ceiling, rule.metric, probe, stage, rule.threshold)
        if not ceiling.value > rule.threshold:
            return (f"{probe} reaches only {fmt(ceiling.value)} on raw pixels at {grid}, not above the {t} "
                    f"target: it cannot judge the target at that grid")
    return None


def decide(rows: Sequence[MetricRow], rule: DecisionRule) -> Decision:
    """GREEN / YELLOW / RED from one probe's values before and after the merge (or first → last stage)."""
    probe, pooled_only = rule.probe, False
    pair = decision_pair(rows, rule, probe)
    if pair is None and rule.fallback_probe is not None:
        pair = decision_pair(rows, rule, rule.fallback_probe)
        if pair is not None:
            probe, pooled_only = rule.fallback_probe, True
    t, threshold = fmt_target(rule.threshold), rule.threshold
    if pair is None:
        return Decision("UNAVAILABLE", rule.probe, None, None, False,
                        f"{rule.probe} measured {rule.metric} at fewer than two stages: the decision matrix "
                        "needs the same probe before and after", threshold)
    pre = row_at(rows, rule.metric, probe, pair[0], rule.experiments)
    post = row_at(rows, rule.metric, probe, pair[1], rule.experiments)
    assert pre is not None and post is not None and pre.value is not None and post.value is not None
    drop = row_at(rows, rule.drop_metric, probe, post.stage, rule.experiments)
    excess = row_at(rows, rule.excess_metric, probe, post.stage, rule.experiments) if rule.excess_metric else None
    ceilings = (_ceiling(rows, rule, probe, pre.stage), _ceiling(rows, rule, probe, post.stage))
    red = not post.value > threshold and not pre.value > threshold
    problem = _ceiling_problem(rule, probe, [(pre.stage, ceilings[0]), (post.stage, ceilings[1])], by_ci=red)
    if post.value > threshold:
        colour: Colour = "GREEN"
        conclusive = post.ci_low is not None and post.ci_low > threshold
        reason = f"{_describe(post)}, above the {t} target: location survives to {post.stage}"
    elif pre.value > threshold:
        colour = "YELLOW"
        drop_clear = _clear_of_zero(excess if rule.excess_metric else drop)
        conclusive = bool(pre.ci_low is not None and pre.ci_low > threshold and drop_clear)
        reason = f"{_describe(pre)}, above the {t} target, but {_describe(post)}" + _drop_words(drop, excess, rule)
    else:
        colour = "RED"
        # both sides' whole CIs below the target: neither stage could be read as passing
        conclusive = below_target(pre, rule.metric, threshold) and below_target(post, rule.metric, threshold)
        reason = f"{_describe(pre)}, not above the {t} target: location is weak already at {pre.stage}"
    return Decision(colour, probe, pre, post, conclusive, reason, threshold, pooled_only, drop, *ceilings,
                    problem, excess=excess)


def _clear_of_zero(row: MetricRow | None) -> bool:
    return row is not None and row.ci_low is not None and row.ci_low > 0


def _drop_words(drop: MetricRow | None, excess: MetricRow | None, rule: DecisionRule) -> str:
    """The paired drop, and (when the rule reads it) the excess over the pixel pair that settles YELLOW."""
    if drop is None:
        return "; no paired drop was measured"
    words = f"; the paired drop {fmt(drop.value)} {fmt_ci(drop.ci_low, drop.ci_high)}"
    if rule.excess_metric is None:
        return words + f"{' excludes' if _clear_of_zero(drop) else ' does not exclude'} 0"
    if excess is None:
        return words + "; no excess drop over the pixel pair was measured, so the grid's own cost cannot be told apart"
    verb = "excludes" if _clear_of_zero(excess) else "does not exclude"
    return (words + f", of which the excess over the pixel pair's drop is {fmt(excess.value)} "
            f"{fmt_ci(excess.ci_low, excess.ci_high)}, which {verb} 0")


@dataclass(frozen=True)
class Advice:
    recommendation: Literal["proceed", "pivot", "investigate", "block"]
    headline: str
    notes: str
    blockers: tuple[str, ...] = ()
