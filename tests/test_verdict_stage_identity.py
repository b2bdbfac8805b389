"""Issue 21 item 9: `--verdict-stage` is part of a run's identity; DeepStack stages' ceiling is the merged grid."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.report.schema import pixel_stage_for
from stageprobe.suites.runner import RunConfig


def test_a_resume_with_another_verdict_stage_is_refused_naming_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    earlier = RunConfig(model="pixels", verdict_stage="pixels.patch")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**earlier.model_dump(), "identity": earlier.identity()}))
    (run_dir / "experiments").mkdir()  # it measured something: a never-started run would be started afresh
    (run_dir / "experiments" / "e_q2_1.json").write_text("{}")
    result = CliRunner().invoke(app, ["run", "--model", "pixels", "--out", str(run_dir),
                                      "--verdict-stage", "pixels.merged"])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and "Traceback" not in output
    assert "'pixels.patch'" in output and "'pixels.merged'" in output and "verdict_stage" in output
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "experiments"]


def test_the_verdict_stage_changes_the_identity() -> None:
    assert RunConfig(verdict_stage="vision.block.3").identity() != RunConfig().identity()


def test_deepstack_stages_are_read_against_the_merged_pixel_grid() -> None:
    assert pixel_stage_for("vision.deepstack.0") == "pixels.merged"
    assert pixel_stage_for("vision.pos_embed") == "pixels.patch"
