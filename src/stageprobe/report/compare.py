"""`stageprobe compare RUN_A RUN_B …`: stage metrics of several runs side by side, with deltas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from stageprobe.errors import UserInputError
from stageprobe.report.fmt import fmt, fmt_ci
from stageprobe.report.render import load_run
from stageprobe.report.schema import MetricRow, stage_sort_key

Key = tuple[str, str, str, str, str]  # experiment, stage, probe, metric, control


@dataclass(frozen=True)
class CompareRow:
    experiment: str
    stage: str
    probe: str
    metric: str
    control: str
    rows: tuple[MetricRow | None, ...]  # one per run, None where the run lacks it

    @property
    def values(self) -> tuple[float | None, ...]:
        return tuple(r.value if r is not None else None for r in self.rows)

    @property
    def deltas(self) -> tuple[float | None, ...]:
        """Each run minus the first run; None for the first run or a missing value."""
        base = self.values[0]
        return tuple(None if i == 0 or base is None or v is None else v - base
                     for i, v in enumerate(self.values))


@dataclass(frozen=True)
class Comparison:
    runs: tuple[str, ...]
    rows: tuple[CompareRow, ...]


def compare_runs(run_dirs: Sequence[str | Path], controls: Sequence[str] = ("none",),
                 metrics: Sequence[str] | None = None) -> Comparison:
    """Align every (experiment, stage, probe, metric, control) of each run's own model across runs (its
    variants and reference rows are not the model); the first run is the base."""
    labels: list[str] = []
    per_run: list[dict[Key, MetricRow]] = []
    for run_dir in run_dirs:
        results, rows = load_run(run_dir)
        labels.append(f"{Path(run_dir).name} ({results.get('model', '?')})")
        per_run.append({(r.experiment, r.stage, r.probe, r.metric, r.control): r for r in rows
                        if r.variant == "model" and r.control in controls and (metrics is None or r.metric in metrics)})
    _check_common_stage(labels, per_run)
    keys = sorted({k for run in per_run for k in run},
                  key=lambda k: (k[0], k[3], stage_sort_key(k[1]), k[2], k[4]))
    table = tuple(CompareRow(*key, rows=tuple(run.get(key) for run in per_run)) for key in keys)
    return Comparison(tuple(labels), table)


def _check_common_stage(labels: list[str], per_run: list[dict[Key, MetricRow]]) -> None:
    """Runs that share no stage would give a table with a blank in every row: say so instead."""
    stages = [{key[1] for key in run} for run in per_run]
    if set.intersection(*stages):
        return
    held = "; ".join(f"{label}: {', '.join(sorted(found, key=stage_sort_key)[:4]) or 'none'}"
                     + ("…" if len(found) > 4 else "") for label, found in zip(labels, stages, strict=True))
    raise UserInputError(
        f"these runs have no stage in common, so there is nothing to compare side by side ({held}). "
        "Compare runs of models that share stages, e.g. two runs of one architecture"
    )


def _cell(row: MetricRow | None) -> str:
    if row is None:
        return "—"
    if row.value is None:
        return "n/a"
    ci = fmt_ci(row.ci_low, row.ci_high)
    return fmt(row.value) + (f"\n[dim]{ci}[/]" if ci else "")


def _delta(delta: float | None) -> str:
    if delta is None:
        return "—"
    colour = "green" if delta > 0 else ("red" if delta < 0 else "dim")
    return f"[{colour}]{'+' if delta >= 0 else ''}{fmt(delta)}[/]"


def training_table(run_dirs: Sequence[str | Path]) -> Table | None:
    """Trained − random-init twin per information type, one column per run (results.yaml's
    `training_effect`); None when no run measured it."""
    runs = [(Path(d).name, load_run(d)[0].get("training_effect") or {}) for d in run_dirs]
    kinds = list(dict.fromkeys(k for _, effect in runs for k in (effect.get("per_information") or {})))
    if not kinds:
        return None
    table = Table(title="Trained − random-init twin at the verdict stage (paired 95% CI)")
    table.add_column("information", no_wrap=True)
    for name, _ in runs:
        table.add_column(name, justify="right")
    for kind in kinds:
        table.add_row(kind, *[_training_cell(effect, kind) for _, effect in runs])
    return table


def _training_cell(effect: dict, kind: str) -> str:
    entry = (effect.get("per_information") or {}).get(kind)
    if entry is None:
        return "—" if not effect.get("not_measured") else "[dim]no twin[/]"
    at = entry.get("at_verdict_stage") or {}
    if at.get("value") is None:
        return "n/a"
    ci = at.get("ci") or [None, None]
    return (f"{'+' if at['value'] > 0 else ''}{fmt(at['value'])} {fmt_ci(*ci)}\n[dim]{at.get('stage')}: "
            f"{entry.get('cause') or 'no cause claimed'}[/]")


def comparison_table(comparison: Comparison, title: str = "Stage metrics across runs") -> Table:
    """A rich table: one column per run, then Δ columns against the first run."""
    table = Table(title=title, show_lines=False)
    for header in ("experiment", "stage", "probe", "metric"):
        table.add_column(header, no_wrap=True)
    with_control = any(r.control != "none" for r in comparison.rows)
    if with_control:
        table.add_column("control")
    for label in comparison.runs:
        table.add_column(label, justify="right")
    for label in comparison.runs[1:]:
        table.add_column(f"Δ {label}", justify="right")
    for row in comparison.rows:
        cells = [row.experiment, row.stage, row.probe, row.metric] + ([row.control] if with_control else [])
        cells += [_cell(r) for r in row.rows] + [_delta(d) for d in row.deltas[1:]]
        table.add_row(*cells)
    return table
