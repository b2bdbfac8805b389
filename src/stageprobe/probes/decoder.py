"""Reconstruction of the image from a stage's features.

- `decoder`: the nonlinear variant of `recon-linear`. A small stride-aware convolutional decoder
  reads the token grid (standardised, then PCA-reduced on train to a width proportional to the
  pixels a token covers, `token_components`): a 1×1 projection and a 3×3 conv on the grid, then
  each token is decoded into its own s×s output patch (depth-to-space, s = ⌈output / grid
  side⌉, so 14 px and 28 px grids share one design), and a narrow 3×3 head at full resolution
  joins the patches. Trained with L1 (plus an optional LPIPS perceptual term when the LPIPS
  weights are present).
- `decoder-pooled` — THE SEED PROTOCOL: the mean-pooled vector → a 7×7×C seed → ×2 upsampling
  conv stages to the output size → the same head. It cannot place anything, which is its point.
Scores on the test split at the input resolution (the output is resized up to it): SSIM, PSNR,
edge F1, `gram_gabor` and LPIPS (unavailable, with the reason, when its AlexNet weights are
absent), each also per test image.
`predictions["reconstructions"]` is (N, output_size, output_size, 3) float32 in [0, 1], test order.
Both train in seconds to tens of seconds on one CPU thread for ~50 images at the default 112 px.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stageprobe.metrics.reconstruction import (
    LpipsMetric,
    edge_f1_config,
    lpips_weights_reason,
    reconstruction_scores,
)
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.recon_linear import input_images
from stageprobe.probes.tokens import PCAReducer, time_mean_grid
from stageprobe.probes.training import default_device, fit_precision, seed_everything, train_module

SEED_GRID = 7
# PCA components per token pixel: 64 for a 14-px token, 256 for a 28-px one — the same bandwidth
# per pixel at every stride (a fixed 64 gave merged tokens 4× less and invented a merger drop).
COMPONENTS_PER_PIXEL = 64 / 14**2


def token_components(data: ProbeData) -> int:
    """PCA width for a stage: proportional to the pixels a token covers, at most the stage width."""
    sy, sx = data.stride_px
    return min(int(data.features.shape[-1]), max(1, round(COMPONENTS_PER_PIXEL * sy * sx)))


def target_images(data: ProbeData, size: int) -> torch.Tensor:
    """(N, 3, size, size) reconstruction targets in [0, 1] (area-resampled)."""
    if data.images is None:
        raise ValueError("reconstruction needs ProbeData.images (N, h, w, 3) in [0, 1]")
    out = []
    for s in range(0, len(data.images), 64):
        chunk = torch.as_tensor(np.asarray(data.images[s:s + 64], dtype=np.float32)).permute(0, 3, 1, 2)
        out.append(F.interpolate(chunk, size=(size, size), mode="area"))
    return torch.cat(out)


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU())


def _refine(channels: int) -> nn.Sequential:
    """The full-resolution head both decoders end in, kept narrow: at 112 px it is where a CPU
    spends its time (a 32-wide ×2 stage there made one fit take over a minute)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, 3, 3, padding=1))


class GridDecoder(nn.Module):
    """Stride-aware: every token is decoded into its own s×s patch of the output (depth-to-space),
    s = ⌈output / grid side⌉, so a 14 px and a 28 px grid both land on the output size; a 3×3 conv
    on the grid lets neighbouring tokens inform each patch, and a 3×3 head joins the patch seams."""

    def __init__(self, in_dim: int, output_size: int, grid_size: tuple[int, int], width: int = 64,
                 channels: int = 8) -> None:
        super().__init__()
        self.output_size = output_size
        stride = math.ceil(output_size / min(grid_size))
        self.mix = nn.Sequential(nn.Conv2d(in_dim, width, 1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.GELU())
        self.to_patches = nn.Sequential(nn.Conv2d(width, channels * stride**2, 1), nn.PixelShuffle(stride))
        self.refine = _refine(channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.to_patches(self.mix(grid.permute(0, 3, 1, 2)))
        if x.shape[-2:] != (self.output_size, self.output_size):
            x = F.interpolate(x, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.refine(x))


class PooledSeedDecoder(nn.Module):
    """The seed's decoder: the mean-pooled vector → a 7×7 seed → ×2 upsampling stages (widths
    halving toward the output so the cost is that of `GridDecoder`) → the same full-resolution head."""

    def __init__(self, in_dim: int, output_size: int, grid_size: tuple[int, int], width: int = 32,
                 channels: int = 8) -> None:
        super().__init__()
        del grid_size  # the pooled vector has no grid
        steps = math.log2(output_size / SEED_GRID)
        if steps != int(steps) or steps < 1:
            raise ValueError(f"the seed decoder doubles a 7×7 seed: output size must be 7·2^k, got {output_size}")
        self.width = width
        self.seed = nn.Linear(in_dim, SEED_GRID * SEED_GRID * width)
        widths = [max(width >> i, channels) for i in range(int(steps))] + [channels]
        self.up = nn.Sequential(*[_up(widths[i], widths[i + 1]) for i in range(int(steps))])
        self.refine = _refine(channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.seed(grid.mean(dim=(1, 2))).view(len(grid), self.width, SEED_GRID, SEED_GRID)
        return torch.sigmoid(self.refine(self.up(x)))


def _fit_decoder(name: str, module_cls: type[nn.Module], train: ProbeData, val: ProbeData, test: ProbeData,
                 seed: int, output_size: int, pca_dim: int | None, epochs: int, patience: int, batch_size: int,
                 lr: float, perceptual_weight: float, lpips_metric: LpipsMetric | None) -> ProbeResult:
    device = default_device()
    precision = fit_precision(device)
    seed_everything(seed)

    pca_dim = pca_dim or token_components(train)
    reducer = PCAReducer(time_mean_grid(train), pca_dim)
    x_tr, x_va = reducer(time_mean_grid(train)).to(device), reducer(time_mean_grid(val)).to(device)
    y_tr, y_va = target_images(train, output_size).to(device), target_images(val, output_size).to(device)
    model = precision.layout(module_cls(x_tr.shape[-1], output_size, tuple(x_tr.shape[1:3])).to(device))
    perceptual = None
    if perceptual_weight > 0:
        reason = lpips_weights_reason()
        if lpips_metric is None and reason is not None:
            raise ValueError(f"perceptual loss needs LPIPS: {reason}")
        perceptual = (lpips_metric or LpipsMetric(device=device)).net.to(device)
        for p in perceptual.parameters():
            p.requires_grad_(False)

    # the loss in float32 whatever the forward's precision (`.float()` is a no-op in float32)
    def loss_of(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        pred = pred.float()
        loss = F.l1_loss(pred, truth)
        if perceptual is not None:
            loss = loss + perceptual_weight * perceptual(pred * 2 - 1, truth * 2 - 1).mean()
        return loss

    def batch_loss(module: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        return loss_of(module(x_tr[idx]), y_tr[idx])

    def val_loss(module: nn.Module) -> float:
        return float(np.mean([float(loss_of(module(x_va[s:s + 64]), y_va[s:s + 64]))
                              for s in range(0, len(x_va), 64)]))

    history = train_module(model, batch_loss, val_loss, len(train), seed, batch_size=batch_size,
                           max_epochs=epochs, patience=patience, lr=lr, precision=precision)

    @torch.no_grad()
    def predict(data: ProbeData) -> dict[str, Any]:
        x = reducer(time_mean_grid(data)).to(device)
        with precision.autocast():
            recs = torch.cat([model(x[s:s + 64]).float().cpu() for s in range(0, len(x), 64)])
        return {"reconstructions": recs.permute(0, 2, 3, 1).numpy()}

    predictions = predict(test)
    # Scored at the input resolution, like every E-Q2.5 probe: the output is resized up to it.
    references = input_images(test)
    upsampled = F.interpolate(torch.from_numpy(predictions["reconstructions"]).permute(0, 3, 1, 2),
                              size=references.shape[1:3], mode="bilinear", align_corners=False)
    per_item, unavailable = reconstruction_scores(references, upsampled.clamp(0, 1).permute(0, 2, 3, 1).numpy(),
                                                  lpips_metric)
    metrics = {k: float(np.nanmean(v)) for k, v in per_item.items()}
    config = {"output_size": output_size, "pca_dim": pca_dim, "epochs_run": len(history["epoch"]),
              "precision": precision.name,
              "perceptual_weight": perceptual_weight, "gram_features": "gram_gabor (grey + 12 Gabor filters)",
              "edge_f1": edge_f1_config(per_item["edge_f1"], references.shape[1:3])}
    return ProbeResult(name, "reconstruction", metrics, per_item, predictions, history, unavailable,
                       predictor=predict, config=config)


@register_probe("decoder", ["reconstruction"],
                "stride-aware decoder: each token → its own output patch, 3×3 convs; L1 loss", mixed_precision=True)
def fit_grid_decoder(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                     output_size: int = 112, pca_dim: int | None = None, epochs: int = 30,
                     patience: int = 5, batch_size: int = 16, lr: float = 2e-3, perceptual_weight: float = 0.0,
                     lpips_metric: LpipsMetric | None = None) -> ProbeResult:
    """`pca_dim` None: `token_components` (scales with the pixels a token covers).
    `lpips_metric` overrides the default LPIPS (e.g. a randomly initialised one in tests)."""
    return _fit_decoder("decoder", GridDecoder, train, val, test, seed, output_size, pca_dim, epochs, patience,
                        batch_size, lr, perceptual_weight, lpips_metric)


@register_probe("decoder-pooled", ["reconstruction"],
                "THE SEED PROTOCOL: mean-pooled vector → 7×7 seed → upsampling decoder", mixed_precision=True)
def fit_pooled_decoder(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                       output_size: int = 112, pca_dim: int | None = None, epochs: int = 30, patience: int = 5,
                       batch_size: int = 16, lr: float = 2e-3, perceptual_weight: float = 0.0,
                       lpips_metric: LpipsMetric | None = None) -> ProbeResult:
    return _fit_decoder("decoder-pooled", PooledSeedDecoder, train, val, test, seed, output_size, pca_dim,
                        epochs, patience, batch_size, lr, perceptual_weight, lpips_metric)
