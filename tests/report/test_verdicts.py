"""Verdicts at declared stages, the one-probe decision matrix and the recommendation, on known cases."""

from __future__ import annotations

from conftest import row

from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import decide, verdict_for
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import DECISION, TARGETS
from stageprobe.suites.q2.advice import SEED_PIVOT_WORDING, recommend

BY_KEY = {t.key: t for t in TARGETS}
BBOX = BY_KEY["bbox_iou"]
CEILINGS = [row("e_q2_1", "pixels.patch", BOX, "iou", 0.95, control="pixels", ci=(0.93, 0.97)),
            row("e_q2_2", "pixels.merged", BOX, "iou", 0.9, control="pixels", ci=(0.88, 0.92))]


def _post(value: float, ci: tuple[float, float] | None = None) -> MetricRow:
    return row("e_q2_2", "vision.post_merge", BOX, "iou", value, ci=ci)


def test_iou_085_passes_01_fails_and_equal_to_target_fails() -> None:
    assert verdict_for(BBOX, [_post(0.85)]).status == "PASS"
    assert verdict_for(BBOX, [_post(0.1), *CEILINGS]).status == "FAIL"
    assert verdict_for(BBOX, [_post(0.7), *CEILINGS]).status == "FAIL"  # the target is strict: > 0.7


def test_patch_embed_passing_does_not_pass_a_failing_post_merge() -> None:
    """The known answer of issue 10: the verdict reads post-merge; the best-on-val column names the
    earlier stage with its test value — never the patch embedding (issue 21 item 9)."""
    rows = [
        row("e_q2_1", "vision.patch_embed", BOX, "iou", 0.92),
        row("e_q2_1", "vision.patch_embed", BOX, "iou", 0.9, control="validation"),
        row("e_q2_1", "vision.pre_merge", BOX, "iou", 0.5),
        row("e_q2_1", "vision.pre_merge", BOX, "iou", 0.52, control="validation"),
        _post(0.31),
        row("e_q2_2", "vision.post_merge", BOX, "iou", 0.3, control="validation"),
        *CEILINGS,
    ]
    verdict = verdict_for(BBOX, rows)
    assert verdict.status == "FAIL"
    assert verdict.row is not None and verdict.row.stage == "vision.post_merge" and verdict.row.value == 0.31
    assert verdict.best_val is not None and verdict.best_val.stage == "vision.pre_merge"
    assert verdict.best_val.value == 0.5 and verdict.best_val.control == "none"


def test_verdict_stage_override_and_pixel_stages_never_judge_a_model() -> None:
    rows = [row("e_q2_1", "vision.block.3", BOX, "iou", 0.8), _post(0.3),
            row("e_q2_1", "vision.patch_embed", BOX, "iou", 0.95)]
    assert verdict_for(BBOX, rows, override="vision.block.3").status == "PASS"
    embed = verdict_for(BBOX, rows, override="vision.patch_embed")
    assert embed.status == "UNAVAILABLE" and "re-encodes pixels" in (embed.reason or "")
    # the pixel baseline studied as a model is judged at its merged grid
    pixels = [row("e_q2_2", "pixels.merged", BOX, "iou", 0.8)]
    verdict = verdict_for(BBOX, pixels)
    assert verdict.status == "PASS" and verdict.row is not None and verdict.row.stage == "pixels.merged"


def test_verdict_reads_only_the_declared_probe() -> None:
    rows = [row("e_q2_2", "vision.post_merge", "pooled-linear", "iou", 0.95)]
    verdict = verdict_for(BBOX, rows)
    assert verdict.status == "UNAVAILABLE" and BOX in (verdict.reason or "")


def test_lower_is_better_metric_passes_below_its_target() -> None:
    lpips = BY_KEY["lpips"]
    assert verdict_for(lpips, [row("e_q2_5", "vision.post_merge", lpips.probe, "lpips", 0.25)]).status == "PASS"
    ceiling = row("e_q2_5", "pixels.merged", lpips.probe, "lpips", 0.1, control="pixels", ci=(0.08, 0.12))
    assert verdict_for(lpips, [row("e_q2_5", "vision.post_merge", lpips.probe, "lpips", 0.45),
                               ceiling]).status == "FAIL"
    unavailable = [row("e_q2_5", "vision.post_merge", lpips.probe, "lpips", None, reason="weights offline")]
    verdict = verdict_for(lpips, unavailable)
    assert verdict.status == "UNAVAILABLE" and verdict.reason == "weights offline"


def test_ci_crossing_the_target_is_flagged() -> None:
    crossing = verdict_for(BBOX, [_post(0.72, ci=(0.66, 0.78))])
    assert crossing.status == "PASS" and crossing.display == "PASS (CI crosses target)"
    assert verdict_for(BBOX, [_post(0.85, ci=(0.8, 0.9))]).display == "PASS"


def _merge(pre: float, post: float, *, pre_probe: str = BOX, post_probe: str = BOX,
           width: float = 0.03, drop_ci: tuple[float, float] | None = None,
           excess_ci: tuple[float, float] | None = None) -> list[MetricRow]:
    rows = [row("e_q2_1", "vision.pre_merge", pre_probe, "iou", pre, ci=(pre - width, pre + width)),
            row("e_q2_2", "vision.post_merge", post_probe, "iou", post, ci=(post - width, post + width))]
    if drop_ci is not None:
        rows.append(row("e_q2_2", "vision.post_merge", post_probe, "iou_drop", pre - post, ci=drop_ci))
    if excess_ci is not None:
        rows.append(row("e_q2_2", "vision.post_merge", post_probe, "iou_excess_drop", sum(excess_ci) / 2, ci=excess_ci))
    return rows


def test_decision_matrix_colours_from_one_probe() -> None:
    assert decide(_merge(0.9, 0.8) + CEILINGS, DECISION).colour == "GREEN"
    assert decide(_merge(0.9, 0.5, drop_ci=(0.3, 0.5)) + CEILINGS, DECISION).colour == "YELLOW"
    assert decide(_merge(0.4, 0.3) + CEILINGS, DECISION).colour == "RED"


def test_pre_and_post_from_different_probes_never_form_a_decision() -> None:
    mixed = _merge(0.9, 0.5, post_probe="attention") + CEILINGS
    decision = decide(mixed, DECISION)
    assert decision.colour == "UNAVAILABLE"
    assert recommend(decision, False, "stageprobe").recommendation != "pivot"


def test_a_deciding_probe_without_pixel_ceiling_investigates_never_pivots() -> None:
    for rows in (_merge(0.4, 0.3), _merge(0.9, 0.8), _merge(0.9, 0.5, drop_ci=(0.3, 0.5))):
        decision = decide(rows, DECISION)
        advice = recommend(decision, False, "stageprobe")
        assert decision.ceiling_problem is not None and "no pixel ceiling" in decision.ceiling_problem
        assert advice.recommendation == "investigate" and SEED_PIVOT_WORDING not in advice.headline


def test_a_ceiling_that_misses_the_target_investigates() -> None:
    weak = [row("e_q2_1", "pixels.patch", BOX, "iou", 0.95, control="pixels", ci=(0.93, 0.97)),
            row("e_q2_2", "pixels.merged", BOX, "iou", 0.65, control="pixels", ci=(0.62, 0.68))]
    decision = decide(_merge(0.4, 0.3) + weak, DECISION)
    assert decision.colour == "RED" and "reaches only 0.650" in (decision.ceiling_problem or "")
    assert recommend(decision, False, "stageprobe").recommendation == "investigate"


def test_pivot_only_when_the_ceiling_clears_and_the_ci_is_below_the_target() -> None:
    pivot = recommend(decide(_merge(0.4, 0.3) + CEILINGS, DECISION), False, "stageprobe")
    assert pivot.recommendation == "pivot" and pivot.headline == SEED_PIVOT_WORDING
    unsure = recommend(decide(_merge(0.68, 0.3, width=0.05) + CEILINGS, DECISION), False, "stageprobe")
    assert unsure.recommendation == "investigate"


def test_yellow_is_settled_by_the_excess_drop_over_the_pixel_pair() -> None:
    clear = decide(_merge(0.9, 0.5, drop_ci=(0.3, 0.5), excess_ci=(0.2, 0.4)) + CEILINGS, DECISION)
    assert clear.conclusive and "excludes 0" in clear.reason
    unclear = decide(_merge(0.9, 0.5, drop_ci=(0.3, 0.5), excess_ci=(-0.05, 0.3)) + CEILINGS, DECISION)
    assert not unclear.conclusive and "does not exclude 0" in unclear.reason
    without = decide(_merge(0.9, 0.5, drop_ci=(0.3, 0.5)) + CEILINGS, DECISION)
    assert not without.conclusive and "no excess drop" in without.reason
    assert recommend(unclear, False, "stageprobe").recommendation == "investigate"


def test_pooled_probe_decides_only_when_the_deciding_probe_was_not_run() -> None:
    rows = _merge(0.9, 0.8) + _merge(0.1, 0.1, pre_probe="pooled-linear", post_probe="pooled-linear") + CEILINGS
    assert not decide(rows, DECISION).pooled_only
    pooled = decide(_merge(0.1, 0.1, pre_probe="pooled-linear", post_probe="pooled-linear"), DECISION)
    assert pooled.pooled_only and recommend(pooled, False, "seed").recommendation == "investigate"


def test_a_model_without_merger_is_decided_between_its_first_and_last_stage() -> None:
    vit = [row("e_q2_1", "vision.embed", BOX, "iou", 0.9, ci=(0.88, 0.92)),
           row("e_q2_1", "vision.block.5", BOX, "iou", 0.85),
           row("e_q2_1", "vision.final", BOX, "iou", 0.8, ci=(0.78, 0.82)),
           row("e_q2_1", "pixels.patch", BOX, "iou", 0.95, control="pixels")]
    decision = decide(vit, DECISION)
    assert decision.colour == "GREEN" and decision.pre is not None and decision.post is not None
    assert (decision.pre.stage, decision.post.stage) == ("vision.embed", "vision.final")
    assert recommend(decision, False, "stageprobe").recommendation == "proceed"


def test_random_weights_are_stated_in_the_recommendation() -> None:
    assert "weights are random" in recommend(decide(_merge(0.9, 0.8) + CEILINGS, DECISION), True, "stageprobe").notes
