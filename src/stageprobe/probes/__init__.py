"""Probe families and the one entry point the study runner calls: `fit_probe`.

Adding a probe = one module that decorates its fit function with `register_probe` + one import
line below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stageprobe.probes import (  # noqa: F401  (importing registers the probes)
    attention,
    decoder,
    dense_context,
    dense_linear,
    pooled_linear,
    recon_linear,
    relation,
    temporal,
    token_flow,
)
from stageprobe.probes.base import (
    TASKS,
    ProbeData,
    ProbeResult,
    mixed_precision_probes,
    register_probe,
    registered_probes,
)
from stageprobe.probes.controls import CONTROLS, apply_control
from stageprobe.probes.training import default_device, small_model_threads

__all__ = ["CONTROLS", "TASKS", "ProbeData", "ProbeResult", "fit_probe", "mixed_precision_probes", "register_probe",
           "registered_probes", "split_probe_data"]


def fit_probe(name: str, task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int = 0,
              control: str | None = None, **options: Any) -> ProbeResult:
    """Fit probe `name` for `task` on train (selection on val) and score it on test.

    `control` is None, "control-task" or "token-shuffle" (see `controls.py`). `options` go to the
    probe (e.g. `num_classes`, `epochs`, `output_size`).
    """
    probes = registered_probes()
    if name not in probes:
        raise ValueError(f"unknown probe {name!r}; registered: {sorted(probes)}")
    entry = probes[name]
    if task not in entry.tasks:
        raise ValueError(f"probe {name!r} does not do task {task!r}; it does {list(entry.tasks)}")
    if control is not None:
        train, val, test = apply_control(control, train, val, test, seed)
    # Probe-sized linear algebra (a d×d eigendecomposition, small batches) runs up to 60× slower
    # with a second OpenMP thread spinning on a busy 2-core machine (measured), so one thread.
    with small_model_threads(default_device()):
        result = entry.fn(task, train, val, test, seed, **options)
    result.control = control
    result.seed = seed
    return result


def split_probe_data(features: torch.Tensor | np.ndarray, samples: Sequence[Any],
                     images: np.ndarray | None = None,
                     image_size: tuple[int, int] | None = None) -> dict[str, ProbeData]:
    """Split features (N, T, H, W, D) of `samples` (objects with .key, .split, .target) into
    train/val/test `ProbeData` by each sample's own split. `image_size` (height, width) is read
    off the first sample's .image or .frames when not given."""
    features = torch.as_tensor(features)
    if image_size is None:
        first = samples[0].image if samples[0].image is not None else samples[0].frames[0]
        image_size = (first.size[1], first.size[0])
    out = {}
    for split in ("train", "val", "test"):
        idx = [i for i, s in enumerate(samples) if s.split == split]
        out[split] = ProbeData(features[idx], [samples[i].target for i in idx], image_size,
                               None if images is None else images[idx], [samples[i].key for i in idx])
    return out
