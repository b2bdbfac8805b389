"""Issue 27 in the report: trained − twin per information type in the answer, results.yaml and compare."""

from __future__ import annotations

from pathlib import Path

from conftest import make_run, row, synthetic_context, synthetic_rows

from stageprobe.report import render_findings
from stageprobe.report.compare import training_table
from stageprobe.report.results import build_results
from stageprobe.report.training_effect import NEEDS_PRETRAINED
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX


def _with_effects(post_effect: tuple[float, float, float]) -> list:
    rows = synthetic_rows(pre=0.853, post=0.6)
    for stage, (value, low, high) in (("vision.block.3", (0.0, -0.02, 0.02)), ("vision.pre_merge", (0.01, -0.01, 0.03)),
                                      ("vision.post_merge", post_effect)):
        experiment = "e_q2_2" if stage == "vision.post_merge" else "e_q2_1"
        rows.append(row(experiment, stage, BOX, "iou", value, ci=(low, high), control="training-effect"))
    return rows


def test_a_random_weight_model_has_no_twin_and_says_the_comparison_needs_pretrained_weights() -> None:
    rows = synthetic_rows()
    results = build_results(rows, synthetic_context(weights_random=True))
    assert results["training_effect"] == {"per_information": {}, "not_measured": NEEDS_PRETRAINED}
    assert NEEDS_PRETRAINED in render_findings(results, rows)


def test_training_that_removes_location_is_said_with_its_stage_and_cause() -> None:
    rows = _with_effects((-0.2, -0.25, -0.15))
    results = build_results(rows, synthetic_context(weights_random=False))
    location = results["training_effect"]["per_information"]["location"]
    assert location["cause"] == "lost by training" and location["first_stage_differing"] == "vision.post_merge"
    assert location["at_verdict_stage"]["stage"] == "vision.post_merge"
    assert location["at_verdict_stage"]["ci"] == [-0.25, -0.15]
    assert location["at_verdict_stage"]["detectable_effect_80"] > 0
    text = render_findings(results, rows)
    assert "training removes location here: -0.200 [-0.250, -0.150] at `vision.post_merge`" in text
    assert "lost by training" in results["recommendation_notes"]


def test_a_difference_covering_0_claims_no_cause() -> None:
    rows = _with_effects((0.01, -0.03, 0.05))
    results = build_results(rows, synthetic_context(weights_random=False))
    location = results["training_effect"]["per_information"]["location"]
    assert location["cause"] is None and location["first_stage_differing"] is None
    assert "no cause is claimed" in render_findings(results, rows)


def test_compare_shows_the_differences_across_runs(tmp_path: Path) -> None:
    first = make_run(tmp_path / "a", _with_effects((-0.2, -0.25, -0.15)), synthetic_context(weights_random=False))
    second = make_run(tmp_path / "b", synthetic_rows(), synthetic_context(weights_random=True))
    table = training_table([first, second])
    assert table is not None and [c.header for c in table.columns] == ["information", "a", "b"]
    cells = [list(c.cells) for c in table.columns]
    assert "-0.200 [-0.250, -0.150]" in cells[1][0] and "lost by training" in cells[1][0]
    assert "no twin" in cells[2][0]
