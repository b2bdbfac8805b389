"""No traceback for a problem of input or environment: one message, exit 2 (input) or 1 (environment or
a bug), the trace only with --debug; and a run folder that never started does not block a new run."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stageprobe.cli import app

runner = CliRunner()
RUN = ["run", "--model", "pixels", "--quick", "--experiments", "e_q2_1"]


def failing_study(error: BaseException) -> Any:
    def study(*_args: object, **_kwargs: object) -> None:
        raise error

    return study


@pytest.mark.parametrize(("error", "code", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/features/shard.tmp"), 1,
     ["No space left on device (/data/run/features/shard.tmp)", "disk full?"]),
    (PermissionError(errno.EACCES, "Permission denied", "/data/images/a.png"), 2,
     ["Permission denied (/data/images/a.png)", "check the path"]),
    (RuntimeError("cannot reshape tensor of 0 elements"), 1, ["internal error: RuntimeError", "--debug"]),
    (MemoryError(), 1, ["out of memory"]),
], ids=["disk full", "permission", "a bug", "memory"])
def test_an_error_in_the_study_is_one_message_with_its_exit_code(
    error: BaseException, code: int, words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stageprobe.suites.runner.run_study", failing_study(error))
    result = runner.invoke(app, [*RUN, "--out", str(tmp_path / "run")])
    assert result.exit_code == code, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and all(word in message for word in words), message
    assert "Traceback" not in result.output


def test_debug_lets_the_trace_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stageprobe.suites.runner.run_study", failing_study(RuntimeError("a bug")))
    result = runner.invoke(app, ["--debug", *RUN, "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "a bug"
    later = runner.invoke(app, [*RUN, "--out", str(tmp_path / "run")])  # --debug does not stick
    assert later.exit_code == 1 and "Traceback" not in later.output


def write_run(run_dir: Path, finished_experiment: bool) -> None:
    (run_dir / "experiments").mkdir(parents=True)
    (run_dir / "experiments" / "run.json").write_text("{}")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"identity": "other-settings", "model": "qwen2.5-vl-tiny"}))
    if finished_experiment:
        (run_dir / "experiments" / "e_q2_1.json").write_text("{}")


def test_a_folder_whose_run_never_started_does_not_block_other_settings(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, finished_experiment=False)
    seen: list[bool] = []
    monkeypatch.setattr("stageprobe.suites.runner.run_study",
                        lambda *_args, overwrite=False, **_kw: seen.append(overwrite) or sys.exit(0))
    result = runner.invoke(app, [*RUN, "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert seen == [True]  # started afresh there


def test_a_folder_with_measured_results_and_other_settings_is_refused_before_the_run_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, finished_experiment=True)
    before = sorted(p.name for p in run_dir.rglob("*"))
    result = runner.invoke(app, [*RUN, "--out", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "holds a run with other settings" in result.output and "run directory:" not in result.output
    assert sorted(p.name for p in run_dir.rglob("*")) == before
