"""compare_runs: stage metrics side by side with deltas against the first run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_run, synthetic_rows
from rich.console import Console

from stageprobe.errors import UserInputError
from stageprobe.report import compare_runs, comparison_table
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX


def test_compare_shows_deltas(good_run: Path, tmp_path: Path) -> None:
    other = make_run(tmp_path / "other", rows=synthetic_rows(pre=0.653, post=0.4, seed=0))
    comparison = compare_runs([good_run, other])
    assert len(comparison.runs) == 2 and "good" in comparison.runs[0]
    post = next(
        r
        for r in comparison.rows
        if (r.experiment, r.stage, r.probe, r.metric)
        == ("e_q2_2", "vision.post_merge", BOX, "iou")
    )
    a, b = post.values
    assert a is not None and b is not None
    assert post.deltas[0] is None and post.deltas[1] == pytest.approx(b - a)
    assert post.deltas[1] == pytest.approx(0.4 - 0.781, abs=1e-12)  # same seed → same jitter
    console = Console(record=True, width=220)
    console.print(comparison_table(comparison))
    text = console.export_text()
    assert "Δ other" in text and f"{post.deltas[1]:.3f}" in text


def test_compare_rejects_a_non_run(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a directory"):
        compare_runs([tmp_path / "nope"])
