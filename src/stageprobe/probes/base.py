"""The probe contract: data in, a `ProbeResult` out; probes are registered by name.

A probe gets three `ProbeData` splits. It fits on `train`, selects everything it selects
(ridge λ, epochs, decoding thresholds) on `val`, and only predicts on `test`; the metrics and
the per-image scores are computed on `test` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from stageprobe.metrics.detection import CocoDetectionEval

#: the tasks read from a clip's motion (the temporal probes' tasks)
MOTION_TASKS = ("direction", "speed", "order")
TASKS = ("boxes", "patch_class", "relation", "reconstruction", *MOTION_TASKS)


@dataclass
class ProbeData:
    """Features of one split and the targets of the same samples, in the same order.

    `features` is (N, T, H, W, D) on a raster token grid; `image_size` is the (height, width) in
    pixels of the input the grid covers, so token [r, c] spans rows r·s…(r+1)·s with s = height/H.
    `images` (N, h, w, 3) in [0, 1] are the reconstruction targets (any size; the decoder
    resizes them to its output size).
    """

    features: torch.Tensor
    targets: list[dict[str, Any]]
    image_size: tuple[int, int]
    images: np.ndarray | None = None
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features)
        if self.features.ndim != 5:
            raise ValueError(f"features must be (N, T, H, W, D), got shape {tuple(self.features.shape)}")
        if len(self.targets) != len(self.features):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.targets)} targets")
        if self.images is not None and len(self.images) != len(self.features):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w = self.features.shape[1:4]
        return int(t), int(h), int(w)

    @property
    def stride_px(self) -> tuple[float, float]:
        _, h, w = self.grid
        return self.image_size[0] / h, self.image_size[1] / w

    def replace(self, **changes: Any) -> ProbeData:
        fields = {"features": self.features, "targets": self.targets, "image_size": self.image_size,
                  "images": self.images, "keys": self.keys}
        fields.update(changes)
        return ProbeData(**fields)


class Predictor(Protocol):
    """A fitted probe applied to new data (same stage, same task)."""

    def __call__(self, data: ProbeData) -> dict[str, Any]: ...


@dataclass
class ProbeResult:
    """What one probe fit on one stage and task measured on the test split.

    - `metrics`: name → value on the whole test split.
    - `per_item`: name → (N_test,) per-test-image scores in test order (NaN where a score does
      not apply to an image), for the bootstrap.
    - `predictions`: test predictions for overlays (boxes/scores/labels lists, class maps,
      reconstructions, class predictions).
    - `history`: the training curve — `epoch`/`train_loss`/`val_loss` for gradient-trained
      probes, `<head>.lambda`/`<head>.val_score` (the λ path) for closed-form ridge heads.
    - `unavailable`: metric name → reason it could not be computed.
    - `detection`: the COCOeval object when the probe detects boxes (for the mAP bootstrap).
    - `predictor`: the fitted probe, callable on new `ProbeData`.
    """

    probe: str
    task: str
    metrics: dict[str, float]
    per_item: dict[str, np.ndarray]
    predictions: dict[str, Any]
    history: dict[str, list[float]]
    unavailable: dict[str, str] = field(default_factory=dict)
    detection: CocoDetectionEval | None = None
    predictor: Predictor | None = None
    control: str | None = None
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)


ProbeFn = Callable[..., ProbeResult]


@dataclass(frozen=True)
class ProbeEntry:
    name: str
    tasks: tuple[str, ...]
    description: str
    fn: ProbeFn
    #: computes its forward passes in the run's probe precision (`--probe-precision`; see training.Precision)
    mixed_precision: bool = False


_REGISTRY: dict[str, ProbeEntry] = {}


def register_probe(name: str, tasks: Sequence[str], description: str,
                   mixed_precision: bool = False) -> Callable[[ProbeFn], ProbeFn]:
    """Register `fn(task, train, val, test, seed, **options) -> ProbeResult` under `name`; `mixed_precision`
    declares that it computes in the run's probe precision (only where bfloat16 made a default-size fit
    ≥ 1.3× cheaper in CPU-s, benchmarks/precision_fits.py)."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"probe {name!r} declares unknown tasks {sorted(unknown)}; known: {TASKS}")

    def wrap(fn: ProbeFn) -> ProbeFn:
        if name in _REGISTRY:
            raise ValueError(f"probe {name!r} is already registered")
        _REGISTRY[name] = ProbeEntry(name, tuple(tasks), description, fn, mixed_precision)
        return fn

    return wrap


def registered_probes() -> dict[str, ProbeEntry]:
    return dict(_REGISTRY)


def mixed_precision_probes() -> tuple[str, ...]:
    """The registered probes that compute in the run's probe precision, as their registrations declare."""
    return tuple(name for name, entry in _REGISTRY.items() if entry.mixed_precision)
