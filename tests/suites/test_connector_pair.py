"""The suite reads each model's own connector pair (no suite names a family), and a model with no
video input says so for the video experiments instead of failing them."""

from __future__ import annotations

from pathlib import Path

import yaml

from stageprobe.report.schema import pixel_stage_for, sort_stages
from stageprobe.suites._spec import SUITE_CONNECTOR, Suite, with_connector
from stageprobe.suites.q2 import SUITE
from stageprobe.suites.runner import RunConfig, run_study


def every_pattern(suite: Suite) -> set[str]:
    patterns: set[str] = set()
    for spec in suite.experiments:
        patterns.update(spec.stages)
        for probe in spec.probes:
            patterns.update(probe.stages + probe.control_stages)
    return patterns


def test_the_suite_reads_a_models_own_connector_pair() -> None:
    pool = with_connector(SUITE, ("vision.pre_pool", "vision.post_pool"))
    patterns = every_pattern(pool)
    assert not patterns & set(SUITE_CONNECTOR)
    assert {"vision.pre_pool", "vision.post_pool"} <= patterns
    post_merge = {spec.id for spec in SUITE.experiments if "vision.post_merge" in spec.stages}
    assert post_merge and post_merge == {spec.id for spec in pool.experiments if "vision.post_pool" in spec.stages}
    assert all("vision.post_merge" not in target.stages for target in pool.targets)
    assert all("vision.pre_merge" not in spec.read_at for spec in pool.experiments)
    assert pool.decision.pairs[0] == ("vision.pre_pool", "vision.post_pool")
    assert all("vision.post_merge" not in stages for stages in pool.quick_control_stages.values())
    assert with_connector(SUITE, SUITE_CONNECTOR) is SUITE


def test_connector_stages_sort_and_find_their_pixel_grid() -> None:
    stages = ["language.layer.0", "vision.post_projector", "vision.post_pool", "vision.pre_pool", "vision.block.2"]
    assert sort_stages(stages) == ["vision.block.2", "vision.pre_pool", "vision.post_pool", "vision.post_projector",
                                   "language.layer.0"]
    assert pixel_stage_for("vision.pre_pool") == "pixels.patch"
    assert pixel_stage_for("vision.post_pool") == pixel_stage_for("vision.post_projector") == "pixels.merged"


def test_video_experiments_are_not_applicable_without_video_input(tmp_path: Path) -> None:
    config = RunConfig(model="gemma3-tiny", size="quick", experiments=["e_q2_6"], probe_workers=1, device="cpu")
    run_study(config, out=tmp_path / "run")
    results = yaml.safe_load((tmp_path / "run" / "results.yaml").read_text())
    motion = results["results"]["experiments"]["e_q2_6"]
    assert motion["status"] == "skipped" and "not applicable: no video input" in motion["finding"]
