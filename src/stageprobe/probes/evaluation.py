"""Scoring shared by the box probes: per-image box scores, COCO mAP and patch accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np

from stageprobe.metrics.boxes import box_scores
from stageprobe.metrics.classification import accuracy, balanced_accuracy
from stageprobe.metrics.detection import CocoDetectionEval, Detections, GroundTruth


def num_classes_of(*splits_targets: list[dict[str, Any]]) -> int:
    """Size of the label space (max label + 1) over all given targets; labels only, no features."""
    top = -1
    for targets in splits_targets:
        for t in targets:
            labels = np.asarray(t.get("labels", []))
            if labels.size:
                top = max(top, int(labels.max()))
    return top + 1


def ground_truth(target: dict[str, Any]) -> GroundTruth:
    return GroundTruth.from_target(target)


def evaluate_boxes(targets: list[dict[str, Any]], detections: list[Detections], num_classes: int
                   ) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, str], CocoDetectionEval]:
    """Box scores (means of per-image scores) and COCO mAP; NaN COCO entries become unavailable."""
    per_item = box_scores([np.asarray(t["boxes"]) for t in targets], [d.boxes for d in detections])
    metrics = {k: float(np.nanmean(v)) for k, v in per_item.items()}
    evaluation = CocoDetectionEval([ground_truth(t) for t in targets], detections, num_classes)
    unavailable = {}
    for name, value in evaluation.summary().items():
        if np.isnan(value):
            unavailable[name] = "no test objects in this size range"
        else:
            metrics[name] = value
    return metrics, per_item, unavailable, evaluation


def patch_class_scores(true_maps: np.ndarray,
                       pred_maps: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Token classification accuracy and balanced accuracy (0 = background), per image too."""
    metrics = {"patch_acc": accuracy(true_maps, pred_maps),
               "patch_balanced_acc": balanced_accuracy(true_maps, pred_maps)}
    n = len(true_maps)
    per_item = {
        "patch_acc": (true_maps.reshape(n, -1) == pred_maps.reshape(n, -1)).mean(1),
        "patch_balanced_acc": np.array([balanced_accuracy(t, p)
                                        for t, p in zip(true_maps, pred_maps, strict=True)]),
    }
    return metrics, per_item
