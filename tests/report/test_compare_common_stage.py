"""compare_runs refuses runs that share no stage, naming what each run holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_run, row, synthetic_rows

from stageprobe.errors import UserInputError
from stageprobe.report import compare_runs


def test_runs_with_no_stage_in_common_are_refused_with_their_stages(good_run: Path, tmp_path: Path) -> None:
    pixel_rows = [row(r.experiment, "pixels.unshared", r.probe, r.metric, r.value, control=r.control,
                      ci=(r.ci_low, r.ci_high) if r.ci_low is not None and r.ci_high is not None else None,
                      reason=r.unavailable_reason)
                  for r in synthetic_rows(seed=3)]
    other = make_run(tmp_path / "other", rows=pixel_rows)
    with pytest.raises(UserInputError, match="no stage in common") as refused:
        compare_runs([good_run, other])
    assert "pixels.unshared" in str(refused.value) and "vision.patch_embed" in str(refused.value)
