"""A fitted probe's headline scores on the validation split: what picks the "best stage" column
(the test split is never used to choose anything)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stageprobe.metrics.boxes import box_scores
from stageprobe.metrics.classification import accuracy
from stageprobe.metrics.reconstruction import reconstruction_scores
from stageprobe.probes import ProbeData, ProbeResult
from stageprobe.probes.base import MOTION_TASKS
from stageprobe.probes.decoder import target_images
from stageprobe.probes.evaluation import evaluate_boxes, num_classes_of
from stageprobe.probes.relation import RELATIONS
from stageprobe.probes.temporal import labels_for


def _relation_truth(data: ProbeData) -> np.ndarray:
    return np.asarray([RELATIONS.index(r["relation"]) for t in data.targets for r in t.get("relations", [])])


def validation_scores(result: ProbeResult, val: ProbeData) -> dict[str, float]:
    """Headline metrics (probe spelling) of `result.predictor` on `val`; {} when it has no predictor."""
    if result.predictor is None or len(val) == 0:
        return {}
    predictions: dict[str, Any] = result.predictor(val)
    if "detections" in predictions:
        if result.probe == "attention":
            # as on test: mAP ranks every query, the box IoU reads the confident ones only
            classes = int(result.config.get("num_classes") or num_classes_of(val.targets))
            metrics, _, _, _ = evaluate_boxes(val.targets, predictions["detections"], classes)
            confident = box_scores([np.asarray(t["boxes"]) for t in val.targets],
                                   [d.boxes for d in predictions["confident_detections"]])
            return {"matched_iou": float(np.nanmean(confident["matched_iou"])), "map_50": metrics["map_50"]}
        scores = box_scores([np.asarray(t["boxes"]) for t in val.targets],
                            [d.boxes for d in predictions["detections"]])
        return {"matched_iou": float(np.nanmean(scores["matched_iou"]))}
    if "reconstructions" in predictions:
        size = predictions["reconstructions"].shape[1]
        references = target_images(val, size).permute(0, 2, 3, 1).numpy()
        per_item, _ = reconstruction_scores(references, predictions["reconstructions"])
        # edge F1 is undefined (NaN) on references without edges: those are excluded, as on test
        return {k: float(np.nanmean(v)) for k, v in per_item.items()
                if k in ("lpips", "edge_f1") and np.isfinite(v).any()}
    if "relation" in predictions:
        return {"relation_acc": accuracy(_relation_truth(val), predictions["relation"])}
    if result.task in MOTION_TASKS and result.task in predictions:
        return {f"{result.task}_acc": accuracy(labels_for(result.task, val.targets), predictions[result.task])}
    return {}
