"""The control task (Hewitt & Liang): labels are a fixed random function of a recurring input type,
identical across splits — so a probe that memorises types scores on it, and a probe reading the
features for the task has positive selectivity. `chance` keeps the permuted labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from stageprobe.probes import ProbeData, fit_probe
from stageprobe.probes.controls import apply_control, object_types, sample_type
from stageprobe.probes.targets import coverage_maps, dense_targets

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


def _objects(data: ProbeData, controlled: ProbeData) -> tuple[torch.Tensor, list[str], np.ndarray, np.ndarray]:
    """Each object's mean token (coverage-weighted, where the object really is), its type, its
    (control) class label and its true and control box."""
    _, h, w = data.grid
    feats, kinds, labels, boxes = [], [], [], []
    tokens = data.features[:, 0].float()
    for i, (target, control) in enumerate(zip(data.targets, controlled.targets, strict=True)):
        cover = torch.from_numpy(coverage_maps(target, data.image_size, (h, w))).float()
        for k, kind in enumerate(object_types(target)):
            weight = cover[k] / cover[k].sum().clamp_min(1e-6)
            feats.append((tokens[i] * weight[..., None]).sum((0, 1)))
            kinds.append(kind)
            labels.append(int(control["labels"][k]))
            boxes.append([np.asarray(target["boxes"][k], dtype=np.float64),
                          np.asarray(control["boxes"][k], dtype=np.float64)])
    return torch.stack(feats), kinds, np.asarray(labels), np.asarray(boxes)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (M, 4) xyxy boxes."""
    lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area - inter)


def test_control_labels_are_one_function_of_type_across_splits(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    controlled = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    seen: dict[str, int] = {}
    for original, data in zip((splits["train"], splits["val"], splits["test"]), controlled, strict=True):
        for before, after in zip(original.targets, data.targets, strict=True):
            for kind, label in zip(object_types(before), after["labels"], strict=True):
                assert seen.setdefault(kind, int(label)) == int(label), kind
            # an object's centroid follows its control box (no clip's path is taken for it)
            boxes = np.asarray(after["boxes"])
            np.testing.assert_allclose(after["centroids"], (boxes[:, :2] + boxes[:, 2:]) / 2)
    # a random function: not the identity of the class, and more than one control class is used
    assert len(set(seen.values())) > 1


def test_memorising_probe_scores_well_above_chance_on_the_control_task(pixel_features: FeatureGetter) -> None:
    """1-nearest-neighbour on each object's tokens recognises its type, hence its control label."""
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    train, _, test = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    x_tr, _, y_tr, _ = _objects(splits["train"], train)
    x_te, _, y_te, _ = _objects(splits["test"], test)
    nearest = torch.cdist(x_te, x_tr).argmin(1).numpy()
    accuracy = float(np.mean(y_tr[nearest] == y_te))
    majority = float(np.max(np.bincount(y_te)) / len(y_te))
    assert accuracy >= majority + 0.3, (accuracy, majority)


def test_box_control_rewards_memorising_types_not_reading_the_true_box(pixel_features: FeatureGetter) -> None:
    """Control boxes: an oracle of the true box scores what chance does; a 1-NN memoriser of types
    scores well above it (Hewitt & Liang: the control target is a function of type alone)."""
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    train, _, test = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    x_tr, _, _, boxes_tr = _objects(splits["train"], train)
    x_te, _, _, boxes_te = _objects(splits["test"], test)
    true_box, control_box = boxes_te[:, 0], boxes_te[:, 1]
    oracle = float(_iou(true_box, control_box).mean())
    # chance: a box of the dataset that knows nothing of this object (another test object's true box)
    others = np.random.default_rng(0).permutation(len(control_box))
    chance = float(_iou(true_box[others], control_box).mean())
    memoriser = float(_iou(boxes_tr[torch.cdist(x_te, x_tr).argmin(1).numpy(), 1], control_box).mean())
    assert abs(oracle - chance) < 0.05, (oracle, chance)
    assert memoriser > chance + 0.4, (memoriser, chance)
    # the control boxes keep the dataset's box sizes
    sizes = lambda b: np.sqrt(np.prod(b[:, 2:] - b[:, :2], axis=1))  # noqa: E731
    assert abs(np.median(sizes(control_box)) / np.median(sizes(true_box)) - 1) < 0.3


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


def test_motion_control_replaces_the_paths_the_flow_is_trained_on(pixel_features: FeatureGetter) -> None:
    """The control clip target (labels and centroid path together) is one clip's, drawn per type:
    the velocities token-flow and temporal-dense fit are changed, and consistent with the labels."""
    _, splits = pixel_features("motion", "pixels.merged", 96)
    controlled = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=3)
    pool = [t for data in (splits["train"], splits["val"], splits["test"]) for t in data.targets]
    paths: dict[str, np.ndarray] = {}
    changed = 0
    for original, data in zip((splits["train"], splits["val"], splits["test"]), controlled, strict=True):
        for before, after in zip(original.targets, data.targets, strict=True):
            path = np.asarray(after["centroids"])
            np.testing.assert_array_equal(paths.setdefault(sample_type(before), path), path)
            changed += not np.allclose(path, before["centroids"])
            donor = next(t for t in pool if np.array_equal(t["centroids"], path))
            assert (after["direction"], after["speed"], after["reversed"]) == (
                donor["direction"], donor["speed"], donor["reversed"])
    assert changed >= 0.8 * sum(len(d) for d in controlled)


def test_reconstruction_control_is_a_texture_per_type_with_the_types_statistics(
        pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("textures", "pixels.patch", 60, with_images=True)
    controlled = apply_control("control-task", splits["train"], splits["val"], splits["test"], seed=0)
    by_type: dict[str, list[np.ndarray]] = {}
    correlations = []
    for original, data in zip((splits["train"], splits["val"], splits["test"]), controlled, strict=True):
        assert data.images is not None and original.images is not None
        for target, real, control in zip(original.targets, original.images, data.images, strict=True):
            by_type.setdefault(sample_type(target), [control]).append(real)
            np.testing.assert_array_equal(by_type[sample_type(target)][0], control)
            real_detail, control_detail = (x - x.mean(axis=(0, 1)) for x in (real, control))
            correlations.append(np.corrcoef(real_detail.ravel(), control_detail.ravel())[0, 1])
    # no pixel in common: the control image is independent of the real one, so their correlations
    # scatter around 0 (a smooth image has few frequencies, so one can line up by chance)
    assert abs(np.mean(correlations)) < 0.05 and np.median(np.abs(correlations)) < 0.2, correlations
    for kind, (control, *real) in by_type.items():
        colour = np.mean([r.mean(axis=(0, 1)) for r in real], axis=0)
        contrast = np.mean([r.std(axis=(0, 1)) for r in real], axis=0)
        np.testing.assert_allclose(control.mean(axis=(0, 1)), colour, atol=0.06, err_msg=kind)
        np.testing.assert_allclose(control.std(axis=(0, 1)), contrast, rtol=0.35, atol=0.02, err_msg=kind)


def test_token_shuffle_moves_tokens_only_within_objects(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.patch", 200)
    test = splits["test"]
    _, _, shuffled = apply_control("token-shuffle", splits["train"], splits["val"], test, seed=0)
    _, h, w = test.grid
    moved = 0
    for i, target in enumerate(test.targets):
        owner = dense_targets(target, test.image_size, (h, w))["owner"]
        before, after = test.features[i, 0], shuffled.features[i, 0]
        assert torch.equal(before[owner < 0], after[owner < 0])  # background stays
        for k in np.unique(owner[owner >= 0]):
            cells = torch.from_numpy(owner == k)
            key = lambda x: sorted(map(tuple, x.float().tolist()))  # noqa: E731
            assert key(before[cells]) == key(after[cells])  # each object keeps its tokens
        moved += not torch.equal(before, after)
    assert moved > 0.8 * len(test)
    motion = pixel_features("motion", "pixels.merged", 96)[1]
    with pytest.raises(ValueError, match="no object boxes"):
        apply_control("token-shuffle", motion["train"], motion["val"], motion["test"], seed=0)
