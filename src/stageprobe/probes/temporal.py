"""Motion probes on video features (T > 1 time steps): direction, speed and order (was the clip
shown time-reversed?).

- `temporal` — the seed-style linear probe: the spatial mean of each time step, in time order
  (PCA-reduced on train), concatenated → linear classifier (ridge, closed form). A spatial mean
  discards *where* the object is, so on features that code position only by token index (e.g.
  the pixel baseline) it is expected to be weak: what it reads is whatever motion the features
  carry inside each token, not the object's path across the grid.
- `temporal-dense` — reads the object's path from the grid. Each token is PCA-reduced to a few
  dims on train; one linear *saliency* read-out s = w·[token, 1] is shared by all tokens and time
  steps, and each time step's object position is the s-weighted centroid of the cell centres.
  w is closed form: the weights whose centroids best match the training clips' object centroids
  (a generalised eigenproblem, ridge λ chosen on val). Fixed kinematic read-outs of the path
  (steps, step lengths and their changes, net displacement, circular harmonics of its heading)
  then feed a one-hot ridge classifier. Order is in the change of step length: natural clips
  decelerate, reversed ones accelerate.

Why not a ridge classifier on the flattened (T, H, W, k) grid: displacement is linear in the
occupancy grid, but its weight pattern (position ramps × time) must then be learnt from a few
hundred clips in thousands of dims; measured on 240 / 600 pixel clips that stays at chance
(direction 0.10 / 0.07). Speed and order are magnitudes, which no linear map of the grid gives.
And the heading enters through harmonics up to the 4th, because a one-hot ridge on the unit
heading alone (first harmonic) cannot separate 8 sectors (measured: 0.56 with exact paths).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stageprobe.metrics.classification import accuracy, balanced_accuracy
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.classify import fit_ridge_classifier
from stageprobe.probes.tokens import PCAReducer
from stageprobe.probes.training import LinearMap

PCA_DIM = 64
# Per-token dims of the saliency read-out: enough for the pixel baseline's "how much object is
# here" direction to survive (16 and 32 measured the same), few enough for a 17×17 eigenproblem.
SALIENCY_DIM = 16
# Tokens sampled from train for the saliency PCA: a randomised SVD of these costs ~1 s on one CPU
# thread for 4704-dim merged video pixels, where the exact PCA of all tokens took over a minute.
SALIENCY_SAMPLE_TOKENS = 4096
# λ relative to the mean eigenvalue of the centroid-error matrix.
SALIENCY_LAMBDAS = tuple(10.0**k for k in range(-7, 0))
# Circular harmonics 1..4 of the heading: a sector of 45° needs up to the 4th to be linearly separable.
HEADING_HARMONICS = 4
_CLIP_CHUNK = 32


def labels_for(task: str, targets: Sequence[dict[str, Any]]) -> np.ndarray:
    key = {"direction": "direction", "speed": "speed", "order": "reversed"}[task]
    return np.asarray([int(t[key]) for t in targets], dtype=np.int64)


def _check_video(data: ProbeData) -> None:
    if data.grid[0] < 2:
        raise ValueError(f"temporal probes need video features with T ≥ 2 time steps, got T = {data.grid[0]}")


def _score(task: str, truth: np.ndarray, pred: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    metrics = {f"{task}_acc": accuracy(truth, pred), f"{task}_balanced_acc": balanced_accuracy(truth, pred)}
    return metrics, {f"{task}_acc": (truth == pred).astype(np.float64)}


def fit_task_classifier(
    task: str, train: ProbeData, val: ProbeData, test: ProbeData, designs: Sequence[torch.Tensor],
    history: dict[str, list[float]],
) -> tuple[LinearMap, np.ndarray]:
    """Ridge classifier for `task` on the train/val design matrices (its λ path added to `history`),
    and the test labels."""
    y_tr, y_va, y_te = labels_for(task, train.targets), labels_for(task, val.targets), labels_for(task, test.targets)
    n_classes = int(max(y_tr.max(), y_va.max(), y_te.max())) + 1
    classifier, hist = fit_ridge_classifier(designs[0], y_tr, designs[1], y_va, n_classes)
    history.update({f"{task}.{k}": v for k, v in hist.items()})
    return classifier, y_te


def _classify(task: str, name: str, train: ProbeData, val: ProbeData, test: ProbeData,
              designs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], design: Callable[[ProbeData], torch.Tensor],
              history: dict[str, list[float]], config: dict[str, Any]) -> ProbeResult:
    """Ridge classifier on the design matrices of train/val/test (computed once by the caller);
    `design` maps new data for the predictor."""
    classifier, y_te = fit_task_classifier(task, train, val, test, designs, history)

    def predict(data: ProbeData) -> dict[str, Any]:
        return {task: classifier(design(data)).argmax(1).numpy()}

    predictions = {task: classifier(designs[2]).argmax(1).numpy()}
    metrics, per_item = _score(task, y_te, predictions[task])
    return ProbeResult(name, task, metrics, per_item, predictions, history, predictor=predict, config=config)


@register_probe("temporal", ["direction", "speed", "order"],
                "seed-style: time-ordered spatial means → linear classifier (blind to position)")
def fit_temporal_linear(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int) -> ProbeResult:
    del seed  # closed form
    for data in (train, val, test):
        _check_video(data)
    reducer = PCAReducer(train.features.float().mean(dim=(2, 3)), PCA_DIM)

    def design(data: ProbeData) -> torch.Tensor:
        return reducer(data.features.float().mean(dim=(2, 3))).flatten(1)

    designs = (design(train), design(val), design(test))
    return _classify(task, "temporal", train, val, test, designs, design, {}, {"pca_dim": PCA_DIM})


def step_centroids(data: ProbeData) -> torch.Tensor:
    """(N, T, 2) object centroid (x, y) of each time step — the mean over its frames — as a
    fraction of the image width / height."""
    t_steps = data.grid[0]
    size = torch.tensor(data.image_size[::-1], dtype=torch.float32)
    out = [torch.as_tensor(np.asarray(t["centroids"], dtype=np.float32)).reshape(t_steps, -1, 2).mean(1) / size
           for t in data.targets]
    return torch.stack(out)


class _TokenBasis:
    """Centred projection of tokens onto the top principal directions of a seeded sample of train
    tokens (randomised SVD), with a constant channel appended so a read-out can zero the background."""

    def __init__(self, features: torch.Tensor, dim: int, seed: int) -> None:
        tokens = features.reshape(-1, features.shape[-1])
        generator = torch.Generator().manual_seed(seed)
        sample = tokens[torch.randperm(len(tokens), generator=generator)[:SALIENCY_SAMPLE_TOKENS]].float()
        self.mean = sample.mean(0)
        rank = min(dim, *sample.shape)
        # svd_lowrank draws its test matrix from the global generator: seed it without touching
        # the caller's random state, so a fit is reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.svd_lowrank(sample - self.mean, q=min(rank + 8, *sample.shape), niter=3)
        self.basis = v[:, :rank].contiguous()

    def moments(self, data: ProbeData) -> torch.Tensor:
        """(N, T, 3, k+1): per time step, the sum over cells of the projected tokens, and the sums
        weighted by each cell centre's x and y (fractions of the image side)."""
        _, h, w = data.grid
        xs = (torch.arange(w).float() + 0.5) / w
        ys = (torch.arange(h).float() + 0.5) / h
        out = []
        for s in range(0, len(data), _CLIP_CHUNK):
            z = (data.features[s:s + _CLIP_CHUNK].float() - self.mean) @ self.basis
            z = torch.cat([z, torch.ones(*z.shape[:-1], 1)], -1)
            out.append(torch.stack([z.sum(dim=(2, 3)), torch.einsum("nthwk,w->ntk", z, xs),
                                    torch.einsum("nthwk,h->ntk", z, ys)], 2))
        return torch.cat(out)


def _centroids(moments: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, T, 2) saliency-weighted centroids, clamped to the image (a near-zero total saliency
    would otherwise throw a step off by orders of magnitude)."""
    mass, mx, my = (moments @ weight).unbind(-1)
    mass = torch.where(mass.abs() < 1e-8, torch.full_like(mass, 1e-8), mass)
    return torch.stack([mx / mass, my / mass], -1).clamp(0, 1)


def fit_saliency(moments: torch.Tensor, centroids: torch.Tensor, val_moments: torch.Tensor,
                 val_centroids: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """The saliency weights w (k+1,) whose weighted centroids match the true ones.

    A centroid is exact when w·(Mx − cx·M0) = 0 and w·(My − cy·M0) = 0; the scale of w is free, so
    minimise Σ (w·(M − c·M0))² + λ‖w‖² subject to Σ (w·M0)² = const — a generalised symmetric
    eigenproblem (smallest eigenvalue). λ is chosen by the val mean squared centroid error.
    """
    m = moments.reshape(-1, 3, moments.shape[-1]).double()
    c = centroids.reshape(-1, 2).double()
    residual = torch.cat([m[:, 1] - c[:, :1] * m[:, 0], m[:, 2] - c[:, 1:] * m[:, 0]])
    errors = residual.T @ residual / len(residual)
    mass = m[:, 0].T @ m[:, 0] / len(m)
    eye = torch.eye(len(mass), dtype=torch.float64)
    # Whiten by the mass matrix (the jitter keeps it invertible when a channel never varies).
    inv_chol = torch.linalg.inv(torch.linalg.cholesky(mass + 1e-9 * torch.trace(mass) / len(mass) * eye))
    history: dict[str, list[float]] = {"saliency.lambda": [], "saliency.val_score": []}
    best: tuple[float, torch.Tensor] | None = None
    for lam in SALIENCY_LAMBDAS:
        regularised = errors + lam * torch.trace(errors) / len(errors) * eye
        _, vectors = torch.linalg.eigh(inv_chol @ regularised @ inv_chol.T)
        weight = (inv_chol.T @ vectors[:, 0]).float()
        if float((m[:, 0].float() @ weight).mean()) < 0:
            weight = -weight  # positive mass on average: the object, not the background, is salient
        value = -float(torch.mean((_centroids(val_moments, weight) - val_centroids) ** 2))
        history["saliency.lambda"].append(lam)
        history["saliency.val_score"].append(value)
        if best is None or value > best[0]:
            best = (value, weight)
    assert best is not None
    return best[1], history


def kinematics(path: torch.Tensor) -> torch.Tensor:
    """Fixed read-outs of (N, T, 2) paths: steps, step lengths, changes of step length, net
    displacement and the circular harmonics 1..HEADING_HARMONICS of its heading."""
    steps = path[:, 1:] - path[:, :-1]
    length = steps.norm(dim=-1)
    net = path[:, -1] - path[:, 0]
    angle = torch.atan2(net[:, 1], net[:, 0])[:, None] * torch.arange(1, HEADING_HARMONICS + 1).float()
    return torch.cat([steps.flatten(1), length, length[:, 1:] - length[:, :-1], net, torch.cos(angle),
                      torch.sin(angle)], 1)


@register_probe("temporal-dense", ["direction", "speed", "order"],
                "per-token linear saliency → weighted-centroid path → kinematics → linear classifier")
def fit_temporal_dense(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                       saliency_dim: int = SALIENCY_DIM) -> ProbeResult:
    for data in (train, val, test):
        _check_video(data)
    basis = _TokenBasis(train.features, saliency_dim, seed)
    moments = [basis.moments(data) for data in (train, val, test)]
    weight, history = fit_saliency(moments[0], step_centroids(train), moments[1], step_centroids(val))
    paths = [_centroids(m, weight) for m in moments]

    def design(data: ProbeData) -> torch.Tensor:
        return kinematics(_centroids(basis.moments(data), weight))

    result = _classify(task, "temporal-dense", train, val, test, tuple(kinematics(p) for p in paths), design,
                       history, {"saliency_dim": basis.basis.shape[1], "heading_harmonics": HEADING_HARMONICS})
    result.predictions["trajectory"] = paths[2].numpy()
    # How far the read-out path is from the object's true one, in pixels: the probe's own diagnostic.
    error_px = ((paths[2] - step_centroids(test)) * torch.tensor(test.image_size[::-1]).float()).norm(dim=-1)
    result.metrics["path_error_px"] = float(error_px.mean())
    result.per_item["path_error_px"] = error_px.mean(1).double().numpy()
    return result
