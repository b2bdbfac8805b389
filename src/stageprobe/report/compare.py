"""`stageprobe compare RUN_A RUN_B …`: stage metrics of several runs side by side, with deltas; runs of
different models aligned by stage kind (embedding, ViT depth fraction, connector in / out, LLM depth
fraction), each information type's deciding probe shown with its retention against that model's pixel
ceiling — "which connector keeps location" at a glance."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from stageprobe.errors import UserInputError
from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report.fmt import fmt, fmt_ci
from stageprobe.report.render import load_run
from stageprobe.report.schema import AFTER_CONNECTOR, CONNECTOR_PAIRS, MetricRow, pixel_stage_for, stage_sort_key
from stageprobe.report.verdicts import Target

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


# ---------------------------------------------------------------------------------------------
# Across model families: stages aligned by what they are, not by name.

#: where each kind of stage sits on the aligned axis; ViT blocks and LLM layers spread over their
#: span by depth fraction ((i + 1) / depth), so a 4-layer and a 36-layer LLM share one axis
EMBEDDING_X, VIT_SPAN, CONNECTOR_IN_X, CONNECTOR_OUT_X, PROJECTOR_X, LLM_SPAN, LLM_NORM_X = (
    0.0, (0.0, 1.0), 1.25, 1.5, 1.6, (1.75, 2.75), 2.9)
EMBEDDING_STAGES = ("vision.patch_embed", "vision.embed", "vision.pos_embed")


@dataclass(frozen=True)
class StageKind:
    """A stage's place in any VLM pipeline: its kind, its depth fraction where it has one, its axis position."""

    kind: str
    fraction: float | None
    x: float

    @property
    def label(self) -> str:
        return self.kind if self.fraction is None else f"{self.kind} {self.fraction:.0%}"


def stage_kind(stage: str, depths: Mapping[str, int]) -> StageKind | None:
    """The kind of `stage`; `depths` holds the ViT's and the LLM's depth ("vision.block.", "language.layer.").
    Pixel stages and sub-stages (`.before_deepstack`) have no place on the axis (None)."""
    if stage in EMBEDDING_STAGES:
        return StageKind("embedding", None, EMBEDDING_X)
    pre_stages, post_stages = {pre for pre, _ in CONNECTOR_PAIRS}, {post for _, post in CONNECTOR_PAIRS}
    if stage in pre_stages or stage == "vision.final":
        return StageKind("connector in", None, CONNECTOR_IN_X)
    # before the connector outputs: LLaVA-OneVision's connector is its projector, whose output is what
    # every family's projector output is (what the LLM receives)
    if stage in AFTER_CONNECTOR:
        return StageKind("projector out", None, PROJECTOR_X)
    if stage in post_stages:
        return StageKind("connector out", None, CONNECTOR_OUT_X)
    if stage == "language.norm":
        return StageKind("LLM final norm", None, LLM_NORM_X)
    for prefix, kind, (start, end) in (("vision.block.", "ViT", VIT_SPAN), ("language.layer.", "LLM", LLM_SPAN)):
        index = stage[len(prefix):]
        if stage.startswith(prefix) and index.isdigit() and depths.get(prefix):
            fraction = (int(index) + 1) / depths[prefix]
            return StageKind(kind, round(fraction, 2), start + (end - start) * fraction)
    return None


def measured_depths(stages: Iterable[str]) -> dict[str, int]:
    """ViT and LLM depth from a run's stages: a run reads the last block and layer (thinning keeps them)."""
    depths: dict[str, int] = {}
    for stage in stages:
        for prefix in ("vision.block.", "language.layer."):
            index = stage[len(prefix):]
            if stage.startswith(prefix) and index.isdigit():
                depths[prefix] = max(depths.get(prefix, 0), int(index) + 1)
    return depths


@dataclass(frozen=True)
class AlignedPoint:
    stage: str
    kind: StageKind
    row: MetricRow
    #: the same probe and metric on raw pixels at this stage's grid (this model's own grid)
    ceiling: MetricRow | None

    @property
    def retention(self) -> float | None:
        """Value over the pixel ceiling (1 − value over 1 − ceiling for a lower-is-better metric)."""
        if self.ceiling is None or self.ceiling.value is None or self.row.value is None:
            return None
        value, ceiling = self.row.value, self.ceiling.value
        if not higher_is_better(self.row.metric):
            value, ceiling = 1 - value, 1 - ceiling
        return value / ceiling if ceiling > 0 else None


@dataclass(frozen=True)
class InformationLine:
    """One information type of one run: its deciding target and probe, and the points in axis order."""

    target: str = ""
    probe: str = ""
    points: tuple[AlignedPoint, ...] = ()
    #: why there are no points (its experiments' status or error, e.g. "not applicable: no video input")
    not_measured: str = "not measured"
    #: the target's key (e.g. "bbox_iou")
    key: str = ""


@dataclass(frozen=True)
class AlignedRun:
    label: str
    model: str
    information: dict[str, InformationLine]
    #: information type → every target key with points in this run, in the suite's order
    measured: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _deciding_points(rows: Sequence[MetricRow], target: Target, depths: Mapping[str, int]) -> list[AlignedPoint]:
    points: dict[str, AlignedPoint] = {}
    for experiment in target.experiments:  # the first experiment that measured a stage wins
        for r in rows:
            kind = stage_kind(r.stage, depths)
            if (r.experiment == experiment and r.probe == target.probe and r.metric == target.metric
                    and r.of_model and r.value is not None and kind is not None and r.stage not in points):
                points[r.stage] = AlignedPoint(r.stage, kind, r, _ceiling_at(rows, r))
    return sorted(points.values(), key=lambda p: p.kind.x)


def _ceiling_at(rows: Sequence[MetricRow], row: MetricRow) -> MetricRow | None:
    grid = pixel_stage_for(row.stage)
    found = [r for r in rows if r.stage == grid and r.probe == row.probe and r.metric == row.metric
             and r.variant == "pixels" and r.control == "none" and r.value is not None]
    return next((r for r in found if r.experiment == row.experiment), found[0] if found else None)


def align_runs(run_dirs: Sequence[str | Path]) -> list[AlignedRun]:
    """Every run aligned on one metric per information type: the first of its targets that every run
    measured (LPIPS may be unavailable in one run: then all show edge F1), else each run's first."""
    runs = [align_run(d) for d in run_dirs]
    prefer: dict[str, str] = {}
    for name in runs[0].information if runs else ():
        common = [key for key in runs[0].measured.get(name, ()) if all(key in run.measured.get(name, ())
                                                                           for run in runs)]
        if common:
            prefer[name] = common[0]
    return [align_run(d, prefer) for d in run_dirs] if prefer else runs


def align_run(run_dir: str | Path, prefer: Mapping[str, str] | None = None) -> AlignedRun:
    """Per information type, the deciding probe of the first of its targets this run measured (or the
    target `prefer` names for it), at every stage with a place on the aligned axis."""
    # imported here: the suites import the report's types, so the report package loads first
    from stageprobe.suites import get_suite

    results, rows = load_run(run_dir)
    suite = get_suite(str(results.get("suite")))
    targets = {t.key: t for t in suite.targets}
    depths = measured_depths(r.stage for r in rows)
    experiments = (results.get("results") or {}).get("experiments") or {}
    information: dict[str, InformationLine] = {}
    measured: dict[str, tuple[str, ...]] = {}
    for info in suite.information:
        wanted = [targets[t.key] for t in info.targets]
        found = {t.key: points for t in wanted if (points := _deciding_points(rows, t, depths))}
        measured[info.label] = tuple(found)
        key = (prefer or {}).get(info.label) if (prefer or {}).get(info.label) in found else next(iter(found), None)
        if key is not None:
            information[info.label] = InformationLine(targets[key].label, targets[key].probe, tuple(found[key]),
                                                      key=key)
            continue
        states = {str(experiments[e].get("error") or experiments[e].get("status")) for t in wanted
                  for e in t.experiments if isinstance(experiments.get(e), dict)}
        information[info.label] = InformationLine(not_measured="not measured" + (f": {'; '.join(sorted(states))}"
                                                                                 if states else ""))
    model = str(results.get("model", "?"))
    return AlignedRun(f"{Path(run_dir).name} ({model})", model, information, measured)


def aligned_table(runs: Sequence[AlignedRun]) -> Table:
    """One row per information type and aligned stage kind; per run its stage, value and retention."""
    table = Table(title="Across models: the deciding probe at aligned stages "
                        "(value; retention = value ÷ the same probe on raw pixels at that model's grid)")
    for header in ("information", "metric (probe)", "stage kind"):
        table.add_column(header, no_wrap=True)
    for run in runs:
        table.add_column(run.label, justify="right")
    for information in dict.fromkeys(name for run in runs for name in run.information):
        lines = [run.information[information] for run in runs]
        metric = "; ".join(dict.fromkeys(f"{line.target} ({line.probe})" for line in lines if line.points)) or "—"
        kinds = sorted({p.kind for line in lines for p in line.points}, key=lambda k: (k.x, k.label))
        if not kinds:
            table.add_row(information, metric, "—", *[line.not_measured for line in lines])
        for kind in kinds:
            table.add_row(information, metric, kind.label, *[_aligned_cell(line, kind) for line in lines])
    return table


def _aligned_cell(line: InformationLine, kind: StageKind) -> str:
    if not line.points:
        return line.not_measured
    point = next((p for p in line.points if p.kind == kind), None)
    if point is None:
        return "—"
    retention = point.retention
    kept = f" · {retention:.0%} of pixels" if retention is not None else " · no pixel ceiling"
    return f"{fmt(point.row.value)}{kept}\n[dim]{point.stage}[/]"


def plot_aligned(runs: Sequence[AlignedRun], path: str | Path) -> Path:
    """One panel per information type: retention against the pixel ceiling along the aligned axis,
    one line per model; connector in/out marked, ViT and LLM depth as fractions."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(name for run in runs for name in run.information))
    fig = Figure(figsize=(4.6 * len(names), 3.8))
    for ax, information in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        for index, run in enumerate(runs):  # one colour per model in every panel
            line = run.information[information]
            kept = [(p.kind.x, p.retention) for p in line.points if p.retention is not None]
            if kept:
                xs, ys = zip(*kept, strict=True)
                ax.plot(xs, ys, marker="o", color=f"C{index}", label=f"{run.model}: {line.target} ({line.probe})")
        for x in (CONNECTOR_IN_X, CONNECTOR_OUT_X):
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
        ax.set_xticks([EMBEDDING_X, 0.5, 1.0, CONNECTOR_IN_X, CONNECTOR_OUT_X, 2.25, 2.75],
                      ["embed", "ViT 50%", "ViT 100%", "conn. in", "conn. out", "LLM 50%", "LLM 100%"],
                      rotation=45, fontsize=7)
        ax.set_title(information, fontsize=10, loc="left")
        ax.set_ylabel("retention (÷ pixel ceiling)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle("Which connector keeps what: the deciding probe, stage kinds aligned across models", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    return path
