"""Known answers of issue 27 through a real model: a "checkpoint" whose trained block erases location
(every token replaced by the image's mean from that block on) against its twin that keeps it is found
"lost by training" first at that block; two random inits of one architecture differ nowhere."""

from __future__ import annotations

import numpy as np
import pytest

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.models.base import StageModel
from stageprobe.models.planting import PlantedModel, parse_plant
from stageprobe.probes import fit_probe, split_probe_data
from stageprobe.report.schema import MetricRow
from stageprobe.report.training_effect import effect_sentence, training_effects
from stageprobe.report.verdicts import Target, verdict_for
from stageprobe.stats import bootstrap_ci
from stageprobe.suites._spec import InformationType
from stageprobe.suites._training import training_effect_rows

STAGES = ["vision.block.0", "vision.block.1", "vision.block.2", "vision.block.3", "vision.pre_merge"]
TARGET = Target("bbox_iou", "iou", "Bbox IoU", "Can we locate objects?", 0.7, "bbox_iou_threshold",
                "dense-linear", ("e_q2_1",), stages=("vision.block.3",))
LOCATION = InformationType("location", "Location", "where objects are", "spatial", "dense-linear",
                           (("boxes", "iou"),), targets=(TARGET,))


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Per-test-image IoU of the dense-linear box probe at each stage of three models."""
    model = sp.load_model("qwen2.5-vl-tiny", device="cpu")
    dataset = load_dataset("shapes", n=96, seed=0, image_size=112, min_size=16, max_size=36)
    samples = list(dataset)
    models: dict[str, StageModel] = {"twin": model, "erasing": PlantedModel(model, parse_plant(
        "erase-position@vision.block.2", model)), "other random init": model.random_init_twin(seed=5)}  # type: ignore[attr-defined]
    work = tmp_path_factory.mktemp("training")
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, m in models.items():
        store = extract_dataset(m, dataset, work / name.replace(" ", "-"), stages=STAGES, batch_size=16)
        out[name] = {}
        for stage in STAGES:
            splits = split_probe_data(store.load(stage), samples)
            result = fit_probe("dense-linear", "boxes", splits["train"], splits["val"], splits["test"], seed=0)
            out[name][stage] = result.per_item["matched_iou"]
    return out


def _rows(trained: dict[str, np.ndarray], twin: dict[str, np.ndarray]) -> list[MetricRow]:
    scores = {("model", s, "dense-linear", "iou"): trained[s] for s in STAGES}
    scores |= {("random-init", s, "dense-linear", "iou"): twin[s] for s in STAGES}
    rows = training_effect_rows("e_q2_1", scores, [TARGET], "m", 1000, 0)
    for (variant, stage, probe, metric), values in scores.items():
        ci = bootstrap_ci(values, 1000, 0)
        rows.append(MetricRow(experiment="e_q2_1", stage=stage, probe=probe, metric=metric, value=ci.estimate,
                              ci_low=ci.low, ci_high=ci.high, n=ci.n, variant=variant))  # type: ignore[arg-type]
    return rows


def test_a_block_that_erases_location_is_lost_by_training_there(scored: dict) -> None:
    rows = _rows(scored["erasing"], scored["twin"])
    (effect,) = training_effects(rows, [LOCATION], {"bbox_iou": verdict_for(TARGET, rows)})
    assert effect.at_verdict is not None and effect.at_verdict.stage == "vision.block.3"
    assert effect.at_verdict.ci_high is not None and effect.at_verdict.ci_high < 0
    assert effect.cause == "lost by training"
    assert effect.first_change is not None and effect.first_change.stage == "vision.block.2"
    assert "training removes location here" in effect_sentence(effect)


def test_two_random_inits_differ_nowhere_and_no_cause_is_claimed(scored: dict) -> None:
    rows = _rows(scored["other random init"], scored["twin"])
    (effect,) = training_effects(rows, [LOCATION], {"bbox_iou": verdict_for(TARGET, rows)})
    assert effect.first_change is None and effect.cause is None
    effects = [r for r in rows if r.control == "training-effect"]
    assert len(effects) == len(STAGES) and all(r.ci_low <= 0 <= r.ci_high for r in effects)  # type: ignore[operator]
    assert "no cause is claimed" in effect_sentence(effect)
