"""Measuring one suite's experiments on a model: resolve data, extract features, fit the probes
and their controls, and turn the fits into rows and per-image scores. No run directory needed:
`measure(model, specs, config, work_dir)` is what calibration calls to run "the same probes the
study uses" on a planted model."""

from __future__ import annotations

import fnmatch
import json
import platform
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

import stageprobe
from stageprobe._atomic import write_text_atomic
from stageprobe._progress import Steps, working
from stageprobe.datasets import Dataset, load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.metrics._catalog import higher_is_better
from stageprobe.metrics.reconstruction import lpips_trunk_provenance
from stageprobe.models import StageModel, select_stages
from stageprobe.report.schema import MetricRow
from stageprobe.suites._artifacts import BestFit, draw_best_fits, draw_training_curves
from stageprobe.suites._rows import FitLabel, per_image_scores, result_rows, selectivity_rows, validation_rows
from stageprobe.suites._seeds import probe_seeds
from stageprobe.suites._spec import DeriveInput, ExperimentSpec, Family, ProbeSpec, Scores, probes_for, thin_stages
from stageprobe.suites._training import training_effect_rows
from stageprobe.suites.workers import FitOutput, FitRequest, ProbePool

if TYPE_CHECKING:
    from stageprobe.suites.runner import RunConfig

console = Console(stderr=True)
#: a stage group under a disk budget: the (model variant, data family, stage) triples stored together
StageGroup = Sequence[tuple[str, str, str]]
#: a measured model's name in the rows' `variant` column
ROW_VARIANT = {"main": "model", "pixels": "pixels", "random-init": "random-init"}
#: experiments started ahead of the one being collected (each holds its fits' results until collected)
LOOKAHEAD = 2


@dataclass
class ExperimentOutcome:
    rows: list[MetricRow]
    artifacts: list[str] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: per-image test scores, passed openly to the experiments that derive from them
    scores: Scores = field(default_factory=dict)
    #: where the time went: the experiment's wall seconds (extraction included) and each fit's worker
    #: wall and CPU seconds (`benchmarks/run_times.py` tabulates them)
    timing: dict[str, Any] = field(default_factory=dict)


@dataclass
class _StageFits:
    """One probe's fits on one stage, in flight: one per probe seed and, on the main model, its controls
    (each over the same probe seeds, so a control row's CI carries the fit-to-fit spread its value has)."""

    which: str
    stage: str
    probe: ProbeSpec
    fits: list[Future[FitOutput]]
    controls: dict[str, list[Future[FitOutput]]]
    #: the same fit already ran for an earlier experiment on the same data (its seconds are not counted again)
    reused: bool = False


@dataclass
class ExperimentInFlight:
    """An experiment whose features are extracted and whose fits are submitted, in submission order."""

    spec: ExperimentSpec
    fits: list[_StageFits]
    #: `time.perf_counter()` when it started
    started: float


class Measurement:
    """Features and probe fits of a suite's experiments for the model variants `model_of` gives."""

    def __init__(self, config: RunConfig, model_of: Callable[[str], StageModel], features_dir: Path,
                 artifacts_dir: Path | None = None, run_dir: Path | None = None, pool: ProbePool | None = None,
                 quiet: bool = False, probe_controls: bool = True) -> None:
        self.config = config
        self.suite = config.the_suite()
        self.model = model_of
        self.features_dir = features_dir
        self.artifacts_dir = artifacts_dir
        self.run_dir = run_dir
        self.pool = pool or ProbePool(1)
        self.quiet = quiet
        #: fit each probe's own controls (control task, chance, token shuffle) on the main model
        self.probe_controls = probe_controls
        self._datasets: dict[str, Dataset] = {}
        self._test_groups: dict[str, list[str]] = {}
        self._last_finished = 0.0
        self._last_finished_cpu = time.process_time()
        #: under a disk budget (`--max-disk`), the (variant, family, stage) triples of the stage group being
        #: measured, and the suffix that gives the group's stores their own folders; None: every stage at once
        self.stage_group: frozenset[tuple[str, str, str]] | None = None
        self.group_suffix = ""

    def say(self, message: str) -> None:
        if not self.quiet:
            console.print(message)

    def variants(self) -> list[str]:
        """Models each experiment is measured on: the model, then its controls."""
        found = ["main"]
        main = self.model("main")
        if self.config.controls and self.config.model != "pixels":
            found.append("pixels")
            if self.config.twin and not main.weights_id.startswith("random") and hasattr(main, "random_init_twin"):
                found.append("random-init")
        return found

    # -- data and features -----------------------------------------------------------------

    def dataset_spec(self, family: Family) -> str:
        return self.config.data.get(family) or self.suite.data[family]

    def dataset(self, family: Family) -> Dataset:
        if family not in self._datasets:
            n = self.suite.sizes[self.config.size][family]
            if self.config.limit is not None:
                n = min(n, self.config.limit)
            self._datasets[family] = load_dataset(self.dataset_spec(family), n=n, seed=self.config.seed)
        return self._datasets[family]

    def test_groups(self, family: Family) -> list[str]:
        """Each test sample's source (photo, clip, image), in test order: the CIs resample shared sources."""
        if family not in self._test_groups:
            dataset = self.dataset(family)
            self._test_groups[family] = [dataset.sample_group(i) for i in dataset.split_indices("test")]
        return self._test_groups[family]

    def no_video_input(self, family: Family) -> bool:
        """A video family on a model with no video path (Gemma 3): its experiments do not apply (the seed
        protocol runs them as the seed did)."""
        return not self.model("main").supports_video and self.dataset(family).kind == "video" \
            and self.config.protocol != "seed"

    def experiment_stages(self, spec: ExperimentSpec, which: str) -> list[str]:
        available = self.model(which).stage_names
        # a pattern this model lacks (no LLM in a ViT, no pixels.* in a VLM) is simply not read
        wanted = {s for s in available if any(fnmatch.fnmatchcase(s, p) for p in spec.stages)}
        if self.config.stages and which != "pixels":
            wanted &= set(select_stages(available, self.config.stages))
        stages = thin_stages([s for s in available if s in wanted], "language.layer.", spec.max_language_layers)
        if self.config.size == "quick":
            for prefix, limit in self.suite.quick_stage_limits.items():
                stages = thin_stages(stages, prefix, limit)
        return stages

    def store_stages(self, which: str, family: Family) -> list[str]:
        """Every stage any experiment of the suite reads from this family's data (one store serves them all)."""
        stages = sorted({s for spec in self.suite.experiments if spec.family == family
                         for s in self.experiment_stages(spec, which)})
        return [s for s in stages if self.in_group(which, family, s)]

    def in_group(self, which: str, family: Family, stage: str) -> bool:
        return self.stage_group is None or (which, family, stage) in self.stage_group

    def store_path(self, which: str, family: Family) -> Path:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.model(which).name).strip("-")
        data_slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.dataset_spec(family)).strip("-")[:60]
        dataset = self.dataset(family)
        name = f"{data_slug}-n{len(dataset)}-seed{self.config.seed}"
        if getattr(dataset, "content_from_files", False):
            # data read from the user's files: a changed file is another store (extracted afresh), not a refusal
            name += f"-{dataset.content_hash()[:12]}"
        return self.features_dir / f"{slug}-{which}" / f"{name}{self.group_suffix}"

    def store(self, which: str, family: Family) -> FeatureStore:
        """Features of every stage any experiment reads from this family's data, extracted in one pass."""
        stages = self.store_stages(which, family)
        model, dataset = self.model(which), self.dataset(family)
        frames_as_images = self.config.protocol == "seed" and dataset.kind == "video"
        path = self.store_path(which, family)
        return extract_dataset(model, dataset, path, stages=stages, batch_size=self.config.batch_size,
                               store_dtype=self.config.store_dtype, frames_as_images=frames_as_images)

    # -- probing ---------------------------------------------------------------------------

    def run_experiments(self, specs: Sequence[ExperimentSpec], outcomes: dict[str, ExperimentOutcome],
                        done: Callable[[ExperimentSpec, ExperimentOutcome], None] = lambda _spec, _outcome: None
                        ) -> None:
        """Run `specs` in order into `outcomes`, calling `done` as each finishes. Up to `LOOKAHEAD`
        later experiments are started (features extracted, fits submitted) before one is collected, so
        the workers fit them while this process extracts, derives, draws and saves; rows and scores are
        the same as one at a time (every fit seeds itself and results are read in order)."""
        in_flight: deque[ExperimentInFlight] = deque()
        for spec in specs:
            try:
                in_flight.append(self.start_experiment(spec))
            except Exception:
                while in_flight:  # keep what was measured before the error
                    self._finish_into(in_flight.popleft(), outcomes, done)
                raise
            while len(in_flight) > LOOKAHEAD:
                self._finish_into(in_flight.popleft(), outcomes, done)
        while in_flight:
            self._finish_into(in_flight.popleft(), outcomes, done)

    def run_in_stage_groups(self, specs: Sequence[ExperimentSpec], groups: Sequence[StageGroup],
                            outcomes: dict[str, ExperimentOutcome],
                            done: Callable[[ExperimentSpec, ExperimentOutcome], None] = lambda _spec, _outcome: None,
                            kept: Mapping[int, Mapping[str, ExperimentOutcome]] | None = None,
                            group_done: Callable[[int, dict[str, ExperimentOutcome]], None] = lambda _k, _part: None,
                            ) -> None:
        """`run_experiments` under a disk budget: each group's stages are extracted (one forward per group
        and model variant), every fit reading them is collected, and the group's stores are deleted before
        the next group starts. Derived metrics and figures follow once every group is in, and rows come out
        in the order of the all-at-once run, with the same values (every fit seeds itself). Groups in
        `kept` (measured before an interruption) are not measured again; their best-fit figures are not
        redrawn, so figures show the best stage among the groups measured in this process."""
        collected = {spec.id: ExperimentOutcome(rows=[], timing={"fits": []}) for spec in specs}
        best: dict[str, dict[str, BestFit]] = {spec.id: {} for spec in specs}
        started = time.perf_counter()
        for k, group in enumerate(groups):
            part = (kept or {}).get(k)
            if part is None:
                part = self._measure_group(specs, group, f"{k + 1}of{len(groups)}", best)
                group_done(k, part)
            for spec_id, outcome in part.items():
                _merge(collected[spec_id], outcome)
        self.stage_group, self.group_suffix = None, ""
        for spec in specs:
            outcome = self._in_submission_order(spec, collected[spec.id])
            outcomes[spec.id] = self.complete(spec, outcome, best[spec.id], outcomes, started)
            done(spec, outcomes[spec.id])

    def _measure_group(self, specs: Sequence[ExperimentSpec], group: StageGroup, label: str,
                       best: dict[str, dict[str, BestFit]]) -> dict[str, ExperimentOutcome]:
        self.stage_group, self.group_suffix = frozenset(group), f"-group{label}"
        self.say(f"[bold]stage group {label.replace('of', '/')}[/]: {len(group)} stages")
        part = {spec.id: ExperimentOutcome(rows=[], timing={"fits": []}) for spec in specs}
        in_flight: deque[ExperimentInFlight] = deque()
        for spec in specs:
            in_flight.append(self.start_experiment(spec))
            while len(in_flight) > LOOKAHEAD or (in_flight and spec is specs[-1]):
                oldest = in_flight.popleft()
                self.collect_fits(oldest, part[oldest.spec.id], best[oldest.spec.id])
        for which, family in sorted({(which, family) for which, family, _stage in group}):
            shutil.rmtree(self.store_path(which, family), ignore_errors=True)
        return part

    def _in_submission_order(self, spec: ExperimentSpec, outcome: ExperimentOutcome) -> ExperimentOutcome:
        """Rows and curves in the order `start_experiment` submits fits when every stage is there at once."""
        order: dict[tuple[str, str, str], int] = {}
        for which in self.variants():
            for stage in self.experiment_stages(spec, which):
                for probe in probes_for(spec, self.config.protocol):
                    if probe.reads(stage):
                        order.setdefault((which, stage, probe.probe), len(order))

        def row_key(row: MetricRow) -> int:
            which = {variant: which for which, variant in ROW_VARIANT.items()}.get(row.variant, "main")
            return order.get((which, row.stage, row.probe), len(order))

        def curve_key(name: str) -> int:
            _spec, stage, probe, _task = name.split("/")
            return order.get(("main", stage, probe), len(order))

        outcome.rows = sorted(outcome.rows, key=row_key)
        outcome.curves = {name: outcome.curves[name] for name in sorted(outcome.curves, key=curve_key)}
        return outcome

    def _finish_into(self, in_flight: ExperimentInFlight, outcomes: dict[str, ExperimentOutcome],
                     done: Callable[[ExperimentSpec, ExperimentOutcome], None]) -> None:
        outcomes[in_flight.spec.id] = self.finish_experiment(in_flight, outcomes)
        done(in_flight.spec, outcomes[in_flight.spec.id])

    def start_experiment(self, spec: ExperimentSpec) -> ExperimentInFlight:
        """Extract the features `spec` reads and submit every probe fit (and control) on them: a model
        variant's fits as soon as its features are there, so they run while the next variant extracts."""
        self.say(f"[bold]{spec.id}[/] {spec.title}")
        started = time.perf_counter()
        with working(console, f"{spec.id} preparing the {spec.family} data", disable=self.quiet):
            dataset_key = self.pool.add_dataset(self.dataset(spec.family))
        # a dataset without labels for a task (videos without a labels file: direction, speed) is not probed for it
        unlabelled = set(getattr(self.dataset(spec.family), "unlabelled_tasks", ()))
        probes = tuple(p for p in probes_for(spec, self.config.protocol) if p.task not in unlabelled)
        if unlabelled:
            self.say(f"{spec.id}: {', '.join(sorted(unlabelled))} not measured (the data has no such labels)")
        fits: list[_StageFits] = []
        for which in self.variants():
            stages = [s for s in self.experiment_stages(spec, which) if self.in_group(which, spec.family, s)]
            if not stages:
                continue
            with self.pool.cores_left():
                store = self.store(which, spec.family)
            fits += [self._submit(which, store, stage, probe, dataset_key)
                     for stage in stages for probe in probes if probe.reads(stage)]
        return ExperimentInFlight(spec, fits, started)

    def finish_experiment(self, in_flight: ExperimentInFlight,
                          previous: Mapping[str, ExperimentOutcome]) -> ExperimentOutcome:
        """Collect the experiment's fits in submission order, then its derived metrics and figures."""
        outcome = ExperimentOutcome(rows=[], timing={"fits": []})
        best: dict[str, BestFit] = {}
        self.collect_fits(in_flight, outcome, best)
        return self.complete(in_flight.spec, outcome, best, previous, in_flight.started)

    def collect_fits(self, in_flight: ExperimentInFlight, outcome: ExperimentOutcome,
                     best: dict[str, BestFit]) -> None:
        """The experiment's fits, in submission order, into `outcome` (rows, scores, curves) and `best`."""
        spec = in_flight.spec
        with Steps(console, f"{spec.id} probes", len(in_flight.fits), disable=self.quiet) as steps:
            for fits in in_flight.fits:
                steps.describe(f"{spec.id} {fits.probe.probe} @ {fits.stage} ({fits.which})")
                self._collect(spec, fits, outcome, best)
                steps.advance()

    def complete(self, spec: ExperimentSpec, outcome: ExperimentOutcome, best: dict[str, BestFit],
                 previous: Mapping[str, ExperimentOutcome], started: float) -> ExperimentOutcome:
        """The experiment's derived metrics and figures on top of its collected fits."""
        if spec.derive is not None:
            with working(console, f"{spec.id} derived metrics", disable=self.quiet):
                outcome.rows += spec.derive(self._derive_input(spec, outcome, previous))
        outcome.rows += training_effect_rows(spec.id, outcome.scores, self.suite.targets, self.model("main").name,
                                             self.config.n_bootstrap, self.config.seed)
        if self.artifacts_dir is not None and self.run_dir is not None:
            with working(console, f"{spec.id} figures", disable=self.quiet):
                test = self.dataset(spec.family).split_samples("test")
                outcome.artifacts += draw_best_fits(spec.id, best, test, self.artifacts_dir, self.run_dir)
                outcome.artifacts += draw_training_curves(spec.id, outcome.curves, self.artifacts_dir, self.run_dir)
        # the wall time the run spent on this experiment: from its start or the previous one's end
        finished = time.perf_counter()
        outcome.timing["seconds"] = round(finished - max(started, self._last_finished), 2)
        # this process's CPU seconds since the previous experiment ended (extraction, collection, derived
        # metrics, figures); the fits' own are in `fits`
        outcome.timing["main_cpu_seconds"] = round(time.process_time() - self._last_finished_cpu, 2)
        self._last_finished, self._last_finished_cpu = finished, time.process_time()
        return outcome

    def _derive_input(self, spec: ExperimentSpec, outcome: ExperimentOutcome,
                      previous: Mapping[str, ExperimentOutcome]) -> DeriveInput:
        main = self.model("main")
        scores = {k: o.scores for k, o in previous.items()}
        scores[spec.id] = outcome.scores
        return DeriveInput(spec.id, outcome.rows, scores, {s.name: s for s in main.stages}, main.name,
                           self.config.n_bootstrap, self.config.seed, self.dataset(spec.family))

    def _submit(self, which: str, store: FeatureStore, stage: str, probe: ProbeSpec, dataset_key: str) -> _StageFits:
        """The probe's fit(s) on this stage and, on the main model, its controls' fits."""
        options = dict(probe.options)
        if self.config.size == "quick":
            options.update(self.suite.quick_probe_options.get(probe.probe, {}))
        request = FitRequest(probe.probe, probe.task, str(store.root), stage, dataset_key,
                             with_images=probe.task == "reconstruction", seed=self.config.seed,
                             options=tuple(sorted(options.items())), score_val=which == "main",
                             precision=self.config.probe_precision)
        seeds = probe_seeds(self.suite, probe, stage, self.config.size, self.config.seeds)
        reused = self.pool.started(request)
        fits = [self.pool.submit(replace(request, seed=self.config.seed + k)) for k in range(seeds)]
        controls = ({name: [self.pool.submit(replace(request, seed=self.config.seed + k, control=name,
                                                     score_val=False)) for k in range(seeds)]
                     for name in self.suite.controls_at(probe, stage, self.config.size)}
                    if which == "main" and self.probe_controls else {})
        return _StageFits(which, stage, probe, fits, controls, reused)

    def _collect(self, spec: ExperimentSpec, fits: _StageFits, outcome: ExperimentOutcome,
                 best: dict[str, BestFit]) -> None:
        nb, seed = self.config.n_bootstrap, self.config.seed
        label = FitLabel(spec.id, fits.stage, fits.probe.probe, ROW_VARIANT[fits.which],
                         self.model(fits.which).name)
        outputs = [f.result() for f in fits.fits]
        results = [o.result for o in outputs]
        control_outputs = {name: [future.result() for future in futures] for name, futures in fits.controls.items()}
        outcome.timing["fits"].append(_fit_timing(fits, [*outputs, *(o for c in control_outputs.values() for o in c)]))
        groups = self.test_groups(spec.family)
        _add(outcome, result_rows(label, results, spec.skip_metrics, nb, seed, groups))
        for metric, values in per_image_scores(results).items():
            outcome.scores[(label.variant, label.stage, label.probe, metric)] = values
        if fits.which == "main":
            outcome.rows += validation_rows(label, [o.val_scores for o in outputs], spec.skip_metrics)
            outcome.curves[f"{spec.id}/{fits.stage}/{fits.probe.probe}/{fits.probe.task}"] = results[0].history
            _keep_best(best, f"{fits.probe.probe}/{fits.probe.task}", fits.stage, outputs[0])
        for name, control in control_outputs.items():
            controlled = [output.result for output in control]
            _add(outcome, result_rows(replace(label, control=name), controlled, spec.skip_metrics, nb, seed, groups))
            if name == "control-task":
                _add(outcome, selectivity_rows(replace(label, control="selectivity"), results, controlled,
                                               spec.skip_metrics, nb, seed, groups))


def _merge(into: ExperimentOutcome, part: ExperimentOutcome) -> None:
    _add(into, part.rows)
    into.scores.update(part.scores)
    into.curves.update(part.curves)
    into.timing["fits"] += part.timing.get("fits", [])


def _fit_timing(fits: _StageFits, outputs: Sequence[FitOutput]) -> dict[str, Any]:
    """One probe's fits at one stage: how many and their worker seconds (0 when an earlier experiment made them)."""
    seconds = 0.0 if fits.reused else round(sum(o.seconds for o in outputs), 2)
    cpu_seconds = 0.0 if fits.reused else round(sum(o.cpu_seconds for o in outputs), 2)
    return {"variant": fits.which, "stage": fits.stage, "probe": fits.probe.probe, "task": fits.probe.task,
            "fits": len(outputs), "reused": fits.reused, "seconds": seconds, "cpu_seconds": cpu_seconds}


def _add(outcome: ExperimentOutcome, rows: list[MetricRow]) -> None:
    """Append rows, dropping one a sibling fit already gave: a probe fit once per task (temporal-dense
    for direction, speed and order) reports its task-independent diagnostics (path error) each time."""
    seen = {(r.stage, r.probe, r.metric, r.control, r.variant) for r in outcome.rows}
    outcome.rows += [r for r in rows if (r.stage, r.probe, r.metric, r.control, r.variant) not in seen]


def _keep_best(best: dict[str, BestFit], key: str, stage: str, output: FitOutput) -> None:
    """The stage whose validation headline is best: whose test predictions the artifacts draw."""
    if not output.val_scores:
        return
    metric, value = next(iter(output.val_scores.items()))
    sign = 1.0 if higher_is_better(metric) else -1.0
    if key not in best or sign * value > best[key].goodness:
        best[key] = BestFit(sign * value, stage, output.result)


def measure(model: StageModel, specs: Sequence[ExperimentSpec], config: RunConfig, work_dir: Path,
            pool: ProbePool | None = None) -> dict[str, ExperimentOutcome]:
    """The suite's probes on `model` alone (no control models, no control fits, no run directory): rows
    and per-image scores of each experiment, keyed by id. Features are cached under `work_dir`."""
    measurement = Measurement(config.model_copy(update={"controls": False}), lambda _which: model,
                              work_dir / "features", pool=pool, quiet=True, probe_controls=False)
    outcomes: dict[str, ExperimentOutcome] = {}
    measurement.run_experiments(specs, outcomes)
    return outcomes


def environment(model: StageModel, seed: int) -> dict[str, Any]:
    env: dict[str, Any] = {
        "stageprobe": stageprobe.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "device": str(model.device),
        "dtype": str(model.dtype),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "seed": seed,
        "model": model.config_summary(),
    }
    for package in ("transformers", "numpy", "scipy", "pycocotools", "skimage", "lpips"):
        try:
            env[package] = str(getattr(__import__(package), "__version__", "unknown"))
        except ImportError:
            env[package] = None
    env["lpips_trunk"] = lpips_trunk_provenance()
    return env


def save_outcome(path: Path, outcome: ExperimentOutcome) -> None:
    scores = [[*key, values.tolist()] for key, values in outcome.scores.items()]
    payload = {"rows": [r.model_dump() for r in outcome.rows], "artifacts": outcome.artifacts,
               "curves": outcome.curves, "scores": scores, "timing": outcome.timing}
    write_text_atomic(path, json.dumps(payload, default=float))  # an experiment is either wholly recorded or redone


def load_outcome(path: Path) -> ExperimentOutcome:
    payload = json.loads(path.read_text())
    scores = {(c, s, p, m): np.asarray(v, dtype=float) for c, s, p, m, v in payload.get("scores", [])}
    return ExperimentOutcome([MetricRow(**r) for r in payload["rows"]], payload["artifacts"], payload["curves"],
                             scores, payload.get("timing", {}))
