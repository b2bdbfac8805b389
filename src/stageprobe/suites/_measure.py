"""Measuring one suite's experiments on a model: resolve data, extract features, fit the probes
and their controls, and turn the fits into rows and per-image scores. No run directory needed:
`measure(model, specs, config, work_dir)` is what calibration calls to run "the same probes the
study uses" on a planted model."""

from __future__ import annotations

import fnmatch
import json
import platform
import re
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
from rich.progress import Progress, TimeElapsedColumn

import stageprobe
from stageprobe.datasets import Dataset, load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.metrics._catalog import higher_is_better
from stageprobe.models import StageModel, select_stages
from stageprobe.report.schema import MetricRow
from stageprobe.suites._artifacts import BestFit, draw_best_fits, draw_training_curves
from stageprobe.suites._rows import FitLabel, per_image_scores, result_rows, selectivity_rows, validation_rows
from stageprobe.suites._spec import DeriveInput, ExperimentSpec, Family, ProbeSpec, Scores, probes_for, thin_stages
from stageprobe.suites.workers import FitOutput, FitRequest, ProbePool

if TYPE_CHECKING:
    from stageprobe.suites.runner import RunConfig

console = Console(stderr=True)
#: a model variant's name in the rows' `control` column
VARIANT_CONTROL = {"main": "none", "pixels": "pixels", "random-init": "random-init"}
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
    #: seconds (`benchmarks/run_times.py` tabulates them)
    timing: dict[str, Any] = field(default_factory=dict)


@dataclass
class _StageFits:
    """One probe's fits on one stage, in flight: one per probe seed and, on the main model, its controls."""

    which: str
    stage: str
    probe: ProbeSpec
    fits: list[Future[FitOutput]]
    controls: dict[str, Future[FitOutput]]
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

    def say(self, message: str) -> None:
        if not self.quiet:
            console.print(message)

    def variants(self) -> list[str]:
        """Models each experiment is measured on: the model, then its controls."""
        found = ["main"]
        main = self.model("main")
        if self.config.controls and self.config.model != "pixels":
            found.append("pixels")
            if not main.weights_id.startswith("random") and hasattr(main, "random_init_twin"):
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

    def store(self, which: str, family: Family) -> FeatureStore:
        """Features of every stage any experiment reads from this family's data, extracted in one pass."""
        stages = sorted({s for spec in self.suite.experiments if spec.family == family
                         for s in self.experiment_stages(spec, which)})
        model, dataset = self.model(which), self.dataset(family)
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", model.name).strip("-")
        data_slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.dataset_spec(family)).strip("-")[:60]
        frames_as_images = self.config.protocol == "seed" and dataset.kind == "video"
        path = self.features_dir / f"{slug}-{which}" / f"{data_slug}-n{len(dataset)}-seed{self.config.seed}"
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

    def _finish_into(self, in_flight: ExperimentInFlight, outcomes: dict[str, ExperimentOutcome],
                     done: Callable[[ExperimentSpec, ExperimentOutcome], None]) -> None:
        outcomes[in_flight.spec.id] = self.finish_experiment(in_flight, outcomes)
        done(in_flight.spec, outcomes[in_flight.spec.id])

    def start_experiment(self, spec: ExperimentSpec) -> ExperimentInFlight:
        """Extract the features `spec` reads and submit every probe fit (and control) on them: a model
        variant's fits as soon as its features are there, so they run while the next variant extracts."""
        self.say(f"[bold]{spec.id}[/] {spec.title}")
        started = time.perf_counter()
        dataset_key = self.pool.add_dataset(self.dataset(spec.family))
        probes = probes_for(spec, self.config.protocol)
        fits: list[_StageFits] = []
        for which in self.variants():
            stages = self.experiment_stages(spec, which)
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
        spec = in_flight.spec
        outcome = ExperimentOutcome(rows=[], timing={"fits": []})
        best: dict[str, BestFit] = {}
        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console,
                      disable=self.quiet) as progress:
            task = progress.add_task(f"{spec.id} probes", total=len(in_flight.fits))
            for fits in in_flight.fits:
                progress.update(task, description=f"{spec.id} {fits.probe.probe} @ {fits.stage} ({fits.which})")
                self._collect(spec, fits, outcome, best)
                progress.advance(task)
        if spec.derive is not None:
            outcome.rows += spec.derive(self._derive_input(spec, outcome, previous))
        if self.artifacts_dir is not None and self.run_dir is not None:
            test = self.dataset(spec.family).split_samples("test")
            outcome.artifacts += draw_best_fits(spec.id, best, test, self.artifacts_dir, self.run_dir)
            outcome.artifacts += draw_training_curves(spec.id, outcome.curves, self.artifacts_dir, self.run_dir)
        # the wall time the run spent on this experiment: from its start or the previous one's end
        finished = time.perf_counter()
        outcome.timing["seconds"] = round(finished - max(in_flight.started, self._last_finished), 2)
        self._last_finished = finished
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
                             options=tuple(sorted(options.items())), score_val=which == "main")
        seeds = self.config.seeds if probe.seeded else 1
        reused = self.pool.started(request)
        fits = [self.pool.submit(replace(request, seed=self.config.seed + k)) for k in range(seeds)]
        controls = ({name: self.pool.submit(replace(request, control=name, score_val=False))
                     for name in self.suite.controls_at(probe, stage, self.config.size)}
                    if which == "main" and self.probe_controls else {})
        return _StageFits(which, stage, probe, fits, controls, reused)

    def _collect(self, spec: ExperimentSpec, fits: _StageFits, outcome: ExperimentOutcome,
                 best: dict[str, BestFit]) -> None:
        nb, seed = self.config.n_bootstrap, self.config.seed
        label = FitLabel(spec.id, fits.stage, fits.probe.probe, VARIANT_CONTROL[fits.which],
                         self.model(fits.which).name)
        outputs = [f.result() for f in fits.fits]
        results = [o.result for o in outputs]
        control_outputs = {name: future.result() for name, future in fits.controls.items()}
        outcome.timing["fits"].append(_fit_timing(fits, [*outputs, *control_outputs.values()]))
        groups = self.test_groups(spec.family)
        _add(outcome, result_rows(label, results, spec.skip_metrics, nb, seed, groups))
        for metric, values in per_image_scores(results).items():
            outcome.scores[(label.control, label.stage, label.probe, metric)] = values
        if fits.which == "main":
            outcome.rows += validation_rows(label, [o.val_scores for o in outputs], spec.skip_metrics)
            outcome.curves[f"{spec.id}/{fits.stage}/{fits.probe.probe}/{fits.probe.task}"] = results[0].history
            _keep_best(best, f"{fits.probe.probe}/{fits.probe.task}", fits.stage, outputs[0])
        for name, output in control_outputs.items():
            controlled = output.result
            _add(outcome, result_rows(replace(label, control=name), [controlled], spec.skip_metrics, nb, seed,
                                      groups))
            if name == "control-task":
                _add(outcome, selectivity_rows(replace(label, control="selectivity"), results[0], controlled,
                                               spec.skip_metrics, nb, seed, groups))


def _fit_timing(fits: _StageFits, outputs: Sequence[FitOutput]) -> dict[str, Any]:
    """One probe's fits at one stage: how many and their worker seconds (0 when an earlier experiment made them)."""
    seconds = 0.0 if fits.reused else round(sum(o.seconds for o in outputs), 2)
    return {"variant": fits.which, "stage": fits.stage, "probe": fits.probe.probe, "task": fits.probe.task,
            "fits": len(outputs), "reused": fits.reused, "seconds": seconds}


def _add(outcome: ExperimentOutcome, rows: list[MetricRow]) -> None:
    """Append rows, dropping one a sibling fit already gave: a probe fit once per task (temporal-dense
    for direction, speed and order) reports its task-independent diagnostics (path error) each time."""
    seen = {(r.stage, r.probe, r.metric, r.control) for r in outcome.rows}
    outcome.rows += [r for r in rows if (r.stage, r.probe, r.metric, r.control) not in seen]


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
    return env


def save_outcome(path: Path, outcome: ExperimentOutcome) -> None:
    scores = [[*key, values.tolist()] for key, values in outcome.scores.items()]
    payload = {"rows": [r.model_dump() for r in outcome.rows], "artifacts": outcome.artifacts,
               "curves": outcome.curves, "scores": scores, "timing": outcome.timing}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=float))
    tmp.replace(path)  # an experiment is either wholly recorded or redone


def load_outcome(path: Path) -> ExperimentOutcome:
    payload = json.loads(path.read_text())
    scores = {(c, s, p, m): np.asarray(v, dtype=float) for c, s, p, m, v in payload.get("scores", [])}
    return ExperimentOutcome([MetricRow(**r) for r in payload["rows"]], payload["artifacts"], payload["curves"],
                             scores, payload.get("timing", {}))
