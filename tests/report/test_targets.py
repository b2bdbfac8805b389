"""Verdicts, the decision matrix and the recommendation, on known cases."""

from __future__ import annotations

from conftest import row

from stageprobe.report.targets import (
    SEED_PIVOT_WORDING,
    TARGETS_BY_KEY,
    decide,
    recommend,
    verdict_for,
)

BBOX = TARGETS_BY_KEY["bbox_iou"]


def test_iou_085_passes_and_01_fails() -> None:
    assert (
        verdict_for(BBOX, [row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.85)]).status == "PASS"
    )
    assert verdict_for(BBOX, [row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.1)]).status == "FAIL"


def test_equal_to_target_fails_because_the_target_is_strict() -> None:
    assert verdict_for(BBOX, [row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.7)]).status == "FAIL"


def test_verdict_reads_the_best_stage_and_names_it() -> None:
    rows = [
        row("e_q2_1", "vision.block.0", "dense-linear", "iou", 0.5),
        row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.75),
        row("e_q2_3", "language.layer.0", "dense-linear", "iou", 0.6),
        row("e_q2_1", "pixels.patch", "dense-linear", "iou", 0.99, control="pixels"),
    ]
    verdict = verdict_for(BBOX, rows)
    assert verdict.status == "PASS"
    assert verdict.row is not None and verdict.row.stage == "vision.pre_merge"


def test_lpips_is_lower_is_better() -> None:
    lpips = TARGETS_BY_KEY["lpips"]
    rows = [
        row("e_q2_5", "vision.pre_merge", "decoder", "lpips", 0.25),
        row("e_q2_5", "language.layer.0", "decoder", "lpips", 0.45),
    ]
    verdict = verdict_for(lpips, rows)
    assert verdict.status == "PASS" and verdict.row is not None and verdict.row.value == 0.25
    assert verdict_for(lpips, [rows[1]]).status == "FAIL"


def test_unavailable_metric_carries_the_reason() -> None:
    rows = [row("e_q2_5", "vision.pre_merge", "decoder", "lpips", None, reason="weights offline")]
    verdict = verdict_for(TARGETS_BY_KEY["lpips"], rows)
    assert verdict.status == "UNAVAILABLE" and verdict.reason == "weights offline"
    assert verdict_for(TARGETS_BY_KEY["map_50"], rows).reason == "no stage reported this metric"


def test_ci_crossing_the_target_is_flagged() -> None:
    crossing = verdict_for(
        BBOX, [row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.72, ci=(0.66, 0.78))]
    )
    assert crossing.status == "PASS" and crossing.ci_crosses_target
    assert crossing.display == "PASS (CI crosses target)"
    clear = verdict_for(BBOX, [row("e_q2_1", "vision.pre_merge", "dense-linear", "iou", 0.85, ci=(0.8, 0.9))])
    assert clear.display == "PASS"


def _merger(
    pre: float, post: float, *, pre_ci: tuple[float, float] | None = None, probe: str = "dense-linear"
):  # type: ignore[no-untyped-def]
    return [
        row("e_q2_1", "vision.pre_merge", probe, "iou", pre, ci=pre_ci),
        row("e_q2_2", "vision.post_merge", probe, "iou", post),
    ]


def test_decision_matrix_colours() -> None:
    assert decide(_merger(0.9, 0.8)).colour == "GREEN"
    assert decide(_merger(0.9, 0.5)).colour == "YELLOW"
    assert decide(_merger(0.4, 0.3)).colour == "RED"
    assert decide(_merger(0.9, 0.8)[:1]).colour == "UNAVAILABLE"


def test_decision_ignores_the_pooled_probe_when_a_spatial_probe_exists() -> None:
    rows = _merger(0.9, 0.8) + _merger(0.1, 0.1, probe="pooled-linear")
    decision = decide(rows)
    assert decision.colour == "GREEN" and not decision.pooled_only


def test_recommendations_follow_the_colour() -> None:
    assert recommend(decide(_merger(0.9, 0.8)), False, "stageprobe").recommendation == "proceed"
    assert recommend(decide(_merger(0.9, 0.5)), False, "stageprobe").recommendation == "investigate"
    pivot = recommend(decide(_merger(0.4, 0.3)), False, "stageprobe")
    assert pivot.recommendation == "pivot" and pivot.headline == SEED_PIVOT_WORDING
    blocked = recommend(decide(_merger(0.9, 0.8)[:1]), False, "stageprobe")
    assert blocked.recommendation == "block" and blocked.blockers


def test_seed_wording_only_when_the_numbers_support_it() -> None:
    # Pooled probes only (the seed protocol): a RED is not evidence about location.
    pooled = recommend(decide(_merger(0.1, 0.1, probe="pooled-linear")), False, "seed")
    assert pooled.recommendation == "investigate" and SEED_PIVOT_WORDING not in pooled.headline
    # The probe cannot reach the target even on pixels: the probe is the limit.
    weak = [*_merger(0.4, 0.3), row("e_q2_1", "pixels.patch", "dense-linear", "iou", 0.5, control="pixels")]
    assert recommend(decide(weak), False, "stageprobe").recommendation == "investigate"
    # The CI contains the target: not settled.
    unsure = recommend(decide(_merger(0.68, 0.3, pre_ci=(0.6, 0.75))), False, "stageprobe")
    assert unsure.recommendation == "investigate" and "confidence interval" in unsure.headline


def test_random_weights_are_stated_in_the_recommendation() -> None:
    assert "weights are random" in recommend(decide(_merger(0.9, 0.8)), True, "stageprobe").notes


def test_yellow_says_when_raw_pixels_lose_as_much_at_the_merged_grid() -> None:
    model_only = decide(_merger(0.9, 0.5))
    assert not model_only.grid_limited and "location is lost in the merger" in model_only.reason
    # The same probe on pixels: above target at 14 px, below it at the 28 px merged grid.
    pixels = [row("e_q2_1", "pixels.patch", "dense-linear", "iou", 0.82, control="pixels"),
              row("e_q2_2", "pixels.merged", "dense-linear", "iou", 0.62, control="pixels")]
    decision = decide(_merger(0.81, 0.66) + pixels)
    assert decision.colour == "YELLOW" and decision.grid_limited
    assert "lost in the merger" not in decision.reason and "pixels.merged is 0.620" in decision.reason
    assert decision.as_dict()["post_merge_pixel_ceiling"] == 0.62
    advice = recommend(decision, False, "stageprobe")
    assert advice.recommendation == "investigate" and "even on pixels" in advice.headline
    # Pixels keep the target at the merged grid: then the model's drop is the merger's.
    pixels_keep = row("e_q2_2", "pixels.merged", "dense-linear", "iou", 0.75, control="pixels")
    kept = decide([*_merger(0.81, 0.66), pixels_keep])
    assert not kept.grid_limited and "location is lost in the merger" in kept.reason
