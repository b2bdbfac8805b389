"""metrics.csv and results.yaml: round trips, seed keys, clear errors on damage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import BOX, row, synthetic_context, synthetic_rows

from stageprobe.errors import UserInputError
from stageprobe.report import (
    MetricRow,
    ResultsFile,
    build_results,
    load_results_yaml,
    read_metrics_csv,
    write_metrics_csv,
    write_results_yaml,
)

SEED_KEYS = (
    "experiment_id",
    "claim",
    "status",
    "executed_by",
    "started_at",
    "completed_at",
    "success_criteria",
    "results",
    "assessment",
    "recommendation",
    "recommendation_notes",
    "blockers",
    "issues",
)


def test_metrics_csv_round_trip_is_exact(tmp_path: Path) -> None:
    rows = synthetic_rows()
    rows.append(
        MetricRow(
            experiment="e_q2_5",
            stage="vision.block.0",
            probe="decoder",
            metric="lpips",
            value=None,
            unavailable_reason='weights "alexnet", offline',
            note="a, b",
        )
    )
    path = write_metrics_csv(rows, tmp_path / "metrics.csv")
    back = read_metrics_csv(path)
    assert sorted(back, key=repr) == sorted(rows, key=repr)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:11] == [
        "experiment",
        "stage",
        "probe",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "control",
        "model",
        "unavailable_reason",
    ]


def test_non_finite_value_becomes_unavailable() -> None:
    r = MetricRow(
        experiment="e_q2_1", stage="s", probe="p", metric="iou", value=math.nan, ci_low=0.1, ci_high=0.2
    )
    assert r.value is None and r.ci_low is None and "non-finite" in (r.unavailable_reason or "")


def test_damaged_metrics_csv_names_line_and_column(tmp_path: Path) -> None:
    path = write_metrics_csv(synthetic_rows()[:3], tmp_path / "metrics.csv")
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[4], "abc", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=r"line 3: column 'value' is not a number: 'abc'"):
        read_metrics_csv(path)
    path.write_text("stage,probe\nx,y\n")
    with pytest.raises(UserInputError, match="missing column"):
        read_metrics_csv(path)


def test_results_have_seed_keys_and_stageprobe_keys(tmp_path: Path) -> None:
    results = build_results(synthetic_rows(), synthetic_context())
    for key in SEED_KEYS:
        assert key in results, key
    for key in (
        "model",
        "weights_random",
        "stages",
        "controls",
        "stage_metrics",
        "decision_matrix",
        "config",
        "env",
        "verdicts",
    ):
        assert key in results, key
    assert results["experiment_id"] == "q2-information-preservation"
    # the seed's six experiments, plus the suite's own (E-Q2.5 on real photos, E-Q2.6 on camera motion)
    suite_own = {"e_q2_5_photos", "e_q2_6_camera"}
    assert set(results["results"]["experiments"]) == {*(f"e_q2_{i}" for i in range(1, 7)), *suite_own}
    for entry in results["results"]["experiments"].values():
        assert {"status", "finding", "metrics", "artifacts"} <= set(entry)
        assert all(isinstance(v, float) for v in entry["metrics"].values())  # seed schema: numbers only
    assert results["success_criteria"]["bbox_iou_threshold"] == 0.7
    assert results["weights_random"] is True
    assert results["recommendation"] in ("proceed", "pivot", "investigate", "block")
    # one word per concept: how a probe was controlled, and what was measured beside the model
    assert set(results["controls"]) == {"control-task", "selectivity", "token-shuffle", "validation"}
    assert set(results["variants"]) == {"pixels", "random-init", "reference"}
    ResultsFile.model_validate(results)
    path = write_results_yaml(results, tmp_path / "results.yaml")
    assert load_results_yaml(path) == yaml.safe_load(path.read_text())
    assert load_results_yaml(path)["verdicts"] == results["verdicts"]


def test_damaged_results_yaml_is_a_clear_user_error(tmp_path: Path) -> None:
    path = tmp_path / "results.yaml"
    path.write_text("experiment_id: q2\nresults: [unclosed\n")
    with pytest.raises(UserInputError, match=r"not valid YAML at line \d+, column \d+"):
        load_results_yaml(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserInputError, match="must hold a mapping"):
        load_results_yaml(path)
    path.write_text("!!python/object:os.system {}\n")  # safe_load refuses arbitrary objects
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_results_yaml(path)


def test_seed_block_reads_each_experiment_at_its_declared_stage_with_the_deciding_probe() -> None:
    """Known answer on the synthetic run: the seed block is never the test maximum over stages and probes,
    never a pixel stage or the patch embedding, and best_stages is the validation choice."""
    # a secondary probe with the best test value anywhere: a maximum over probes would report it
    rows = [*synthetic_rows(), row("e_q2_1", "vision.block.0", "dense-linear", "iou", 0.99, ci=(0.98, 0.995))]
    experiments = build_results(rows, synthetic_context())["results"]["experiments"]
    post = experiments["e_q2_2"]
    deciding = next(r for r in rows if r.experiment == "e_q2_2" and r.stage == "vision.post_merge"
                    and r.probe == BOX and r.metric == "iou" and r.control == "none" and r.variant == "model")
    assert post["metrics"]["iou"] == deciding.value
    assert post["metric_notes"]["iou"].startswith(f"{BOX} at vision.post_merge (declared stage), test split")
    pre = experiments["e_q2_1"]
    pre_row = next(r for r in rows if r.experiment == "e_q2_1" and r.stage == "vision.pre_merge"
                   and r.probe == BOX and r.metric == "iou" and r.control == "none" and r.variant == "model")
    test_max = max(r.value for r in rows if r.experiment == "e_q2_1" and r.metric == "iou"  # type: ignore[type-var]
                   and r.control == "none" and r.variant == "model")
    assert pre["metrics"]["iou"] == pre_row.value != test_max
    validation = [r for r in rows if r.experiment == "e_q2_1" and r.probe == BOX and r.metric == "iou"
                  and r.control == "validation" and r.stage != "vision.patch_embed"]
    assert pre["best_stages"]["iou"] == max(validation, key=lambda r: r.value or 0).stage
    for entry in experiments.values():
        for note in entry["metric_notes"].values():
            stage = note.split(" at ", 1)[1].split(" ", 1)[0]
            assert stage != "vision.patch_embed" and not stage.startswith("pixels."), note


def test_a_metrics_csv_from_before_the_variant_column_reads_its_variants_out_of_control(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("experiment,stage,probe,metric,value,ci_low,ci_high,n,control,model,unavailable_reason,note\n"
                    "e_q2_1,pixels.patch,dense-context,iou,0.9,,,40,pixels,pixels,,\n"
                    "e_q2_1,vision.block.0,dense-context,iou,0.4,,,40,random-init,tiny (random-init),,\n"
                    "e_q2_5,reference.identity,reference,ssim,1.0,,,40,reference,reference,,\n"
                    "e_q2_1,vision.block.0,dense-context,iou,0.1,,,40,control-task,tiny,,\n")
    rows = read_metrics_csv(path)
    assert [(r.variant, r.control) for r in rows] == [("pixels", "none"), ("random-init", "none"),
                                                      ("reference", "none"), ("model", "control-task")]
    again = read_metrics_csv(write_metrics_csv(rows, tmp_path / "new.csv"))
    assert sorted(again, key=repr) == sorted(rows, key=repr)
    assert (tmp_path / "new.csv").read_text().splitlines()[0].endswith(",note,variant")
