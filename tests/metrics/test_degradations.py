"""Known answers for the reference reconstructions: the identity passes every E-Q2.5 target, and
edge F1 (Canny σ = 1 at the input resolution) fails a σ = 4 px blur and the flat mean image —
the cases the old half-resolution, σ = 2 edge F1 let through. Edgeless references are excluded."""

from __future__ import annotations

import numpy as np
import pytest

from stageprobe.datasets import load_dataset
from stageprobe.metrics import edge_f1
from stageprobe.metrics.degradations import REFERENCE_DEGRADATIONS, degrade, reference_scores
from stageprobe.metrics.reconstruction import edge_f1_config

EDGE_F1_TARGET, LPIPS_TARGET = 0.6, 0.3


def _texture_test_images(n: int, limit: int | None = None) -> np.ndarray:
    dataset = load_dataset("textures", n=n, seed=0)
    indices = dataset.split_indices("test")[:limit]
    return np.stack([np.asarray(dataset[i].image.convert("RGB"), dtype=np.float64) / 255 for i in indices])


def _check_calibration(references: np.ndarray) -> None:
    scores = reference_scores(references)
    assert set(scores) == set(REFERENCE_DEGRADATIONS)
    mean = {name: {k: float(np.nanmean(v)) for k, v in s.items()} for name, (s, _) in scores.items()}
    identity, unavailable = scores["identity"]
    assert mean["identity"]["ssim"] == pytest.approx(1.0)
    assert mean["identity"]["edge_f1"] == pytest.approx(1.0)
    assert mean["identity"]["gram_gabor"] == pytest.approx(0.0, abs=1e-12)
    if "lpips" in identity:
        assert mean["identity"]["lpips"] < LPIPS_TARGET
    else:
        assert "weights" in unavailable["lpips"]  # offline: LPIPS unavailable, never substituted
    assert mean["blur-4px"]["edge_f1"] < EDGE_F1_TARGET, mean["blur-4px"]
    assert mean["constant-mean"]["edge_f1"] < EDGE_F1_TARGET, mean["constant-mean"]
    blurs = [mean[f"blur-{s}px"] for s in (1, 2, 4)]
    assert blurs[0]["edge_f1"] > blurs[1]["edge_f1"] > blurs[2]["edge_f1"], blurs
    assert blurs[0]["ssim"] > blurs[1]["ssim"] > blurs[2]["ssim"], blurs
    # Edgeless references are NaN for every degradation alike, never a free 1.0.
    edgeless = np.isnan(identity["edge_f1"])
    for per_image, _ in scores.values():
        assert np.array_equal(np.isnan(per_image["edge_f1"]), edgeless)


def test_reference_calibration_on_texture_test_images_fast() -> None:
    _check_calibration(_texture_test_images(240, limit=12))


@pytest.mark.slow
def test_reference_calibration_on_default_texture_test_split() -> None:
    _check_calibration(_texture_test_images(240))


def test_edgeless_reference_is_excluded_and_counted() -> None:
    flat = np.full((32, 32, 3), 0.5)
    square = flat.copy()
    square[8:24, 8:24] = 0.0
    assert np.isnan(edge_f1(flat, flat)) and np.isnan(edge_f1(flat, square))
    assert edge_f1(square, flat) == 0.0
    config = edge_f1_config(np.array([np.nan, 1.0, 0.5]), (32, 32))
    assert config["excluded_edgeless_references"] == 1 and config["scored"] == 2


def test_degrade_known_values() -> None:
    images = np.random.default_rng(0).random((2, 16, 16, 3))
    assert np.array_equal(degrade(images, "identity"), images)
    constant = degrade(images, "constant-mean")
    assert np.allclose(constant, images.mean(axis=(1, 2), keepdims=True))
    assert degrade(images, "blur-4px").std() < degrade(images, "blur-1px").std() < images.std()
    with pytest.raises(ValueError, match="unknown reference degradation"):
        degrade(images, "sharpen")
