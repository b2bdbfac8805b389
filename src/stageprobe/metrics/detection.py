"""Detection mAP through pycocotools' COCOeval on in-memory COCO objects.

`CocoDetectionEval` runs `COCOeval.evaluate()` once (the per-image matching). Its `summary()`
is COCOeval's own `accumulate()` + `summarize()`. For the bootstrap, `resampled()` re-does only
the accumulation step with per-image multiplicities, because mAP is not an average of per-image
scores: an image drawn k times contributes its detections and objects k times. This follows
COCOeval.accumulate (101 recall thresholds, precision made monotone from the right, categories
without objects left out) and is tested to agree with it at unit weights.

COCO data is evaluated as COCO evaluates it: crowd regions go in as `iscrowd=1` annotations (a
detection on one is ignored, not a false positive), small/medium/large come from the
annotation's `area` in original-image pixels, and detections made on the resized image are mapped
back to original pixels (`GroundTruth.frame`) before matching.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_NAMES = ("map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large")
_AREA_NAMES = ("all", "small", "medium", "large")


@dataclass
class Detections:
    """One image's predictions: xyxy pixel boxes, confidence scores, integer class labels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class GroundTruth:
    """One image's objects; `areas` (e.g. mask areas) decide COCO's small/medium/large, else box areas.

    `crowd_*` are COCO crowd regions (ignored by matching). `frame` = (sx, sy, ox, oy) says these
    boxes are in original-image pixels while detections are on the resized image, resized =
    original·s + o; None when both are in the same pixels.
    """

    boxes: np.ndarray
    labels: np.ndarray
    areas: np.ndarray | None = None
    crowd_boxes: np.ndarray | None = None
    crowd_labels: np.ndarray | None = None
    crowd_areas: np.ndarray | None = None
    frame: tuple[float, float, float, float] | None = None

    @classmethod
    def from_target(cls, target: dict[str, Any]) -> GroundTruth:
        """Ground truth of a dataset target: COCO targets in original pixels with their crowds and
        annotation areas; others in image pixels with mask areas when there are masks."""
        labels = np.asarray(target["labels"]).ravel()
        if "boxes_original" in target:
            return cls(np.asarray(target["boxes_original"], dtype=np.float64).reshape(-1, 4), labels,
                       np.asarray(target["areas"], dtype=np.float64),
                       np.asarray(target["crowd_boxes_original"], dtype=np.float64).reshape(-1, 4),
                       np.asarray(target["crowd_labels"]).ravel(),
                       np.asarray(target["crowd_areas"], dtype=np.float64),
                       tuple(float(v) for v in target["transform"]))
        masks = target.get("masks")
        areas = None if masks is None or len(masks) == 0 else np.asarray(masks).reshape(len(masks), -1).sum(1)
        return cls(np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4), labels, areas)

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes on the resized image mapped into this ground truth's pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.frame is None:
            return b
        sx, sy, ox, oy = self.frame
        return (b - [ox, oy, ox, oy]) / [sx, sy, sx, sy]


def _quiet_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _annotations(image_id: int, boxes: np.ndarray, labels: np.ndarray | None, areas: np.ndarray | None,
                 crowd: bool, first_id: int) -> list[dict[str, Any]]:
    """COCO ground-truth records; areas default to box areas."""
    xywh = _xywh(boxes)
    areas = xywh[:, 2] * xywh[:, 3] if areas is None else np.asarray(areas, dtype=np.float64)
    labels = np.zeros(0, dtype=np.int64) if labels is None else np.asarray(labels).ravel()
    return [{"id": first_id + k, "image_id": image_id, "category_id": int(label) + 1, "bbox": box.tolist(),
             "area": float(area), "iscrowd": int(crowd)}
            for k, (box, label, area) in enumerate(zip(xywh, labels, areas, strict=True))]


class CocoDetectionEval:
    """COCO bbox evaluation of one prediction set against one ground-truth set (aligned lists)."""

    def __init__(self, gts: Sequence[GroundTruth], preds: Sequence[Detections], num_classes: int) -> None:
        if len(gts) != len(preds):
            raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
        images = [{"id": i + 1} for i in range(len(gts))]
        categories = [{"id": c + 1} for c in range(num_classes)]
        gt_anns, dt_anns = [], []
        for i, gt in enumerate(gts):
            gt_anns += _annotations(i + 1, gt.boxes, gt.labels, gt.areas, crowd=False, first_id=len(gt_anns) + 1)
            if gt.crowd_boxes is not None and len(gt.crowd_boxes):
                gt_anns += _annotations(i + 1, gt.crowd_boxes, gt.crowd_labels, gt.crowd_areas, crowd=True,
                                        first_id=len(gt_anns) + 1)
        for i, (gt, dt) in enumerate(zip(gts, preds, strict=True)):
            xywh = _xywh(gt.to_frame(dt.boxes))
            for box, score, label in zip(xywh, np.asarray(dt.scores).ravel(), np.asarray(dt.labels).ravel(),
                                         strict=True):
                dt_anns.append({"id": len(dt_anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "score": float(score),
                                "iscrowd": 0})
        self.n_images = len(gts)
        self.coco_gt = _quiet_coco({"images": images, "categories": categories, "annotations": gt_anns})
        self.coco_dt = _quiet_coco({"images": images, "categories": categories, "annotations": dt_anns})
        self.cocoeval = COCOeval(self.coco_gt, self.coco_dt, iouType="bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            self.cocoeval.evaluate()
        self._tables = self._matching_tables()

    def summary(self) -> dict[str, float]:
        """COCOeval's own stats; NaN where COCO reports -1 (no objects in that area range)."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.cocoeval.accumulate()
            self.cocoeval.summarize()
        stats = self.cocoeval.stats[:6]
        pairs = zip(METRIC_NAMES, stats, strict=True)
        return {name: (float(v) if v > -1 else float("nan")) for name, v in pairs}

    def _matching_tables(self) -> dict[tuple[int, str], dict[str, np.ndarray]]:
        """Per (category, area range): detections of all images sorted by score, with their image."""
        p = self.cocoeval.params
        max_det = p.maxDets[-1]
        n_img, n_area = len(p.imgIds), len(p.areaRng)
        tables = {}
        for k in range(len(p.catIds)):
            for a, area_name in enumerate(p.areaRngLbl):
                scores, matched, ignored, img_of_dt, n_gt = [], [], [], [], np.zeros(n_img)
                for i in range(n_img):
                    e = self.cocoeval.evalImgs[k * n_area * n_img + a * n_img + i]
                    if e is None:
                        continue
                    scores.append(np.asarray(e["dtScores"][:max_det]))
                    matched.append(e["dtMatches"][:, :max_det] > 0)
                    ignored.append(e["dtIgnore"][:, :max_det].astype(bool))
                    img_of_dt.append(np.full(len(scores[-1]), i))
                    n_gt[i] = np.count_nonzero(np.logical_not(e["gtIgnore"]))
                n_thr = len(p.iouThrs)
                if scores:
                    s = np.concatenate(scores)
                    order = np.argsort(-s, kind="mergesort")
                    m = np.concatenate(matched, axis=1)[:, order]
                    ig = np.concatenate(ignored, axis=1)[:, order]
                    img = np.concatenate(img_of_dt)[order]
                    # Detections after the last true positive (at any IoU threshold) cannot change an
                    # interpolated precision: recall no longer grows and precision only falls there.
                    # Dropping them leaves every draw's numbers as they are; a quick run's mAP bootstrap took 29 % less.
                    tp_any = (m & ~ig).any(axis=0)
                    end = int(np.flatnonzero(tp_any)[-1]) + 1 if tp_any.any() else 0
                    m, ig, img = m[:, :end], ig[:, :end], img[:end]
                else:
                    m = ig = np.zeros((n_thr, 0), dtype=bool)
                    img = np.zeros(0, dtype=int)
                # as floats once: each draw multiplies them by the images' weights
                tables[k, area_name] = {"tp": (m & ~ig).astype(np.float64), "fp": (~m & ~ig).astype(np.float64),
                                        "img": img, "n_gt": n_gt}
        return tables

    def resampled(self, weights: np.ndarray) -> dict[str, float]:
        """The six COCO stats with image i counted `weights[i]` times (a bootstrap draw)."""
        weights = np.asarray(weights, dtype=np.float64)
        p = self.cocoeval.params
        per_area: dict[str, list[np.ndarray]] = {name: [] for name in _AREA_NAMES}
        for (_, area_name), t in self._tables.items():
            npig = float(weights @ t["n_gt"])
            if npig == 0:
                continue
            w = weights[t["img"]]
            tp = (t["tp"] * w).cumsum(axis=1)
            fp = (t["fp"] * w).cumsum(axis=1)
            per_area[area_name].append(_interpolated_precision(tp, fp, tp / npig, p.recThrs))
        out = {}
        iou_50 = int(np.argmin(np.abs(p.iouThrs - 0.5)))
        iou_75 = int(np.argmin(np.abs(p.iouThrs - 0.75)))
        for name, area, sel in (("map_50_95", "all", slice(None)), ("map_50", "all", iou_50),
                                ("map_75", "all", iou_75), ("map_small", "small", slice(None)),
                                ("map_medium", "medium", slice(None)), ("map_large", "large", slice(None))):
            arrays = per_area[area]
            out[name] = float(np.mean([a[sel] for a in arrays])) if arrays else float("nan")
        return out


def _interpolated_precision(tp: np.ndarray, fp: np.ndarray, recall: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(IoU thresholds, recall thresholds): COCOeval's interpolation — precision made non-increasing
    from the right, then read at the first detection reaching each recall threshold (0 where none does).
    Per row, `ndarray.searchsorted` into one preallocated index table: this runs for every table of
    every bootstrap draw, where `np.stack` of per-row results and `np.take_along_axis` cost more than
    the searches."""
    n_rows, n_dets = tp.shape
    pr = np.zeros((n_rows, n_dets + 1))  # the last column: where no detection reaches the threshold
    pr[:, :n_dets] = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    idx = np.empty((n_rows, len(rec_thrs)), dtype=np.intp)
    for row in range(n_rows):
        idx[row] = recall[row].searchsorted(rec_thrs, side="left")
    return pr[np.arange(n_rows)[:, None], idx]


def detection_map(gts: Sequence[GroundTruth], preds: Sequence[Detections],
                  num_classes: int) -> dict[str, float]:
    """mAP@[.5:.95], @0.5, @0.75 and by object size, from COCOeval."""
    return CocoDetectionEval(gts, preds, num_classes).summary()
