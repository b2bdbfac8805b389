"""`attention` — the DETR-style detection probe.

Tokens (PCA-reduced on train, see `tokens.PCAReducer`) are projected to `d_model` and given a
fixed 2-D sinusoidal position code; `queries` learned queries pass through `layers` small
transformer-decoder layers (query self-attention, cross-attention to the tokens, MLP) and
linear heads give class logits (C classes + no-object) and a box (sigmoid cx, cy, w, h).
Training matches queries to objects with the Hungarian algorithm (class, L1 and GIoU costs, as in
DETR) and minimises CE (no-object down-weighted) + L1 + GIoU; early stopping on the val loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from stageprobe.metrics.boxes import box_scores
from stageprobe.metrics.detection import Detections
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.evaluation import evaluate_boxes, num_classes_of
from stageprobe.probes.tokens import PCAReducer, sincos_2d, time_mean_tokens
from stageprobe.probes.training import default_device, seed_everything, train_module

NO_OBJECT_WEIGHT = 0.1
L1_WEIGHT, GIOU_WEIGHT, CLASS_COST = 5.0, 2.0, 1.0


class QueryDetector(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, grid: tuple[int, int], d_model: int, queries: int,
                 layers: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("pos", sincos_2d(*grid, d_model))
        self.pos_proj = nn.Linear(d_model, d_model)
        self.queries = nn.Parameter(torch.randn(queries, d_model) * 0.1)
        layer = nn.TransformerDecoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.class_head = nn.Linear(d_model, num_classes + 1)
        self.box_head = nn.Linear(d_model, 4)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.norm(self.proj(tokens)) + self.pos_proj(self.pos)
        q = self.queries.expand(len(tokens), -1, -1)
        h = self.decoder(q, memory)
        return self.class_head(h), self.box_head(h).sigmoid()


def _normalised_targets(data: ProbeData, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    h, w = data.image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    out = []
    for t in data.targets:
        boxes = torch.as_tensor(np.asarray(t["boxes"], dtype=np.float32)).reshape(-1, 4) / scale
        out.append((torch.as_tensor(np.asarray(t["labels"])).long().to(device),
                    box_convert(boxes, "xyxy", "cxcywh").to(device)))
    return out


def hungarian_loss(logits: torch.Tensor, boxes: torch.Tensor,
                   targets: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean over images of DETR's set loss for (B, Q, C+1) logits and (B, Q, 4) cxcywh boxes."""
    num_classes = logits.shape[-1] - 1
    weight = torch.ones(num_classes + 1, device=logits.device)
    weight[-1] = NO_OBJECT_WEIGHT
    losses = []
    for b, (labels, gt) in enumerate(targets):
        cls_target = torch.full((logits.shape[1],), num_classes, dtype=torch.long, device=logits.device)
        box_loss = logits.new_zeros(())
        if len(labels):
            with torch.no_grad():
                prob = logits[b].softmax(-1)
                pred_xyxy = box_convert(boxes[b], "cxcywh", "xyxy")
                gt_xyxy = box_convert(gt, "cxcywh", "xyxy")
                cost = (L1_WEIGHT * torch.cdist(boxes[b], gt, p=1) - CLASS_COST * prob[:, labels]
                        - GIOU_WEIGHT * generalized_box_iou(pred_xyxy, gt_xyxy))
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            rows_t = torch.as_tensor(rows, device=logits.device)
            cols_t = torch.as_tensor(cols, device=logits.device)
            cls_target[rows_t] = labels[cols_t]
            matched, truth = boxes[b, rows_t], gt[cols_t]
            giou = torch.diag(generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"),
                                                  box_convert(truth, "cxcywh", "xyxy")))
            box_loss = (L1_WEIGHT * F.l1_loss(matched, truth, reduction="sum")
                        + GIOU_WEIGHT * (1 - giou).sum()) / len(labels)
        losses.append(F.cross_entropy(logits[b], cls_target, weight=weight) + box_loss)
    return torch.stack(losses).mean()


@register_probe("attention", ["boxes"], "DETR-style: learned queries cross-attend to tokens + 2-D position, "
                "linear class/box heads, Hungarian matching with no-object class")
def fit_attention(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                  num_classes: int | None = None, d_model: int = 128, queries: int = 8, layers: int = 2,
                  heads: int = 4, pca_dim: int = 256, epochs: int = 150, patience: int = 20,
                  batch_size: int = 32, lr: float = 5e-4) -> ProbeResult:
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    device = default_device()
    seed_everything(seed)
    reducer = PCAReducer(time_mean_tokens(train), pca_dim)
    x_tr = reducer(time_mean_tokens(train)).to(device)
    x_va = reducer(time_mean_tokens(val)).to(device)
    y_tr, y_va = _normalised_targets(train, device), _normalised_targets(val, device)
    _, gh, gw = train.grid
    model = QueryDetector(x_tr.shape[-1], c, (gh, gw), d_model, queries, layers, heads).to(device)

    def batch_loss(module: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        logits, boxes = module(x_tr[idx.to(device)])
        return hungarian_loss(logits, boxes, [y_tr[i] for i in idx.tolist()])

    def val_loss(module: nn.Module) -> float:
        logits, boxes = module(x_va)
        return float(hungarian_loss(logits, boxes, y_va))

    history = train_module(model, batch_loss, val_loss, len(train), seed, batch_size=batch_size,
                           max_epochs=epochs, patience=patience, lr=lr)

    @torch.no_grad()
    def predict(data: ProbeData) -> dict[str, Any]:
        logits, boxes = model(reducer(time_mean_tokens(data)).to(device))
        prob = logits.softmax(-1)[..., :-1].cpu()
        h, w = data.image_size
        xyxy = box_convert(boxes.cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
        scores, labels = prob.max(-1)
        detections = [Detections(xyxy[i].numpy().astype(np.float64), scores[i].numpy(), labels[i].numpy())
                      for i in range(len(data))]
        # Every query is a ranked detection for mAP; the box scores use the confident ones only.
        confident = [Detections(d.boxes[d.scores > 0.5], d.scores[d.scores > 0.5], d.labels[d.scores > 0.5])
                     for d in detections]
        return {"detections": detections, "confident_detections": confident}

    predictions = predict(test)
    metrics, per_item, unavailable, evaluation = evaluate_boxes(test.targets, predictions["detections"], c)
    confident = box_scores([np.asarray(t["boxes"]) for t in test.targets],
                           [d.boxes for d in predictions["confident_detections"]])
    per_item.update(confident)
    metrics.update({name: float(np.nanmean(v)) for name, v in confident.items()})
    config = {"num_classes": c, "d_model": d_model, "queries": queries, "layers": layers, "heads": heads,
              "pca_dim": pca_dim, "epochs_run": len(history["epoch"]), "lr": lr}
    return ProbeResult("attention", task, metrics, per_item, predictions, history, unavailable, evaluation,
                       predict, config=config)
