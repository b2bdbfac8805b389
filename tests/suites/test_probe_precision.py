"""`--probe-precision` through a run: resolved once in the main process into the config (and its identity),
carried by every fit request to the worker that fits it, and never mistaken for a fit of another precision
(the "same fit once" cache, resume)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import stageprobe as sp
from stageprobe.cli import app
from stageprobe.datasets import load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.suites.runner import RunConfig
from stageprobe.suites.workers import FitRequest, ProbePool, dataset_key


def _native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr("stageprobe.probes.training.native_bf16", lambda _device: native)


@pytest.mark.parametrize(("native", "resolved"), [(True, "bfloat16"), (False, "float32")])
def test_auto_is_resolved_into_the_config_and_its_identity(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                           resolved: str) -> None:
    _native(monkeypatch, native)
    config = RunConfig(model="pixels", size="quick")
    assert config.probe_precision == resolved  # what the run records and sends: never "auto"
    assert config.identity_settings()["probe_precision"] == resolved
    assert RunConfig(model="pixels", size="quick", probe_precision=resolved).identity() == config.identity()


def test_another_precision_is_another_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    _native(monkeypatch, True)
    full = RunConfig(model="pixels", size="quick", probe_precision="float32")
    reduced = RunConfig(model="pixels", size="quick", probe_precision="bfloat16")
    assert full.identity() != reduced.identity()


def test_resuming_a_started_run_in_another_precision_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run measured in float32 is not continued in bfloat16 (its finished fits would be mixed with the new)."""
    _native(monkeypatch, True)
    run_dir = tmp_path / "run"
    (run_dir / "experiments").mkdir(parents=True)
    full = RunConfig(model="pixels", size="quick", probe_precision="float32")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**full.model_dump(), "identity": full.identity()}))
    (run_dir / "experiments" / "e_q2_1.json").write_text(json.dumps({"rows": []}))  # a finished experiment
    before = sorted(run_dir.rglob("*"))
    result = CliRunner().invoke(app, ["run", "--model", "pixels", "--quick", "--probe-precision", "bfloat16",
                                      "--out", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "probe_precision: there 'float32', now 'bfloat16'" in result.output
    assert sorted(run_dir.rglob("*")) == before


@pytest.fixture(scope="module")
def boxes_request(tmp_path_factory: pytest.TempPathFactory) -> FitRequest:
    shapes = load_dataset("shapes", n=60, seed=0)
    store = extract_dataset(sp.load_model("pixels"), shapes, tmp_path_factory.mktemp("store"),
                            stages=["pixels.merged"], progress=False)
    return FitRequest("dense-context", "boxes", str(store.root), "pixels.merged", dataset_key(shapes),
                      with_images=False, seed=0, options=(("epochs", 1), ("pca_dim", 8), ("width", 8)))


def test_fits_of_another_precision_are_not_the_same_fit(boxes_request: FitRequest) -> None:
    pool = ProbePool(1)
    pool.submit(boxes_request)
    assert pool.started(boxes_request)
    assert not pool.started(replace(boxes_request, precision="bfloat16"))


def test_the_precision_reaches_the_worker_and_its_fit_records_it(boxes_request: FitRequest) -> None:
    with ProbePool(2) as pool:  # worker processes: the precision travels with the request, not in a global
        full = pool.submit(boxes_request)
        reduced = pool.submit(replace(boxes_request, precision="bfloat16"))
        assert full.result().result.config["precision"] == "float32"
        assert reduced.result().result.config["precision"] == "bfloat16"
