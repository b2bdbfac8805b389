"""Known answers for `token-flow` on the pixel baseline's merged video tokens: camera pans across
real photos (`pan`) and moving shapes (`motion`) both carry their motion in `pixels.merged`, so the
probe must read it; a time-reversed clip must read as the opposite direction and the other order;
permuted labels (the control task) must fall towards chance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import stageprobe as sp
from stageprobe.datasets.fixtures import write_photo_coco
from stageprobe.probes import ProbeData, fit_probe

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]
PAN_CLIPS = 160


def _fit(splits: dict[str, ProbeData], task: str, **options: Any) -> sp.probes.ProbeResult:
    return fit_probe("token-flow", task, splits["train"], splits["val"], splits["test"], seed=0, **options)


def _shown_backwards(samples: list[Any], test: ProbeData) -> ProbeData:
    """The test split with every clip's frames in reverse order (features re-extracted)."""
    clips = [s.frames[::-1] for s in samples if s.split == "test"]
    features = sp.load_model("pixels").extract(videos=clips, stages=["pixels.merged"])["pixels.merged"]
    return test.replace(features=features.to(test.features.dtype))


def test_pan_clips_direction(pixel_features: FeatureGetter) -> None:
    """Direction ≥ 0.9, far above its control task; shown backwards, every clip reads as the
    opposite direction."""
    samples, splits = pixel_features("pan", "pixels.merged", PAN_CLIPS)
    direction = _fit(splits, "direction")
    assert direction.metrics["direction_acc"] >= 0.9, direction.metrics
    assert direction.metrics["flow_angle_error_deg"] <= 10, direction.metrics
    truth = np.array([int(t["direction"]) for t in splits["test"].targets])
    turned = direction.predictor(_shown_backwards(samples, splits["test"]))["direction"]
    assert np.mean(turned == (truth + 4) % 8) >= 0.9, turned
    control = _fit(splits, "direction", control="control-task")
    assert control.metrics["direction_acc"] <= 0.4, control.metrics


def test_pan_clips_speed_and_order(pixel_features: FeatureGetter) -> None:
    """Speed and order well above chance (0.5); shown backwards, the order prediction flips: the
    probe reads the order of time steps, not the content of one."""
    samples, splits = pixel_features("pan", "pixels.merged", PAN_CLIPS)
    assert _fit(splits, "speed").metrics["speed_acc"] >= 0.75
    order = _fit(splits, "order")
    assert order.metrics["order_acc"] >= 0.65, order.metrics
    forwards = order.predictor(splits["test"])["order"]
    backwards = order.predictor(_shown_backwards(samples, splits["test"]))["order"]
    assert np.mean(backwards != forwards) >= 0.8, (forwards, backwards)


def test_moving_shapes_direction_speed_order(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("motion", "pixels.merged", 240)
    scores = {task: _fit(splits, task).metrics[f"{task}_acc"] for task in ("direction", "speed", "order")}
    assert min(scores.values()) >= 0.9, scores


def _clips(t: int, h: int, w: int, targets: list[dict[str, Any]] | None = None) -> ProbeData:
    centroids = {"centroids": np.zeros((2 * t, 2), dtype=np.float32), "direction": 0, "speed": 0, "reversed": 0}
    return ProbeData(torch.zeros(4, t, h, w, 8), targets or [dict(centroids) for _ in range(4)], (56, 56))


@pytest.mark.parametrize(("data", "message"), [
    (_clips(1, 4, 4), "T ≥ 2"),
    (_clips(2, 2, 4), "at least 3×3"),
    (_clips(2, 4, 4, [{"direction": 0}] * 4), "centroids"),
])
def test_rejects_data_it_cannot_read(data: ProbeData, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_probe("token-flow", "direction", data, data, data)


@pytest.mark.slow
def test_full_size_pan_and_cutout_clips(pixel_features: FeatureGetter, tmp_path_factory: pytest.TempPathFactory
                                        ) -> None:
    """Default-size `pan` (400 clips) reads all three tasks, each far above its control task; an
    object cut out of a photo and moving over another (`cutout`) reads too."""
    _, splits = pixel_features("pan", "pixels.merged", 400)
    floors = {"direction": 0.9, "speed": 0.75, "order": 0.7}
    for task, floor in floors.items():
        score = _fit(splits, task).metrics[f"{task}_acc"]
        control = _fit(splits, task, control="control-task").metrics[f"{task}_acc"]
        assert score >= floor and score - control >= 0.25, (task, score, control)
    coco = write_photo_coco(tmp_path_factory.mktemp("coco"))
    _, splits = pixel_features(f"cutout:{coco}", "pixels.merged", 240)
    assert _fit(splits, "direction").metrics["direction_acc"] >= 0.9
    assert _fit(splits, "order").metrics["order_acc"] >= 0.9
