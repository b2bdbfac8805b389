"""Closed-form linear classification shared by the pooled probes: one-hot ridge, argmax."""

from __future__ import annotations

import numpy as np
import torch

from stageprobe.probes.training import LinearMap, RidgeSolver, argmax_accuracy


def fit_ridge_classifier(x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor, y_val: np.ndarray,
                         num_classes: int) -> tuple[LinearMap, dict[str, list[float]]]:
    """Ridge on one-hot labels, λ chosen by val accuracy; predict with `map(x).argmax(1)`."""
    eye = torch.eye(num_classes)
    return RidgeSolver(x_train).fit(eye[torch.as_tensor(y_train).long()], x_val,
                                    eye[torch.as_tensor(y_val).long()], score=argmax_accuracy)
