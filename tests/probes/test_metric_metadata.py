"""Every metric a registered probe emits has metadata in the catalogue, and the report ranks each
metric the way its metadata says (lowest best for lower-is-better)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from stageprobe.metrics._catalog import METRICS, metric_info
from stageprobe.probes import ProbeData, fit_probe, registered_probes
from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import best_row

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]
#: the data each task is probed on: (dataset, stage, n, with reconstruction images)
TASK_DATA = {"boxes": ("shapes", "pixels.merged", 60, False), "patch_class": ("shapes", "pixels.merged", 60, False),
             "relation": ("shapes", "pixels.merged", 60, False),
             "reconstruction": ("textures", "pixels.merged", 40, True),
             "direction": ("motion", "pixels.merged", 60, False), "speed": ("motion", "pixels.merged", 60, False),
             "order": ("motion", "pixels.merged", 60, False)}


def _cheap_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """One epoch for gradient-trained probes: this test checks names, not scores."""
    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in {"epochs": 1, "patience": 1}.items() if k in accepted}


@pytest.mark.parametrize("name", sorted(registered_probes()))
def test_every_emitted_metric_has_metadata(name: str, pixel_features: FeatureGetter) -> None:
    entry = registered_probes()[name]
    for task in entry.tasks:
        dataset, stage, n, with_images = TASK_DATA[task]
        _, splits = pixel_features(dataset, stage, n, with_images=with_images)
        result = fit_probe(name, task, splits["train"], splits["val"], splits["test"], seed=0,
                           **_cheap_options(entry.fn))
        emitted = [*result.metrics, *result.unavailable]
        assert emitted, (name, task)
        missing = [m for m in emitted if report_or_none(m) is None]
        assert not missing, f"{name}/{task} emits metrics without metadata: {missing}"


def report_or_none(metric: str) -> object | None:
    try:
        return metric_info(metric)
    except KeyError:
        return None


def test_an_undeclared_metric_is_refused() -> None:
    with pytest.raises(KeyError, match="no metadata"):
        metric_info("made_up_score")


@pytest.mark.parametrize("metric", sorted(m.name for m in METRICS.values() if not m.higher_is_better))
def test_lower_is_better_metrics_rank_their_lowest_value_best(metric: str) -> None:
    rows = [MetricRow(experiment="e", stage=stage, probe="p", metric=metric, value=value)
            for stage, value in (("vision.block.0", 0.9), ("vision.block.1", 0.2), ("vision.block.2", 0.5))]
    best = best_row(rows, metric)
    assert best is not None and best.stage == "vision.block.1"


def test_higher_is_better_metrics_rank_their_highest_value_best() -> None:
    rows = [MetricRow(experiment="e", stage=f"vision.block.{i}", probe="p", metric="edge_f1", value=v)
            for i, v in enumerate((0.3, 0.8, 0.5))]
    assert best_row(rows, "edge_f1").stage == "vision.block.1"  # type: ignore[union-attr]
