"""`token-flow`: whole-frame motion read between time steps of a token grid — Lucas–Kanade optical
flow on tokens, with the token's response to a small shift learnt on train.

Each token is standardised and PCA-reduced to `flow_dim` dims on train. For every interior cell and
pair of consecutive time steps, the change of its token is modelled as linear in the motion v = (vx,
vy): Δz ≈ vx·Gx·u + vy·Gy·u + b, where u is the time-averaged token of the cell and of its
neighbours (4 by default). The *shift generators* Gx, Gy (flow_dim × n·flow_dim each, n cells) are one closed-form ridge
regression fitted on the training clips' true motion (λ chosen on val). Applied to a clip, the
motion of each step is the least-squares v over all cells — a 2×2 solve, the Lucas–Kanade step with
learnt derivatives. The per-step flow is then turned into fixed read-outs — for direction the
circular harmonics of the net flow's heading; for speed and order the kinematics of the path it
integrates to (`temporal.kinematics`) plus the log and relative change of each step's length — and
a one-hot ridge classifier reads direction, speed or order (was the clip shown reversed?).

Why learnt generators. Alternatives tried while the probe was first built (on 240 `pan` clips of
`pixels.merged`, 28 px tokens — scored then on the test photos brick, clock, grass, so these numbers
are history, not evidence): the object-path probe `temporal-dense` read direction at 0.07 (there is
no object); cosine similarity of tokens with those of displaced cells of the next step → ridge
0.15–0.24; Lucas–Kanade with fixed finite differences between neighbouring cells 0.67, failing on
fine textures (grass, gravel, brick decorrelate well within the 28 px between cells); the time-odd
cross-covariance of consecutive tokens regressed to velocity 0.56–0.72 (its read-out depends on the
texture's spectrum). The per-clip least-squares solve divides that texture dependence out.

Design held out from test. The choices inside this design — `flow_dim`, `neighbours`, the
direction read-out, the λ grid — are set by `benchmarks/token_flow_design.py`: grouped
cross-validation over the train and val photos of `pan` and clips of `motion` only, then one
measurement on the test split (benchmarks/README.md has the table and the test numbers).

Capacity: 2·n·flow_dim² generator weights + a classifier on 8 heading harmonics (direction) or ~20
kinematic values (speed, order). The control task gives each clip type the whole motion target of
one clip drawn for it (labels and centroid path together, `controls.py`), so the generators are
trained on a motion the tokens do not show unless they identify the type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stageprobe.metrics.classification import accuracy, balanced_accuracy
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.temporal import HEADING_HARMONICS, fit_task_classifier, kinematics, step_centroids
from stageprobe.probes.training import LAMBDA_GRID, RidgeSolver, negative_mse

# The design defaults (flow dims, neighbourhood, direction read-out, λ grid) are the ones chosen on
# train/val photos only by `benchmarks/token_flow_design.py` (grouped cross-validation over the
# train and val photos of `pan`; the test photos never enter it): see benchmarks/README.md.
# Token dims the flow is solved in (cross-validated mean accuracy 0.991 at 8, 0.988 at 16, 0.981 at 32).
FLOW_DIM = 8
# Train tokens sampled for the standardisation and the randomised PCA (~1 s for 4704-dim tokens).
SAMPLE_TOKENS = 4096
#: neighbourhoods whose tokens enter a cell's shift response, by size: the cell alone; with right,
#: left, down, up; with the four diagonals too
NEIGHBOURHOODS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((0, 0),),
    5: ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)),
    9: ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)),
}
NEIGHBOURS = 5
#: direction read-outs: the net flow's heading harmonics alone, or with its magnitude beside them
DIRECTION_READ_OUTS = ("heading", "heading+magnitude")
DIRECTION_READ_OUT = "heading"
#: λ grids of the shift-generator ridge (relative to the design's scale), the first the default
LAMBDA_GRIDS: dict[str, tuple[float, ...]] = {"default": LAMBDA_GRID, "wide": tuple(10.0**k for k in range(-9, 4))}
LAMBDAS = "default"
_CLIP_CHUNK = 32


def _check_flow_input(data: ProbeData) -> None:
    t, h, w = data.grid
    if t < 2:
        raise ValueError(f"token-flow needs video features with T ≥ 2 time steps, got T = {t}")
    if h < 3 or w < 3:
        raise ValueError(f"token-flow needs a token grid of at least 3×3 (interior cells), got {h}×{w}")
    if data.targets and "centroids" not in data.targets[0]:
        raise ValueError("token-flow needs motion targets with 'centroids' (datasets motion, pan, cutout)")


class _FlowBasis:
    """Per-channel standardisation and the top principal directions of a seeded sample of train
    tokens (randomised SVD, so 4704-dim pixel tokens cost about a second)."""

    def __init__(self, features: torch.Tensor, dim: int, seed: int) -> None:
        tokens = features.reshape(-1, features.shape[-1])
        generator = torch.Generator().manual_seed(seed)
        sample = tokens[torch.randperm(len(tokens), generator=generator)[:SAMPLE_TOKENS]].float()
        self.mean = sample.mean(0)
        std = sample.std(0)
        # Constant channels carry nothing; unit scale keeps them at zero instead of dividing by it.
        std = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
        rank = min(dim, *sample.shape)
        with torch.random.fork_rng(devices=[]):  # svd_lowrank draws from the global generator
            torch.manual_seed(seed)
            _, _, v = torch.svd_lowrank((sample - self.mean) / std, q=min(rank + 8, *sample.shape), niter=3)
        self.projection = (v[:, :rank] / std[:, None]).contiguous()

    def __call__(self, data: ProbeData) -> torch.Tensor:
        """(N, T, H, W, dim) reduced tokens."""
        return torch.cat([(data.features[s:s + _CLIP_CHUNK].float() - self.mean) @ self.projection
                          for s in range(0, len(data), _CLIP_CHUNK)])


def flow_terms(z: torch.Tensor, neighbours: int = NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """Token change Δz (N, T−1, H−2, W−2, k) of each interior cell between consecutive time steps,
    and its context u (N, T−1, H−2, W−2, n·k): the time-averaged tokens of the cell and its
    neighbours (`NEIGHBOURHOODS[neighbours]`)."""
    mid = (z[:, 1:] + z[:, :-1]) / 2
    h, w = z.shape[2:4]
    change = (z[:, 1:] - z[:, :-1])[:, :, 1:-1, 1:-1]
    context = torch.cat([mid[:, :, 1 + dr:h - 1 + dr, 1 + dc:w - 1 + dc] for dr, dc in NEIGHBOURHOODS[neighbours]],
                        -1)
    return change, context


def step_velocities(data: ProbeData) -> torch.Tensor:
    """(N, T−1, 2) true motion (x right, y down) between consecutive time steps, in cells."""
    _, h, w = data.grid
    centroids = step_centroids(data) * torch.tensor([w, h], dtype=torch.float32)
    return centroids[:, 1:] - centroids[:, :-1]


@dataclass
class ShiftGenerators:
    """Δz ≈ vx·Gx·u + vy·Gy·u + bias, for the tokens of one stage."""

    gx: torch.Tensor
    gy: torch.Tensor
    bias: torch.Tensor
    neighbours: int = NEIGHBOURS

    def flow(self, z: torch.Tensor) -> torch.Tensor:
        """(N, T−1, 2) least-squares motion of each step over all interior cells (Lucas–Kanade)."""
        change, context = flow_terms(z, self.neighbours)
        n, steps = change.shape[:2]
        jacobian = torch.stack([context @ self.gx.T, context @ self.gy.T], -1).reshape(n, steps, -1, 2)
        residual = (change - self.bias).reshape(n, steps, -1, 1)
        normal = jacobian.transpose(-1, -2) @ jacobian
        # A tiny relative ridge keeps a textureless step (normal matrix ≈ 0) solvable, at flow ≈ 0.
        trace = normal.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-12)
        normal = normal + 1e-6 * trace[..., None, None] * torch.eye(2)
        return torch.linalg.solve(normal, (jacobian.transpose(-1, -2) @ residual)[..., 0])


def _generator_design(z: torch.Tensor, velocity: torch.Tensor,
                      neighbours: int = NEIGHBOURS) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [vx·u, vy·u] → Δz, one per interior cell and step."""
    change, context = flow_terms(z, neighbours)
    v = velocity[:, :, None, None, :]
    rows = torch.cat([v[..., :1] * context, v[..., 1:] * context], -1)
    return rows.reshape(-1, rows.shape[-1]), change.reshape(-1, change.shape[-1])


def fit_shift_generators(z_train: torch.Tensor, v_train: torch.Tensor, z_val: torch.Tensor,
                         v_val: torch.Tensor, seed: int, neighbours: int = NEIGHBOURS,
                         lambdas: str = LAMBDAS) -> tuple[ShiftGenerators, dict[str, list[float]]]:
    """Closed-form ridge from [vx·u, vy·u] to Δz; λ (from `LAMBDA_GRIDS[lambdas]`) chosen by the val
    error of Δz under the true motion."""
    x_train, y_train = _generator_design(z_train, v_train, neighbours)
    x_val, y_val = _generator_design(z_val, v_val, neighbours)
    linear, history = RidgeSolver(x_train, seed=seed).fit(y_train, x_val, y_val, score=negative_mse,
                                                          lambdas=LAMBDA_GRIDS[lambdas])
    width = x_train.shape[1] // 2
    generators = ShiftGenerators(linear.weight[:width].T.contiguous(), linear.weight[width:].T.contiguous(),
                                 linear.bias, neighbours)
    return generators, {f"generators.{k}": v for k, v in history.items()}


def heading_harmonics(flow: torch.Tensor) -> torch.Tensor:
    """Circular harmonics 1..HEADING_HARMONICS of the heading of the net (N, T−1, 2) flow."""
    net = flow.sum(1)
    angle = torch.atan2(net[:, 1], net[:, 0])[:, None] * torch.arange(1, HEADING_HARMONICS + 1).float()
    return torch.cat([torch.cos(angle), torch.sin(angle)], 1)


def motion_read_outs(flow: torch.Tensor, task: str, direction_read_out: str = DIRECTION_READ_OUT) -> torch.Tensor:
    """Fixed read-outs of (N, T−1, 2) per-step flow for `task`.

    Direction is a heading: its classifier reads the heading's harmonics (`heading`), or those and
    the net flow's log magnitude (`heading+magnitude`). Speed and order read the kinematics of the
    path the flow integrates to, plus each step length's log and relative change — scale-free, so a
    texture that biases the flow's magnitude still shows deceleration (order)."""
    if task == "direction":
        if direction_read_out not in DIRECTION_READ_OUTS:
            raise ValueError(f"direction_read_out must be one of {DIRECTION_READ_OUTS}, got {direction_read_out!r}")
        harmonics = heading_harmonics(flow)
        if direction_read_out == "heading":
            return harmonics
        return torch.cat([harmonics, flow.sum(1).norm(dim=-1, keepdim=True).clamp_min(1e-6).log()], 1)
    path = torch.cat([torch.zeros(len(flow), 1, 2), flow.cumsum(1)], 1)
    length = flow.norm(dim=-1).clamp_min(1e-6)
    relative = (length[:, 1:] - length[:, :-1]) / (length[:, 1:] + length[:, :-1])
    overall = (length[:, -1:] - length[:, :1]) / (length[:, -1:] + length[:, :1])
    return torch.cat([kinematics(path), relative, overall, length.log()], 1)


def _angle_error_deg(flow: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Per clip, the angle in degrees between the net flow and the true net motion."""
    a, b = flow.sum(1).double(), truth.sum(1).double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).numpy()


@register_probe("token-flow", ["direction", "speed", "order"],
                "Lucas–Kanade flow between time steps with learnt token shift generators → kinematics → linear")
def fit_token_flow(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int,
                   flow_dim: int = FLOW_DIM, neighbours: int = NEIGHBOURS, direction_read_out: str = DIRECTION_READ_OUT,
                   lambdas: str = LAMBDAS) -> ProbeResult:
    """`neighbours` is a key of `NEIGHBOURHOODS`, `lambdas` one of `LAMBDA_GRIDS`."""
    for data in (train, val, test):
        _check_flow_input(data)
    if neighbours not in NEIGHBOURHOODS or lambdas not in LAMBDA_GRIDS:
        raise ValueError(f"neighbours must be one of {sorted(NEIGHBOURHOODS)} and lambdas one of "
                         f"{sorted(LAMBDA_GRIDS)}, got {neighbours!r} and {lambdas!r}")
    basis = _FlowBasis(train.features, flow_dim, seed)
    reduced = [basis(data) for data in (train, val, test)]
    generators, history = fit_shift_generators(reduced[0], step_velocities(train), reduced[1],
                                               step_velocities(val), seed, neighbours, lambdas)
    flows = [generators.flow(z) for z in reduced]
    read_outs = [motion_read_outs(flow, task, direction_read_out) for flow in flows]
    classifier, y_test = fit_task_classifier(task, train, val, test, read_outs, history)

    def predict(data: ProbeData) -> dict[str, Any]:
        flow = generators.flow(basis(data))
        return {task: classifier(motion_read_outs(flow, task, direction_read_out)).argmax(1).numpy(),
                "flow": flow.numpy()}

    predictions = {task: classifier(read_outs[2]).argmax(1).numpy(), "flow": flows[2].numpy()}
    angle_error = _angle_error_deg(flows[2], step_velocities(test))
    metrics = {f"{task}_acc": accuracy(y_test, predictions[task]),
               f"{task}_balanced_acc": balanced_accuracy(y_test, predictions[task]),
               "flow_angle_error_deg": float(np.mean(angle_error))}
    per_item = {f"{task}_acc": (predictions[task] == y_test).astype(np.float64), "flow_angle_error_deg": angle_error}
    return ProbeResult("token-flow", task, metrics, per_item, predictions, history, predictor=predict,
                       config={"flow_dim": int(basis.projection.shape[1]), "neighbours": neighbours,
                               "direction_read_out": direction_read_out, "lambdas": lambdas})
