"""The control task (Hewitt & Liang): labels are a fixed random function of a recurring input type,
identical across splits — so a probe that memorises types scores on it, and a probe reading the
features for the task has positive selectivity. `chance` keeps the permuted labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stageprobe.probes import ProbeData, fit_probe
from stageprobe.probes.controls import apply_control, object_types, sample_type
from stageprobe.probes.targets import coverage_maps

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


def _objects(data: ProbeData) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """Each object's mean token (coverage-weighted), its type, and its (control) class label."""
    _, h, w = data.grid
    feats, kinds, labels = [], [], []
    tokens = data.features[:, 0].float()
    for i, target in enumerate(data.targets):
        cover = torch.from_numpy(coverage_maps(target, data.image_size, (h, w))).float()
        for k, kind in enumerate(object_types(target)):
            weight = cover[k] / cover[k].sum().clamp_min(1e-6)
            feats.append((tokens[i] * weight[..., None]).sum((0, 1)))
            kinds.append(kind)
            labels.append(int(target["labels"][k]))
    return torch.stack(feats), kinds, np.asarray(labels)


def test_control_labels_are_one_function_of_type_across_splits(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    controlled = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    seen: dict[str, int] = {}
    for original, data in zip((splits["train"], splits["val"], splits["test"]), controlled, strict=True):
        for before, after in zip(original.targets, data.targets, strict=True):
            for kind, label in zip(object_types(before), after["labels"], strict=True):
                assert seen.setdefault(kind, int(label)) == int(label), kind
    # a random function: not the identity of the class, and more than one control class is used
    assert len(set(seen.values())) > 1


def test_memorising_probe_scores_well_above_chance_on_the_control_task(pixel_features: FeatureGetter) -> None:
    """1-nearest-neighbour on each object's tokens recognises its type, hence its control label."""
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    train, _, test = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    x_tr, _, y_tr = _objects(train)
    x_te, _, y_te = _objects(test)
    nearest = torch.cdist(x_te, x_tr).argmin(1).numpy()
    accuracy = float(np.mean(y_tr[nearest] == y_te))
    majority = float(np.max(np.bincount(y_te)) / len(y_te))
    assert accuracy >= majority + 0.3, (accuracy, majority)


def test_linear_probe_on_pixels_has_clearly_positive_selectivity(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    args = (splits["train"], splits["val"], splits["test"])
    task = fit_probe("dense-linear", "boxes", *args, seed=0).per_item["matched_iou"]
    control = fit_probe("dense-linear", "boxes", *args, seed=0, control="control-task").per_item["matched_iou"]
    selectivity = float(np.nanmean(task - control))
    assert selectivity >= 0.3, selectivity


def test_motion_control_labels_follow_the_clip_type(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("motion", "pixels.merged", 96)
    controlled = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=3)
    by_type: dict[str, tuple[int, int, bool]] = {}
    for data in controlled:
        for target in data.targets:
            labels = (target["direction"], target["speed"], target["reversed"])
            assert by_type.setdefault(sample_type(target), labels) == labels
    assert len(by_type) > 1


def test_chance_permutes_within_each_split(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    _, _, test = apply_control("chance", splits["train"], splits["val"], splits["test"], seed=0)
    original = [len(t["boxes"]) for t in splits["test"].targets]
    permuted = [len(t["boxes"]) for t in test.targets]
    assert sorted(original) == sorted(permuted) and original != permuted
