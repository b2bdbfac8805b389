"""Controls applied to a split before probing.

- `control-task` (Hewitt & Liang, 2019): targets (and reconstruction images) permuted across the
  images of each split, so a probe can only score by memorising, not by reading the features.
  The control score is measured against the permuted test targets; selectivity = task − control.
- `token-shuffle`: each image's token positions permuted (one seeded permutation per image,
  shared by its time steps). A spatial probe that scores the same was not reading position.
"""

from __future__ import annotations

import numpy as np
import torch

from stageprobe.probes.base import ProbeData

CONTROLS = ("control-task", "token-shuffle")


def permute_labels(data: ProbeData, seed: int) -> ProbeData:
    """The same features with targets (and images) drawn from other images of the split."""
    order = np.random.default_rng(seed).permutation(len(data))
    images = None if data.images is None else data.images[order]
    return data.replace(targets=[data.targets[i] for i in order], images=images)


def shuffle_tokens(data: ProbeData, seed: int) -> ProbeData:
    """Token positions permuted within each image; targets untouched."""
    n, t, h, w, d = data.features.shape
    generator = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)])
    flat = data.features.reshape(n, t, h * w, d)
    index = perms[:, None, :, None].expand(n, t, h * w, d)
    return data.replace(features=torch.gather(flat, 2, index).reshape(n, t, h, w, d))


def apply_control(control: str, train: ProbeData, val: ProbeData, test: ProbeData,
                  seed: int) -> tuple[ProbeData, ProbeData, ProbeData]:
    """The three splits under a control, each split with its own derived seed."""
    transforms = {"control-task": permute_labels, "token-shuffle": shuffle_tokens}
    if control not in transforms:
        raise ValueError(f"unknown control {control!r}; choose one of {CONTROLS}")
    fn = transforms[control]
    return fn(train, seed * 3 + 1), fn(val, seed * 3 + 2), fn(test, seed * 3 + 3)
