"""`attention` — the DETR-style detection probe, sized to fit in seconds on one CPU thread.

Design (each choice is what made a CPU fit take ~20 s instead of ~12 min):

- Grids wider than `max_grid` tokens are 2×2 average-pooled until they fit (a 32×32 Qwen grid
  becomes 16×16): the cost of everything below grows with the token count, and 16×16 tokens of a
  448² image (28 px each) still resolve 30–80 px objects. The queries still read positions: every
  pooled token keeps the 2-D sinusoidal code of its (pooled) grid cell.
- Tokens are PCA-reduced (`pca_dim`) on a seeded sample of train tokens, once, and whitened, so
  one learning rate suits every stage whatever its feature scale.
- A per-token linear objectness head (trained on "token centre inside an object box") feeds its
  logit into the keys/values. It is itself a linear probe of the token and tells the queries where
  the objects are from the first epoch, which DETR otherwise learns slowly.
- `queries` learned queries, each with a learned reference point initialised on a grid (its box
  centre is predicted relative to it), pass through `layers` small decoder layers (query
  self-attention, cross-attention to the tokens, MLP); shared linear heads give class logits
  (C classes + no-object) and a sigmoid cxcywh box after every layer.
- Training matches queries to objects with the Hungarian algorithm (class, L1 and GIoU costs, as in
  DETR), on every layer's output (DETR's auxiliary losses), and minimises CE (no-object
  down-weighted) + L1 + GIoU with AdamW at a high learning rate on a cosine schedule; the epoch
  kept is the one with the best val mAP@0.5.
"""

from __future__ import annotations

import copy
import math
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
from stageprobe.probes.evaluation import evaluate_boxes, ground_truth, num_classes_of
from stageprobe.probes.tokens import PCAReducer, sincos_2d, time_mean_tokens
from stageprobe.probes.training import default_device, seed_everything, small_model_threads

NO_OBJECT_WEIGHT = 0.1
L1_WEIGHT, GIOU_WEIGHT, CLASS_COST = 5.0, 2.0, 1.0
OBJECTNESS_WEIGHT = 1.0
REF_COST = 5.0

Targets = list[tuple[torch.Tensor, torch.Tensor]]


class DecoderLayer(nn.Module):
    """Pre-norm query self-attention, cross-attention to the tokens, MLP; also returns the
    head-averaged cross-attention map, which places each query's box."""

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
    """Learned queries with learned reference points cross-attending to whitened tokens + objectness."""

    def __init__(self, in_dim: int, num_classes: int, grid: tuple[int, int], d_model: int, queries: int,
                 layers: int, heads: int, objectness: bool, local: bool = True, softargmax: bool = True,
                 width: float = 1.0) -> None:
        super().__init__()
        # Per-token linear heads: objectness, class (background + C), edge offsets (4).
        self.token_dim = 1 + num_classes + 1 + 4
        self.token_head = nn.Linear(in_dim, self.token_dim) if objectness else None
        self.proj = nn.Linear(in_dim + (self.token_dim if objectness else 0), d_model)
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("pos", sincos_2d(*grid, d_model))
        gh, gw = grid
        y, x = torch.meshgrid((torch.arange(gh).float() + 0.5) / gh, (torch.arange(gw).float() + 0.5) / gw,
                              indexing="ij")
        self.register_buffer("coords", torch.stack([x.reshape(-1), y.reshape(-1)], -1))
        half = torch.tensor([0.5 / gw, 0.5 / gh])
        self.register_buffer("sides", torch.cat([self.coords - half, self.coords + half], -1))
        self.register_buffer("inward", torch.tensor([1 / gw, 1 / gh, -1 / gw, -1 / gh]))
        self.pos_proj = nn.Linear(d_model, d_model)
        side = math.ceil(math.sqrt(queries))
        ref = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy"), -1)
        ref = (ref.reshape(-1, 2)[:queries].float() + 0.5) / side
        self.reference = nn.Parameter(torch.logit(ref))
        self.log_width = nn.Parameter(torch.full((queries,), math.log(width / side))) if local else None
        self.softargmax = softargmax
        self.ref_proj = nn.Linear(2, d_model)
        self.queries = nn.Parameter(torch.randn(queries, d_model) * 0.1)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, num_classes + 1)
        self.box_head = nn.Linear(d_model, 4)

    def forward(self, tokens: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
        """Per decoder layer (class logits (B, Q, C+1), cxcywh boxes (B, Q, 4)), and the per-token
        objectness logits (B, T) (None without the objectness head)."""
        obj = None
        if self.token_head is not None:
            obj = self.token_head(tokens)
            tokens = torch.cat([tokens, obj], -1)
        memory = self.norm(self.proj(tokens)) + self.pos_proj(self.pos)
        ref = self.reference.sigmoid()
        bias = torch.zeros(len(ref), len(self.coords), device=tokens.device)
        if self.log_width is not None:
            bias = -torch.cdist(ref, self.coords).square() / (2 * self.log_width.exp().square()[:, None])
        h = (self.queries + self.ref_proj(ref)).expand(len(tokens), -1, -1)
        outputs = []
        for layer in self.layers:
            h, weights = layer(h, memory, bias)
            z = self.out_norm(h)
            raw = self.box_head(z)
            if self.softargmax == "edges":
                edges = self.sides + self.inward * obj[..., -4:].clamp(0, 1)  # (B, T, 4) xyxy edge per token
                xyxy = (weights[:, :4].transpose(1, 2) * edges.transpose(1, 2)[:, None]).sum(-1) + 0.1 * raw
                wh = (xyxy[..., 2:] - xyxy[..., :2]).clamp_min(1e-3)
                box = torch.cat([xyxy[..., :2] + wh / 2, wh], -1)
            elif self.softargmax:
                centre = weights.mean(1) @ self.coords + raw[..., :2]
                box = torch.cat([centre, raw[..., 2:].sigmoid()], -1)
            else:
                centre = (raw[..., :2] + self.reference).sigmoid()
                box = torch.cat([centre, raw[..., 2:].sigmoid()], -1)
            outputs.append((self.class_head(z), box))
        return outputs, obj


def pooled_tokens(data: ProbeData, max_grid: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N, H'·W', D) time-averaged tokens, 2×2 average-pooled while the grid exceeds `max_grid`."""
    _, h, w = data.grid
    x = time_mean_tokens(data).reshape(len(data), h, w, -1)
    while max(h, w) > max_grid and h % 2 == 0 and w % 2 == 0:
        x = F.avg_pool2d(x.permute(0, 3, 1, 2).float(), 2).permute(0, 2, 3, 1)
        h, w = h // 2, w // 2
    return x.reshape(len(data), h * w, -1), (h, w)


def _normalised_targets(data: ProbeData, device: torch.device) -> Targets:
    h, w = data.image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    out = []
    for t in data.targets:
        boxes = torch.as_tensor(np.asarray(t["boxes"], dtype=np.float32)).reshape(-1, 4) / scale
        out.append((torch.as_tensor(np.asarray(t["labels"])).long().to(device),
                    box_convert(boxes, "xyxy", "cxcywh").to(device)))
    return out


def objectness_targets(targets: Targets, grid: tuple[int, int]) -> torch.Tensor:
    """(N, H·W) 1 where the token's centre lies inside an object box (normalised cxcywh boxes)."""
    gh, gw = grid
    rows = (torch.arange(gh).float() + 0.5) / gh
    cols = (torch.arange(gw).float() + 0.5) / gw
    y, x = (v.reshape(-1) for v in torch.meshgrid(rows, cols, indexing="ij"))
    out = torch.zeros(len(targets), gh * gw)
    for i, (_, boxes) in enumerate(targets):
        xyxy = box_convert(boxes.cpu(), "cxcywh", "xyxy")
        inside = ((x[:, None] >= xyxy[:, 0]) & (x[:, None] <= xyxy[:, 2])
                  & (y[:, None] >= xyxy[:, 1]) & (y[:, None] <= xyxy[:, 3]))
        out[i] = inside.any(1).float()
    return out


def _match(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets, reference: torch.Tensor | None = None
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hungarian matching per image; the cost matrices of the whole batch are computed at once (DETR)."""
    sizes = [len(labels) for labels, _ in targets]
    if not sum(sizes):
        return [(np.zeros(0, int), np.zeros(0, int)) for _ in targets]
    labels = torch.cat([labels for labels, _ in targets])
    gt = torch.cat([g for _, g in targets])
    b_size, n_queries = logits.shape[:2]
    flat_boxes = boxes.reshape(-1, 4)
    cost = (L1_WEIGHT * torch.cdist(flat_boxes, gt, p=1) - CLASS_COST * logits.reshape(-1, logits.shape[-1])
            .softmax(-1)[:, labels] - GIOU_WEIGHT * generalized_box_iou(box_convert(flat_boxes, "cxcywh", "xyxy"),
                                                                         box_convert(gt, "cxcywh", "xyxy")))
    cost = cost.reshape(b_size, n_queries, -1)
    if reference is not None:
        cost = cost + REF_COST * torch.cdist(reference, gt[:, :2], p=1)
    cost = cost.cpu().numpy()
    out, start = [], 0
    for b, size in enumerate(sizes):
        out.append(linear_sum_assignment(cost[b, :, start:start + size]))
        start += size
    return out


def hungarian_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: Targets,
                   reference: torch.Tensor | None = None) -> torch.Tensor:
    """DETR's set loss for (B, Q, C+1) logits and (B, Q, 4) cxcywh boxes: CE over all queries
    (no-object down-weighted) + L1 and GIoU over matched queries, averaged per image."""
    b_size, n_queries, n_cls = logits.shape
    with torch.no_grad():
        matches = _match(logits, boxes, targets, reference)
    weight = torch.ones(n_cls, device=logits.device)
    weight[-1] = NO_OBJECT_WEIGHT
    cls_target = torch.full((b_size, n_queries), n_cls - 1, dtype=torch.long, device=logits.device)
    batch_idx = torch.cat([torch.full((len(rows),), b, dtype=torch.long) for b, (rows, _) in enumerate(matches)])
    query_idx = torch.cat([torch.as_tensor(rows, dtype=torch.long) for rows, _ in matches])
    truth = torch.cat([targets[b][1][cols] for b, (_, cols) in enumerate(matches)])
    cls_target[batch_idx, query_idx] = torch.cat([targets[b][0][cols] for b, (_, cols) in enumerate(matches)])
    ce = F.cross_entropy(logits.reshape(-1, n_cls), cls_target.reshape(-1), weight=weight, reduction="none")
    # DETR normalises CE by the class weights; per image, so each image counts once.
    ce = (ce.reshape(b_size, n_queries).sum(1) / weight[cls_target].sum(1)).mean()
    if not len(truth):
        return ce
    matched = boxes[batch_idx, query_idx]
    giou = torch.diag(generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy")))
    per_match = L1_WEIGHT * (matched - truth).abs().sum(1) + GIOU_WEIGHT * (1 - giou)
    per_image = torch.tensor([1.0 / len(targets[b][0]) for b, (rows, _) in enumerate(matches) for _ in rows])
    return ce + (per_match * per_image.to(logits.device)).sum() / b_size


def _detections(model: QueryDetector, tokens: torch.Tensor, image_size: tuple[int, int]) -> list[Detections]:
    """Every query of the last layer as one detection, scored by its most likely object class."""
    outputs, _ = model(tokens)
    logits, boxes = outputs[-1]
    prob = logits.softmax(-1)[..., :-1].cpu()
    h, w = image_size
    xyxy = box_convert(boxes.cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
    scores, labels = prob.max(-1)
    return [Detections(xyxy[i].numpy().astype(np.float64), scores[i].numpy(), labels[i].numpy())
            for i in range(len(tokens))]


def _map_50(targets: list[dict[str, Any]], detections: list[Detections], num_classes: int) -> float:
    from stageprobe.metrics.detection import CocoDetectionEval

    value = CocoDetectionEval([ground_truth(t) for t in targets], detections, num_classes).summary()["map_50"]
    return 0.0 if np.isnan(value) else value


@register_probe("attention", ["boxes"], "DETR-style: learned queries cross-attend to tokens + 2-D position, "
                "linear class/box heads, Hungarian matching with no-object class")
def fit_attention(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                  num_classes: int | None = None, d_model: int = 64, queries: int = 8, layers: int = 2,
                  heads: int = 4, pca_dim: int = 64, pca_tokens: int = 8192, max_grid: int = 16,
                  objectness: bool = True, epochs: int = 60, batch_size: int = 32, lr: float = 3e-3,
                  eval_every: int = 5) -> ProbeResult:
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    device = default_device()
    generator = seed_everything(seed)
    x_tr, grid = pooled_tokens(train, max_grid)
    # PCA on a seeded sample of train tokens: the top directions are stable from a few thousand
    # tokens, and the Gram/SVD of all of them cost more than the whole training.
    sample = torch.randperm(x_tr.shape[0] * x_tr.shape[1], generator=generator)[:pca_tokens]
    reducer = PCAReducer(x_tr.reshape(-1, x_tr.shape[-1])[sample], pca_dim)
    z_tr = reducer(x_tr)
    scale = z_tr.reshape(-1, z_tr.shape[-1]).std(0).clamp_min(1e-6)

    def reduce(data: ProbeData) -> torch.Tensor:
        return (reducer(pooled_tokens(data, max_grid)[0]) / scale).to(device)

    z_tr = (z_tr / scale).to(device)
    z_va = reduce(val)
    y_tr = _normalised_targets(train, device)
    obj_tr = objectness_targets(y_tr, grid).to(device)
    model = QueryDetector(z_tr.shape[-1], c, grid, d_model, queries, layers, heads, objectness).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_map_50": []}
    best_map, best_state = -1.0, copy.deepcopy(model.state_dict())
    with small_model_threads(device):
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            losses = []
            for s in range(0, len(train), batch_size):
                idx = order[s:s + batch_size]
                outputs, obj = model(z_tr[idx.to(device)])
                batch_targets = [y_tr[i] for i in idx.tolist()]
                loss = sum(hungarian_loss(logits, boxes, batch_targets) for logits, boxes in outputs)
                if obj is not None:
                    loss = loss + OBJECTNESS_WEIGHT * F.binary_cross_entropy_with_logits(obj, obj_tr[idx.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
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
              "pca_dim": pca_dim, "grid": list(grid), "objectness": objectness, "epochs": epochs, "lr": lr,
              "best_val_map_50": best_map}
    return ProbeResult("attention", task, metrics, per_item, predictions, history, unavailable, evaluation,
                       predict, config=config)
