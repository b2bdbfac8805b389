"""`dense-linear` — a linear map per token (a 1×1 convolution) at the stage's own stride.

Heads, all ridge regressions fit in closed form (λ on val):
- objectness: share of the token's cell covered by an object;
- class: one-hot of the token class map (0 = background, 1 + label) — its argmax is the patch
  classification of the `patch_class` task;
- edge offsets: where the box edges lie inside a border cell (see `targets.py`), fit on the
  tokens that touch an object.

Decoding (FCOS/CenterNet-like, parameter-free apart from one threshold chosen on val): tokens
whose objectness exceeds τ form connected blobs; each blob gives one box whose sides are the
outer cells' sides moved inwards by the offsets predicted along the outermost row/column
(averaged, weighted by objectness); its class is the argmax of the class scores summed over the blob; its score
is mean objectness × class share. `torchvision.ops.batched_nms` removes duplicates.
Video features (T > 1) are averaged over time first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import watershed
from torchvision.ops import batched_nms

from stageprobe.metrics.boxes import box_scores
from stageprobe.metrics.detection import Detections
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.evaluation import evaluate_boxes, num_classes_of, patch_class_scores
from stageprobe.probes.targets import stack_dense_targets
from stageprobe.probes.tokens import time_mean_grid
from stageprobe.probes.training import RidgeSolver, argmax_accuracy, negative_mse

THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
NMS_IOU = 0.5
# Objectness above which tokens seed separate objects in `object_blobs`.
CORE_OBJECTNESS = 0.5


def token_matrix(data: ProbeData) -> torch.Tensor:
    """(N·H·W, D) tokens in raster order, time-averaged."""
    x = time_mean_grid(data)
    return x.reshape(-1, x.shape[-1])


def object_blobs(objectness: np.ndarray, threshold: float, core: float = CORE_OBJECTNESS) -> tuple[np.ndarray, int]:
    """Label the tokens above `threshold` by object: connected regions of tokens above `core` are
    the seeds and the watershed of the objectness shares the rest between them, so two objects whose
    faint edge cells touch stay two blobs; a region with no core token is a blob of its own."""
    mask = objectness > threshold
    regions, n_regions = ndimage.label(mask)
    # seeds inside the mask only, so every label the watershed returns has tokens
    markers, n = ndimage.label(mask & (objectness > core))
    for region in range(1, n_regions + 1):
        inside = regions == region
        if not markers[inside].any():
            n += 1
            markers[inside] = n
    return watershed(-objectness, markers, mask=mask), n


def decode_boxes(objectness: np.ndarray, class_scores: np.ndarray, offsets: np.ndarray, threshold: float,
                 stride: tuple[float, float]) -> Detections:
    """One image's boxes from its (H, W) objectness, (H, W, 1 + C) class scores, (H, W, 4) offsets."""
    sy, sx = stride
    blobs, n = object_blobs(objectness, threshold)
    boxes, scores, labels = [], [], []
    off = np.clip(offsets, 0, 1)
    for j in range(1, n + 1):
        rows, cols = np.nonzero(blobs == j)
        obj = objectness[rows, cols]

        def edge(sel: np.ndarray, side: int, rows: np.ndarray = rows, cols: np.ndarray = cols,
                 obj: np.ndarray = obj) -> float:
            # Every token of the outermost row/column sees the same box edge: their estimates are
            # averaged, weighted by how much of each cell the object covers.
            weights = np.clip(obj[sel], 1e-6, None)
            return float(np.average(off[rows[sel], cols[sel], side], weights=weights))

        x0 = (cols.min() + edge(cols == cols.min(), 0)) * sx
        y0 = (rows.min() + edge(rows == rows.min(), 1)) * sy
        x1 = (cols.max() + 1 - edge(cols == cols.max(), 2)) * sx
        y1 = (rows.max() + 1 - edge(rows == rows.max(), 3)) * sy
        votes = np.clip(class_scores[rows, cols, 1:], 0, None).sum(0)
        label = int(np.argmax(votes))
        share = votes[label] / votes.sum() if votes.sum() > 0 else 0.0
        boxes.append([x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)])
        scores.append(float(np.clip(obj.mean(), 0, 1) * share))
        labels.append(label)
    if not boxes:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    b, s, lab = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels)
    keep = batched_nms(b, s, lab, NMS_IOU).numpy()
    return Detections(b.numpy()[keep].astype(np.float64), s.numpy()[keep], lab.numpy()[keep])


class DensePredictor:
    """The fitted heads; `__call__` maps new data to maps and decoded boxes."""

    def __init__(self, heads: dict[str, Any], threshold: float) -> None:
        self.heads = heads
        self.threshold = threshold

    def maps(self, data: ProbeData) -> dict[str, np.ndarray]:
        _, h, w = data.grid
        x = token_matrix(data)
        out = {name: head(x).numpy().reshape(len(data), h, w, -1) for name, head in self.heads.items()}
        return out

    def decode(self, data: ProbeData, maps: dict[str, np.ndarray], threshold: float) -> list[Detections]:
        return [decode_boxes(maps["objectness"][i, ..., 0], maps["class"][i], maps["offsets"][i], threshold,
                             data.stride_px) for i in range(len(data))]

    def __call__(self, data: ProbeData) -> dict[str, Any]:
        maps = self.maps(data)
        out: dict[str, Any] = {"class_map": maps["class"].argmax(-1)}
        if "objectness" in maps:
            out["objectness"] = maps["objectness"][..., 0]
            out["detections"] = self.decode(data, maps, self.threshold)
        return out


@register_probe("dense-linear", ["boxes", "patch_class"],
                "linear per token (1×1 conv): objectness, class, edge offsets → boxes by blob decoding + NMS")
def fit_dense_linear(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                     num_classes: int | None = None) -> ProbeResult:
    """Task `boxes` also reports the patch-class metrics (same class head); `patch_class` fits
    only the class head."""
    del seed  # closed form
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    _, h, w = train.grid
    t_tr = stack_dense_targets(train.targets, train.image_size, (h, w))
    t_va = stack_dense_targets(val.targets, val.image_size, (h, w))
    t_te = stack_dense_targets(test.targets, test.image_size, (h, w))
    x_tr, x_va = token_matrix(train), token_matrix(val)
    eye = torch.eye(c + 1)
    y_cls = (eye[torch.from_numpy(t_tr["class_map"].ravel())],
             eye[torch.from_numpy(t_va["class_map"].ravel())], argmax_accuracy)
    specs = {"class": y_cls}
    if task == "boxes":
        specs["objectness"] = (torch.from_numpy(t_tr["objectness"].ravel()),
                               torch.from_numpy(t_va["objectness"].ravel()), negative_mse)
    heads, history = RidgeSolver(x_tr).fit_heads(specs, x_va)
    threshold, history_thresholds = float("nan"), {}
    if task == "boxes":
        touch_tr = torch.from_numpy(t_tr["owner"].ravel() >= 0)
        touch_va = torch.from_numpy(t_va["owner"].ravel() >= 0)
        heads["offsets"], hist = RidgeSolver(x_tr[touch_tr]).fit(
            torch.from_numpy(t_tr["offsets"].reshape(-1, 4))[touch_tr], x_va[touch_va],
            torch.from_numpy(t_va["offsets"].reshape(-1, 4))[touch_va])
        history.update({f"offsets.{k}": v for k, v in hist.items()})
        threshold, history_thresholds = choose_threshold(DensePredictor(heads, threshold), val)
    history.update(history_thresholds)
    return box_probe_result("dense-linear", task, DensePredictor(heads, threshold), test, t_te["class_map"], c,
                            history)


def choose_threshold(predictor: DensePredictor, val: ProbeData) -> tuple[float, dict[str, list[float]]]:
    """The objectness threshold (from `THRESHOLDS`) whose decoded val boxes have the best matched
    IoU, and the path (`threshold`, `threshold.val_matched_iou`)."""
    val_maps = predictor.maps(val)
    val_gt = [np.asarray(t["boxes"]) for t in val.targets]
    history: dict[str, list[float]] = {"threshold": [], "threshold.val_matched_iou": []}
    for tau in THRESHOLDS:
        dets = predictor.decode(val, val_maps, tau)
        history["threshold"].append(tau)
        history["threshold.val_matched_iou"].append(
            float(np.nanmean(box_scores(val_gt, [d.boxes for d in dets])["matched_iou"])))
    return THRESHOLDS[int(np.argmax(history["threshold.val_matched_iou"]))], history


def box_probe_result(name: str, task: str, predictor: DensePredictor, test: ProbeData, class_maps: np.ndarray,
                     num_classes: int, history: dict[str, list[float]],
                     config: dict[str, Any] | None = None) -> ProbeResult:
    """Score a fitted dense probe on test: patch-class metrics, and box metrics + mAP for `boxes`."""
    predictions = predictor(test)
    metrics, per_item = patch_class_scores(class_maps, predictions["class_map"])
    unavailable: dict[str, str] = {}
    evaluation = None
    if task == "boxes":
        box_metrics, box_items, unavailable, evaluation = evaluate_boxes(
            test.targets, predictions["detections"], num_classes)
        metrics.update(box_metrics)
        per_item.update(box_items)
    config = {"num_classes": num_classes, "threshold": predictor.threshold, "nms_iou": NMS_IOU, **(config or {})}
    return ProbeResult(name, task, metrics, per_item, predictions, history, unavailable, evaluation, predictor,
                       config=config)
