"""The one training loop every probe uses.

- Closed form: `RidgeSolver` fits multi-output ridge regression on standardised features. The
  Gram matrix and its eigendecomposition are computed once per design matrix, so every head and
  every λ on the path costs only a (D×D)·(D×K) product; λ is chosen on val by the head's score.
  Features wider than the rows (≥ `DUAL_MIN_DIM`) are solved in the dual: the n×n Gram of the rows,
  the same maps, without a D×D matrix (a 12,288-wide pixel stage needed ~7 GB in the primal).
- Gradient: `train_module` runs AdamW in minibatches with early stopping on the val loss,
  restores the best epoch and records the train/val curve.
- Precision: the gradient-trained probes compute their forward passes in bfloat16 under autocast where
  the device does bfloat16 natively (`--probe-precision auto`): weights, optimiser state and losses stay
  float32. `probe_precision` sets it around a fit; a probe reads it once (`fit_precision`) and keeps it
  for its predictions. Ridge solves are never affected.
Seeds fix every random choice; the device is the GPU when one is present.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

# Wider features are randomly projected to this many dimensions before the Gram matrix: its cost
# grows with D², and 4704-dim merged video pixels made one CPU fit take minutes.
MAX_RIDGE_DIM = 1024
# λ is relative to the mean eigenvalue of the standardised Gram matrix (= number of rows).
LAMBDA_GRID = tuple(10.0**k for k in range(-6, 2))
_CHUNK_ROWS = 1 << 16
# Below this width the d×d eigendecomposition takes well under a second and ~32 MB, so the primal is
# kept there even when the rows are fewer (narrow probes keep their numbers bit for bit).
DUAL_MIN_DIM = 2048
# Output (and feature) columns per block in the dual form: a 12,288-wide map is built 2,048 columns
# at a time, so no float64 d×d matrix is ever held.
_DUAL_COLUMNS = 2048


#: what `--probe-precision` accepts; "auto" is bfloat16 where the device computes it natively, else float32
PRECISIONS = ("auto", "float32", "bfloat16")
#: CPU features that compute bfloat16 in hardware (Intel AMX / AVX512-BF16); without them bfloat16 is
#: emulated in float32 and slower than float32 itself
NATIVE_BF16_CPU_FEATURES = ("amx_bf16", "avx512_bf16")
_ACTIVE_PRECISION: ContextVar[str] = ContextVar("probe_precision", default="float32")
_Layout = TypeVar("_Layout", torch.Tensor, torch.nn.Module)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware (torch's own capability checks)."""
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.4 has no `including_emulation` and reports native support only
            return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        return any(bool(capabilities().get(name)) for name in NATIVE_BF16_CPU_FEATURES)
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def resolve_precision(requested: str, device: torch.device | None = None) -> str:
    """The precision a run's gradient-trained probes use: "auto" → bfloat16 where `device` (default: where
    the probes fit) does it natively, else float32. ValueError for an unknown name, and for bfloat16 asked
    of a device that would only emulate it."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown probe precision {requested!r}; use {', '.join(PRECISIONS)}")
    device = device or default_device()
    native = native_bf16(device)
    if requested == "bfloat16" and not native:
        raise ValueError(f"this {device.type.upper()} does not compute bfloat16 natively (it would be emulated, "
                         "slower than float32); use float32 or auto")
    if requested == "auto":
        return "bfloat16" if native else "float32"
    return requested


@contextlib.contextmanager
def probe_precision(precision: str) -> Iterator[None]:
    """Gradient-trained probes fitted inside compute in `precision` (float32 or bfloat16, resolved)."""
    if precision not in PRECISIONS[1:]:
        raise ValueError(f"probe precision must be resolved to float32 or bfloat16, got {precision!r}")
    token = _ACTIVE_PRECISION.set(precision)
    try:
        yield
    finally:
        _ACTIVE_PRECISION.reset(token)


@dataclass(frozen=True)
class Precision:
    """How one gradient-trained probe computes: float32, or its forward passes in bfloat16 under autocast
    (standard mixed precision: float32 master weights, optimiser and loss). Outputs are read in float32."""

    name: str = "float32"
    device_type: str = "cpu"

    @property
    def reduced(self) -> bool:
        return self.name == "bfloat16"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The context forward passes run under: bfloat16 autocast, or nothing (float32 as before)."""
        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def layout(self, x: _Layout) -> _Layout:
        """A conv module or 4-D input in channels-last under bfloat16, where oneDNN's bfloat16 convolutions
        are fastest (a dense-context step 1.9× faster, measured); unchanged in float32, whose numbers stay
        bit for bit."""
        if not self.reduced:
            return x
        return x.to(memory_format=torch.channels_last)


def fit_precision(device: torch.device) -> Precision:
    """The precision a probe fitted now on `device` uses (set by `probe_precision`; float32 by default)."""
    return Precision(_ACTIVE_PRECISION.get(), device.type)


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
                 seed: int = 0, dtype: torch.dtype = torch.float32,
                 form: Literal["auto", "primal", "dual"] = "auto") -> None:
        """`dtype` of the Gram and cross products: float64 when the answer needs the small
        eigen-directions (an exact identity on smooth images), float32 otherwise (twice as fast).
        `form`: "auto" solves in the dual where the (projected) width is at least `DUAL_MIN_DIM` and
        exceeds the rows; both forms give the same maps (to float rounding)."""
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
        #: the kernel (dual) form where the features are wider than the training rows: the same ridge
        #: solved through the n×n Gram of the rows instead of the d×d Gram of the columns
        self.dual = form == "dual" or (form == "auto" and n < d and d >= DUAL_MIN_DIM)
        if self.dual:
            self._standardise()
            self.eigval, self.eigvec = torch.linalg.eigh(self._row_gram())
        else:
            self.eigval, self.eigvec = torch.linalg.eigh(self._column_correlation())
        self.eigval = self.eigval.clamp_min(0)

    def _column_correlation(self) -> torch.Tensor:
        """XsᵀXs (d×d) of the standardised design matrix; sets `mean` and `scale` on the way."""
        d = self.x.shape[1]
        gram = torch.zeros(d, d, dtype=torch.float64, device=self.device)
        total = torch.zeros(d, dtype=torch.float64, device=self.device)
        for s in range(0, self.n, _CHUNK_ROWS):
            chunk = self.x[s:s + _CHUNK_ROWS].to(self.device, self.dtype)
            gram += (chunk.T @ chunk).double()
            total += chunk.sum(0).double()
        self.mean = total / self.n
        cov = gram - self.n * torch.outer(self.mean, self.mean)
        # Constant columns get unit scale so they are simply ignored rather than dividing by zero.
        self.scale = torch.sqrt(torch.clamp(torch.diagonal(cov) / self.n, min=0)).clamp_min(1e-8)
        return cov / torch.outer(self.scale, self.scale)

    def _standardise(self) -> None:
        """`mean` and `scale` of the columns, as `_column_correlation` gives them, without the d×d Gram."""
        d = self.x.shape[1]
        total = torch.zeros(d, dtype=torch.float64, device=self.device)
        squares = torch.zeros(d, dtype=torch.float64, device=self.device)
        for s in range(0, self.n, _CHUNK_ROWS):
            chunk = self.x[s:s + _CHUNK_ROWS].to(self.device, self.dtype)
            total += chunk.sum(0).double()
            squares += (chunk * chunk).sum(0).double()
        self.mean = total / self.n
        variance = (squares - self.n * self.mean**2) / self.n
        self.scale = torch.sqrt(torch.clamp(variance, min=0)).clamp_min(1e-8)

    def _row_gram(self) -> torch.Tensor:
        """XsXsᵀ (n×n) of the standardised design matrix, built over column blocks (never all of Xs at once)."""
        gram = torch.zeros(self.n, self.n, dtype=torch.float64, device=self.device)
        for c in range(0, self.x.shape[1], _DUAL_COLUMNS):
            cols = slice(c, c + _DUAL_COLUMNS)
            block = (self.x[:, cols].to(self.device, torch.float64) - self.mean[cols]) / self.scale[cols]
            block = block.to(self.dtype)
            gram += (block @ block.T).double()
        return gram

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return x
        p = self.projection.to(self.device)
        return torch.cat([(x[s:s + _CHUNK_ROWS].to(self.device, torch.float32) @ p).cpu()
                          for s in range(0, len(x), _CHUNK_ROWS)])

    def _cross(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets in the eigenbasis, and ȳ: Vᵀ·Xsᵀ·(Y − ȳ) in the primal, Uᵀ·(Y − ȳ) in the dual."""
        y = y.reshape(self.n, -1).to(self.device, torch.float64)
        y_mean = y.mean(0)
        if self.dual:
            return self.eigvec.T @ (y - y_mean), y_mean
        xty = self._xt(y) - self.n * torch.outer(self.mean, y_mean)
        return self.eigvec.T @ (xty / self.scale[:, None]), y_mean

    def _xt(self, y: torch.Tensor) -> torch.Tensor:
        """Xᵀ·y (d×k, float64) of the raw design matrix, products in `dtype`."""
        xty = torch.zeros(self.x.shape[1], y.shape[1], dtype=torch.float64, device=self.device)
        for s in range(0, self.n, _CHUNK_ROWS):
            chunk = self.x[s:s + _CHUNK_ROWS].to(self.device, self.dtype)
            xty += (chunk.T @ y[s:s + _CHUNK_ROWS].to(self.dtype)).double()
        return xty

    def _weights(self, q: torch.Tensor, y_mean: torch.Tensor, lam: float) -> LinearMap:
        shrunk = q / (self.eigval + lam * self.n)[:, None]
        if self.dual:
            weight, bias = self._dual_weights(shrunk, y_mean)
        else:
            weight = self.eigvec @ shrunk / self.scale[:, None]
            bias = y_mean - self.mean @ weight
        if self.projection is not None:
            weight = self.projection.to(weight) @ weight
        return LinearMap(weight.float().cpu(), bias.float().cpu())

    def _dual_weights(self, shrunk: torch.Tensor, y_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw-feature weights (float32) and bias from the dual: W = Xsᵀ·U·shrunk / scale, with
        Xsᵀ·a = (Xᵀ·a − mean ⊗ Σa) / scale, so the standardised matrix is never formed; built a block
        of outputs at a time, in float64, into one float32 matrix."""
        weight = torch.empty(self.x.shape[1], shrunk.shape[1], dtype=torch.float32, device=self.device)
        bias = torch.empty(shrunk.shape[1], dtype=torch.float64, device=self.device)
        for c in range(0, shrunk.shape[1], _DUAL_COLUMNS):
            cols = slice(c, c + _DUAL_COLUMNS)
            alpha = self.eigvec @ shrunk[:, cols]
            block = (self._xt(alpha) - torch.outer(self.mean, alpha.sum(0))) / self.scale[:, None] ** 2
            weight[:, cols] = block
            bias[cols] = y_mean[cols] - self.mean @ block
        return weight, bias

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
        rank = len(self.eigval)
        # Val rows projected into the eigenbasis once (n_val·d·r) where that is cheaper than building and
        # applying every λ's map (λs·k·d·(r + n_val)): wide outputs (recon-linear's 192 pixel columns), not a
        # few heads over many val tokens (dense-linear), which keep the direct path.
        basis = (self._val_basis(x_val) if len(x_val) * rank < len(lambdas) * q.shape[1] * (rank + len(x_val))
                 else None)
        maps: dict[str, LinearMap] = {}
        history: dict[str, list[float]] = {}
        start = 0
        for (name, (_, y_val, score)), width in zip(heads.items(), widths, strict=True):
            cols = slice(start, start + width)
            start += width
            y_val = y_val.reshape(len(x_val), -1).float()
            values = [score(self._val_predictions(basis, x_val, q[:, cols], y_mean[cols], lam), y_val)
                      for lam in lambdas]
            history[f"{name}.lambda"], history[f"{name}.val_score"] = list(lambdas), values
            maps[name] = self._weights(q[:, cols], y_mean[cols], lambdas[_best(values)])
        return maps, history

    def _val_basis(self, x_val: torch.Tensor) -> torch.Tensor:
        """The val rows in the eigenbasis — Xs_val·V (primal) or Xs_val·Xsᵀ·U (dual) — so each λ's val
        predictions are one (n_val × r)·(r × k) product: no map of every λ, no pass over x_val per λ."""
        x_val = self._project(x_val.reshape(len(x_val), -1)).to(self.device, torch.float64)
        standardised = (x_val - self.mean) / self.scale
        if not self.dual:
            return standardised @ self.eigvec
        kernel = torch.zeros(len(x_val), self.n, dtype=torch.float64, device=self.device)
        for c in range(0, self.x.shape[1], _DUAL_COLUMNS):
            cols = slice(c, c + _DUAL_COLUMNS)
            train = (self.x[:, cols].to(self.device, torch.float64) - self.mean[cols]) / self.scale[cols]
            kernel += standardised[:, cols] @ train.T
        return kernel @ self.eigvec

    def _val_predictions(self, basis: torch.Tensor | None, x_val: torch.Tensor, q: torch.Tensor,
                         y_mean: torch.Tensor, lam: float) -> torch.Tensor:
        """Val predictions of the map at `lam` (float32 on the CPU): from the eigenbasis, or by the map."""
        if basis is None:
            return self._weights(q, y_mean, lam)(x_val).cpu()
        return (basis @ (q / (self.eigval + lam * self.n)[:, None]) + y_mean).float().cpu()


def _best(values: list[float]) -> int:
    """Index of the best score: the first of equal ones, and never a NaN after the first."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best


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
    precision: Precision | None = None,
) -> dict[str, list[float]]:
    """AdamW on minibatches of training indices; early stopping on `val_loss`, best epoch restored.

    `batch_loss(module, indices)` returns the mean loss of those training items; `val_loss(module)`
    the loss on the whole val split (called under no_grad, module in eval mode). `anneal` decays
    the learning rate to 0 over `max_epochs` (cosine), so the last epochs settle instead of jitter.
    Both run under `precision`'s autocast (float32 when None); they should return float32 losses.
    """
    with small_model_threads(next(module.parameters()).device):
        return _train(module, batch_loss, val_loss, n_train, seed, batch_size, max_epochs, patience, lr,
                      weight_decay, anneal, precision or Precision())


def _train(module: torch.nn.Module, batch_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
           val_loss: Callable[[torch.nn.Module], float], n_train: int, seed: int, batch_size: int,
           max_epochs: int, patience: int, lr: float, weight_decay: float,
           anneal: bool, precision: Precision) -> dict[str, list[float]]:
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
            with precision.autocast():
                loss = batch_loss(module, order[s:s + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(float(loss.detach()))
        module.eval()
        with torch.no_grad(), precision.autocast():
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
