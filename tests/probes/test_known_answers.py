"""Known answers on the pixel baseline: every spatial fact is in `pixels.*`, so a probe that reads
the grid must find it and the seed's pooled probe must not. Fast versions run by default; the
full-size versions (≥ 600 images) are marked slow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import stageprobe as sp
from stageprobe.probes import ProbeData, fit_probe

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


def _box_checks(get: FeatureGetter, n: int) -> dict[str, float]:
    _, splits = get("shapes", "pixels.patch", n)
    args = (splits["train"], splits["val"], splits["test"])
    dense = fit_probe("dense-linear", "boxes", *args, seed=0).metrics["matched_iou"]
    pooled = fit_probe("pooled-linear", "boxes", *args, seed=0).metrics["matched_iou"]
    shuffled = fit_probe("dense-linear", "boxes", *args, seed=0, control="token-shuffle").metrics["matched_iou"]
    control = fit_probe("dense-linear", "boxes", *args, seed=0, control="control-task").metrics["matched_iou"]
    assert dense >= 0.7, dense
    assert pooled <= 0.3, pooled
    assert dense - shuffled >= 0.3, (dense, shuffled)
    assert control <= dense - 0.3, (dense, control)
    return {"dense": dense, "pooled": pooled, "shuffled": shuffled, "control": control}


def test_dense_reads_pixels_and_pooled_does_not_fast(pixel_features: FeatureGetter) -> None:
    _box_checks(pixel_features, 200)


@pytest.mark.slow
def test_dense_reads_pixels_and_pooled_does_not(pixel_features: FeatureGetter) -> None:
    _box_checks(pixel_features, 600)


def _temporal_checks(get: FeatureGetter, n: int, full: bool) -> None:
    """`temporal-dense` reads direction, order (and, in full, speed) from merged video pixels, and
    its fitted predictor follows a time reversal of the test clips: the order label flips and the
    direction turns to the opposite one. `full` adds speed, the control task and the seed-style
    `temporal` probe, which averages position away."""
    samples, splits = get("motion", "pixels.merged", n)
    args = (splits["train"], splits["val"], splits["test"])
    test = splits["test"]
    direction = fit_probe("temporal-dense", "direction", *args, seed=0)
    order = fit_probe("temporal-dense", "order", *args, seed=0)
    assert direction.metrics["direction_acc"] >= 0.9, direction.metrics
    assert order.metrics["order_acc"] >= 0.85, order.metrics

    clips = [s.frames[::-1] for s in samples if s.split == "test"]
    reversed_features = sp.load_model("pixels").extract(videos=clips, stages=["pixels.merged"])["pixels.merged"]
    reversed_test = test.replace(features=reversed_features)
    true_direction = np.array([int(t["direction"]) for t in test.targets])
    true_order = np.array([int(t["reversed"]) for t in test.targets])
    turned = direction.predictor(reversed_test)["direction"]
    flipped = order.predictor(reversed_test)["order"]
    assert np.mean(turned == (true_direction + 4) % 8) >= 0.85, turned
    assert np.mean(flipped == 1 - true_order) >= 0.85, flipped
    if not full:
        return
    speed = fit_probe("temporal-dense", "speed", *args, seed=0).metrics["speed_acc"]
    assert speed >= 0.9, speed
    control = fit_probe("temporal-dense", "direction", *args, seed=0, control="control-task")
    assert control.metrics["direction_acc"] <= 0.5, control.metrics
    seed_style = fit_probe("temporal", "direction", *args, seed=0).metrics["direction_acc"]
    assert seed_style <= direction.metrics["direction_acc"] - 0.3, seed_style


def test_temporal_direction_and_order_fast(pixel_features: FeatureGetter) -> None:
    _temporal_checks(pixel_features, 240, full=False)


@pytest.mark.slow
def test_temporal_direction_and_order(pixel_features: FeatureGetter) -> None:
    _temporal_checks(pixel_features, 600, full=True)


def test_relation_dense_beats_pooled_fast(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    args = (splits["train"], splits["val"], splits["test"])
    dense = fit_probe("relation", "relation", *args, seed=0).metrics["relation_acc"]
    pooled = fit_probe("relation-pooled", "relation", *args, seed=0).metrics["relation_acc"]
    assert dense >= 0.9, dense
    assert dense - pooled >= 0.2, (dense, pooled)
