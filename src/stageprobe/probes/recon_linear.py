"""`recon-linear` — the primary reconstruction probe: a closed-form linear map from each token to
its own cell's pixels.

Token [r, c] of a stage with stride s predicts the s×s×3 pixels of its cell at the input
resolution; the cells are put back side by side (depth-to-space). The map is ridge regression at
the stage's full width on standardised features (no PCA, no random projection: any fixed-size
bottleneck gives a 28-px token 4× less bandwidth per pixel than a 14-px one and invents a drop at
the merger), with λ chosen on val. On the pixel baseline the answer is the identity, so this probe
is exact there; on a model stage it measures what a linear read-out of each token keeps of its
own patch. Fits in seconds: one eigendecomposition per stage, D×D or — where a token is wider than
the training rows (SmolVLM's 64-px cells are 12,288 values) — the same ridge in its dual, n×n.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stageprobe.metrics.reconstruction import LpipsMetric, edge_f1_config, reconstruction_scores
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.dense_linear import token_matrix
from stageprobe.probes.training import LinearMap, RidgeSolver, negative_mse

# Down to 1e-9: on raw pixels the best map is the identity, which needs almost no shrinkage.
RECON_LAMBDAS = tuple(10.0**k for k in range(-9, 1))
LAMBDA_COLUMNS = 192


def cell_size(data: ProbeData) -> tuple[int, int]:
    """Pixels per token cell (rows, columns), rounded up when the input is not a whole number of cells."""
    _, h, w = data.grid
    return math.ceil(data.image_size[0] / h), math.ceil(data.image_size[1] / w)


def input_images(data: ProbeData) -> np.ndarray:
    """(N, H, W, 3) float32 targets covering the token grid exactly (area-resampled if needed)."""
    if data.images is None:
        raise ValueError("reconstruction needs ProbeData.images (N, h, w, 3) in [0, 1]")
    _, h, w = data.grid
    sy, sx = cell_size(data)
    images = np.asarray(data.images, dtype=np.float32)
    if images.shape[1:3] == (h * sy, w * sx):
        return images
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    return F.interpolate(tensor, size=(h * sy, w * sx), mode="area").permute(0, 2, 3, 1).numpy()


def cell_pixels(data: ProbeData) -> torch.Tensor:
    """(N·H·W, sy·sx·3) each token's own cell pixels, raster order (space-to-depth)."""
    _, h, w = data.grid
    sy, sx = cell_size(data)
    images = torch.from_numpy(input_images(data))
    cells = images.reshape(len(data), h, sy, w, sx, 3).permute(0, 1, 3, 2, 4, 5)
    return cells.reshape(len(data) * h * w, sy * sx * 3)


def cells_to_images(cells: torch.Tensor, n: int, grid: tuple[int, int], cell: tuple[int, int]) -> np.ndarray:
    """Inverse of `cell_pixels`: (N·H·W, sy·sx·3) → (N, H·sy, W·sx, 3) clipped to [0, 1]."""
    (h, w), (sy, sx) = grid, cell
    images = cells.reshape(n, h, w, sy, sx, 3).permute(0, 1, 3, 2, 4, 5).reshape(n, h * sy, w * sx, 3)
    return images.clamp(0, 1).numpy().astype(np.float32)


class CellReconstructor:
    """The fitted map; `__call__` gives reconstructions at the input resolution."""

    def __init__(self, head: LinearMap) -> None:
        self.head = head

    def __call__(self, data: ProbeData) -> dict[str, Any]:
        cells = self.head(token_matrix(data))
        return {"reconstructions": cells_to_images(cells, len(data), data.grid[1:], cell_size(data))}


@register_probe("recon-linear", ["reconstruction"],
                "closed-form ridge, full width: each token → its own cell's pixels at input resolution")
def fit_recon_linear(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                     lpips_metric: LpipsMetric | None = None) -> ProbeResult:
    """`lpips_metric` overrides the default LPIPS (e.g. a randomly initialised one in tests)."""
    x_tr, x_va = token_matrix(train), token_matrix(val)
    y_tr, y_va = cell_pixels(train), cell_pixels(val)
    solver = RidgeSolver(x_tr, max_dim=x_tr.shape[1], seed=seed, dtype=torch.float64)
    # λ is chosen on a seeded sample of output pixels (an unbiased estimate of the val MSE at a
    # fraction of the cost of the full path), then the map is solved once for every pixel.
    columns = torch.randperm(y_tr.shape[1], generator=torch.Generator().manual_seed(seed))[:LAMBDA_COLUMNS]
    _, history = solver.fit(y_tr[:, columns], x_va, y_va[:, columns], negative_mse, RECON_LAMBDAS)
    chosen = history["lambda"][int(np.argmax(history["val_score"]))]
    head, _ = solver.fit(y_tr, x_va, y_va, negative_mse, (chosen,))
    predictor = CellReconstructor(head)
    predictions = predictor(test)
    references = input_images(test)
    per_item, unavailable = reconstruction_scores(references, predictions["reconstructions"], lpips_metric)
    metrics = {k: float(np.nanmean(v)) for k, v in per_item.items()}
    config = {"cell_px": list(cell_size(test)), "width": int(x_tr.shape[1]), "lambda": chosen,
              "edge_f1": edge_f1_config(per_item["edge_f1"], references.shape[1:3])}
    return ProbeResult("recon-linear", task, metrics, per_item, predictions, history, unavailable,
                       predictor=predictor, config=config)
