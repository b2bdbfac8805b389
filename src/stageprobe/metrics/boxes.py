"""Box overlap metrics per image: Hungarian-matched IoU, hit rates, and the seed's best-match IoU.

Boxes are xyxy in pixels (or any common unit). Per-image scores are returned so that the
bootstrap can resample images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou as _tv_box_iou


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU matrix of xyxy boxes (torchvision.ops.box_iou)."""
    a_t = torch.as_tensor(np.asarray(a, dtype=np.float32).reshape(-1, 4))
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4))
    return _tv_box_iou(a_t, b_t).numpy()


def matched_ious(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, int]:
    """IoU of each ground-truth box under the IoU-maximising one-to-one matching (0 if unmatched),
    and the number of predictions left unmatched (false positives)."""
    gt, pred = np.asarray(gt).reshape(-1, 4), np.asarray(pred).reshape(-1, 4)
    out = np.zeros(len(gt))
    if len(gt) == 0 or len(pred) == 0:
        return out, len(pred)
    iou = box_iou(gt, pred)
    rows, cols = linear_sum_assignment(-iou)
    out[rows] = iou[rows, cols]
    return out, len(pred) - len(cols)


def box_scores(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image box scores.

    - `matched_iou`: sum of Hungarian-matched IoUs / max(#gt, #pred), so both missed objects
      and surplus predictions cost.
    - `iou_gt_0.5`, `iou_gt_0.7`: fraction of the image's objects whose matched IoU exceeds it.
    - `best_match_iou`: the seed's score: each object's best IoU over all predictions,
      averaged — it does not penalise surplus or duplicate predictions.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth entries but {len(preds)} prediction entries")
    names = ("matched_iou", "iou_gt_0.5", "iou_gt_0.7", "best_match_iou")
    out = {k: np.full(len(gts), np.nan) for k in names}
    for i, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
        gt, pred = np.asarray(gt).reshape(-1, 4), np.asarray(pred).reshape(-1, 4)
        if len(gt) == 0:
            continue
        ious, _ = matched_ious(gt, pred)
        out["matched_iou"][i] = ious.sum() / max(len(gt), len(pred))
        out["iou_gt_0.5"][i] = np.mean(ious > 0.5)
        out["iou_gt_0.7"][i] = np.mean(ious > 0.7)
        out["best_match_iou"][i] = box_iou(gt, pred).max(axis=1).mean() if len(pred) else 0.0
    return out
