"""Known answers of `stageprobe calibrate` through the tiny random-weight Qwen2.5-VL: planted losses
are found at their stage, stay down after, and leave earlier stages alone; `none` finds nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import stageprobe as sp
from stageprobe.calibrate import Calibration, Calibrator, CheckOutcome, PlantOutcome
from stageprobe.models.planting import parse_plant
from stageprobe.models.qwen_vl import QwenVLModel
from stageprobe.suites.q2 import SUITE

# small shapes on a 112-px image: an 8×8 patch grid, a 4×4 merged grid
SMALL_SHAPES = {"image_size": 112, "min_size": 16, "max_size": 36}
LOCATION = SUITE.row("location")
BOX = f"{LOCATION.probe}/{LOCATION.metric}"


@pytest.fixture(scope="module")
def model() -> QwenVLModel:
    return sp.load_model("qwen2.5-vl-tiny", device="cpu")


def calibrate(model: QwenVLModel, work: Path, plants: list[str], n: int, suite=SUITE,  # type: ignore[no-untyped-def]
              **options: object) -> Calibration:
    calibrator = Calibrator(model, suite, work, size="quick", n_bootstrap=500,
                            dataset_options={"shapes": {"n": n, **SMALL_SHAPES},
                                             "motion": {"n": n, "image_size": 112, "frames": 4}},
                            **options)  # type: ignore[arg-type]
    return calibrator.run([parse_plant(p, model) for p in plants])


def checks_of(plant: PlantOutcome) -> dict[str, CheckOutcome]:
    return {f"{c.check.probe}/{c.check.metric}": c for c in plant.checks}


def test_erase_position_at_a_window_block_is_found_there_by_the_deciding_probe(model: QwenVLModel,
                                                                             tmp_path: Path) -> None:
    # the deciding probe alone (its secondary probes are shown beside and cost time)
    deciding_only = replace(SUITE, information=(replace(LOCATION, secondary=()),))
    result = calibrate(model, tmp_path, ["erase-position@vision.block.4"], n=64, suite=deciding_only,
                       stage_patterns=["vision.block.*", "vision.post_merge"])
    (plant,) = result.plants
    assert [f"{c.check.probe}/{c.check.metric}" for c in plant.checks] == [BOX]
    for check in plant.checks:
        assert check.stages[:3] == ["vision.block.0", "vision.block.3", "vision.block.4"]
        assert check.found_at == "vision.block.4", check.check
        assert check.earlier_unchanged and check.stays_down
        assert check.reference["vision.block.3"] == check.planted["vision.block.3"]
    assert plant.verdict == "PASS"


@pytest.mark.slow
def test_position_plants_and_none_through_the_llm(model: QwenVLModel, tmp_path: Path) -> None:
    result = calibrate(model, tmp_path, ["erase-position@vision.block.4", "scramble-position@language.layer.2",
                                         "none@vision.post_merge"], n=120)
    erase, scramble, none = result.plants
    assert erase.verdict == "PASS", result.to_markdown()
    iou = checks_of(erase)[BOX]
    assert {"vision.post_merge", "language.layer.3"} <= set(iou.stages)  # stays down through the LLM
    # scrambling the tokens is seen by the spatial box probe, not by the pooled (seed) probe
    spatial = checks_of(scramble)[BOX]
    assert spatial.found_at == "language.layer.2" and spatial.verdict == "PASS", result.to_markdown()
    pooled = checks_of(scramble)["pooled-linear/iou"]
    assert pooled.found_at is None
    assert pooled.loss_vs_reference["language.layer.2"].low <= 0 <= pooled.loss_vs_reference["language.layer.2"].high
    assert "does not see this loss" in result.to_markdown()
    assert none.verdict == "PASS"
    assert all(c.found_at is None for c in none.checks)


@pytest.mark.slow
def test_erase_time_after_the_merger_is_found_and_order_falls_to_chance(model: QwenVLModel, tmp_path: Path) -> None:
    """Averaging over time leaves the smear of the path, so its axis (not its sign) can survive in
    direction; which end came first cannot, so order sits at chance from the plant on."""
    result = calibrate(model, tmp_path, ["erase-time@vision.post_merge"], n=160,
                       stage_patterns=["vision.block.7", "vision.post_merge", "language.layer.*"])
    checks = checks_of(result.plants[0])
    motion = SUITE.row("motion")
    direction = checks[f"{motion.probe}/direction_acc"]
    assert direction.found_at == "vision.post_merge" and direction.verdict == "PASS", result.to_markdown()
    assert direction.earlier_unchanged and direction.stays_down
    order = checks[f"{motion.probe}/order_acc"]
    for stage in order.stages[order.stages.index("vision.post_merge"):]:
        ci = order.planted_ci[stage]
        assert ci.low <= 0.5 <= ci.high, (stage, ci)
