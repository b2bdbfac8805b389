"""`pooled-linear` — THE SEED PROTOCOL, kept so its artifact can be seen side by side.

All tokens are mean-pooled into one vector (which discards where each token was), then linear
heads predict K box slots (xyxy in [0, 1]), a presence score and a class per slot. Objects fill
the slots left to right (by box centre x). The heads are ridge regressions (squared loss, closed
form, λ on val); predictions are clipped to [0, 1] where the seed applied a sigmoid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stageprobe.metrics.detection import Detections
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.evaluation import evaluate_boxes, num_classes_of
from stageprobe.probes.training import RidgeSolver

SLOTS = 3


def pooled(data: ProbeData) -> torch.Tensor:
    """(N, D) mean over time and all tokens."""
    return data.features.float().mean(dim=(1, 2, 3))


def _slot_targets(data: ProbeData, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """presence (N, K), normalised boxes (N, K, 4), one-hot classes (N, K, C), objects ordered by x."""
    n = len(data)
    h, w = data.image_size
    presence = np.zeros((n, SLOTS), dtype=np.float32)
    boxes = np.zeros((n, SLOTS, 4), dtype=np.float32)
    classes = np.zeros((n, SLOTS, num_classes), dtype=np.float32)
    for i, t in enumerate(data.targets):
        b = np.asarray(t["boxes"], dtype=np.float32).reshape(-1, 4) / np.array([w, h, w, h], dtype=np.float32)
        order = np.argsort((b[:, 0] + b[:, 2]) / 2, kind="stable")[:SLOTS]
        labels = np.asarray(t["labels"]).ravel()
        for k, j in enumerate(order):
            presence[i, k] = 1
            boxes[i, k] = b[j]
            classes[i, k, labels[j]] = 1
    return presence, boxes, classes


@register_probe("pooled-linear", ["boxes"], "THE SEED PROTOCOL: mean over all tokens → linear → 3 box slots")
def fit_pooled_linear(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                      num_classes: int | None = None) -> ProbeResult:
    # Closed form: the seed is unused, kept for the uniform signature.
    del seed
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    x_tr, x_va = pooled(train), pooled(val)
    p_tr, b_tr, c_tr = (torch.from_numpy(a) for a in _slot_targets(train, c))
    p_va, b_va, c_va = (torch.from_numpy(a) for a in _slot_targets(val, c))
    history: dict[str, list[float]] = {}
    presence_map, h = RidgeSolver(x_tr).fit(p_tr, x_va, p_va)
    history.update({f"presence.{k}": v for k, v in h.items()})
    slot_maps = []
    for k in range(SLOTS):
        rows_tr, rows_va = p_tr[:, k] > 0, p_va[:, k] > 0
        if rows_tr.sum() < 2 or rows_va.sum() < 1:
            # Too few images with this many objects to fit the slot: reuse the previous slot's head.
            slot_maps.append(slot_maps[-1])
            continue
        y_tr = torch.cat([b_tr[rows_tr, k], c_tr[rows_tr, k]], 1)
        y_va = torch.cat([b_va[rows_va, k], c_va[rows_va, k]], 1)
        slot_map, h = RidgeSolver(x_tr[rows_tr]).fit(y_tr, x_va[rows_va], y_va)
        history.update({f"slot{k}.{name}": v for name, v in h.items()})
        slot_maps.append(slot_map)

    def predict(data: ProbeData) -> dict[str, Any]:
        x = pooled(data)
        presence = presence_map(x).numpy()
        out = np.stack([m(x).numpy() for m in slot_maps], 1)  # (N, K, 4 + C)
        h_px, w_px = data.image_size
        scale = np.array([w_px, h_px, w_px, h_px], dtype=np.float32)
        detections = []
        for i in range(len(data)):
            keep = presence[i] > 0.5
            keep[np.argmax(presence[i])] = True
            boxes = np.clip(out[i, keep, :4], 0, 1)
            # A linear head can swap corners; order them so every box is valid xyxy.
            boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                                    np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
            detections.append(Detections(boxes * scale, np.clip(presence[i, keep], 0, 1),
                                         out[i, keep, 4:].argmax(1)))
        return {"detections": detections}

    predictions = predict(test)
    metrics, per_item, unavailable, evaluation = evaluate_boxes(test.targets, predictions["detections"], c)
    return ProbeResult("pooled-linear", task, metrics, per_item, predictions, history, unavailable,
                       evaluation, predict, config={"slots": SLOTS, "num_classes": c})
