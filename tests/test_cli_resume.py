"""Resuming a run with the default --out: the run directory and the resume command are printed at the
start and on Ctrl-C, and `run --resume` finds the newest unfinished run of the same settings."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stageprobe._resume import command_line, find_resumable_run
from stageprobe.cli import app

runner = CliRunner()


def make_run(root: Path, name: str, identity: str, age_s: float, finished: bool = False) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = run_dir / "config.yaml"
    config.write_text(yaml.safe_dump({"identity": identity}))
    stamp = 1_700_000_000 - age_s
    os.utime(config, (stamp, stamp))
    if finished:
        (run_dir / "results.yaml").write_text("status: completed\n")
    return run_dir


def test_newest_unfinished_run_of_the_same_identity_is_found(tmp_path: Path) -> None:
    make_run(tmp_path, "old", "same", age_s=300)
    newest = make_run(tmp_path, "newer", "same", age_s=200)
    make_run(tmp_path, "finished", "same", age_s=100, finished=True)
    make_run(tmp_path, "other-settings", "other", age_s=50)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.yaml").write_text("identity: [unclosed")
    assert find_resumable_run(tmp_path, "same") == newest
    assert find_resumable_run(tmp_path, "unknown") is None
    assert find_resumable_run(tmp_path / "absent", "same") is None


def test_command_line_quotes_repeats_and_drops() -> None:
    line = command_line("stageprobe run", [("--model", "a b"), ("--quick", True), ("--stages", ["x.*", "y"]),
                                           ("--limit", None), ("--full", False)])
    assert line == "stageprobe run --model 'a b' --quick --stages 'x.*' --stages y"


class FakeStudy:
    """Stands in for run_study: records where it ran and is interrupted like Ctrl-C the first time."""

    def __init__(self) -> None:
        self.run_dirs: list[Path] = []

    def __call__(self, config: Any, out: Path, cache_dir: Path | None = None, overwrite: bool = False) -> Any:
        self.run_dirs.append(out)
        if len(self.run_dirs) == 1:
            out.mkdir(parents=True)
            (out / "config.yaml").write_text(yaml.safe_dump({"identity": config.identity()}))
            raise KeyboardInterrupt
        raise SystemExit(0)  # the rest of the study is not what this test is about


def test_ctrl_c_prints_a_resume_command_that_resumes_into_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = FakeStudy()
    monkeypatch.setattr("stageprobe.suites.runner.run_study", study)
    args = ["run", "--model", "pixels", "--quick", "--stages", "pixels.*", "--no-trust-remote-code"]
    interrupted = runner.invoke(app, args)
    assert interrupted.exit_code == 130, interrupted.output
    run_dir = study.run_dirs[0]
    assert run_dir.parent == Path("runs") and run_dir.name.startswith("pixels-")
    assert f"run directory: {run_dir}" in interrupted.output
    resume_line = next(line for line in interrupted.output.splitlines() if line.startswith("interrupted"))
    command = resume_line.split("resume: ", 1)[1]
    assert command == ("stageprobe run --model pixels --quick --stages 'pixels.*' --no-trust-remote-code "
                       f"--out {run_dir}")
    assert runner.invoke(app, shlex.split(command)[1:]).exit_code == 0
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert study.run_dirs[1:] == [run_dir, run_dir]


def test_resume_with_nothing_to_resume_starts_a_new_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = FakeStudy()
    study.run_dirs.append(Path("earlier"))  # skip the interruption
    monkeypatch.setattr("stageprobe.suites.runner.run_study", study)
    result = runner.invoke(app, ["run", "--model", "pixels", "--resume"])
    assert result.exit_code == 0, result.output
    assert "no unfinished run of these settings" in result.output
    assert study.run_dirs[1].name.startswith("pixels-")


@pytest.mark.slow
def test_ctrl_c_then_resume_continues_the_default_run_directory(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "stageprobe", "run", "--quick", "--model", "pixels", "--probe-workers", "2"]
    # As in a terminal's foreground: SIGINT not ignored, even when this test runs as a background job
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob("runs/*/experiments/e_q2_1.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"--out runs/{run_dir.name}" in stderr.splitlines()[-1]
    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "e_q2_1: finished earlier, kept" in resumed.stderr
    assert list((tmp_path / "runs").iterdir()) == [run_dir] and (run_dir / "results.yaml").exists()
