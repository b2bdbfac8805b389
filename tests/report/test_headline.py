"""The headline tells the whole answer: the verdict line names each information type's outcome, and an
unavailable metric's row gives a short reason with the full reason (its fix) in the table's note."""

from __future__ import annotations

from conftest import synthetic_context, synthetic_rows

from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.report.answer import verdict_line
from stageprobe.report.findings import render_findings
from stageprobe.report.results import build_results

LONG_REASON = ("LPIPS AlexNet backbone weights not found at /root/.cache/torch/hub/checkpoints/alexnet.pth; they are "
               "downloaded by torchvision and this machine has no copy (place the file there to enable LPIPS)")


def test_the_verdict_line_names_a_failing_location_target_beside_passing_ones() -> None:
    rows = synthetic_rows(pre=0.853, post=0.6)  # post-merge IoU below the 0.7 target
    analysis = analyse(rows, RunMeta("qwen2.5-vl-tiny", weights_random=True, suite="q2"))
    line = verdict_line(analysis)
    assert analysis.verdicts["bbox_iou"].status == "FAIL"
    assert "Location FAIL (" in line and "Bbox IoU" in line.split("Location FAIL (")[1].split(")")[0]
    assert "Detail " in line and "Motion " in line
    for information in ("Detail", "Motion"):
        part = line.split(f"{information} ")[1]
        assert part.startswith(("PASS", "FAIL", "unavailable")), part


def test_an_unavailable_metric_gives_a_short_reason_and_its_fix_in_a_note() -> None:
    rows = [row.model_copy(update={"unavailable_reason": LONG_REASON}) if row.metric == "lpips" and row.value is None
            else row for row in synthetic_rows()]
    text = render_findings(build_results(rows, synthetic_context()), rows)
    lpips_row = next(line for line in text.splitlines() if line.startswith("| LPIPS |"))
    assert "unavailable: LPIPS AlexNet backbone weights not found |" in lpips_row
    assert "/root/" not in lpips_row
    assert f"LPIPS unavailable: {LONG_REASON}." in text
