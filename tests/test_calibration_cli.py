"""`stageprobe calibrate` on bad input: exit 2 with one message naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stageprobe.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_unknown_plant_type_lists_types_and_stages() -> None:
    code, out = invoke("calibrate", "--plant", "melt-position@vision.block.4")
    assert code == 2
    flat = " ".join(out.split())
    assert "melt-position@vision.block.4" in flat
    for name in ("erase-position", "scramble-position", "blur-detail", "erase-time", "none",
                 "vision.block.7", "vision.post_merge", "language.layer.3"):
        assert name in flat
    assert "Traceback" not in out


def test_unknown_stage_is_named() -> None:
    code, out = invoke("calibrate", "--plant", "erase-position@vision.block.40")
    assert code == 2
    assert "vision.block.40" in " ".join(out.split())


def test_erase_time_on_an_image_only_model_says_why() -> None:
    code, out = invoke("calibrate", "--model", "dinov2-tiny", "--plant", "erase-time@vision.block.1")
    assert code == 2
    assert "image-only" in " ".join(out.split())


def test_a_plant_the_suite_declares_no_information_type_for_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from dataclasses import replace

    import stageprobe.suites
    from stageprobe.suites.q2 import SUITE

    no_motion = replace(SUITE, information=tuple(i for i in SUITE.information if "erase-time" not in i.plants))
    monkeypatch.setattr(stageprobe.suites, "get_suite", lambda _name: no_motion)
    code, out = invoke("calibrate", "--plant", "erase-time@vision.block.4", "--out", str(tmp_path / "cal"))
    flat = " ".join(out.split())
    assert code == 2 and "Traceback" not in out, out
    assert "'erase-time'" in flat and "its plants: erase-position, scramble-position, none, blur-detail" in flat
    assert not (tmp_path / "cal").exists()


@pytest.mark.slow
def test_calibrate_writes_yaml_and_markdown(tmp_path: Path) -> None:
    code, out = invoke("calibrate", "--quick", "--plant", "erase-position@vision.block.4", "--device", "cpu",
                       "--out", str(tmp_path))
    assert code == 0, out
    data = yaml.safe_load((tmp_path / "calibration.yaml").read_text())["calibration"]
    assert [p["plant"] for p in data["plants"]] == ["erase-position@vision.block.4"]
    assert (tmp_path / "CALIBRATION.md").read_text().startswith("## Calibration")
    assert "erase-position@vision.block.4" in out
