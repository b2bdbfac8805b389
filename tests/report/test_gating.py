"""Known answers of issue 21 item 1: FAIL only where the same probe's pixel ceiling clears the target."""

from __future__ import annotations

from conftest import row

from stageprobe.report.verdicts import decide, verdict_for
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import DECISION, TARGETS
from stageprobe.suites.q2.advice import recommend

BBOX = next(t for t in TARGETS if t.key == "bbox_iou")


def _rows(model: float, ceiling: float, half: float = 0.02) -> list:
    return [row("e_q2_2", "vision.post_merge", BOX, "iou", model, ci=(model - half, model + half)),
            row("e_q2_2", "pixels.merged", BOX, "iou", ceiling, control="pixels",
                ci=(ceiling - half, ceiling + half))]


def test_a_ceiling_below_the_target_makes_the_miss_inconclusive_never_fail() -> None:
    verdict = verdict_for(BBOX, _rows(0.50, 0.57))
    assert verdict.status == "INCONCLUSIVE"
    assert "reaches only 0.570" in (verdict.reason or "") and "pixels.merged" in (verdict.reason or "")
    assert verdict.as_dict()["pixel_ceiling"] == 0.57


def test_a_ceiling_clearing_the_target_makes_the_miss_a_fail() -> None:
    assert verdict_for(BBOX, _rows(0.50, 0.9)).status == "FAIL"


def test_a_ceiling_whose_ci_crosses_the_target_is_not_enough_to_fail() -> None:
    assert verdict_for(BBOX, _rows(0.50, 0.72, half=0.05)).status == "INCONCLUSIVE"
    no_ceiling = [row("e_q2_2", "vision.post_merge", BOX, "iou", 0.5, ci=(0.48, 0.52))]
    assert verdict_for(BBOX, no_ceiling).status == "INCONCLUSIVE"


def test_pass_stays_pass_whatever_the_ceiling() -> None:
    assert verdict_for(BBOX, _rows(0.85, 0.57)).status == "PASS"


def test_every_embedding_stage_never_judges_nor_is_best() -> None:
    for stage in ("vision.embed", "vision.pos_embed", "vision.patch_embed"):
        rows = [row("e_q2_1", stage, BOX, "iou", 0.95), row("e_q2_1", stage, BOX, "iou", 0.95, control="validation"),
                row("e_q2_1", "vision.final", BOX, "iou", 0.6), row("e_q2_1", "vision.final", BOX, "iou", 0.6,
                                                                    control="validation")]
        assert verdict_for(BBOX, rows, override=stage).status == "UNAVAILABLE"
        best = verdict_for(BBOX, rows).best_val
        assert best is not None and best.stage == "vision.final"


def _red(pre: float, post: float, ceiling_half: float, half: float = 0.02) -> list:
    return [row("e_q2_1", "vision.pre_merge", BOX, "iou", pre, ci=(pre - half, pre + half)),
            row("e_q2_2", "vision.post_merge", BOX, "iou", post, ci=(post - half, post + half)),
            row("e_q2_1", "pixels.patch", BOX, "iou", 0.95, control="pixels", ci=(0.93, 0.97)),
            row("e_q2_2", "pixels.merged", BOX, "iou", 0.72, control="pixels",
                ci=(0.72 - ceiling_half, 0.72 + ceiling_half))]


def test_pivot_needs_the_ceilings_ci_above_the_target() -> None:
    crossing = decide(_red(0.4, 0.3, ceiling_half=0.05), DECISION)
    assert crossing.colour == "RED" and crossing.ceiling_problem is not None
    assert recommend(crossing, False, "stageprobe").recommendation == "investigate"
    clear = decide(_red(0.4, 0.3, ceiling_half=0.01), DECISION)
    assert clear.ceiling_problem is None and recommend(clear, False, "stageprobe").recommendation == "pivot"


def test_red_needs_both_pre_and_post_cis_below_the_target() -> None:
    post_crossing = decide(_red(0.5, 0.69, ceiling_half=0.01, half=0.04), DECISION)
    assert post_crossing.colour == "RED" and not post_crossing.conclusive
    assert recommend(post_crossing, False, "stageprobe").recommendation == "investigate"
