"""`--probe-precision`: how it resolves, that float32 is the full-precision code path unchanged, and that
the gradient-trained probes record the precision they ran in (the known answers under the resolved
`auto` are the other tests in this folder: conftest.py runs them in it)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from stageprobe.probes import ProbeData, ProbeResult, fit_probe, mixed_precision_probes, training
from stageprobe.probes.training import Precision, fit_precision, probe_precision, resolve_precision

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


def test_auto_is_float32_where_the_cpu_has_no_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "amx_bf16": False,
                                                                 "avx512_bf16": False})
    cpu = torch.device("cpu")
    assert not training.native_bf16(cpu)
    assert resolve_precision("auto", cpu) == "float32"
    assert resolve_precision("float32", cpu) == "float32"
    with pytest.raises(ValueError, match=r"does not compute bfloat16 natively.*use float32 or auto"):
        resolve_precision("bfloat16", cpu)


@pytest.mark.parametrize("feature", training.NATIVE_BF16_CPU_FEATURES)
def test_auto_is_bfloat16_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch, feature: str) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {feature: True})
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "bfloat16"
    assert resolve_precision("bfloat16", cpu) == "bfloat16"


def test_unknown_precision_names_the_accepted_values() -> None:
    with pytest.raises(ValueError, match="unknown probe precision 'fp8'; use auto, float32, bfloat16"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="resolved"), probe_precision("auto"):
        pass


def test_float32_changes_nothing_in_the_computation() -> None:
    """float32 adds no autocast and no layout change: the same tensors and modules as before the setting."""
    grid = torch.randn(2, 3, 4, 4)
    conv = torch.nn.Conv2d(3, 3, 1)
    full = Precision("float32", "cpu")
    assert full.layout(grid) is grid and full.layout(conv) is conv
    with full.autocast():
        assert not torch.is_autocast_enabled("cpu")
    reduced = Precision("bfloat16", "cpu")
    assert reduced.layout(grid).is_contiguous(memory_format=torch.channels_last)
    with reduced.autocast():
        assert conv(grid).dtype == torch.bfloat16
    # outside any setting (a fresh context; conftest sets the resolved auto around this test): full precision
    assert contextvars.Context().run(fit_precision, torch.device("cpu")).name == "float32"
    with probe_precision("bfloat16"):
        assert fit_precision(torch.device("cpu")) == reduced


def _small_fit(splits: dict[str, ProbeData], precision: str | None) -> ProbeResult:
    args = (splits["train"], splits["val"], splits["test"])
    options = {"epochs": 2, "pca_dim": 16, "width": 8}
    if precision is None:  # a fresh context: no setting at all, as a probe fitted outside a run
        return contextvars.Context().run(fit_probe, "dense-context", "boxes", *args, seed=0, **options)
    with probe_precision(precision):
        return fit_probe("dense-context", "boxes", *args, seed=0, **options)


def test_float32_fit_is_bit_identical_to_a_fit_without_the_setting(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.merged", 60)
    default, full = _small_fit(splits, None), _small_fit(splits, "float32")
    assert default.config["precision"] == full.config["precision"] == "float32"
    assert full.metrics == default.metrics
    assert full.history == default.history


@pytest.mark.skipif(not training.native_bf16(torch.device("cpu")), reason="this CPU has no native bfloat16")
def test_bfloat16_fit_records_its_precision_and_reads_out_float32(pixel_features: FeatureGetter) -> None:
    _, splits = pixel_features("shapes", "pixels.merged", 60)
    reduced = _small_fit(splits, "bfloat16")
    assert reduced.config["precision"] == "bfloat16"
    assert all(isinstance(v, float) for v in reduced.history["val_loss"])
    assert reduced.predictor is not None
    maps = reduced.predictor.maps(splits["test"])  # type: ignore[attr-defined]
    assert all(m.dtype == np.float32 for m in maps.values())
    # bfloat16 did compute something else than float32
    assert reduced.history["val_loss"] != _small_fit(splits, "float32").history["val_loss"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_every_mixed_precision_probe_records_the_precision_it_ran_in(pixel_features: FeatureGetter,
                                                                     precision: str) -> None:
    """The probes the findings note names (`mixed_precision_probes()`) are the ones that read the setting."""
    if precision == "bfloat16" and not training.native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16")
    _, boxes = pixel_features("shapes", "pixels.merged", 60)
    _, images = pixel_features("textures", "pixels.merged", 40, with_images=True)
    options = {"dense-context": ("boxes", boxes, {"epochs": 1, "pca_dim": 8, "width": 8}),
               "decoder": ("reconstruction", images, {"epochs": 1}),
               "decoder-pooled": ("reconstruction", images, {"epochs": 1})}
    assert set(options) == set(mixed_precision_probes())
    with probe_precision(precision):
        for probe, (task, splits, kwargs) in options.items():
            result = fit_probe(probe, task, splits["train"], splits["val"], splits["test"], seed=0, **kwargs)
            assert result.config["precision"] == precision, probe
