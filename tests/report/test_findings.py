"""FINDINGS.md: the seed's shape, warnings, and every printed measurement traceable to metrics.csv."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import synthetic_context, synthetic_rows

from stageprobe.report import build_results, read_metrics_csv, render_findings
from stageprobe.report.fmt import fmt, fmt_target
from stageprobe.report.verdicts import row_at
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import TARGETS
from stageprobe.suites.q2.advice import SEED_PIVOT_WORDING

# A number not glued to a word, dotted name or label ("Qwen2.5", "layer.3", "iou_gt_0.5", "mAP@0.5").
NUMBER = re.compile(r"(?<![\w.@\-])-?\d+\.\d+(?![\w.])")


#: minimum detectable drops ("≥ 0.057") are derived from CI widths; test_answer.py checks them
DETECTABLE = re.compile(r"≥ -?\d+\.\d+")


def _printed_numbers(text: str) -> list[str]:
    return NUMBER.findall(DETECTABLE.sub("", text))


def test_every_number_in_findings_is_in_metrics_csv(good_run: Path) -> None:
    text = (good_run / "FINDINGS.md").read_text()
    rows = read_metrics_csv(good_run / "metrics.csv")
    measured = {fmt(x) for r in rows for x in (r.value, r.ci_low, r.ci_high) if x is not None}
    thresholds = {fmt_target(t.threshold) for t in TARGETS}
    numbers = _printed_numbers(text)
    assert len(numbers) > 100  # the check must actually see the tables
    stray = [n for n in numbers if n not in measured and n not in thresholds]
    assert not stray, f"numbers in FINDINGS.md that are not in metrics.csv: {stray[:10]}"
    # Measurements always carry three decimals; a threshold never does, so they cannot be confused.
    assert all(len(n.split(".")[1]) == 3 for n in numbers if n not in thresholds)
    assert not (thresholds & {n for n in numbers if len(n.split(".")[1]) == 3})
    # And the parser is honest: an invented number is caught.
    assert "0.123456" not in measured and _printed_numbers("IoU 0.123456 here") == ["0.123456"]


def test_headline_table_reads_the_declared_stage_and_names_the_best_on_val(good_run: Path) -> None:
    text = (good_run / "FINDINGS.md").read_text()
    rows = read_metrics_csv(good_run / "metrics.csv")
    assert ("| Metric | What it measures | Target | Achieved at the verdict stage | Verdict | "
            "Best stage on val (its test value) |") in text
    post = next(r for r in rows if r.metric == "iou" and r.control == "none" and r.probe == BOX
                and r.stage == "vision.post_merge" and r.experiment == "e_q2_2")
    best_val = max((r for r in rows if r.metric == "iou" and r.control == "validation"), key=lambda r: r.value or 0.0)
    best_test = row_at(rows, "iou", BOX, best_val.stage, ("e_q2_2", "e_q2_1"))
    assert best_test is not None
    line = next(line for line in text.splitlines() if line.startswith("| Bbox IoU |"))
    achieved, verdict, best_cell = line.split(" | ")[3:6]
    assert fmt(post.value) in achieved and "vision.post_merge" in achieved and "**PASS**" in verdict
    assert best_val.stage in best_cell and fmt(best_test.value) in best_cell
    assert "| LPIPS |" in text and "**UNAVAILABLE**" in text and "not available offline" in text
    for heading in (
        "## The Question",
        "## The Answer",
        "## Key Results",
        "## Sub-experiment Summaries",
        "## Retention by stage",
        "## Recommendations",
        "### Decision matrix: GREEN",
    ):
        assert heading in text
    for i in range(1, 7):
        assert f"### E-Q2.{i}:" in text


def test_random_weights_warning_only_when_random() -> None:
    rows = synthetic_rows()
    random_text = render_findings(build_results(rows, synthetic_context(weights_random=True)), rows)
    trained_text = render_findings(build_results(rows, synthetic_context(weights_random=False)), rows)
    assert "**Random weights.**" in random_text.split("## The Question")[0]
    assert "not a trained model" in random_text
    assert "Random weights" not in trained_text and "trained weights" in trained_text


def test_seed_protocol_warning_and_no_pivot_wording_for_pooled_numbers() -> None:
    rows = [
        r for r in synthetic_rows(pre=0.2, post=0.15) if r.probe != BOX and r.probe != "attention"
    ]
    results = build_results(rows, synthetic_context(protocol="seed"))
    text = render_findings(results, rows)
    assert "Seed protocol (pooled probes)." in text and "defect 1" in text
    assert SEED_PIVOT_WORDING not in text
    assert results["recommendation"] == "investigate"


def test_pivot_wording_when_red_is_evidence() -> None:
    rows = [
        r
        for r in synthetic_rows(pre=0.3, post=0.25)
        if not (r.control == "pixels" and r.value and r.value < 0.7)
    ]
    results = build_results(rows, synthetic_context(weights_random=False))
    text = render_findings(results, rows)
    assert results["decision_matrix"]["colour"] == "RED"
    assert results["recommendation"] == "pivot"
    assert f"**Verdict: {SEED_PIVOT_WORDING}.**" in text
