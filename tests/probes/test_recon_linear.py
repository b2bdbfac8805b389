"""Known answers for `recon-linear`: on raw pixels each token holds its own cell exactly, so the
closed-form map is an identity — near-perfect at both grids, with no drop at the merger — and with
images permuted across the split (control task) it cannot be."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from stageprobe.probes import ProbeData, ProbeResult, fit_probe
from stageprobe.stats import paired_bootstrap_diff

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


def _fit(get: FeatureGetter, stage: str, n: int, control: str | None = None) -> tuple[ProbeResult, ProbeData]:
    _, splits = get("textures", stage, n, with_images=True, images_px=None)
    result = fit_probe("recon-linear", "reconstruction", splits["train"], splits["val"], splits["test"], seed=0,
                       control=control)
    return result, splits["test"]


def _check_exact(result: ProbeResult, test: ProbeData) -> None:
    recs = result.predictions["reconstructions"]
    assert recs.shape == (len(test), *test.image_size, 3) and recs.dtype == np.float32
    assert result.metrics["psnr"] > 40, result.metrics
    assert result.metrics["ssim"] > 0.99, result.metrics
    assert result.config["edge_f1"]["sigma_px"] == 1.0
    assert result.config["edge_f1"]["resolution"] == list(test.image_size)


def test_recon_linear_is_exact_on_patch_pixels_fast(pixel_features: FeatureGetter) -> None:
    result, test = _fit(pixel_features, "pixels.patch", 96)
    _check_exact(result, test)
    control, _ = _fit(pixel_features, "pixels.patch", 96, control="control-task")
    assert control.metrics["ssim"] < result.metrics["ssim"] - 0.3, control.metrics


def test_cell_pixels_round_trip() -> None:
    from stageprobe.probes.recon_linear import cell_pixels, cells_to_images

    images = np.random.default_rng(0).random((2, 28, 42, 3)).astype(np.float32)
    data = ProbeData(np.zeros((2, 1, 2, 3, 5)), [{}, {}], (28, 42), images)
    cells = cell_pixels(data)
    assert cells.shape == (2 * 2 * 3, 14 * 14 * 3)
    assert np.array_equal(cells[1].reshape(14, 14, 3).numpy(), images[0, :14, 14:28])
    assert np.array_equal(cells_to_images(cells, 2, (2, 3), (14, 14)), images)


@pytest.mark.slow
def test_recon_linear_equal_at_both_pixel_grids(pixel_features: FeatureGetter) -> None:
    """Default textures size (240): both grids exact, and the merger changes nothing a model
    comparison could see: the paired 14 px − 28 px difference CI lies within ±0.001 SSIM and
    ±0.01 edge F1. (The raw CIs are too tight to overlap — SSIM 0.999998 vs 0.999990 — and PSNR
    above ~70 dB measures the float16 rounding of stored features, 79.8 vs 75.7 dB, not detail.)"""
    results = {stage: _fit(pixel_features, stage, 240) for stage in ("pixels.patch", "pixels.merged")}
    for result, test in results.values():
        _check_exact(result, test)
    (patch, _), (merged, _) = results.values()
    for metric, tolerance in (("ssim", 0.001), ("edge_f1", 0.01)):
        diff = paired_bootstrap_diff(patch.per_item[metric], merged.per_item[metric])
        assert -tolerance < diff.low and diff.high < tolerance, (metric, diff)
