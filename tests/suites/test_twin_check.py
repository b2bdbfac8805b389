"""Issue 27's bad input: a twin that cannot be built is said before any work; `--no-twin` skips it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageprobe.errors import UserInputError
from stageprobe.suites.runner import RunConfig, StudyRun


class _Pretrained:
    """A pretrained model whose twin cannot be instantiated here."""

    name = "some/checkpoint"
    weights_id = "sha256:abc"
    stage_names = ("vision.post_merge",)

    def random_init_twin(self, seed: int = 1) -> None:
        raise RuntimeError("CUDA out of memory")


def _run(tmp_path: Path, twin: bool) -> StudyRun:
    run = StudyRun(RunConfig(model="some/checkpoint", twin=twin), tmp_path / "run")
    run._models["main"] = _Pretrained()  # type: ignore[assignment]
    return run


def test_a_twin_that_cannot_be_built_stops_the_run_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"random-init twin of some/checkpoint cannot be built.*--no-twin"):
        _run(tmp_path, twin=True).prepare()
    assert not (tmp_path / "run").exists()


def test_no_twin_runs_without_it(tmp_path: Path) -> None:
    run = _run(tmp_path, twin=False)
    run._check_twin()  # the twin that cannot be built is not built
    assert "random-init" not in run.measurement.variants()
