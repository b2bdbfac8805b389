"""Test support (not a test module): COCO evaluations of known noise, for the statistics and row tests."""

from __future__ import annotations

import numpy as np

from stageprobe.metrics import CocoDetectionEval, Detections, GroundTruth


def detection_eval(noise: float, seed: int, images: int = 40) -> CocoDetectionEval:
    """`images` images of two 60-px objects each, detected with Gaussian corner noise of `noise` px."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(images):
        xy = rng.uniform(0, 300, (2, 2))
        boxes = np.concatenate([xy, xy + 60], 1)
        gts.append(GroundTruth(boxes, np.array([0, 1])))
        preds.append(Detections(boxes + rng.normal(0, noise, boxes.shape), rng.uniform(0.5, 1, 2), np.array([0, 1])))
    return CocoDetectionEval(gts, preds, num_classes=2)
