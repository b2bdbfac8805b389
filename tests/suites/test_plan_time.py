"""The time `stageprobe plan` estimates: the arithmetic of the cost model, not its measured values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.models import load_model
from stageprobe.models.pixels import pixel_baseline_for
from stageprobe.suites._costs import Costs, forward_costs, load_costs, planned_fits, precision_key, stage_kind
from stageprobe.suites._measure import Measurement
from stageprobe.suites._plan import RunPlan, meta_measurement, meta_model, plan_run
from stageprobe.suites._spec import with_connector
from stageprobe.suites.runner import RunConfig
from stageprobe.suites.workers import FitRequest, dataset_key

runner = CliRunner()
#: every stage kind one CPU second per sample, nothing outside the modules
UNIT = Costs({"cpu": "test"}, {kind: (1.0, 0.0) for kind in
                               ("patch embed", "window block", "full-attention block", "merger", "LLM layer")},
             0.0, 0.0, {})


def estimate_of(config: RunConfig, tmp_path: Path, groups: list | None = None) -> tuple[RunPlan, object]:
    plan = plan_run(config, tmp_path)
    estimate = plan.estimate(groups)
    assert estimate is not None, "the package ships its measured costs (_costs.json)"
    return plan, estimate


def test_a_forward_costs_every_module_up_to_the_stage_it_stops_after() -> None:
    # qwen2.5-vl-tiny: patch embed, 8 blocks, merger (pre_merge is its input: free), 4 LLM layers
    reached = forward_costs(meta_model("qwen2.5-vl-tiny"), UNIT, (1, 448, 448))
    assert reached["vision.patch_embed"] == 1
    assert reached["vision.block.3"] == 5
    assert reached["vision.pre_merge"] == 9
    assert reached["vision.post_merge"] == 10
    assert reached["language.layer.1"] == 12
    assert reached["language.norm"] == 14


@pytest.mark.parametrize(("name", "description", "hook", "kind"), [
    ("vision.block.3", "output of ViT block 3 (window attention)", "output", "window block"),
    ("vision.block.7", "output of ViT block 7 (full attention)", "output", "full-attention block"),
    ("vision.block.2", "output of SigLIP block 2", "output", "full-attention block"),
    ("vision.post_projector", "MLP projector output", "output", "merger"),
    ("language.layer.0.before_deepstack", "LLM layer 0 output before its DeepStack addition", "output", "LLM layer"),
    ("language.layer.0", "LLM layer 0 output + DeepStack merger 0", "input", None),
    ("vision.pre_merge", "input of the merger", "input", None),
    ("language.norm", "final LLM norm", "output", None),
])
def test_stage_kinds(name: str, description: str, hook: str, kind: str | None) -> None:
    assert stage_kind(name, description, hook) == kind


def test_doubling_the_images_doubles_extraction_and_scales_fits_by_the_measured_law(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", experiments=["e_q2_1"], limit=20)
    small, small_time = estimate_of(config, tmp_path)
    large, large_time = estimate_of(config.model_copy(update={"limit": 40}), tmp_path)
    assert large_time.extraction_cpu_s == pytest.approx(2 * small_time.extraction_cpu_s)
    costs = load_costs()
    assert costs is not None
    for before, after in zip(small.fits, large.fits, strict=True):
        assert (after.samples, after.key) == (2 * before.samples, before.key)
        law = costs.law(precision_key(before.key, config.probe_precision))
        assert law is not None and after.cpu_s / before.cpu_s == pytest.approx(2 ** law[1])


@pytest.mark.parametrize(("precision", "laws", "seconds"), [
    ("float32", {"dense-context/boxes": (2.0, 0.0, 0.0), "dense-context/boxes@bfloat16": (1.0, 0.0, 0.0)}, 2.0),
    ("bfloat16", {"dense-context/boxes": (2.0, 0.0, 0.0), "dense-context/boxes@bfloat16": (1.0, 0.0, 0.0)}, 1.0),
    # no bfloat16 law measured: the float32 one, an upper bound
    ("bfloat16", {"dense-context/boxes": (2.0, 0.0, 0.0)}, 2.0),
])
def test_a_mixed_precision_probe_costs_its_own_precision_law(tmp_path: Path, precision: str,
                                                             laws: dict[str, tuple[float, float, float]],
                                                             seconds: float) -> None:
    costs = Costs({"cpu": "test"}, {}, 0.0, 0.0, {**laws, "dense-linear/boxes": (3.0, 0.0, 0.0)})
    config = RunConfig.model_construct(**{**RunConfig(model="qwen2.5-vl-tiny", size="quick",
                                                      experiments=["e_q2_2"]).model_dump(),
                                          "probe_precision": precision})
    measurement = meta_measurement(config, tmp_path)
    fits = planned_fits(measurement, [s for s in measurement.suite.experiments if s.id == "e_q2_2"], costs)
    by_probe = {fit.key: fit.cpu_s for fit in fits}
    assert by_probe["dense-context/boxes"] == seconds
    assert by_probe["dense-linear/boxes"] == 3.0  # a float32-only probe: one law whatever the precision


def test_fewer_stages_estimate_less_and_stage_groups_re_run_the_forward(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", experiments=["e_q2_1", "e_q2_3"], controls=False)
    plan, whole = estimate_of(config, tmp_path)
    _, early = estimate_of(config.model_copy(update={"stages": ["vision.block.0"]}), tmp_path)
    assert early.extraction_cpu_s < whole.extraction_cpu_s and early.fit_cpu_s < whole.fit_cpu_s
    groups = plan.stage_groups(plan.total_bytes // 3)
    grouped = plan.estimate(groups)
    assert grouped is not None and grouped.forwards == len(groups) > whole.forwards == 1
    assert grouped.extraction_cpu_s > whole.extraction_cpu_s and grouped.fit_cpu_s == whole.fit_cpu_s


def test_wall_time_divides_by_the_cores_and_the_probe_workers(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", experiments=["e_q2_2"], probe_workers=3)
    _, estimate = estimate_of(config, tmp_path)
    assert estimate.fit_wall_s == pytest.approx(estimate.fit_cpu_s / 3)
    assert estimate.extraction_wall_s == pytest.approx(estimate.extraction_cpu_s / estimate.cores)
    assert estimate.wall_s == pytest.approx(estimate.fit_wall_s + estimate.extraction_wall_s)


def test_on_a_gpu_the_estimate_says_nothing_was_measured_there(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", experiments=["e_q2_2"], device="cuda")
    _, estimate = estimate_of(config, tmp_path)
    assert estimate.wall_s is None and estimate.as_json()["fit_wall_s"] is None
    assert "no GPU measurement" in estimate.lines()[0]


def test_plan_prints_and_returns_the_estimate_and_where_it_was_measured() -> None:
    printed = runner.invoke(app, ["plan", "--quick", "--experiments", "e_q2_2"])
    assert printed.exit_code == 0, printed.output
    assert "estimate" in printed.stdout and "measured on" in printed.stdout
    answer = runner.invoke(app, ["plan", "--quick", "--experiments", "e_q2_2", "--json"])
    time = json.loads(answer.stdout)["time"]
    assert time["estimate"] is True and "estimate" in time["note"]
    assert {"extraction_cpu_s", "fit_cpu_s", "extraction_wall_s", "fit_wall_s", "wall_s", "fits",
            "probe_workers", "cores"} <= set(time)
    assert {"cpu", "cores", "date", "torch"} <= set(time["measured_on"])


class RecordingPool:
    """A probe pool that records what is submitted and fits nothing."""

    def __init__(self) -> None:
        self.requests: set[FitRequest] = set()

    def add_dataset(self, dataset: object) -> str:
        return dataset_key(dataset)  # type: ignore[arg-type]

    def started(self, request: FitRequest) -> bool:
        return request in self.requests

    def submit(self, request: FitRequest) -> Future:
        self.requests.add(request)
        return Future()

    @contextmanager
    def cores_left(self) -> Iterator[None]:
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Extraction of a few images on one thread: on a busy 2-core machine a second one only spins."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("size", ["quick", "default"])
def test_the_plan_counts_exactly_the_fits_the_run_submits(tmp_path: Path, size: str, one_thread: None) -> None:
    # default: three probe seeds where the deciding probes decide; quick: its stage limits and probe options
    config = RunConfig(model="qwen2.5-vl-tiny", size=size, limit=4)
    plan = plan_run(config, tmp_path)
    model = load_model("qwen2.5-vl-tiny", device="cpu")
    models = {"main": model, "pixels": pixel_baseline_for(model)}
    pool = RecordingPool()
    measurement = Measurement(config, models.__getitem__, tmp_path / "features", pool=pool, quiet=True)  # type: ignore[arg-type]
    measurement.suite = with_connector(measurement.suite, model.connector_stages)
    for spec in measurement.suite.experiments:
        measurement.start_experiment(spec)
    assert sum(fit.count for fit in plan.fits) == len(pool.requests) > 100


@pytest.mark.parametrize(("args", "word"), [(["--seeds", "0"], "--seeds"), (["--seeds", "99"], "--seeds"),
                                            (["--probe-workers", "0"], "--probe-workers")])
def test_plan_refuses_bad_seeds_and_workers(args: list[str], word: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2 and word in result.output and "Traceback" not in result.output


def test_more_seeds_make_more_fits(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", experiments=["e_q2_4"], controls=False)
    one, _ = estimate_of(config.model_copy(update={"seeds": 1}), tmp_path)
    three, _ = estimate_of(config.model_copy(update={"seeds": 3}), tmp_path)
    # the attention probe is gradient-trained: it and each of its controls gain two seeds
    assert [3 * fit.count for fit in one.fits] == [fit.count for fit in three.fits]
    assert any(fit.count == 3 for fit in one.fits)  # the verdict stage: the probe and its two controls


def test_run_prints_the_estimate_in_its_first_lines(tmp_path: Path, one_thread: None) -> None:
    result = runner.invoke(app, ["run", "--model", "pixels", "--quick", "--limit", "12", "--experiments",
                                 "e_q2_5_photos", "--out", str(tmp_path / "run")])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 0, output
    first = " ".join(output.split("\ne_q2_5_photos", 1)[0].split())  # before the experiment starts, unwrapped
    assert "time, estimated" in first and "measured on" in first
