"""Known answers of issue 21 item 8: "no stage keeps it" for a chance-level curve; the headline says
where a loss is located."""

from __future__ import annotations

from conftest import LANGUAGE, row, synthetic_rows

from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.report.answer import stage_answers, verdict_line, which_stage_table
from stageprobe.suites.q2 import MOTION_PROBE as MOTION

STAGES = ["vision.post_merge", *LANGUAGE]


def _motion(values: list[float], baseline: float = 0.125) -> list:
    """Direction accuracy per stage with chance and control-task rows (8 directions: chance 0.125)."""
    rows = [r for r in synthetic_rows() if r.experiment != "e_q2_6"]
    for stage, value in zip(STAGES, values, strict=True):
        rows += [row("e_q2_6", stage, MOTION, "direction_acc", value, ci=(value - 0.04, value + 0.04)),
                 row("e_q2_6", stage, MOTION, "direction_acc", value, control="validation"),
                 row("e_q2_6", stage, MOTION, "direction_acc", baseline, control="chance",
                     ci=(baseline - 0.04, baseline + 0.04)),
                 row("e_q2_6", stage, MOTION, "direction_acc", baseline + 0.01, control="control-task",
                     ci=(baseline - 0.03, baseline + 0.05))]
    return rows


def _motion_answer(rows: list) -> tuple[bool, str]:
    analysis = analyse(rows, RunMeta("m", False, suite="q2"))
    answer = next(a for a in stage_answers(rows, analysis) if a.information.label == "Motion")
    table = which_stage_table(rows, analysis)
    cell = next(r for r in table.rows if r[0].startswith("**Motion**"))[2]
    return answer.nothing_kept, cell


def test_a_chance_level_curve_is_answered_no_stage_keeps_it() -> None:
    nothing, cell = _motion_answer(_motion([0.13, 0.12, 0.143, 0.11, 0.12]))
    assert nothing and "no stage keeps it" in cell


def test_a_stage_above_chance_and_control_is_named() -> None:
    nothing, cell = _motion_answer(_motion([0.13, 0.12, 0.6, 0.11, 0.12]))
    assert not nothing and cell == "`language.layer.1`"


def test_without_baseline_rows_nothing_is_claimed_either_way() -> None:
    rows = [r for r in _motion([0.13, 0.12, 0.143, 0.11, 0.12]) if r.control not in ("chance", "control-task")]
    nothing, cell = _motion_answer(rows)
    assert not nothing and cell == "`language.layer.1`"


def test_the_headline_locates_a_loss_in_the_merger_by_its_excess_drop() -> None:
    rows = synthetic_rows(pre=0.853, post=0.6)
    rows.append(row("e_q2_2", "vision.post_merge", "dense-context", "iou_excess_drop", 0.2, ci=(0.15, 0.25)))
    line = verdict_line(analyse(rows, RunMeta("m", False, suite="q2")))
    assert "location lost between vision.pre_merge and vision.post_merge: an excess drop of 0.200 " \
           "[0.150, 0.250] beyond the grid's" in line
    covering = [r for r in rows if r.metric != "iou_excess_drop"]
    covering.append(row("e_q2_2", "vision.post_merge", "dense-context", "iou_excess_drop", 0.01, ci=(-0.04, 0.06)))
    assert "location lost" not in verdict_line(analyse(covering, RunMeta("m", False, suite="q2")))
