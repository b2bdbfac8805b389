"""Progress a user can trust: in a log (no terminal) finished steps are printed as they finish; in a
terminal a run never leaves its output unchanged for more than a few seconds (measured, @slow)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from stageprobe._progress import Steps, columns, working

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "progress_gaps.py"


def test_without_a_terminal_finished_steps_are_printed_as_they_finish() -> None:
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=120)
    with Steps(console, "e_q2_1 probes", total=3) as steps:
        steps.describe("e_q2_1 dense-linear @ vision.block.0 (main)")
        steps.advance()
        assert log.getvalue().splitlines() == ["e_q2_1 dense-linear @ vision.block.0 (main): 1/3 done (0 s)"]
        steps.advance(2)  # the last step is always printed
    assert log.getvalue().splitlines()[-1].startswith("e_q2_1 dense-linear @ vision.block.0 (main): 3/3 done")
    with working(console, "e_q2_1 figures"):
        pass
    assert re.fullmatch(r"e_q2_1 figures: done \(\d+\.\d s\)", log.getvalue().splitlines()[-1])


def test_in_a_terminal_a_spinner_leaves_no_line_and_bars_share_one_column_order() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with working(console, "writing the report"):
        pass
    assert "done" not in screen.getvalue()
    names = [type(column).__name__ for column in columns()]
    assert names == ["TextColumn", "BarColumn", "MofNCompleteColumn", "TimeElapsedColumn", "TimeRemainingColumn"]


@pytest.mark.slow
def test_a_quick_run_in_a_terminal_never_goes_silent_for_more_than_5_s(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARK), "--top", "1", "--", sys.executable, "-m", "stageprobe", "run",
               "--quick", "--model", "pixels", "--probe-workers", "1", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("exit 0"), done.stdout + done.stderr[-2000:]
    longest = float(lines[1].split()[0])
    assert longest < 5.0, done.stdout
