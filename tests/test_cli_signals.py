"""Signals and orphans: probe workers die with the main process, however it dies, and SIGTERM is
handled as Ctrl-C is (message, resume command, exit 143)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stageprobe.cli import main

#: a main process with two probe workers, each busy for two minutes: prints the workers' PIDs, then waits
MAIN_WITH_BUSY_WORKERS = """
import time
from stageprobe.suites.workers import ProbePool

pool = ProbePool(2)
busy = [pool._executor.submit(time.sleep, 120) for _ in range(2)]
while len(pool._executor._processes) < 2:
    time.sleep(0.05)
print(*pool._executor._processes, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc (Linux)")
def test_workers_exit_within_seconds_of_a_sigkill_of_the_main_process() -> None:
    main = subprocess.Popen([sys.executable, "-c", MAIN_WITH_BUSY_WORKERS], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert main.stdout is not None
        workers = [int(pid) for pid in main.stdout.readline().split()]
        helpers = children(main.pid)  # the fork server and the resource tracker
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers + helpers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in workers + helpers if alive(pid)]
    finally:
        main.kill()
    for pid in left:  # do not leave them running for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left 10 s after the main process was killed: {left}"


def test_sigterm_during_the_study_exits_143_with_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process and fast: the study (stood in for) receives a real SIGTERM half-way."""

    def study_terminated_half_way(*_args: object, **_kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the study")

    monkeypatch.setattr("stageprobe.suites.runner.run_study", study_terminated_half_way)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["stageprobe", "run", "--model", "pixels", "--quick", "--out", str(run_dir)])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    output = capsys.readouterr().err
    assert ended.value.code == 143, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("interrupted") and last.endswith(f"--quick --out {run_dir}"), last


@pytest.mark.slow
def test_sigterm_is_handled_as_ctrl_c_with_the_resume_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "stageprobe", "run", "--model", "pixels", "--quick", "--limit", "40",
               "--experiments", "e_q2_1", "--probe-workers", "1", "--out", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("to resume it if interrupted"):
            break
    time.sleep(1.0)  # into the study
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert process.returncode == 143, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("interrupted") and last.endswith(f"--out {run_dir}"), last


def test_an_interrupted_extract_speaks_of_shards_and_prints_its_rerun_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from stageprobe.cli import app

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("stageprobe.features.extract.extract_dataset", interrupted)
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["extract", "-m", "pixels", "-d", "shapes", "--n", "8", "--out", str(store)])
    assert result.exit_code == 130, result.output
    last = result.output.strip().splitlines()[-1]
    assert "feature shards are kept" in last and "experiment" not in last
    assert last.endswith(f"stageprobe extract --model pixels --dataset shapes --n 8 --out {store}"), last
