"""`measure`: the study's probes on a model without a run directory (what calibration reuses)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.suites import _measure
from stageprobe.suites._measure import measure
from stageprobe.suites._spec import ExperimentSpec
from stageprobe.suites.q2 import DENSE_BOXES, DETAIL_PROBES, SUITE
from stageprobe.suites.runner import RunConfig
from stageprobe.suites.workers import ProbePool


def test_measure_returns_rows_and_per_image_scores_without_a_run_directory(tmp_path: Path) -> None:
    config = RunConfig(model="pixels", size="quick", limit=60, n_bootstrap=100)
    spec = replace(SUITE.experiment("e_q2_1"), probes=(DENSE_BOXES,))
    outcomes = measure(sp.load_model("pixels"), [spec], config, tmp_path / "work")
    rows = outcomes[spec.id].rows
    dense = next(r for r in rows if r.probe == "dense-linear" and r.metric == "iou" and r.control == "none")
    assert dense.stage == "pixels.patch" and dense.value is not None and dense.value > 0.5
    assert {r.control for r in rows} == {"none", "validation"}  # no controls: just the probes
    scores = outcomes[spec.id].scores[("model", "pixels.patch", "dense-linear", "iou")]
    assert len(scores) == dense.n and abs(float(scores.mean()) - dense.value) < 1e-9
    assert not (tmp_path / "work" / "results.yaml").exists()


def _spatial_and_detail_specs() -> list[ExperimentSpec]:
    return [replace(SUITE.experiment("e_q2_1"), probes=(DENSE_BOXES,)),
            replace(SUITE.experiment("e_q2_2"), probes=(DENSE_BOXES,)),
            replace(SUITE.experiment("e_q2_5"), probes=DETAIL_PROBES[:1])]


def test_experiments_started_ahead_give_the_rows_of_one_at_a_time(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = RunConfig(model="pixels", size="quick", limit=60, n_bootstrap=100)
    model, specs = sp.load_model("pixels"), _spatial_and_detail_specs()
    with ProbePool(2) as pool:
        ahead = measure(model, specs, config, tmp_path / "work", pool=pool)
    monkeypatch.setattr(_measure, "LOOKAHEAD", 0)
    with ProbePool(2) as pool:
        one_at_a_time = measure(model, specs, config, tmp_path / "work", pool=pool)
    for spec in specs:
        rows = [r.model_dump() for r in ahead[spec.id].rows]
        assert rows and rows == [r.model_dump() for r in one_at_a_time[spec.id].rows], spec.id
    assert any(r.experiment == "e_q2_2" and r.stage == "pixels.merged" for r in ahead["e_q2_2"].rows)


def test_a_later_experiment_that_cannot_start_keeps_the_earlier_ones(tmp_path: Path) -> None:
    config = RunConfig(model="pixels", size="quick", limit=60, n_bootstrap=100,
                       data={"detail": f"images:{tmp_path / 'missing'}"})
    measurement = _measure.Measurement(config, lambda _which: sp.load_model("pixels"), tmp_path / "features",
                                       quiet=True, probe_controls=False)
    outcomes: dict[str, _measure.ExperimentOutcome] = {}
    finished: list[str] = []
    with pytest.raises(UserInputError, match="missing"):
        measurement.run_experiments(_spatial_and_detail_specs(), outcomes, lambda spec, _o: finished.append(spec.id))
    assert finished == ["e_q2_1", "e_q2_2"] and all(outcomes[e].rows for e in finished)
