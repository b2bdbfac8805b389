"""validate_run: passes a good run, names the problem in a damaged one."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from conftest import make_run, synthetic_context, synthetic_rows

from stageprobe.report import render_report, validate_run
from stageprobe.report.results import write_metrics_csv


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _edit(run: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = run / "results.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_good_run_is_valid(good_run: Path) -> None:
    assert validate_run(good_run) == []


def test_damaged_yaml_gives_a_message_not_a_traceback(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    (run / "results.yaml").write_text("experiment_id: q2\nresults: {experiments: [\n")
    problems = validate_run(run)
    assert len(problems) == 1 and "results.yaml is not valid YAML at line" in problems[0]


def test_schema_violation_names_the_key(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    _edit(run, lambda d: d["results"]["experiments"]["e_q2_1"].update(status="done"))
    problems = validate_run(run)
    assert any("`results.experiments.e_q2_1.status`" in p and "'done'" in p for p in problems), problems
    _edit(run, lambda d: d.pop("recommendation"))
    assert any("`recommendation`" in p and "required" in p.lower() for p in validate_run(run))


def test_missing_artifact_is_reported(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    (run / "artifacts" / "premerge_boxes.png").unlink()
    assert validate_run(run) == [
        "artifact `artifacts/premerge_boxes.png` is listed in results.yaml but does not exist"
    ]


def test_verdict_contradicting_its_metric_is_reported(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    _edit(run, lambda d: d["verdicts"]["bbox_iou"].update(status="FAIL", display="FAIL"))
    problems = validate_run(run)
    assert any(
        "verdicts.bbox_iou says FAIL but its value" in p and "meets the target > 0.7" in p for p in problems
    ), problems


def test_stale_results_against_metrics_csv_are_reported(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    # metrics.csv now says the merger loses location (YELLOW); results.yaml still says GREEN/proceed.
    write_metrics_csv(synthetic_rows(pre=0.853, post=0.4), run / "metrics.csv")
    problems = validate_run(run)
    assert any("decision_matrix.colour is GREEN but metrics.csv gives YELLOW" in p for p in problems), (
        problems
    )
    assert any("recommendation is 'proceed'" in p and "'investigate'" in p for p in problems), problems


def test_recommendation_inconsistent_with_decision_matrix(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)
    _edit(run, lambda d: d.update(recommendation="pivot"))
    assert any("recommendation is 'pivot'" in p for p in validate_run(run))


def test_render_report_rewrites_findings_and_html(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", context=synthetic_context())
    (run / "FINDINGS.md").unlink()
    (run / "report.html").write_text("stale")
    paths = render_report(run)
    assert paths.findings.read_text().startswith("# Q2: Information Preservation - Findings")
    assert "<!DOCTYPE html>" in paths.html.read_text()
    assert validate_run(run) == []


def test_a_seed_block_with_the_test_maximum_or_a_test_chosen_stage_is_reported(good_run: Path, tmp_path: Path) -> None:
    run = _copy(good_run, tmp_path)

    def seed_style(data: dict) -> None:  # type: ignore[type-arg]
        entry = data["results"]["experiments"]["e_q2_1"]
        entry["metrics"]["iou"] = 0.999
        entry["best_stages"]["iou"] = "vision.patch_embed"

    _edit(run, seed_style)
    problems = validate_run(run)
    assert any("e_q2_1.metrics.iou is 0.999 but metrics.csv gives" in p and "(declared stage)" in p
               for p in problems), problems
    assert any("e_q2_1.best_stages.iou is vision.patch_embed but the stage whose validation score" in p
               for p in problems), problems
