"""Known answers of the calibration verdicts on made-up per-image scores (no model, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from stageprobe.calibrate import (
    Calibration,
    DetectableDrop,
    PlantOutcome,
    ProbeCheck,
    analyse,
    calibration_dict,
    calibration_markdown,
    checks_of,
    detectable_drop,
    write_calibration,
)
from stageprobe.errors import UserInputError
from stageprobe.models.planting import PLANT_TYPES, Plant
from stageprobe.suites.q2 import SUITE

STAGES = ["vision.block.0", "vision.block.1", "vision.block.2", "vision.block.3"]
BOX = SUITE.row("location").probe
IOU = ProbeCheck(BOX, "boxes", "iou")
N = 200


def scores(levels: list[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Per-image scores at each stage: one shared image effect + the stage level, so stages pair."""
    image_effect = np.random.default_rng(seed).normal(0, 0.05, N)
    return {stage: level + image_effect for stage, level in zip(STAGES, levels, strict=True)}


def plant(kind: str, stage: str) -> Plant:
    return Plant(PLANT_TYPES[kind], stage)


def test_loss_planted_at_a_stage_is_found_there() -> None:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    planted = scores([0.7, 0.7, 0.2, 0.2])
    outcome = analyse(IOU, plant("erase-position", "vision.block.2"), STAGES, reference, planted, 300)
    assert outcome.found_at == "vision.block.2"
    assert outcome.earlier_unchanged and outcome.stays_down
    assert outcome.verdict == "PASS"
    assert outcome.stage_drop["vision.block.2"].estimate == pytest.approx(0.5)


def test_loss_showing_one_stage_late_fails() -> None:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    planted = scores([0.7, 0.7, 0.7, 0.2])
    outcome = analyse(IOU, plant("erase-position", "vision.block.2"), STAGES, reference, planted, 300)
    assert outcome.found_at == "vision.block.3"
    assert outcome.verdict == "FAIL"


def test_loss_that_recovers_fails_stays_down() -> None:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    planted = scores([0.7, 0.7, 0.2, 0.7])
    outcome = analyse(IOU, plant("erase-position", "vision.block.2"), STAGES, reference, planted, 300)
    assert outcome.found_at == "vision.block.2"
    assert not outcome.stays_down
    assert outcome.verdict == "FAIL"


def test_a_drop_the_unplanted_model_also_has_is_not_credited_to_the_plant() -> None:
    reference = scores([0.7, 0.4, 0.4, 0.4])
    planted = scores([0.7, 0.4, 0.1, 0.1])
    outcome = analyse(IOU, plant("erase-position", "vision.block.2"), STAGES, reference, planted, 300)
    assert outcome.stage_drop["vision.block.1"].low > 0  # the study would see this drop ...
    assert outcome.found_at == "vision.block.2"  # ... but it is the model's, not the plant's
    assert outcome.verdict == "PASS"


def test_change_before_the_plant_fails_earlier_unchanged() -> None:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    planted = scores([0.7, 0.5, 0.2, 0.2])
    outcome = analyse(IOU, plant("erase-position", "vision.block.2"), STAGES, reference, planted, 300)
    assert not outcome.earlier_unchanged
    assert outcome.found_at == "vision.block.1"
    assert outcome.verdict == "FAIL"


def test_none_passes_only_when_nothing_differs() -> None:
    reference = scores([0.7, 0.6, 0.6, 0.5])
    same = analyse(IOU, plant("none", "vision.block.1"), STAGES, reference, dict(reference), 300)
    assert same.found_at is None and same.verdict == "PASS"
    shifted = analyse(IOU, plant("none", "vision.block.1"), STAGES, reference, scores([0.7, 0.6, 0.3, 0.3]), 300)
    assert shifted.verdict == "FAIL"


def test_lower_is_better_metrics_are_signed() -> None:
    distance = ProbeCheck("decoder", "reconstruction", "gram_gabor", higher_is_better=False)
    reference = scores([0.1, 0.1, 0.1, 0.1])
    planted = scores([0.1, 0.1, 0.6, 0.6])  # distance rises = information lost
    outcome = analyse(distance, plant("blur-detail", "vision.block.2"), STAGES, reference, planted, 300)
    assert outcome.found_at == "vision.block.2"
    assert outcome.verdict == "PASS"


def test_detectable_drop_is_the_80_percent_power_mde_of_neighbouring_stages() -> None:
    rng = np.random.default_rng(1)
    noise = {stage: rng.normal(0, 0.2, 400) for stage in STAGES[:2]}
    n, drop = detectable_drop(STAGES[:2], noise, n_bootstrap=2000)
    expected = 2.8 * np.std(noise[STAGES[0]] - noise[STAGES[1]]) / np.sqrt(400)
    assert n == 400
    assert drop == pytest.approx(expected, rel=0.15)
    # two identical stages: every resample differs by 0, so any drop at all would be seen
    assert detectable_drop(STAGES[:2], {STAGES[0]: noise[STAGES[0]], STAGES[1]: noise[STAGES[0]]})[1] == 0.0


def made_up_calibration() -> Calibration:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    erase = plant("erase-position", "vision.block.2")
    pooled = ProbeCheck("pooled-linear", "boxes", "iou", primary=False)
    checks = [analyse(IOU, erase, STAGES, reference, scores([0.7, 0.7, 0.2, 0.2]), 200),
              analyse(pooled, erase, STAGES, reference, dict(reference), 200)]
    late = plant("blur-detail", "vision.block.1")
    late_checks = [analyse(ProbeCheck("decoder", "reconstruction", "ssim"), late, STAGES, reference,
                           scores([0.7, 0.7, 0.7, 0.7]), 200)]
    drop = DetectableDrop(40, 0.05, {"vision.block.1": 0.04, "vision.block.2": 0.05}, "spatial", "shapes")
    return Calibration("tiny", "quick", [PlantOutcome(erase, "location", "shapes", checks),
                                         PlantOutcome(late, "detail", "textures", late_checks)],
                       {"location": {f"{BOX}/iou": drop}})


def test_markdown_names_each_verdict_and_the_detectable_drop() -> None:
    text = calibration_markdown(made_up_calibration())
    assert f"| `erase-position@vision.block.2` | {BOX} · Bbox IoU | vision.block.2 |" in text
    assert "| blind |" in text  # the pooled probe cannot see a position loss
    assert "**FAIL** `blur-detail@vision.block.1` · decoder SSIM: the detail loss planted at vision.block.1 was " \
           "not found at any stage" in text
    assert "blind to that loss" in text
    assert "location (shapes): with 40 test items, Bbox IoU drops ≥ 0.050 are detectable with 80 % power" in text
    assert "Overall: **FAIL**" in text


def test_results_dict_is_plain_yaml(tmp_path: Path) -> None:
    calibration = made_up_calibration()
    data, markdown = write_calibration(calibration, tmp_path)
    loaded = yaml.safe_load(data.read_text())["calibration"]
    assert loaded == yaml.safe_load(yaml.safe_dump(calibration_dict(calibration)))
    assert [p["verdict"] for p in loaded["plants"]] == ["PASS", "FAIL"]
    assert loaded["plants"][0]["checks"][0]["found_at"] == "vision.block.2"
    assert loaded["detectable_drop"]["location"][f"{BOX}/iou"] == {
        "n_test": 40, "drop": 0.05, "family": "spatial", "dataset": "shapes",
        "stages": {"vision.block.1": 0.04, "vision.block.2": 0.05}, "alpha": 0.05, "power": 0.8}
    assert markdown.read_text().startswith("## Calibration")


def test_plant_at_the_first_stage_read_is_judged_against_the_unplanted_model() -> None:
    reference = scores([0.7, 0.7, 0.7, 0.7])
    outcome = analyse(IOU, plant("erase-position", STAGES[0]), STAGES, reference, scores([0.2, 0.2, 0.2, 0.2]), 300)
    assert outcome.found_at == STAGES[0]
    assert outcome.verdict == "PASS"


@pytest.mark.parametrize("info", SUITE.information, ids=lambda info: info.name)
def test_calibration_reads_each_plant_with_the_deciding_probe_of_its_information_type(info) -> None:  # type: ignore[no-untyped-def]
    """A suite whose deciding probe and calibration probe differ fails here: the checks that decide a
    plant's verdict are exactly the deciding probe's metrics, the rest are secondary."""
    deciding = [c for c in checks_of(info) if c.primary]
    assert {c.probe for c in deciding} == {info.probe}
    assert [(c.task, c.metric) for c in deciding] == list(info.metrics)
    assert all(not c.primary for c in checks_of(info) if c.probe != info.probe)
    for name in info.plants:
        assert SUITE.row_of_plant(name) is info


def test_every_plant_type_is_read_by_one_declared_information_type() -> None:
    declared = [name for info in SUITE.information for name in info.plants]
    assert sorted(declared) == sorted(PLANT_TYPES) and len(set(declared)) == len(declared)


def test_a_plant_no_information_type_reads_is_refused_with_the_declared_plants() -> None:
    from dataclasses import replace

    no_motion = replace(SUITE, information=SUITE.information[:2])
    with pytest.raises(UserInputError, match=r"erase-time.*its plants: erase-position, scramble-position, none, "
                                             r"blur-detail"):
        no_motion.row_of_plant("erase-time")
