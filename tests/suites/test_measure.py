"""`measure`: the study's probes on a model without a run directory (what calibration reuses)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import stageprobe as sp
from stageprobe.suites._measure import measure
from stageprobe.suites.q2 import DENSE_BOXES, SUITE
from stageprobe.suites.runner import RunConfig


def test_measure_returns_rows_and_per_image_scores_without_a_run_directory(tmp_path: Path) -> None:
    config = RunConfig(model="pixels", size="quick", limit=60, n_bootstrap=100)
    spec = replace(SUITE.experiment("e_q2_1"), probes=(DENSE_BOXES,))
    outcomes = measure(sp.load_model("pixels"), [spec], config, tmp_path / "work")
    rows = outcomes[spec.id].rows
    dense = next(r for r in rows if r.probe == "dense-linear" and r.metric == "iou" and r.control == "none")
    assert dense.stage == "pixels.patch" and dense.value is not None and dense.value > 0.5
    assert {r.control for r in rows} == {"none", "validation"}  # no controls: just the probes
    scores = outcomes[spec.id].scores[("none", "pixels.patch", "dense-linear", "iou")]
    assert len(scores) == dense.n and abs(float(scores.mean()) - dense.value) < 1e-9
    assert not (tmp_path / "work" / "results.yaml").exists()
