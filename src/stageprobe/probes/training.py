"""The one training loop every probe uses.

- Closed form: `RidgeSolver` fits multi-output ridge regression on standardised features. The
  Gram matrix and its eigendecomposition are computed once per design matrix, so every head and
  every λ on the path costs only a (D×D)·(D×K) product; λ is chosen on val by the head's score.
- Gradient: `train_module` runs AdamW in minibatches with early stopping on the val loss,
  restores the best epoch and records the train/val curve.
Seeds fix every random choice; the device is the GPU when one is present.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

# Wider features are randomly projected to this many dimensions before the Gram matrix: its cost
# grows with D², and 4704-dim merged video pixels made one CPU fit take minutes.
MAX_RIDGE_DIM = 1024
# λ is relative to the mean eigenvalue of the standardised Gram matrix (= number of rows).
LAMBDA_GRID = tuple(10.0**k for k in range(-6, 2))
_CHUNK_ROWS = 1 << 16


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@dataclass
class LinearMap:
    """y = x @ weight + bias, applied in row chunks so large token matrices never double in memory."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.weight.shape[0])
        w, b = self.weight.to(x.device), self.bias.to(x.device)
        starts = range(0, max(len(x), 1), _CHUNK_ROWS)
        return torch.cat([x[s:s + _CHUNK_ROWS].float() @ w + b for s in starts])


def negative_mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return -float(torch.mean((pred - target) ** 2))


def argmax_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Accuracy of argmax(pred) against one-hot targets."""
    return float(torch.mean((pred.argmax(1) == target.argmax(1)).float()))


class RidgeSolver:
    """Ridge regression from one design matrix `x` (n, d) to any number of target sets."""

    def __init__(self, x: torch.Tensor, device: torch.device | None = None, max_dim: int = MAX_RIDGE_DIM,
                 seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        """`dtype` of the Gram and cross products: float64 when the answer needs the small
        eigen-directions (an exact identity on smooth images), float32 otherwise (twice as fast)."""
        self.device = device or default_device()
        self.dtype = dtype
        x = x.reshape(len(x), -1)
        self.projection: torch.Tensor | None = None
        if x.shape[1] > max_dim:
            # Seeded Gaussian projection (Johnson–Lindenstrauss): still a linear map of the features.
            generator = torch.Generator().manual_seed(seed)
            self.projection = torch.randn(x.shape[1], max_dim, generator=generator) / max_dim**0.5
            x = self._project(x)
        self.x = x
        n, d = self.x.shape
        if n < 2:
            raise ValueError("ridge needs at least two training rows")
        self.n = n
        gram = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        total = torch.zeros(d, dtype=torch.float64, device=self.device)
        for s in range(0, n, _CHUNK_ROWS):
            chunk = self.x[s:s + _CHUNK_ROWS].to(self.device, dtype)
            gram += (chunk.T @ chunk).double()
            total += chunk.sum(0).double()
        self.mean = total / n
        cov = gram - n * torch.outer(self.mean, self.mean)
        # Constant columns get unit scale so they are simply ignored rather than dividing by zero.
        self.scale = torch.sqrt(torch.clamp(torch.diagonal(cov) / n, min=0)).clamp_min(1e-8)
        corr = cov / torch.outer(self.scale, self.scale)
        self.eigval, self.eigvec = torch.linalg.eigh(corr)
        self.eigval = self.eigval.clamp_min(0)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return x
        p = self.projection.to(self.device)
        return torch.cat([(x[s:s + _CHUNK_ROWS].to(self.device, torch.float32) @ p).cpu()
                          for s in range(0, len(x), _CHUNK_ROWS)])

    def _cross(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vᵀ·Xsᵀ·(Y − ȳ) and ȳ, with Xs the standardised design matrix."""
        y = y.reshape(self.n, -1).to(self.device, torch.float64)
        y_mean = y.mean(0)
        xty = torch.zeros(self.x.shape[1], y.shape[1], dtype=torch.float64, device=self.device)
        for s in range(0, self.n, _CHUNK_ROWS):
            chunk = self.x[s:s + _CHUNK_ROWS].to(self.device, self.dtype)
            xty += (chunk.T @ y[s:s + _CHUNK_ROWS].to(self.dtype)).double()
        xty -= self.n * torch.outer(self.mean, y_mean)
        return self.eigvec.T @ (xty / self.scale[:, None]), y_mean

    def _weights(self, q: torch.Tensor, y_mean: torch.Tensor, lam: float) -> LinearMap:
        w_std = self.eigvec @ (q / (self.eigval + lam * self.n)[:, None])
        weight = w_std / self.scale[:, None]
        bias = y_mean - self.mean @ weight
        if self.projection is not None:
            weight = self.projection.to(weight) @ weight
        return LinearMap(weight.float().cpu(), bias.float().cpu())

    def fit(self, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
            score: Callable[[torch.Tensor, torch.Tensor], float] = negative_mse,
            lambdas: tuple[float, ...] = LAMBDA_GRID) -> tuple[LinearMap, dict[str, list[float]]]:
        """The λ (from `lambdas`, relative) whose map scores best on val; history = the λ path."""
        maps, history = self.fit_heads({"head": (y, y_val, score)}, x_val, lambdas)
        return maps["head"], {k.removeprefix("head."): v for k, v in history.items()}

    def fit_heads(self, heads: dict[str, tuple[torch.Tensor, torch.Tensor, Callable[..., float]]],
                  x_val: torch.Tensor, lambdas: tuple[float, ...] = LAMBDA_GRID
                  ) -> tuple[dict[str, LinearMap], dict[str, list[float]]]:
        """Several heads `name → (y_train, y_val, score)` in one pass over the design matrix, each
        with its own λ chosen on val; history keys are `<name>.lambda` / `<name>.val_score`."""
        widths = [y.reshape(self.n, -1).shape[1] for y, _, _ in heads.values()]
        q, y_mean = self._cross(torch.cat([y.reshape(self.n, -1).float() for y, _, _ in heads.values()], 1))
        x_val = x_val.reshape(len(x_val), -1).float()
        maps: dict[str, LinearMap] = {}
        history: dict[str, list[float]] = {}
        start = 0
        for (name, (_, y_val, score)), width in zip(heads.items(), widths, strict=True):
            cols = slice(start, start + width)
            start += width
            y_val = y_val.reshape(len(x_val), -1).float()
            history[f"{name}.lambda"], history[f"{name}.val_score"] = [], []
            best: tuple[float, LinearMap] | None = None
            for lam in lambdas:
                candidate = self._weights(q[:, cols], y_mean[cols], lam)
                value = score(candidate(x_val).cpu(), y_val)
                history[f"{name}.lambda"].append(lam)
                history[f"{name}.val_score"].append(value)
                if best is None or value > best[0]:
                    best = (value, candidate)
            assert best is not None
            maps[name] = best[1]
        return maps, history


@contextlib.contextmanager
def small_model_threads(device: torch.device) -> Iterator[None]:
    """One intra-op thread on CPU while training small probes: their ops are too small to split,
    and on a shared machine a second spinning thread made a step 30× slower (measured)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_module(
    module: torch.nn.Module,
    batch_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    val_loss: Callable[[torch.nn.Module], float],
    n_train: int,
    seed: int,
    batch_size: int = 32,
    max_epochs: int = 100,
    patience: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    anneal: bool = False,
) -> dict[str, list[float]]:
    """AdamW on minibatches of training indices; early stopping on `val_loss`, best epoch restored.

    `batch_loss(module, indices)` returns the mean loss of those training items; `val_loss(module)`
    the loss on the whole val split (called under no_grad, module in eval mode). `anneal` decays
    the learning rate to 0 over `max_epochs` (cosine), so the last epochs settle instead of jitter.
    """
    with small_model_threads(next(module.parameters()).device):
        return _train(module, batch_loss, val_loss, n_train, seed, batch_size, max_epochs, patience, lr,
                      weight_decay, anneal)


def _train(module: torch.nn.Module, batch_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
           val_loss: Callable[[torch.nn.Module], float], n_train: int, seed: int, batch_size: int,
           max_epochs: int, patience: int, lr: float, weight_decay: float,
           anneal: bool) -> dict[str, list[float]]:
    generator = seed_everything(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max_epochs * -(-n_train // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if anneal else None
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_loss": []}
    best_loss, best_state, since_best = float("inf"), copy.deepcopy(module.state_dict()), 0
    for epoch in range(max_epochs):
        module.train()
        order = torch.randperm(n_train, generator=generator)
        losses = []
        for s in range(0, n_train, batch_size):
            loss = batch_loss(module, order[s:s + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(float(loss.detach()))
        module.eval()
        with torch.no_grad():
            current = val_loss(module)
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(losses)))
        history["val_loss"].append(current)
        if current < best_loss:
            best_loss, best_state, since_best = current, copy.deepcopy(module.state_dict()), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return history
