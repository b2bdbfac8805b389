"""What a suite is made of: experiments (data family, stages, probes), targets, a decision rule,
and hooks — in lm-eval's `process_results` style — that turn an experiment's measurements into
derived metrics and into its finding text. The runner and the report call these hooks and know
no experiment by name.
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
from stageprobe.report.targets import Decision, DecisionRule, Target, Verdict

Family = Literal["spatial", "detail", "photos", "motion", "camera"]

#: per-image test scores of one fit: (control, stage, probe, metric) → scores in test order
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


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    question: str
    claim: str
    experiments: tuple[ExperimentSpec, ...]
    targets: tuple[Target, ...]
    decision: DecisionRule
    #: default dataset spec of each data family
    data: Mapping[Family, str]
    #: samples per data family and run size
    sizes: Mapping[str, Mapping[Family, int]]
    quick_stage_limits: Mapping[str, int] = field(default_factory=dict)
    quick_probe_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: `--quick` fits these probes' controls only at stages matching these patterns
    quick_control_stages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: said once in the report's controls section (e.g. why a control is not run for a probe)
    notes: tuple[str, ...] = ()

    def experiment(self, experiment_id: str) -> ExperimentSpec:
        for spec in self.experiments:
            if spec.id == experiment_id:
                return spec
        raise KeyError(experiment_id)

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
    experiments, probes, controls and targets alike, so no suite names a model family."""
    names = dict(zip(SUITE_CONNECTOR, connector, strict=True))
    if tuple(connector) == SUITE_CONNECTOR:
        return suite

    def rename(patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(names.get(pattern, pattern) for pattern in patterns)

    def probe(spec: ProbeSpec) -> ProbeSpec:
        return replace(spec, stages=rename(spec.stages), control_stages=rename(spec.control_stages))

    experiments = tuple(replace(spec, stages=rename(spec.stages), probes=tuple(probe(p) for p in spec.probes))
                        for spec in suite.experiments)
    return replace(suite, experiments=experiments,
                   targets=tuple(replace(target, stages=rename(target.stages)) for target in suite.targets),
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
