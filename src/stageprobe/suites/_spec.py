"""What a suite is made of: experiments (data family, stages, probes), information types (each with
its targets, deciding probe, secondary probes, plot metrics and calibration plants), a decision
rule, and hooks — in lm-eval's `process_results` style — that turn an experiment's measurements
into derived metrics, finding texts and the recommendation. The runner, the report and the
calibration call these hooks and read these rows; they know no experiment, probe or metric by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from stageprobe.datasets import Dataset
from stageprobe.models.base import StageInfo
from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import DEFAULT_VERDICT_STAGES, Advice, Decision, DecisionRule, Target, Verdict

Family = Literal["spatial", "detail", "photos", "motion", "camera"]

#: per-image test scores of one fit: (variant, stage, probe, metric) → scores in test order
ScoreKey = tuple[str, str, str, str]
Scores = dict[ScoreKey, np.ndarray]


@dataclass(frozen=True)
class ProbeSpec:
    probe: str
    task: str
    controls: tuple[str, ...] = ()
    #: kept under `--protocol seed` (the original harness's pooled probes)
    seed_protocol: bool = False
    #: gradient-trained: `--seeds N` refits it N times
    seeded: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    #: stage patterns this probe is fitted at (empty: every stage of its experiment); lets a costly
    #: probe read only the stages it adds information at
    stages: tuple[str, ...] = ()
    #: stage patterns its controls are fitted at (empty: wherever the probe is); lets a costly probe
    #: show its capacity where its verdict is read instead of at every stage
    control_stages: tuple[str, ...] = ()

    def reads(self, stage: str) -> bool:
        return _matches(stage, self.stages)

    def controls_at(self, stage: str) -> tuple[str, ...]:
        """The controls fitted beside this probe at `stage`."""
        return self.controls if _matches(stage, self.control_stages) else ()


def _matches(stage: str, patterns: Sequence[str]) -> bool:
    """Whether `stage` matches one of `patterns`; no patterns matches every stage."""
    return not patterns or any(fnmatch.fnmatchcase(stage, pattern) for pattern in patterns)


@dataclass(frozen=True)
class DeriveInput:
    """What a derive hook may read: this experiment's rows and every finished experiment's per-image
    scores (passed openly, by experiment id), the main model's stages, and the bootstrap settings."""

    experiment: str
    rows: Sequence[MetricRow]
    scores: Mapping[str, Scores]
    stages: Mapping[str, StageInfo]
    model: str
    n_bootstrap: int
    seed: int
    #: the experiment's dataset (for derived rows computed from the data itself, e.g. reference rows)
    dataset: Dataset | None = None


@dataclass(frozen=True)
class FindingInput:
    """What a finding hook may read: the experiment's own model rows, all rows, verdicts, decision."""

    rows: Sequence[MetricRow]
    all_rows: Sequence[MetricRow]
    verdicts: Mapping[str, Verdict]
    decision: Decision


DeriveHook = Callable[[DeriveInput], list[MetricRow]]
FindingHook = Callable[[FindingInput], str]
#: (decision, weights random, protocol) → the recommendation in the suite's words
AdviceHook = Callable[[Decision, bool, str], Advice]
#: (decision, all rows) → the answer's paragraphs in the suite's words
AnswerHook = Callable[[Decision, Sequence[MetricRow]], list[str]]


def _check_probe_metric(where: str, probe: str, task: str, metric: str) -> None:
    """A row naming an unregistered probe, a task it does not do or an undeclared metric fails here."""
    from stageprobe.metrics._catalog import METRICS, report_name
    from stageprobe.probes import registered_probes

    entry = registered_probes().get(probe)
    if entry is None:
        known = ", ".join(sorted(registered_probes()))
        raise ValueError(f"{where}: probe {probe!r} is not registered; registered: {known}")
    if task not in entry.tasks:
        raise ValueError(f"{where}: probe {probe!r} does not do task {task!r}; it does {', '.join(entry.tasks)}")
    if report_name(metric) not in METRICS:
        raise ValueError(f"{where}: metric {metric!r} has no metadata in stageprobe/metrics/_catalog.py")


@dataclass(frozen=True)
class ProbeRead:
    """One metric of one probe on one task, as metrics.csv names them."""

    probe: str
    task: str
    metric: str
    #: read by calibration too (off for costly gradient-trained probes shown only beside the decision)
    calibrate: bool = True


@dataclass(frozen=True)
class InformationType:
    """One thing the study measures (e.g. location), declared once: everything that reads it — the
    verdicts, the answer table, the figures, the retention bars, the calibration — reads this row."""

    name: str
    label: str
    #: what it is, in a few words ("where objects are")
    what: str
    #: the data family its verdicts are judged on (the figures and calibration read the same data)
    family: Family
    #: the probe that decides it, and the (task, metric) pairs it is read with; the first metric leads
    probe: str
    metrics: tuple[tuple[str, str], ...]
    #: its targets, the first measured answers "which stage to read"; a target naming no probe is judged
    #: with `probe`, one naming no experiments on the experiments of `family`
    targets: tuple[Target, ...]
    #: other probes shown beside the deciding one, labelled, never merged into its line or verdict
    secondary: tuple[ProbeRead, ...] = ()
    #: the deciding probe's metrics drawn in its figure panel (default: `metrics`)
    plot_metrics: tuple[str, ...] = ()
    #: planted-loss types (`models/planting.py`) the calibration checks this row's probes against
    plants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"information type {self.name!r}: declare the deciding probe's metrics")
        for task, metric in self.metrics:
            _check_probe_metric(f"information type {self.name!r}", self.probe, task, metric)
        for read in self.secondary:
            _check_probe_metric(f"information type {self.name!r} (secondary)", read.probe, read.task, read.metric)
        for metric in self.plot_metrics:
            if metric not in {m for _, m in self.metrics}:
                raise ValueError(f"information type {self.name!r}: plot metric {metric!r} is not one of the "
                                 f"deciding probe's metrics {[m for _, m in self.metrics]}")

    @property
    def metric(self) -> str:
        """The metric that leads: the decision matrix and the first figure line read it."""
        return self.metrics[0][1]

    @property
    def deciding(self) -> tuple[ProbeRead, ...]:
        return tuple(ProbeRead(self.probe, task, metric) for task, metric in self.metrics)

    @property
    def drawn(self) -> tuple[str, ...]:
        return self.plot_metrics or tuple(metric for _, metric in self.metrics)


@dataclass(frozen=True)
class ExperimentSpec:
    id: str
    title: str
    #: which data: resolved to a dataset spec through `RunConfig.data` (default: the suite's)
    family: Family
    stages: tuple[str, ...]
    probes: tuple[ProbeSpec, ...]
    #: at most this many LLM layers, evenly spaced
    max_language_layers: int | None = None
    #: metric-name prefixes not reported here (box probes also score mAP, which another experiment owns)
    skip_metrics: tuple[str, ...] = ()
    #: the metrics its report table shows (everything is in metrics.csv)
    table_metrics: tuple[str, ...] = ()
    #: experiments whose per-image scores `derive` reads (they run first)
    reads: tuple[str, ...] = ()
    derive: DeriveHook | None = None
    finding: FindingHook | None = None
    #: the report's heading, e.g. "E-Q2.1"
    label: str = ""
    #: where results.yaml's seed block reads its metrics, first measured wins (a glob reads its deepest
    #: stage): the stage its question is about, never a pixel stage or the patch embedding of a model
    read_at: tuple[str, ...] = DEFAULT_VERDICT_STAGES


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    question: str
    claim: str
    experiments: tuple[ExperimentSpec, ...]
    #: what the study measures, one row per information type (see `InformationType`)
    information: tuple[InformationType, ...]
    #: the decision matrix; its `information` names the row whose deciding probe and metric it reads
    decision: DecisionRule
    #: default dataset spec of each data family
    data: Mapping[Family, str]
    #: samples per data family and run size
    sizes: Mapping[str, Mapping[Family, int]]
    #: the recommendation (proceed / pivot / investigate / block) in the suite's words
    advise: AdviceHook
    #: the answer's paragraphs in the suite's words
    answer: AnswerHook
    quick_stage_limits: Mapping[str, int] = field(default_factory=dict)
    quick_probe_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: `--quick` fits these probes' controls only at stages matching these patterns
    quick_control_stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: said once in the report's controls section (e.g. why a control is not run for a probe)
    notes: tuple[str, ...] = ()
    #: the probes that decide verdicts, the stage patterns they decide at (pixel ceilings included) and,
    #: per run size, how many probe seeds refit them there unless `--seeds` says otherwise
    deciding_probes: tuple[str, ...] = ()
    deciding_stages: tuple[str, ...] = ()
    deciding_seeds: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        row = self.row(self.decision.information)
        # the decision matrix reads its row's deciding probe and metric on that row's data
        object.__setattr__(self, "decision", replace(
            self.decision, probe=row.probe, metric=row.metric,
            experiments=self.decision.experiments or self.family_experiments(row.family)))

    def row(self, name: str) -> InformationType:
        """The information type called `name`; KeyError lists the declared ones."""
        for row in self.information:
            if row.name == name:
                return row
        raise KeyError(f"suite {self.name!r} declares no information type {name!r}; "
                       f"declared: {', '.join(r.name for r in self.information)}")

    def family_experiments(self, family: str) -> tuple[str, ...]:
        return tuple(spec.id for spec in self.experiments if spec.family == family)

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every row's targets, judged with the row's deciding probe unless a target names its own, on
        the experiments of the row's data family unless it names its own."""
        return tuple(replace(t, probe=t.probe or row.probe,
                             experiments=t.experiments or self.family_experiments(row.family))
                     for row in self.information for t in row.targets)

    def row_of_plant(self, plant_type: str) -> InformationType:
        """The row whose probes check a planted loss; UserInputError lists the declared plants."""
        from stageprobe.errors import UserInputError

        for row in self.information:
            if plant_type in row.plants:
                return row
        declared = [p for r in self.information for p in r.plants]
        raise UserInputError(f"plant {plant_type!r} checks an information type suite {self.name!r} does not "
                             f"declare; its plants: {', '.join(declared) or 'none'}")

    def experiment(self, experiment_id: str) -> ExperimentSpec:
        for spec in self.experiments:
            if spec.id == experiment_id:
                return spec
        raise KeyError(experiment_id)

    def family_of(self, experiment_id: str) -> str | None:
        return next((spec.family for spec in self.experiments if spec.id == experiment_id), None)

    def controls_at(self, probe: ProbeSpec, stage: str, size: str) -> tuple[str, ...]:
        """The controls fitted beside `probe` at `stage` in a run of this size."""
        if size == "quick" and probe.probe in self.quick_control_stages:
            probe = replace(probe, control_stages=self.quick_control_stages[probe.probe])
        return probe.controls_at(stage)

    @property
    def experiment_ids(self) -> tuple[str, ...]:
        return tuple(spec.id for spec in self.experiments)

    def success_criteria(self) -> dict[str, float]:
        """The seed-compatible `success_criteria` block: flat thresholds."""
        return {t.criterion_key: t.threshold for t in self.targets}


#: the connector pair suites name (the Qwen merger's); a model with another connector reads its own
SUITE_CONNECTOR = ("vision.pre_merge", "vision.post_merge")


def with_connector(suite: Suite, connector: tuple[str, str]) -> Suite:
    """The suite reading `connector` (a model's `connector_stages`) wherever it names the merge pair:
    experiments, probes, controls, where the seed block reads and the information rows' targets alike,
    so no suite names a model family."""
    names = dict(zip(SUITE_CONNECTOR, connector, strict=True))
    if tuple(connector) == SUITE_CONNECTOR:
        return suite

    def rename(patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(names.get(pattern, pattern) for pattern in patterns)

    def probe(spec: ProbeSpec) -> ProbeSpec:
        return replace(spec, stages=rename(spec.stages), control_stages=rename(spec.control_stages))

    experiments = tuple(replace(spec, stages=rename(spec.stages), read_at=rename(spec.read_at),
                                probes=tuple(probe(p) for p in spec.probes)) for spec in suite.experiments)
    information = tuple(replace(row, targets=tuple(replace(t, stages=rename(t.stages)) for t in row.targets))
                        for row in suite.information)
    return replace(suite, experiments=experiments, information=information,
                   decision=replace(suite.decision, pairs=(tuple(connector), *suite.decision.pairs)),
                   quick_control_stages={k: rename(v) for k, v in suite.quick_control_stages.items()})


def probes_for(spec: ExperimentSpec, protocol: str) -> tuple[ProbeSpec, ...]:
    """`seed` keeps only the original pooled probes, so users see how the protocol changes the answer."""
    if protocol == "seed":
        return tuple(p for p in spec.probes if p.seed_protocol)
    return spec.probes


def thin_stages(stages: list[str], prefix: str, limit: int | None) -> list[str]:
    """Keep at most `limit` stages starting with `prefix`, evenly spaced, first and last included. A
    sub-stage (`language.layer.0.before_deepstack`) goes with the stage it belongs to."""

    def base(stage: str) -> str:
        return prefix + stage[len(prefix):].split(".", 1)[0]

    family = [s for s in stages if s.startswith(prefix) and s == base(s)]
    if limit is None or len(family) <= limit:
        return stages
    picks = {family[round(i * (len(family) - 1) / (limit - 1))] for i in range(limit)} if limit > 1 else {family[0]}
    return [s for s in stages if not s.startswith(prefix) or base(s) in picks]
