"""The answer first: one verdict line, "which stage to read for what" at the top, "unavailable" once
per metric, detectable drops from CI widths, calibration in results.yaml and the report."""

from __future__ import annotations

import math
import re
from pathlib import Path

from conftest import CALIBRATION, LPIPS_REASON, row, synthetic_context, synthetic_rows

from stageprobe.report import build_results, render_findings
from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.report.answer import paired_detectable, unpaired_detectable, verdict_line
from stageprobe.report.findings import experiment_table
from stageprobe.report.fmt import fmt_row
from stageprobe.report.schema import MetricRow, ResultsFile, RunContext
from stageprobe.report.verdicts import row_at
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import SUITE


def _findings(rows: list[MetricRow], context: RunContext | None = None) -> tuple[dict, str]:
    results = build_results(rows, context or synthetic_context())
    return results, render_findings(results, rows)


def test_one_verdict_line_reconciles_colour_targets_and_confidence() -> None:
    rows = synthetic_rows(pre=0.853, post=0.6)  # post-merge below the 0.7 target: YELLOW
    results, text = _findings(rows)
    statuses = [v["status"] for v in results["verdicts"].values()]
    counts = {s: statuses.count(s) for s in ("PASS", "FAIL", "INCONCLUSIVE", "UNAVAILABLE")}
    line = next(line for line in text.splitlines() if line.startswith("**Verdict:"))
    assert line.startswith(f"**Verdict: {results['recommendation_headline']}.**")
    tally = (f"{counts['PASS']} pass, {counts['FAIL']} fail, {counts['INCONCLUSIVE']} inconclusive, "
             f"{counts['UNAVAILABLE']} unavailable")
    assert "Decision matrix YELLOW" in line and tally in line
    assert "confidence low: random weights" in line
    # said once: no second tally, confidence or recommendation line elsewhere in the top part
    assert text.count("**Verdict:") == 1
    assert "criteria passed" not in text and "**Confidence:**" not in text and "**Recommendation:**" not in text


def test_verdict_line_with_trained_weights_gives_no_random_weights_reason() -> None:
    rows = synthetic_rows()
    analysis = analyse(rows, RunMeta("qwen2.5-vl-tiny", weights_random=False, suite="q2"))
    line = verdict_line(analysis)
    assert "random weights" not in line and f"confidence {analysis.confidence}" in line
    assert analysis.advice.headline in line


def test_unavailable_is_said_once_per_metric() -> None:
    rows = synthetic_rows()
    table = experiment_table(rows, "e_q2_5", SUITE)
    cells = [cell for body_row in table.rows for cell in body_row]
    assert not any("unavailable" in cell for cell in cells)
    assert not any(body_row[2] in ("lpips", "irs") for body_row in table.rows)
    # four model stages and the two reference copies miss LPIPS for the same reason: one note
    assert table.caption.count(LPIPS_REASON) == 1
    assert f"lpips unavailable at 6 stages: {LPIPS_REASON}" in table.caption
    assert "irs unavailable at 4 stages: LPIPS unavailable" in table.caption


def test_reference_rows_sit_beside_the_stages_of_their_metric() -> None:
    table = experiment_table(synthetic_rows(), "e_q2_5", SUITE)
    edge_rows = [r for r in table.rows if r[2] == "edge_f1"]
    assert [r[0] for r in edge_rows[-2:]] == ["`reference.blur_4px` (reference)", "`reference.identity` (reference)"]
    assert float(edge_rows[-1][3].split()[0]) > 0.95  # the identity copy keeps (nearly) every edge
    assert "what a value means" in table.caption


def test_detectable_drops_are_80_percent_power_mdes_from_ci_widths() -> None:
    wide = row("e_q2_1", "vision.block.0", BOX, "iou", 0.5, ci=(0.4, 0.6))
    narrow = row("e_q2_1", "vision.block.1", BOX, "iou", 0.53, ci=(0.5, 0.56))
    # a 95 % CI of half-width h has SE h / 1.96; the MDE at α = 0.05 and 80 % power is 2.80 SE
    se_wide, se_narrow = 0.1 / 1.959964, 0.03 / 1.959964
    assert math.isclose(unpaired_detectable(wide), 2.8016 * math.sqrt(2) * se_wide, rel_tol=1e-3)  # type: ignore[arg-type]
    assert math.isclose(unpaired_detectable(wide, narrow), 2.8016 * math.hypot(se_wide, se_narrow),  # type: ignore[arg-type]
                        rel_tol=1e-3)
    assert unpaired_detectable(row("e_q2_1", "vision.block.0", BOX, "iou", 0.5)) is None
    drop = row("e_q2_2", "vision.post_merge", BOX, "iou_drop", 0.08, ci=(0.03, 0.13), n=150)
    assert paired_detectable(drop) == "drops ≥ 0.071 detectable at n=150 with 80 % power"


def test_which_stage_table_comes_first_with_the_decay_curves_under_it() -> None:
    rows = synthetic_rows()
    results, text = _findings(rows)
    results["artifacts"] = ["artifacts/decay_curves.png"]
    text = render_findings(results, rows)
    table_at, figure_at, question_at = (text.index(s) for s in (
        "## Which stage to read for what", "artifacts/decay_curves.png", "## The Question"))
    assert table_at < figure_at < question_at
    spatial = next(line for line in text.splitlines() if line.startswith("| **Location**"))
    best_val = max((r for r in rows if r.control == "validation" and r.metric == "iou"), key=lambda r: r.value or 0)
    # the verdict's experiments in order: post-merge analysis first (it also reads pre-merge)
    test_value = row_at(rows, "iou", BOX, best_val.stage, ("e_q2_2", "e_q2_1", "e_q2_3"))
    ceiling = next(r for r in rows if r.variant == "pixels" and r.stage == "pixels.patch" and r.probe == BOX)
    assert f"`{best_val.stage}` | {fmt_row(test_value)} | {fmt_row(ceiling)} at `pixels.patch`" in spatial
    # the merger drop is said with the smallest drop this run can detect beside it
    assert re.search(r"Drop across the 2×2 merger: .* \(drops ≥ \d\.\d{3} detectable at n=200", text)


def test_pixel_baseline_never_speaks_of_the_merger() -> None:
    rows = [row("e_q2_1", "pixels.patch", BOX, "iou", 0.93, ci=(0.9, 0.95), model="pixels"),
            row("e_q2_2", "pixels.patch", BOX, "iou", 0.93, ci=(0.9, 0.95), model="pixels"),
            row("e_q2_2", "pixels.merged", BOX, "iou", 0.6, ci=(0.55, 0.65), model="pixels"),
            row("e_q2_2", "pixels.merged", BOX, "iou_drop", 0.33, ci=(0.28, 0.38), model="pixels")]
    context = RunContext(model="pixels", weights_random=False, suite="q2", stages=["pixels.patch", "pixels.merged"])
    results, text = _findings(rows, context)
    assert results["decision_matrix"]["colour"] == "YELLOW"
    assert "the merger" not in text and "2×2 merger" not in text
    assert "coarsening of the pixel grid" in text


def test_a_non_qwen_connector_is_named_as_the_model_declares_it() -> None:
    """Gemma 3's declared pair (`vision.pre_pool` → `vision.post_pool`) and its measured 16× token
    compression make the question, the answer and the findings speak of the 4×4 average pool."""
    renamed = {"vision.pre_merge": "vision.pre_pool", "vision.post_merge": "vision.post_pool"}
    rows = [r.model_copy(update={"stage": renamed.get(r.stage, r.stage),
                                 **({"value": 16.0} if r.metric == "compression_ratio" else {})})
            for r in synthetic_rows(pre=0.853, post=0.6)]
    context = synthetic_context()
    context.stages = [renamed.get(s, s) for s in context.stages or []]
    results, text = _findings(rows, context)
    assert results["decision_matrix"]["post_stage"] == "vision.post_pool"
    assert "the connector is the 4×4 average pool (`vision.pre_pool` → `vision.post_pool`)" in text
    assert "present before the 4×4 average pool but lost across it" in text
    assert "Bbox IoU after the 4×4 average pool" in results["results"]["experiments"]["e_q2_2"]["finding"]
    assert not re.search(r"2×2 merger|(before|after|across) the merge\b", text)


def test_a_pool_whose_grid_caps_the_target_is_read_against_its_own_ceiling() -> None:
    """Gemma 3 at 448 px: 8×8 pooled cells where raw pixels reach only 0.39, IoU rising across the pool. The
    answer must not blame the pool: its excess drop is below 0 and it keeps its grid's whole ceiling."""
    pool = {"vision.pre_merge": "vision.pre_pool", "vision.post_merge": "vision.post_pool"}
    values = {("vision.pre_pool", "iou"): (0.315, (0.24, 0.40)), ("vision.post_pool", "iou"): (0.396, (0.32, 0.47)),
              ("pixels.merged", "iou"): (0.393, (0.33, 0.47)), ("vision.post_pool", "iou_drop"): (-0.08, (-0.2, 0.05))}
    rows = []
    for r in synthetic_rows():
        stage = pool.get(r.stage, r.stage)
        value, ci = values.get((stage, r.metric), (r.value, (r.ci_low, r.ci_high)))
        if r.control != "none" and r.variant != "pixels":
            value, ci = r.value, (r.ci_low, r.ci_high)
        rows.append(r.model_copy(update={"stage": stage, "value": 16.0 if r.metric == "compression_ratio" else value,
                                         "ci_low": ci[0], "ci_high": ci[1]}))
    rows.append(row("e_q2_2", "vision.post_pool", BOX, "iou_excess_drop", -0.483, ci=(-0.61, -0.35)))
    context = synthetic_context()
    context.stages = [pool.get(s, s) for s in context.stages or []]
    results, text = _findings(rows, context)
    assert results["decision_matrix"]["colour"] == "RED"
    answer = text[text.index("## The Answer"):text.index("## Key Results")]
    assert "the 4×4 average pool loses less location than raw pixels lose on its coarser grid" in answer
    assert "vision.post_pool keeps 0.396 [0.320, 0.470], 101% of that ceiling" in answer
    assert "lost across it" not in answer


def test_a_projector_is_compared_with_pixels_on_the_same_grid() -> None:
    """LLaVA-OneVision's connector keeps the grid (one token in, one out): no "coarser grid" is spoken of."""
    projector = {"vision.pre_merge": "vision.pre_projector", "vision.post_merge": "vision.post_projector"}
    rows = [r.model_copy(update={"stage": projector.get(r.stage, r.stage),
                                 **({"value": 1.0} if r.metric == "compression_ratio" else {})})
            for r in synthetic_rows()]
    rows.append(row("e_q2_2", "vision.post_projector", BOX, "iou_excess_drop", 0.07, ci=(0.03, 0.11)))
    context = synthetic_context()
    context.stages = [projector.get(s, s) for s in context.stages or []]
    _, text = _findings(rows, context)
    answer = text[text.index("## The Answer"):text.index("## Key Results")]
    assert "the projector loses location beyond what the same grid costs raw pixels" in answer
    assert "coarser" not in answer


def test_a_drop_the_pixel_grid_shares_is_not_called_a_loss_of_the_connector() -> None:
    """YELLOW by the target (0.85 before, 0.65 after) but an excess drop over the pixel pair whose CI holds 0:
    the answer must not say location is lost across the merger; with the excess clear of 0 it does."""
    rows = synthetic_rows(pre=0.853, post=0.65)
    unclear = [*rows, row("e_q2_2", "vision.post_merge", BOX, "iou_excess_drop", -0.04, ci=(-0.13, 0.06))]
    results, text = _findings(unclear)
    assert results["decision_matrix"]["colour"] == "YELLOW"
    assert "lost across it" not in text and "not shown to be a loss of the 2×2 merger itself" in text
    clear = [*rows, row("e_q2_2", "vision.post_merge", BOX, "iou_excess_drop", 0.12, ci=(0.07, 0.17))]
    assert "present before the 2×2 merger but lost across it" in _findings(clear)[1]


def test_calibration_goes_into_results_and_the_report() -> None:
    rows = synthetic_rows()
    context = synthetic_context()
    context.calibration = CALIBRATION
    results, text = _findings(rows, context)
    ResultsFile.model_validate(results)
    assert results["calibration"]["verdict"] == "FAIL"
    section = text[text.index("## Calibration"):]
    assert "**Calibration: FAIL.**" in section and "`erase-position@vision.block.2`" in section
    assert "0.012 [-0.004, 0.028]" in section and f"{BOX}/iou drops ≥ 0.037" in section
    # the calibrated detectable drop of exactly this row (probe, metric, stage, data) replaces the CI-based one
    spatial = next(line for line in text.splitlines() if line.startswith("| **Location**"))
    assert spatial.endswith("| ≥ 0.031 (calibration) |")


def test_a_calibrated_drop_of_another_probe_or_data_is_not_put_beside_the_row() -> None:
    rows = synthetic_rows()
    for key, family in (("dense-linear/iou", "spatial"), (f"{BOX}/iou", "photos")):
        context = synthetic_context()
        entry = dict(CALIBRATION["detectable_drop"]["location"][f"{BOX}/iou"], family=family)
        context.calibration = {**CALIBRATION, "detectable_drop": {"location": {key: entry}}}
        _, text = _findings(rows, context)
        spatial = next(line for line in text.splitlines() if line.startswith("| **Location**"))
        assert spatial.endswith("(its CI) |"), (key, family)


def test_a_run_without_calibration_has_no_calibration_key(good_run: Path) -> None:
    text = (good_run / "results.yaml").read_text()
    assert not re.search(r"^calibration:", text, flags=re.M)
    assert "## Calibration" not in (good_run / "FINDINGS.md").read_text()
