"""`stageprobe plan`: the bytes a run stores, known before any weight is read, and equal to what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageprobe._checks import parse_size
from stageprobe.cli import app
from stageprobe.errors import UserInputError
from stageprobe.models import load_model
from stageprobe.suites._measure import Measurement
from stageprobe.suites._plan import plan_run
from stageprobe.suites.runner import RunConfig

runner = CliRunner()
MIB = 1024**2


def test_plan_of_the_7b_architecture_matches_the_storage_table() -> None:
    result = runner.invoke(app, ["plan", "--model", "qwen2.5-vl-7b-random", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    # docs/scale.md: 64 stages, 137.5 MiB per 448×448 image in fp16
    assert len(plan["model_stages"]) == 64
    assert plan["bytes_per_image"] == pytest.approx(137.5 * MIB)
    assert plan["extraction_ram_bytes"] > plan["weight_bytes"] > 15 * 1024**3


@pytest.mark.parametrize(("text", "size"), [("80G", 80 * 1024**3), ("500M", 500 * MIB), ("1.5T", int(1.5 * 1024**4)),
                                            ("64GiB", 64 * 1024**3), ("123456", 123456)])
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-5G", "10 gigs", "", "G"])
def test_bad_sizes_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(UserInputError, match="80G, 500M"):
        parse_size(text)


def test_plan_bytes_equal_the_store_the_run_writes(tmp_path: Path) -> None:
    config = RunConfig(model="qwen2.5-vl-tiny", size="quick", limit=6, experiments=["e_q2_2"], controls=False)
    plan = plan_run(config, tmp_path)
    [store_plan] = plan.stores
    model = load_model("qwen2.5-vl-tiny", device="cpu")
    store = Measurement(config, lambda _which: model, tmp_path, quiet=True).store("main", store_plan.family)
    assert sorted(store.stages) == sorted(stage.name for stage in store_plan.stages)
    written = sum(store.load(stage).numel() for stage in store.stages) * 2  # float16 on disk
    assert written == store_plan.bytes


def test_stage_groups_keep_the_budget_and_refuse_a_budget_below_one_stage(tmp_path: Path) -> None:
    plan = plan_run(RunConfig(model="qwen2.5-vl-tiny", size="quick"), tmp_path)
    budget = plan.total_bytes // 3
    groups = plan.stage_groups(budget)
    assert len(groups) >= 3
    sizes = {(s.variant, s.family, stage.name): s.stage_disk_bytes(stage)
             for s in plan.stores for stage in s.stages}
    assert all(sum(sizes[key] for key in group) <= budget for group in groups)
    assert sorted(key for group in groups for key in group) == sorted(sizes)
    with pytest.raises(UserInputError, match="cannot hold even one stage"):
        plan.stage_groups(min(sizes.values()) - 1)


def test_plan_refuses_an_unparsable_budget() -> None:
    result = runner.invoke(app, ["plan", "--max-disk", "10 gigs"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.parametrize("size", ["0", "-5G", "10 gigs"])
def test_run_refuses_a_bad_budget_before_anything_is_written(tmp_path: Path, size: str) -> None:
    result = runner.invoke(app, ["run", "--quick", "--max-disk", size, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "80G, 500M" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_budget_below_one_stage_with_the_recipe(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--quick", "--max-disk", "1000", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "cannot hold even one stage" in result.output and "--stages" in result.output
    assert "run directory" not in result.output
    assert not (tmp_path / "run").exists()
