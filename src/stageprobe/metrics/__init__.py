"""Metrics: thin wrappers over torchvision, pycocotools, scikit-image and lpips."""

from stageprobe.metrics.base import MetricValue
from stageprobe.metrics.boxes import box_iou, box_scores, matched_ious
from stageprobe.metrics.classification import accuracy, balanced_accuracy
from stageprobe.metrics.detection import CocoDetectionEval, Detections, GroundTruth, detection_map
from stageprobe.metrics.irs import irs
from stageprobe.metrics.reconstruction import (
    LpipsMetric,
    edge_f1,
    gram_distance,
    load_lpips,
    lpips_trunk_provenance,
    lpips_weights_reason,
    psnr,
    reconstruction_scores,
    ssim,
)

__all__ = [
    "CocoDetectionEval",
    "Detections",
    "GroundTruth",
    "LpipsMetric",
    "MetricValue",
    "accuracy",
    "balanced_accuracy",
    "box_iou",
    "box_scores",
    "detection_map",
    "edge_f1",
    "gram_distance",
    "irs",
    "load_lpips",
    "lpips_trunk_provenance",
    "lpips_weights_reason",
    "matched_ious",
    "psnr",
    "reconstruction_scores",
    "ssim",
]
