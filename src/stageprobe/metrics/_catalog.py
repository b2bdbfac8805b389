"""Every metric's metadata, declared once: its report name, label, unit, direction, seed name.

Probes emit metrics under their own names (`matched_iou`, `patch_acc`, `map_50_95`); the report
uses the seed study's vocabulary (`iou`, `patch_class_acc`, `map`). `report_name` maps one to the
other and `metric_info` accepts either. The runner, the report (ranking, labels), `validate` and
the W&B logger all read this table, so a metric ranked "lower is better" in one place is ranked
the same everywhere, and a metric a probe emits without an entry here fails a test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """`higher_is_better` orders stages; `seed_name` is the original study's spelling, if any."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    seed_name: str | None = None
    description: str = ""


_FRACTION = "fraction"
_PX = "px"
_DB = "dB"
_RATIO = "ratio"

_ENTRIES: tuple[MetricInfo, ...] = (
    MetricInfo("iou", "Bbox IoU", _FRACTION, True, "bbox_iou",
               "Hungarian-matched box IoU per image (missed and surplus boxes cost)"),
    MetricInfo("iou_gt_0.5", "IoU>0.5 rate", _FRACTION, True, "iou_gt_0.5", "share of objects matched above 0.5"),
    MetricInfo("iou_gt_0.7", "IoU>0.7 rate", _FRACTION, True, "iou_gt_0.7", "share of objects matched above 0.7"),
    MetricInfo("best_match_iou", "Best-match IoU (seed)", _FRACTION, True, "mean_iou",
               "each object's best IoU over all predictions: the seed's score, blind to duplicates"),
    MetricInfo("map", "mAP@[.5:.95]", _FRACTION, True, "mAP", "COCO mAP over IoU 0.5…0.95"),
    MetricInfo("map_50", "mAP@0.5", _FRACTION, True, "mAP@0.5", "COCO mAP at IoU 0.5"),
    MetricInfo("map_75", "mAP@0.75", _FRACTION, True, "mAP@0.75", "COCO mAP at IoU 0.75"),
    MetricInfo("map_small", "mAP small", _FRACTION, True, None, "COCO mAP, small objects"),
    MetricInfo("map_medium", "mAP medium", _FRACTION, True, None, "COCO mAP, medium objects"),
    MetricInfo("map_large", "mAP large", _FRACTION, True, None, "COCO mAP, large objects"),
    MetricInfo("patch_class_acc", "Per-patch class accuracy", _FRACTION, True, "patch_classification_acc",
               "token class accuracy, background included (mostly background: read the balanced one)"),
    MetricInfo("patch_class_balanced_acc", "Per-patch class balanced accuracy", _FRACTION, True, None,
               "token class accuracy averaged over classes (background is one class of many)"),
    MetricInfo("relation_acc", "Relative position Acc", _FRACTION, True, "relative_position_acc",
               "share of object pairs whose left/right/above/below relation is answered right"),
    MetricInfo("relation_balanced_acc", "Relative position balanced Acc", _FRACTION, True, None,
               "relation accuracy averaged over the four relations"),
    MetricInfo("lpips", "LPIPS", "distance", False, "lpips", "perceptual distance (AlexNet LPIPS)"),
    MetricInfo("ssim", "SSIM", _FRACTION, True, "ssim", "structural similarity (scikit-image)"),
    MetricInfo("psnr", "PSNR", _DB, True, "psnr", "peak signal-to-noise ratio"),
    MetricInfo("edge_f1", "Edge F1", _FRACTION, True, "edge_f1", "F1 of Canny edges of the reconstruction"),
    MetricInfo("gram_gabor", "Gram distance", "distance", False, "texture_gram_distance",
               "distance of Gram matrices of grey + 12 Gabor responses (texture)"),
    MetricInfo("direction_acc", "Direction Acc", _FRACTION, True, "direction_accuracy", "8-way motion direction"),
    MetricInfo("direction_balanced_acc", "Direction balanced Acc", _FRACTION, True, None, ""),
    MetricInfo("speed_acc", "Speed Acc", _FRACTION, True, "speed_accuracy", "motion speed class"),
    MetricInfo("speed_balanced_acc", "Speed balanced Acc", _FRACTION, True, None, ""),
    MetricInfo("order_acc", "Order Acc", _FRACTION, True, "temporal_order_accuracy", "was the clip reversed?"),
    MetricInfo("order_balanced_acc", "Order balanced Acc", _FRACTION, True, None, ""),
    MetricInfo("path_error_px", "Path error", _PX, False, None,
               "mean distance of the read-out object path from the true one"),
    MetricInfo("flow_angle_error_deg", "Flow angle error", "degrees", False, None,
               "angle between the flow probe's motion estimate and the true motion of the clip"),
    MetricInfo("iou_drop", "IoU drop", _FRACTION, False, "iou_drop_from_premerge",
               "IoU before − after, paired bootstrap over the same test images"),
    MetricInfo("iou_excess_drop", "IoU excess drop", _FRACTION, False, None,
               "IoU drop of the model − the same probe's drop on the pixel pair, paired over the same test images"),
    MetricInfo("compression_ratio", "Token compression", _RATIO, True, "compression_ratio",
               "tokens before ÷ tokens after"),
    MetricInfo("width_ratio", "Width ratio", _RATIO, True, None, "token width after ÷ before"),
    MetricInfo("irs", "IRS", "score", True, "irs", "0.4·IoU/0.85 + 0.3·(1−LPIPS)/0.7 + 0.3·EdgeF1/0.8"),
)

METRICS: dict[str, MetricInfo] = {m.name: m for m in _ENTRIES}

#: probe spelling → report spelling
REPORT_NAMES: dict[str, str] = {"matched_iou": "iou", "patch_acc": "patch_class_acc",
                                "patch_balanced_acc": "patch_class_balanced_acc", "map_50_95": "map"}


def report_name(emitted: str) -> str:
    """The report's name of a metric a probe emitted."""
    return REPORT_NAMES.get(emitted, emitted)


def metric_info(name: str) -> MetricInfo:
    """Metadata of a metric by report or probe name; KeyError names the missing metric."""
    found = METRICS.get(report_name(name))
    if found is None:
        raise KeyError(f"metric {name!r} has no metadata: declare it in stageprobe/metrics/_catalog.py")
    return found


def higher_is_better(name: str) -> bool:
    """Direction of a metric; an unknown metric counts as higher-is-better (reading old runs)."""
    found = METRICS.get(report_name(name))
    return True if found is None else found.higher_is_better


def label(name: str) -> str:
    found = METRICS.get(report_name(name))
    return name if found is None else found.label
