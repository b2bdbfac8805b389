"""Does any stage keep an information type? A stage keeps it when the deciding probe's test score
there beats its chance and control-task rows at the same stage, 95 % CIs apart (METHODOLOGY #25);
"read this stage" is said only then. Rows only: `stageprobe report` re-renders it.
"""

from __future__ import annotations

from collections.abc import Sequence

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report.schema import MetricRow

#: the rows a stage must beat: labels permuted across images, and a random function of the input type
BASELINES = ("chance", "control-task")


def _apart(task: MetricRow, baseline: MetricRow, metric: str) -> bool:
    """The task's CI lies wholly on the better side of the baseline's CI."""
    if not (task.has_ci and baseline.has_ci):
        return False
    if higher_is_better(metric):
        return task.ci_low > baseline.ci_high  # type: ignore[operator]
    return task.ci_high < baseline.ci_low  # type: ignore[operator]


def baselines_at(rows: Sequence[MetricRow], task: MetricRow) -> list[MetricRow]:
    """The chance / control-task rows of the same probe, metric, stage, experiment and variant."""
    return [r for r in rows if r.control in BASELINES and r.value is not None and r.stage == task.stage
            and r.variant == task.variant
            and r.probe == task.probe and r.metric == task.metric and r.experiment == task.experiment]


def stage_keeps(rows: Sequence[MetricRow], task: MetricRow) -> bool | None:
    """True: beats every baseline at its stage; False: some baseline is not beaten; None: none was run."""
    found = baselines_at(rows, task)
    if not found:
        return None
    return all(_apart(task, baseline, task.metric) for baseline in found)


def no_stage_keeps(rows: Sequence[MetricRow], probe: str, metric: str, experiments: Sequence[str],
                   best: MetricRow) -> bool:
    """No stage checked against its baselines beats them, and the best-on-validation stage is one of
    those checked or does not beat the highest baseline seen: a chance-level curve."""
    tasks = [r for r in rows if r.of_model and r.probe == probe and r.metric == metric
             and r.experiment in experiments and r.value is not None]
    checked = {r.stage: stage_keeps(rows, r) for r in tasks}
    verdicts = [kept for kept in checked.values() if kept is not None]
    if not verdicts or any(verdicts):
        return False
    if checked.get(best.stage) is not None:
        return True
    baselines = [b for r in tasks for b in baselines_at(rows, r)]
    return not any(_apart(best, b, metric) for b in baselines)
