"""`--max-disk`: a study whose stores do not fit the budget runs in stage groups that do, with the numbers of
the all-at-once run, and never holds more than the budget on disk."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stageprobe.errors import UserInputError
from stageprobe.suites import _measure
from stageprobe.suites._plan import plan_run, tree_bytes
from stageprobe.suites.runner import RunConfig, run_study

#: E-Q2.2 on a few images: the merge pair and its pixel pair, every probe and control of a real experiment
SMALL = {"model": "qwen2.5-vl-tiny", "size": "quick", "limit": 24, "experiments": ["e_q2_2"], "probe_workers": 1,
         "n_bootstrap": 100}


def metric_lines(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_third_of_the_stores_runs_in_groups_with_the_same_rows(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    whole = RunConfig(**SMALL)
    run_study(whole, tmp_path / "whole")
    plan = plan_run(whole, tmp_path / "plan")
    # a third of the stores, or the largest stage if that is more (the pixel stores are large)
    budget = max(plan.total_bytes // 3, max(s.stage_disk_bytes(stage) for s in plan.stores for stage in s.stages))
    assert len(plan.stage_groups(budget)) >= 3
    features = tmp_path / "grouped" / "features"
    held: list[int] = []
    extract = _measure.extract_dataset

    def sampled(*args: object, **kwargs: object) -> object:
        store = extract(*args, **kwargs)  # type: ignore[arg-type]
        held.append(tree_bytes(features))
        return store

    monkeypatch.setattr(_measure, "extract_dataset", sampled)
    run_study(whole.model_copy(update={"max_disk": budget}), tmp_path / "grouped")
    assert len(held) >= 3  # one extraction per group and model variant
    assert max(held) <= budget
    assert metric_lines(tmp_path / "grouped") == metric_lines(tmp_path / "whole")
    assert not any(features.rglob("*.safetensors"))  # every group's stores were freed


def test_a_budget_below_one_stage_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot hold even one stage"):
        run_study(RunConfig(**SMALL, max_disk=1000), tmp_path / "run")
    assert not (tmp_path / "run").exists()
