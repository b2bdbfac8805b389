"""`run --calibrate`: a setting that adds a section, not one that changes the study's numbers."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import CALIBRATION

from stageprobe.suites.runner import RunConfig, StudyRun


def test_calibrate_does_not_change_the_run_identity() -> None:
    assert RunConfig(model="pixels", calibrate=True).identity() == RunConfig(model="pixels").identity()
    assert RunConfig(model="pixels", calibrate=True).model_dump()["calibrate"] is True


def test_a_finished_calibration_is_kept_on_rerun(tmp_path: Path) -> None:
    done = tmp_path / "calibration" / "calibration.yaml"
    done.parent.mkdir()
    done.write_text(yaml.safe_dump({"calibration": CALIBRATION}, sort_keys=False))
    study = StudyRun(RunConfig(model="pixels", calibrate=True), tmp_path)
    assert study.calibrate() == CALIBRATION
