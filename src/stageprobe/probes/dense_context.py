"""`dense-context` — the primary per-token box probe: a small MLP on each token and its 3×3
neighbourhood, still one prediction per token.

`dense-linear` is the low-capacity floor; on raw pixels it misses the targets at the 28-px grid,
because where an edge lies inside a cell is not a linear function of the cell's pixels, and a
corner cell of a circle does not contain the box edge it must report. This probe adds exactly
those two things and nothing global: tokens are standardised and reduced by a whitened PCA (fit on
train), then a 1×1 conv, a 3×3 conv over the token grid and a 1×1 conv output per token the same
targets as `dense-linear` (objectness, class map, in-cell edge offsets; see `targets.py`), decoded
into boxes by the same blob decoding with the threshold chosen on val. Its receptive field is the
3×3 neighbourhood; the token-shuffle control (tokens permuted within each object's cells) takes
away where inside an object each token sits; its capacity shows in the control task and the
selectivity reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.dense_linear import DensePredictor, box_probe_result, choose_threshold
from stageprobe.probes.evaluation import num_classes_of
from stageprobe.probes.targets import stack_dense_targets
from stageprobe.probes.tokens import PCAReducer, time_mean_tokens
from stageprobe.probes.training import Precision, default_device, fit_precision, seed_everything, train_module


class ContextHead(nn.Module):
    """1×1 conv → 3×3 conv → 1×1 conv on the (B, D, H, W) token grid: objectness logit,
    1 + C class logits and the 4 edge offsets (linear, clipped to [0, 1] when read) per token."""

    def __init__(self, in_dim: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Conv2d(in_dim, width, 1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.GELU(), nn.Conv2d(width, 1 + (1 + num_classes) + 4, 1))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.net(grid)


class ContextPredictor(DensePredictor):
    """`DensePredictor` whose maps come from the fitted `ContextHead` instead of linear heads."""

    def __init__(self, reducer: PCAReducer, head: ContextHead, threshold: float, device: torch.device,
                 precision: Precision | None = None) -> None:
        super().__init__({}, threshold)
        self.reducer, self.head, self.device = reducer, head, device
        #: the precision the head was trained in, which every prediction (val thresholds, test) uses too
        self.precision = precision or Precision()

    @torch.no_grad()
    def maps(self, data: ProbeData) -> dict[str, np.ndarray]:
        grid = self.precision.layout(reduced_grid(data, self.reducer))
        with self.precision.autocast():
            logits = torch.cat([self.head(grid[s:s + 64].to(self.device)).float().cpu()
                                for s in range(0, len(grid), 64)])
        logits = logits.permute(0, 2, 3, 1)
        return {"objectness": torch.sigmoid(logits[..., :1]).numpy(),
                "class": logits[..., 1:2 + self.head.num_classes].softmax(-1).numpy(),
                "offsets": logits[..., 2 + self.head.num_classes:].clamp(0, 1).numpy()}


def reduced_grid(data: ProbeData, reducer: PCAReducer) -> torch.Tensor:
    """(N, k, H, W) reduced tokens, time-averaged."""
    _, h, w = data.grid
    return reducer(time_mean_tokens(data)).reshape(len(data), h, w, -1).permute(0, 3, 1, 2).contiguous()


def dense_loss(logits: torch.Tensor, targets: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """BCE on objectness + CE on the class map + L1 on the edge offsets of tokens touching an object,
    equally weighted: raising objectness and offsets 4× over the class term collapsed the class head
    to one shape (measured), and a common factor is a no-op under Adam."""
    logits = logits.permute(0, 2, 3, 1)
    loss = F.binary_cross_entropy_with_logits(logits[..., 0], targets["objectness"])
    loss = loss + F.cross_entropy(logits[..., 1:2 + num_classes].reshape(-1, 1 + num_classes),
                                  targets["class_map"].reshape(-1))
    owned = targets["owner"] >= 0
    if owned.any():
        # A plain linear output: most targets are 0, and under a sigmoid the L1 drove the logits
        # so negative that its gradient vanished and every offset stuck at 0 (measured).
        offsets = logits[..., 2 + num_classes:][owned]
        loss = loss + (offsets - targets["offsets"][owned]).abs().mean()
    return loss


def _tensor_targets(data: ProbeData, device: torch.device) -> dict[str, torch.Tensor]:
    _, h, w = data.grid
    return {k: torch.as_tensor(v).to(device) for k, v in stack_dense_targets(data.targets, data.image_size,
                                                                              (h, w)).items()}


@register_probe("dense-context", ["boxes", "patch_class"],
                "per-token MLP over the token and its 3×3 neighbourhood: objectness, class, edge offsets "
                "→ boxes by the dense-linear blob decoding", mixed_precision=True)
def fit_dense_context(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                      num_classes: int | None = None, pca_dim: int = 128, pca_tokens: int = 32768, width: int = 64,
                      epochs: int = 30, patience: int = 8, batch_size: int = 16, lr: float = 3e-3) -> ProbeResult:
    """`pca_tokens` train tokens (a seeded sample) fit the whitened PCA to `pca_dim` components."""
    c = num_classes or num_classes_of(train.targets, val.targets, test.targets)
    device = default_device()
    precision = fit_precision(device)
    generator = seed_everything(seed)
    flat = time_mean_tokens(train).reshape(-1, train.features.shape[-1])
    reducer = PCAReducer(flat[torch.randperm(len(flat), generator=generator)[:pca_tokens]], pca_dim, whiten=True)
    x_tr, x_va = (precision.layout(reduced_grid(split, reducer).to(device)) for split in (train, val))
    y_tr, y_va = _tensor_targets(train, device), _tensor_targets(val, device)
    head = precision.layout(ContextHead(x_tr.shape[1], c, width).to(device))

    # the loss in float32 whatever the forward's precision (`.float()` is a no-op in float32)
    def batch_loss(module: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(device)
        return dense_loss(module(x_tr[idx]).float(), {k: v[idx] for k, v in y_tr.items()}, c)

    def val_loss(module: nn.Module) -> float:
        return float(dense_loss(module(x_va).float(), y_va, c))

    history = train_module(head, batch_loss, val_loss, len(train), seed, batch_size=batch_size,
                           max_epochs=epochs, patience=patience, lr=lr, anneal=True, precision=precision)
    predictor = ContextPredictor(reducer, head, float("nan"), device, precision)
    if task == "boxes":
        predictor.threshold, thresholds = choose_threshold(predictor, val)
        history.update(thresholds)
    class_maps = stack_dense_targets(test.targets, test.image_size, test.grid[1:])["class_map"]
    config = {"pca_dim": pca_dim, "width": width, "epochs_run": len(history["epoch"]), "lr": lr,
              "precision": precision.name}
    return box_probe_result("dense-context", task, predictor, test, class_maps, c, history, config)
