"""Probe results → rows is a pure function; RunConfig and the run directory's checks refuse bad
input before anything is written; the runner names no experiment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from _detections import detection_eval
from stageprobe.cli import app
from stageprobe.errors import UserInputError
from stageprobe.metrics._catalog import metric_info
from stageprobe.probes import ProbeResult
from stageprobe.stats import paired_bootstrap_diff
from stageprobe.suites._rows import FitLabel, result_rows, seeded_ci, selectivity_rows, validation_rows
from stageprobe.suites.runner import RunConfig, StudyRun

LABEL = FitLabel("e_x", "vision.post_merge", "dense-linear", "model", "m")
SRC = Path(__file__).resolve().parents[2] / "src" / "stageprobe"


def _result(scores: list[float], seed: int = 0) -> ProbeResult:
    per_item = np.asarray(scores, dtype=float)
    return ProbeResult("dense-linear", "boxes", {"matched_iou": float(np.nanmean(per_item)), "map_50": 0.2},
                       {"matched_iou": per_item}, {}, {}, unavailable={"map_small": "no small objects"}, seed=seed)


def test_rows_use_report_names_count_finite_values_and_skip_what_the_spec_skips() -> None:
    rows = result_rows(LABEL, [_result([0.5, np.nan, 0.7, 0.9])], ("map",), 200, 0)
    assert [r.metric for r in rows] == ["iou"]
    assert rows[0].n == 3 and rows[0].value == pytest.approx(0.7)
    assert rows[0].ci_low <= 0.7 <= rows[0].ci_high  # type: ignore[operator]
    kept = result_rows(LABEL, [_result([0.5, 0.7])], (), 200, 0)
    assert {r.metric: r.unavailable_reason for r in kept}["map_small"] == "no small objects"


def test_probe_seeds_average_and_widen_the_ci() -> None:
    one = result_rows(LABEL, [_result([0.6] * 20)], ("map",), 500, 0)[0]
    several = result_rows(LABEL, [_result([0.6] * 20), _result([0.8] * 20, 1), _result([0.7] * 20, 2)],
                          ("map",), 500, 0)[0]
    assert several.value == pytest.approx(0.7)
    assert (one.ci_low, one.ci_high) == (pytest.approx(0.6), pytest.approx(0.6))  # no image spread at all
    assert several.ci_low == pytest.approx(0.6) and several.ci_high == pytest.approx(0.8)  # the seeds' spread
    assert "3 probe seeds" in several.note
    estimate, low, high = seeded_ci([np.array([0.1, 0.2]), np.array([0.3, 0.4])], 300, 0)
    assert estimate == pytest.approx(0.25) and low < estimate < high


def test_selectivity_is_paired_and_validation_rows_are_marked() -> None:
    task, control = _result([0.9, 0.8, 0.7]), _result([0.2, 0.3, 0.1])
    rows = selectivity_rows(FitLabel("e_x", "s", "p", "model", "m", control="selectivity"), [task], [control], (),
                            200, 0)
    assert rows[0].value == pytest.approx(0.6) and rows[0].n == 3 and "same 3 test images" in rows[0].note
    val = validation_rows(LABEL, [{"matched_iou": 0.4}, {"matched_iou": 0.6}], ())
    assert val[0].control == "validation" and val[0].metric == "iou" and val[0].value == pytest.approx(0.5)


def test_selectivity_pairs_each_seed_with_its_own_control_fit() -> None:
    """Over probe seeds, each task fit is paired with its seed's control fit: the value is the mean paired
    difference, the CI carries the seeds' spread, and one seed gives the paired bootstrap exactly."""
    label = FitLabel("e_x", "s", "p", "model", "m", control="selectivity")
    tasks = [_result([0.9] * 20), _result([0.8] * 20, 1), _result([0.7] * 20, 2)]
    controls = [_result([0.2] * 20), _result([0.5] * 20, 1), _result([0.1] * 20, 2)]
    row = selectivity_rows(label, tasks, controls, (), 500, 0)[0]
    assert row.value == pytest.approx((0.7 + 0.3 + 0.6) / 3) and row.n == 20
    # no image varies within a fit: the whole width is the seeds' spread of the paired differences
    assert row.ci_low == pytest.approx(0.3) and row.ci_high == pytest.approx(0.7)
    assert "3 probe seeds" in row.note and "its seed's control fit" in row.note
    rng = np.random.default_rng(0)
    task, control = _result(list(rng.uniform(0.5, 1.0, 30))), _result(list(rng.uniform(0.0, 0.5, 30)))
    one = selectivity_rows(label, [task], [control], (), 300, 0)[0]
    paired = paired_bootstrap_diff(task.per_item["matched_iou"], control.per_item["matched_iou"], 300, 0)
    assert (one.value, one.ci_low, one.ci_high) == (paired.estimate, paired.low, paired.high)
    with pytest.raises(ValueError, match="2 task fits, 1 control fits"):
        selectivity_rows(label, tasks[:2], controls[:1], (), 100, 0)


def test_seeds_must_be_positive_and_data_families_known() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RunConfig(seeds=0)
    with pytest.raises(ValueError, match="unknown data family"):
        RunConfig(data={"space": "shapes"})


def test_unknown_verdict_stage_lists_the_stages_and_writes_nothing(tmp_path: Path) -> None:
    run = StudyRun(RunConfig(model="pixels", verdict_stage="vision.post_merge"), tmp_path / "run")
    with pytest.raises(UserInputError, match=r"not a stage of pixels; its stages are pixels\.patch, pixels\.merged"):
        run.prepare()
    assert not (tmp_path / "run").exists()


def test_unknown_experiment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown e_q9_1"):
        StudyRun(RunConfig(model="pixels", experiments=["e_q9_1"]), tmp_path / "run").prepare()


def test_other_settings_are_named_there_and_now_and_overwrite_starts_afresh(tmp_path: Path) -> None:
    out = tmp_path / "run"
    StudyRun(RunConfig(model="pixels", seed=1), out).prepare()
    (out / "experiments" / "e_q2_1.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"seed: there 1, now 2"):
        StudyRun(RunConfig(model="pixels", seed=2), out).prepare()
    StudyRun(RunConfig(model="pixels", seed=2), out, overwrite=True).prepare()
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 2
    assert not (out / "experiments" / "e_q2_1.json").exists()


def test_a_resumed_run_keeps_its_start_time(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = StudyRun(RunConfig(model="pixels"), out)
    first.prepare()
    again = StudyRun(RunConfig(model="pixels", batch_size=4), out)  # a setting that changes no number
    again.prepare()
    assert again.started_at == first.started_at


def test_the_runner_and_report_name_no_experiment() -> None:
    grep = ["grep", "-rE", "--include=*.py", "e_q2_[0-9]", str(SRC)]
    found = subprocess.run(grep, capture_output=True, text=True).stdout
    outside = [line for line in found.splitlines() if not re.search(r"/suites/q2/", line)]
    assert outside == []


@pytest.mark.parametrize(("args", "says"), [
    (["--seeds", "0"], "--seeds"),
    (["--verdict-stage", "vision.nowhere"], "pixels.patch, pixels.merged"),
])
def test_cli_refuses_bad_seeds_and_verdict_stage(args: list[str], says: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--model", "pixels", "--out", str(tmp_path / "run"), *args])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and says in output and "Traceback" not in output
    assert not (tmp_path / "run").exists()


def test_a_metric_only_some_seeds_measured_is_the_mean_of_those_fits() -> None:
    """A control task draws its random boxes per seed: one seed's test set may hold nothing a COCO metric
    scores (no small object). That metric is the mean over the fits that measured it, and says so."""
    evaluations = [detection_eval(8, k, images=30) for k in range(3)]
    results = []
    for k, evaluation in enumerate(evaluations):
        summary = evaluation.summary()
        metrics, unavailable = {"map_50": summary["map_50"], "map_75": summary["map_75"]}, {}
        if k == 1:
            del metrics["map_75"]
            unavailable["map_75"] = "no test objects in this size range"
        results.append(ProbeResult("attention", "boxes", metrics, {}, {}, {}, unavailable, evaluation, seed=k))
    rows = {r.metric: r for r in result_rows(LABEL, results, (), 200, 0)}
    partial, whole = rows[metric_info("map_75").name], rows[metric_info("map_50").name]
    expected = np.mean([evaluations[k].summary()["map_75"] for k in (0, 2)])
    assert partial.value == pytest.approx(expected) and partial.ci_low <= partial.value <= partial.ci_high  # type: ignore[operator]
    assert "2 probe seeds" in partial.note and "measured by 2 of the 3 probe seeds' fits" in partial.note
    assert whole.value == pytest.approx(np.mean([e.summary()["map_50"] for e in evaluations]))
    assert "3 probe seeds" in whole.note and "measured by" not in whole.note
