"""Token-grid helpers shared by the gradient-trained probes: PCA reduction and 2-D positions."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from stageprobe.probes.base import ProbeData

CHUNK_ROWS = 1 << 16


class PCAReducer:
    """Standardised tokens projected onto their top principal directions (fit on train only).

    Each feature is scaled to unit variance first, so the basis is not owned by a few
    high-variance channels. A linear map; it keeps gradient-trained probes CPU-cheap on wide stages
    (e.g. 2352-dim merged pixels) without adding capacity. Dims ≤ `dim` pass through standardised.

    `whiten` (the trained heads of the context and attention probes, fitted on a token sample) also
    scales each component to unit variance, and finds the top directions with a randomized SVD
    (`torch.svd_lowrank`): the top directions are all such a probe needs, for a few passes over the
    sample instead of a D×D eigendecomposition at every stage.
    """

    def __init__(self, tokens: torch.Tensor, dim: int, whiten: bool = False) -> None:
        x = tokens.reshape(-1, tokens.shape[-1])
        self.mean = x.float().mean(0)
        squares = torch.zeros(x.shape[1], dtype=torch.float64)
        for s in range(0, len(x), CHUNK_ROWS):
            squares += ((x[s:s + CHUNK_ROWS].float() - self.mean) ** 2).sum(0).double()
        self.scale = torch.sqrt(squares / max(len(x) - 1, 1)).float().clamp_min(1e-6)
        if x.shape[1] <= dim:
            self.basis = torch.eye(x.shape[1])
        elif whiten:
            _, _, v = torch.svd_lowrank(self._standardise(x), q=min(dim + 10, *x.shape), niter=2)
            self.basis = v[:, :dim].contiguous()
        else:
            self.basis = _top_directions(self._standardise, x, dim)
        if whiten:
            self.basis = self.basis / self(x).std(0).clamp_min(1e-6)[None]

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        # one float32 copy, then in place: the same two operations, without two more copies of a
        # wide chunk (a third of a default dense-context fit's time outside training went here)
        return x.to(torch.float32, copy=True).sub_(self.mean).div_(self.scale)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        shape = tokens.shape
        x = tokens.reshape(-1, shape[-1])
        # chunks bound the float32 copy of wide tokens
        starts = range(0, len(x), CHUNK_ROWS)
        out = torch.cat([self._standardise(x[s:s + CHUNK_ROWS]) @ self.basis for s in starts])
        return out.reshape(*shape[:-1], self.basis.shape[1])


def _top_directions(standardise: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dim: int) -> torch.Tensor:
    """(D, dim) top principal directions of the standardised rows, exactly."""
    if len(x) < x.shape[1]:
        # Few wide rows: the SVD of the rows costs n²·d instead of d³ for the Gram eigenproblem.
        _, _, vh = torch.linalg.svd(standardise(x), full_matrices=False)
        basis = vh[:dim].T.contiguous()
        if basis.shape[1] < dim:
            basis = torch.cat([basis, torch.zeros(x.shape[1], dim - basis.shape[1])], 1)
        return basis
    gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for s in range(0, len(x), CHUNK_ROWS):
        chunk = standardise(x[s:s + CHUNK_ROWS])
        gram += (chunk.T @ chunk).double()
    _, vectors = torch.linalg.eigh(gram)
    return vectors[:, -dim:].flip(1).float()


def time_mean_grid(data: ProbeData) -> torch.Tensor:
    """(N, H, W, D) float tokens averaged over time (an image's single time step as it is)."""
    x = data.features
    return x.float().mean(1) if x.shape[1] > 1 else x[:, 0].float()


def time_mean_tokens(data: ProbeData) -> torch.Tensor:
    """(N, H·W, D) tokens in raster order, averaged over time."""
    x = time_mean_grid(data)
    return x.reshape(len(data), -1, x.shape[-1])


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """(H·W, dim) fixed 2-D sinusoidal position code: half the channels for rows, half for columns,
    positions normalised to [0, 1] so grids of any size share one scale."""
    if dim % 4:
        raise ValueError(f"2-D sinusoidal code needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    # From half a cycle to 16 cycles per image side: coarse to finer than a 32-token grid resolves.
    freqs = 2 * math.pi * torch.exp(torch.linspace(math.log(0.5), math.log(16.0), quarter))
    rows = (torch.arange(height).float() + 0.5) / height
    cols = (torch.arange(width).float() + 0.5) / width
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    parts = []
    for coord in (r.reshape(-1), c.reshape(-1)):
        angle = coord[:, None] * freqs[None]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, 1)
