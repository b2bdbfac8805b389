"""Issue 21 item 5: the deciding probes are refitted over seeds where the decision is made."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.suites._seeds import probe_seeds
from stageprobe.suites._spec import ProbeSpec
from stageprobe.suites.q2 import DECIDING_BOX_PROBE, MOTION_PROBE, SUITE

BOX = ProbeSpec(DECIDING_BOX_PROBE, "boxes")
MOTION = ProbeSpec(MOTION_PROBE, "direction")
ATTENTION = ProbeSpec("attention", "boxes", seeded=True)
DECODER = ProbeSpec("decoder", "reconstruction", seeded=True)
FLOOR = ProbeSpec("dense-linear", "boxes")


@pytest.mark.parametrize("stage", ["vision.post_merge", "vision.pre_merge", "vision.final", "pixels.merged",
                                   "pixels.patch"])
def test_deciding_probes_get_three_seeds_at_the_default_size_where_they_decide(stage: str) -> None:
    for probe in (BOX, MOTION, ATTENTION):
        assert probe_seeds(SUITE, probe, stage, "default", None) == 3
        assert probe_seeds(SUITE, probe, stage, "quick", None) == 1
        assert probe_seeds(SUITE, probe, stage, "default", 5) == 5


def test_elsewhere_one_fit_unless_seeds_is_given_for_a_gradient_trained_probe() -> None:
    assert probe_seeds(SUITE, BOX, "vision.block.3", "default", None) == 1
    assert probe_seeds(SUITE, FLOOR, "vision.post_merge", "default", None) == 1
    assert probe_seeds(SUITE, FLOOR, "vision.post_merge", "default", 4) == 1  # closed form: seeds change nothing
    assert probe_seeds(SUITE, DECODER, "vision.post_merge", "default", None) == 1
    assert probe_seeds(SUITE, DECODER, "vision.post_merge", "default", 4) == 4
    assert probe_seeds(SUITE, ATTENTION, "language.layer.3", "default", None) == 1


@pytest.mark.parametrize("value", ["0", "-2"])
def test_cli_refuses_zero_or_negative_seeds(value: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--model", "pixels", "--out", str(tmp_path / "run"), "--seeds", value])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2 and "--seeds" in output and "Traceback" not in output
    assert not (tmp_path / "run").exists()
