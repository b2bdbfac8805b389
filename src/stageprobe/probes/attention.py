"""`attention` — the DETR-style detection probe, sized to fit in ~20 s on one CPU thread.

Learned queries cross-attend to the tokens (each carrying its 2-D sinusoidal position); linear
heads give class logits (C classes + no-object) and a box; training matches queries to objects
with the Hungarian algorithm and minimises DETR's set loss. What keeps it cheap and quick to learn:

- Grids wider than `max_grid` tokens are read through a lossless 2×2 space-to-depth until they
  fit (a 32×32 Qwen pre-merge grid becomes 16×16 tokens of 4× the width, every value kept, no
  average): every cost below grows with the token count, and 28-px cells of a 448² image still
  resolve 30–80 px objects. Each folded token carries the position code of its 2×2 cell; the
  result config names the reader (`grid_reader`).
- Tokens are reduced to `pca_dim` by a randomized PCA of a seeded sample of train tokens (an exact
  eigendecomposition of 2352-dim pixel tokens alone took longer than the whole fit) and whitened,
  so one learning rate suits every stage whatever its feature scale.
- A per-token linear head predicts objectness and the box edges inside the cell (the targets of
  `dense-linear`, see `targets.py`) under an auxiliary loss, and its outputs are concatenated to
  the tokens before the key/value projection. Being linear it adds no capacity; its supervision
  tells the queries where objects and their edges are from the first epochs.
- Each query has a learned reference point (initialised on a grid) and a learned width: a
  Gaussian bias on the cross-attention logits keeps it local (as SMCA does for DETR), so each
  object is found by the queries near it.
- The box is read from the attention, not regressed from scratch: heads 1–4 give the left, top,
  right and bottom edge as the attention-weighted mean of the tokens' edge estimates (cell side +
  predicted in-cell offset), plus a small linear correction from the query. The class comes from
  a linear head on the query.
- Hungarian matching adds to DETR's class/L1/GIoU costs the distance from each query's reference
  point to the object centre, so which query answers an object is the same from epoch to epoch
  (as in anchor-based DETRs) and the no-object class is learnable early.
- AdamW at a high learning rate on a one-cycle schedule, one decoder layer; the epoch kept is the
  one with the best val mAP@0.5 (checked every `eval_every` epochs).

Every query is a ranked detection scored by its most likely object class, as COCO mAP expects.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from stageprobe.metrics.boxes import box_scores
from stageprobe.metrics.detection import CocoDetectionEval, Detections
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.evaluation import evaluate_boxes, ground_truth, num_classes_of
from stageprobe.probes.targets import stack_dense_targets
from stageprobe.probes.tokens import PCAReducer, sincos_2d, time_mean_tokens
from stageprobe.probes.training import default_device, seed_everything, small_model_threads

NO_OBJECT_WEIGHT = 0.1
L1_WEIGHT, GIOU_WEIGHT, CLASS_COST, REFERENCE_COST = 5.0, 2.0, 1.0, 5.0
# The box is the attention-weighted edge estimate plus this share of a linear correction.
BOX_CORRECTION = 0.1
EDGE_HEADS = 4
TOKEN_OUTPUTS = 5  # objectness logit + (left, top, right, bottom) in-cell edge offsets

Targets = list[tuple[torch.Tensor, torch.Tensor]]


class DecoderLayer(nn.Module):
    """Pre-norm query self-attention, cross-attention to the tokens, MLP; also returns the per-head
    cross-attention maps (B, heads, Q, T), which place each query's box."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, h: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norms[0](h)
        h = h + self.self_attn(z, z, z, need_weights=False)[0]
        attended, weights = self.cross_attn(self.norms[1](h), memory, memory, attn_mask=bias,
                                            average_attn_weights=False)
        h = h + attended
        return h + self.mlp(self.norms[2](h)), weights


class QueryDetector(nn.Module):
    """Local learned queries over position-coded tokens; boxes from edge-attention heads."""

    def __init__(self, in_dim: int, num_classes: int, grid: tuple[int, int], d_model: int, queries: int,
                 layers: int, heads: int, width: float) -> None:
        super().__init__()
        if heads < EDGE_HEADS:
            raise ValueError(f"the box is read from {EDGE_HEADS} attention heads; got heads={heads}")
        self.token_head = nn.Linear(in_dim, TOKEN_OUTPUTS)
        self.proj = nn.Linear(in_dim + TOKEN_OUTPUTS, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("pos", sincos_2d(*grid, d_model))
        self.pos_proj = nn.Linear(d_model, d_model)
        gh, gw = grid
        y, x = torch.meshgrid((torch.arange(gh).float() + 0.5) / gh, (torch.arange(gw).float() + 0.5) / gw,
                              indexing="ij")
        coords = torch.stack([x.reshape(-1), y.reshape(-1)], -1)
        self.register_buffer("coords", coords)
        half = torch.tensor([0.5 / gw, 0.5 / gh])
        # Each cell's own xyxy sides, and the direction an in-cell offset moves each side inwards.
        self.register_buffer("sides", torch.cat([coords - half, coords + half], -1))
        self.register_buffer("inward", torch.tensor([1 / gw, 1 / gh, -1 / gw, -1 / gh]))
        side = math.ceil(math.sqrt(queries))
        ref = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy"), -1)
        ref = (ref.reshape(-1, 2)[:queries].float() + 0.5) / side
        self.reference = nn.Parameter(torch.logit(ref))
        self.log_width = nn.Parameter(torch.full((queries,), math.log(width / side)))
        self.ref_proj = nn.Linear(2, d_model)
        self.queries = nn.Parameter(torch.randn(queries, d_model) * 0.1)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, num_classes + 1)
        self.box_head = nn.Linear(d_model, 4)

    def forward(self, tokens: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Per decoder layer (class logits (B, Q, C+1), cxcywh boxes (B, Q, 4)), and the per-token
        outputs (B, T, 5): objectness logit and in-cell edge offsets."""
        token_out = self.token_head(tokens)
        memory = self.norm(self.proj(torch.cat([tokens, token_out], -1))) + self.pos_proj(self.pos)
        ref = self.reference.sigmoid()
        bias = -torch.cdist(ref, self.coords).square() / (2 * self.log_width.exp().square()[:, None])
        edges = (self.sides + self.inward * token_out[..., 1:].clamp(0, 1)).transpose(1, 2)  # (B, 4, T)
        h = (self.queries + self.ref_proj(ref)).expand(len(tokens), -1, -1)
        outputs = []
        for layer in self.layers:
            h, weights = layer(h, memory, bias)
            z = self.out_norm(h)
            # Head k's attention-weighted mean of the tokens' k-th edge: (B, Q, 4) xyxy.
            xyxy = (weights[:, :EDGE_HEADS].transpose(1, 2) * edges[:, None]).sum(-1)
            xyxy = xyxy + BOX_CORRECTION * self.box_head(z)
            wh = (xyxy[..., 2:] - xyxy[..., :2]).clamp_min(1e-3)
            outputs.append((self.class_head(z), torch.cat([xyxy[..., :2] + wh / 2, wh], -1)))
        return outputs, token_out


def space_to_depth_tokens(data: ProbeData, max_grid: int) -> tuple[torch.Tensor, tuple[int, int], int]:
    """(N, H'·W', D') time-averaged tokens, each 2×2 block folded into one token of 4× the width
    (lossless space-to-depth) while the grid exceeds `max_grid`; also how many folds were made."""
    _, h, w = data.grid
    x = time_mean_tokens(data).reshape(len(data), h, w, -1).float()
    folds = 0
    while max(h, w) > max_grid and h % 2 == 0 and w % 2 == 0:
        x = F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        h, w, folds = h // 2, w // 2, folds + 1
    return x.reshape(len(data), h * w, -1), (h, w), folds


def _normalised_targets(data: ProbeData, device: torch.device) -> Targets:
    h, w = data.image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    out = []
    for t in data.targets:
        boxes = torch.as_tensor(np.asarray(t["boxes"], dtype=np.float32)).reshape(-1, 4) / scale
        out.append((torch.as_tensor(np.asarray(t["labels"])).long().reshape(-1).to(device),
                    box_convert(boxes, "xyxy", "cxcywh").to(device)))
    return out


def _match(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets,
           reference: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hungarian matching per image; the cost matrices of the whole batch are computed at once."""
    sizes = [len(labels) for labels, _ in targets]
    if not sum(sizes):
        return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) for _ in targets]
    labels = torch.cat([labels for labels, _ in targets])
    gt = torch.cat([g for _, g in targets])
    b_size, n_queries, n_cls = logits.shape
    flat = boxes.reshape(-1, 4)
    cost = (L1_WEIGHT * torch.cdist(flat, gt, p=1) - CLASS_COST * logits.reshape(-1, n_cls).softmax(-1)[:, labels]
            - GIOU_WEIGHT * generalized_box_iou(box_convert(flat, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    cost = cost.reshape(b_size, n_queries, -1) + REFERENCE_COST * torch.cdist(reference, gt[:, :2], p=1)
    cost = cost.cpu().numpy()
    out, start = [], 0
    for b, size in enumerate(sizes):
        out.append(linear_sum_assignment(cost[b, :, start:start + size]))
        start += size
    return out


def hungarian_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets,
                   reference: torch.Tensor) -> torch.Tensor:
    """DETR's set loss for (B, Q, C+1) logits and (B, Q, 4) cxcywh boxes: CE over all queries
    (no-object down-weighted) + L1 and GIoU over matched queries, averaged per image.
    `reference` (Q, 2) are the queries' reference points (a matching cost only)."""
    b_size, n_queries, n_cls = logits.shape
    with torch.no_grad():
        matches = _match(logits, boxes, targets, reference)
    weight = torch.ones(n_cls, device=logits.device)
    weight[-1] = NO_OBJECT_WEIGHT
    batch_idx = torch.cat([torch.full((len(rows),), b, dtype=torch.long) for b, (rows, _) in enumerate(matches)])
    query_idx = torch.cat([torch.as_tensor(rows, dtype=torch.long) for rows, _ in matches])
    cols = [torch.as_tensor(c, dtype=torch.long) for _, c in matches]
    cls_target = torch.full((b_size, n_queries), n_cls - 1, dtype=torch.long, device=logits.device)
    cls_target[batch_idx, query_idx] = torch.cat([targets[b][0][c] for b, c in enumerate(cols)])
    ce = F.cross_entropy(logits.reshape(-1, n_cls), cls_target.reshape(-1), weight=weight, reduction="none")
    # DETR normalises CE by the class weights; per image, so each image counts once.
    ce = (ce.reshape(b_size, n_queries).sum(1) / weight[cls_target].sum(1)).mean()
    if not len(batch_idx):
        return ce
    truth = torch.cat([targets[b][1][c] for b, c in enumerate(cols)])
    matched = boxes[batch_idx, query_idx]
    giou = torch.diag(generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy")))
    per_match = L1_WEIGHT * (matched - truth).abs().sum(1) + GIOU_WEIGHT * (1 - giou)
    per_image = torch.cat([torch.full((len(c),), 1.0 / max(len(c), 1)) for c in cols]).to(logits.device)
    return ce + (per_match * per_image).sum() / b_size


def token_loss(token_out: torch.Tensor, objectness: torch.Tensor, offsets: torch.Tensor,
               owned: torch.Tensor) -> torch.Tensor:
    """Auxiliary per-token loss: BCE on the covered share + L1 on the in-cell edge offsets of the
    tokens that touch an object."""
    loss = F.binary_cross_entropy_with_logits(token_out[..., 0], objectness)
    if owned.any():
        loss = loss + (token_out[..., 1:][owned] - offsets[owned]).abs().mean()
    return loss


def _detections(model: QueryDetector, tokens: torch.Tensor, image_size: tuple[int, int]) -> list[Detections]:
    """Every query of the last layer as one detection, scored by its most likely object class."""
    outputs, _ = model(tokens)
    logits, boxes = outputs[-1]
    scores, labels = logits.softmax(-1)[..., :-1].cpu().max(-1)
    h, w = image_size
    xyxy = box_convert(boxes.cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
    return [Detections(xyxy[i].numpy().astype(np.float64), scores[i].numpy(), labels[i].numpy())
            for i in range(len(tokens))]


def _map_50(targets: list[dict[str, Any]], detections: list[Detections], num_classes: int) -> float:
    value = CocoDetectionEval([ground_truth(t) for t in targets], detections, num_classes).summary()["map_50"]
    return 0.0 if np.isnan(value) else value


def _train_epoch(model: QueryDetector, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, z_tr: torch.Tensor, y_tr: Targets,
                 dense: dict[str, torch.Tensor], batches: Sequence[torch.Tensor]) -> list[float]:
    """One pass over the training images in `batches` (index tensors); the loss of each step."""
    model.train()
    losses = []
    for idx in batches:
        outputs, token_out = model(z_tr[idx.to(z_tr.device)])
        batch_targets = [y_tr[i] for i in idx.tolist()]
        reference = model.reference.detach().sigmoid()
        # DETR's auxiliary losses: every decoder layer's output is matched and scored.
        loss = sum(hungarian_loss(logits, boxes, batch_targets, reference) for logits, boxes in outputs)
        loss = loss + token_loss(token_out, dense["objectness"][idx], dense["offsets"][idx],
                                 dense["owner"][idx] >= 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


@register_probe("attention", ["boxes"], "DETR-style: learned queries cross-attend to tokens + 2-D position, "
                "linear class/box heads, Hungarian matching with no-object class")
def fit_attention(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                  num_classes: int | None = None, d_model: int = 64, queries: int = 16, layers: int = 1,
                  heads: int = 4, width: float = 0.5, pca_dim: int = 32, pca_tokens: int = 16384,
                  max_grid: int = 16, epochs: int = 25, batch_size: int = 32, lr: float = 1e-2,
                  eval_every: int = 5) -> ProbeResult:
    """`width` is the initial Gaussian attention width in query-grid cells; `pca_tokens` the train
    tokens sampled for the PCA."""
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    device = default_device()
    generator = seed_everything(seed)
    with small_model_threads(device):
        x_tr, grid, folds = space_to_depth_tokens(train, max_grid)
        flat = x_tr.reshape(-1, x_tr.shape[-1])
        reducer = PCAReducer(flat[torch.randperm(len(flat), generator=generator)[:pca_tokens]], pca_dim, whiten=True)

        def reduce(data: ProbeData) -> torch.Tensor:
            return reducer(space_to_depth_tokens(data, max_grid)[0]).to(device)

        z_tr, z_va = reducer(x_tr).to(device), reduce(val)
        y_tr = _normalised_targets(train, device)
        dense = {k: torch.as_tensor(v).reshape(len(train), grid[0] * grid[1], *v.shape[3:]).to(device)
                 for k, v in stack_dense_targets(train.targets, train.image_size, grid).items()}
        model = QueryDetector(z_tr.shape[-1], c, grid, d_model, queries, layers, heads, width).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * math.ceil(len(train) / batch_size)
        # warm up over a tenth of the steps, but at least two and at most three quarters: OneCycleLR divides
        # by the warm-up's length minus one step and by the rest's, so under 20 steps (10 quick epochs of
        # ≤ 32 images) a tenth would be zero, and at 2 steps (one epoch) all of them would leave no rest
        warm_up = min(max(0.1, 2 / steps), 0.75)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=warm_up)
        history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_map_50": []}
        best_map, best_state = -1.0, copy.deepcopy(model.state_dict())
        for epoch in range(epochs):
            losses = _train_epoch(model, optimizer, schedule, z_tr, y_tr, dense,
                                  torch.randperm(len(train), generator=generator).split(batch_size))
            if (epoch + 1) % eval_every and epoch + 1 != epochs:
                continue
            model.eval()
            with torch.no_grad():
                current = _map_50(val.targets, _detections(model, z_va, val.image_size), c)
            history["epoch"].append(epoch)
            history["train_loss"].append(float(np.mean(losses)))
            history["val_map_50"].append(current)
            if current > best_map:
                best_map, best_state = current, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        model.eval()

    @torch.no_grad()
    def predict(data: ProbeData) -> dict[str, Any]:
        detections = _detections(model, reduce(data), data.image_size)
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
              "width": width, "pca_dim": pca_dim, "grid": list(grid), "epochs": epochs, "lr": lr,
              "best_val_map_50": best_map,
              "grid_reader": f"space-to-depth 2×2, {folds}× (lossless)" if folds else "native grid"}
    return ProbeResult("attention", task, metrics, per_item, predictions, history, unavailable, evaluation,
                       predict, config=config)
