"""`stageprobe run`: data → features (once per model and dataset) → probes + controls → report.

Every finished piece is on disk before the next starts — feature shards, then one JSON per
experiment — so an interrupted run resumes where it stopped and ends with the same numbers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import platform
import re
import sys
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn

import stageprobe
from stageprobe.datasets import Dataset, Sample, load_dataset
from stageprobe.errors import UserInputError
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.metrics.base import MetricValue
from stageprobe.metrics.irs import irs
from stageprobe.models import StageModel, load_model, select_stages
from stageprobe.probes import ProbeResult
from stageprobe.probes.temporal import labels_for
from stageprobe.probes.training import default_device
from stageprobe.report import plots
from stageprobe.report.render import ReportPaths, write_run_report
from stageprobe.report.schema import MetricRow, RunContext
from stageprobe.stats import bootstrap_ci, bootstrap_map_ci, paired_bootstrap_diff
from stageprobe.suites.q2 import (
    Q2,
    QUICK_PROBE_OPTIONS,
    QUICK_STAGE_LIMITS,
    SIZES,
    ExperimentSpec,
    ProbeSpec,
    ProtocolName,
    Size,
    probes_for,
    thin_stages,
)
from stageprobe.suites.workers import FitRequest, ProbePool, auto_workers

console = Console(stderr=True)


# (headline score, stage, fitted result): what the artifacts of a probe draw
BestStage = tuple[float, str, ProbeResult]


@dataclass
class _StageFits:
    """One probe's fits on one stage, in flight: the probe itself and, on the main model, its controls."""

    which: str
    stage: str
    probe: ProbeSpec
    fit: Future[ProbeResult]
    controls: dict[str, Future[ProbeResult]]


class RunConfig(BaseModel):
    """Everything that decides a run's numbers; written to config.yaml and hashed for resume."""

    model_config = ConfigDict(extra="forbid")

    model: str = "qwen2.5-vl-tiny"
    suite: str = "q2"
    size: Size = "default"
    stages: list[str] | None = None
    protocol: ProtocolName = "stageprobe"
    seed: int = 0
    controls: bool = True
    n_bootstrap: int = Field(default=1000, ge=100)
    batch_size: int = Field(default=8, ge=1)
    #: processes fitting probes at once; None = one per core on CPU (up to 4), one on a GPU
    probe_workers: int | None = Field(default=None, ge=1)
    device: str = "auto"
    #: accelerate's device_map for a checkpoint split over several GPUs (replaces `device`)
    device_map: str | None = None
    dtype: str = "auto"
    store_dtype: str = "float16"
    trust_remote_code: bool = False

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, suite: str) -> str:
        if suite != "q2":
            raise ValueError(f"unknown suite {suite!r}; the available suite is q2")
        return suite

    def identity(self) -> str:
        """Hash of the settings that change numbers (placement, batch size and probe workers do not)."""
        relevant = self.model_dump(exclude={"device", "device_map", "batch_size", "probe_workers"})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ExperimentOutcome:
    rows: list[MetricRow]
    artifacts: list[str] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


# Probe metric names → the report's names (the seed's vocabulary).
METRIC_NAMES = {"matched_iou": "iou", "patch_acc": "patch_class_acc", "map_50_95": "map"}


def default_run_dir(model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")
    return Path("runs") / f"{slug}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


class StudyRun:
    """One run directory: its config, its feature stores, its experiments, its report."""

    def __init__(self, config: RunConfig, out: Path, cache_dir: Path | None = None) -> None:
        self.config = config
        self.out = out
        self.features_dir = cache_dir or out / "features"
        self.experiments_dir = out / "experiments"
        self.artifacts_dir = out / "artifacts"
        self.started_at = datetime.now(timezone.utc)
        self._datasets: dict[str, Dataset] = {}
        self._models: dict[str, StageModel] = {}
        #: in-process until `run` starts the workers
        self.pool = ProbePool(1)

    # -- set-up ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check the run directory is this run's (or new) and the model loads, then record the config.

        Nothing is written before both checks pass, so a mistyped model name leaves no run
        directory behind that would refuse the corrected command."""
        config_path = self.out / "config.yaml"
        if config_path.exists():
            previous = yaml.safe_load(config_path.read_text()) or {}
            if previous.get("identity") != self.config.identity():
                raise UserInputError(
                    f"{self.out} holds a run with other settings (see its config.yaml); "
                    "pass another --out to start a new run, or the same settings to resume it"
                )
        self.model("main")
        self.out.mkdir(parents=True, exist_ok=True)
        self.experiments_dir.mkdir(exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        resolved = {**self.config.model_dump(), "identity": self.config.identity(),
                    "features_dir": str(self.features_dir), "sizes": SIZES[self.config.size]}
        config_path.write_text(yaml.safe_dump(resolved, sort_keys=False))

    def model(self, which: str) -> StageModel:
        """`main`, `pixels` or `random-init` (the main model's architecture with fresh weights)."""
        if which not in self._models:
            if which == "pixels":
                self._models[which] = load_model("pixels")
            elif which == "main":
                self._models[which] = load_model(self.config.model, device=self.config.device,
                                                 dtype=self.config.dtype, device_map=self.config.device_map,
                                                 trust_remote_code=self.config.trust_remote_code)
            else:
                self._models[which] = self.model("main").random_init_twin(seed=self.config.seed + 1)  # type: ignore[attr-defined]
        return self._models[which]

    def weights_random(self) -> bool:
        return self.model("main").weights_id.startswith("random")

    def variants(self) -> list[str]:
        """Models each experiment is measured on: the model, then its controls."""
        found = ["main"]
        if self.config.controls and self.config.model != "pixels":
            found.append("pixels")
            if not self.weights_random() and hasattr(self.model("main"), "random_init_twin"):
                found.append("random-init")
        return found

    def dataset(self, name: str) -> Dataset:
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, n=SIZES[self.config.size][name], seed=self.config.seed)
        return self._datasets[name]

    # -- stages and features -----------------------------------------------------------------

    def experiment_stages(self, spec: ExperimentSpec, which: str) -> list[str]:
        model = self.model(which)
        available = model.stage_names
        # a pattern this model lacks (no LLM in a ViT, no pixels.* in a VLM) is simply not read
        wanted = {s for s in available if any(fnmatch.fnmatchcase(s, p) for p in spec.stages)}
        if self.config.stages and which != "pixels":
            wanted &= set(select_stages(available, self.config.stages))
        stages = thin_stages([s for s in available if s in wanted], "language.layer.", spec.max_language_layers)
        if self.config.size == "quick":
            for prefix, limit in QUICK_STAGE_LIMITS.items():
                stages = thin_stages(stages, prefix, limit)
        return stages

    def store(self, which: str, dataset_name: str) -> FeatureStore:
        """Features of every stage any experiment reads from this dataset, extracted in one pass."""
        stages = sorted({s for spec in self.experiments() if spec.dataset == dataset_name
                         for s in self.experiment_stages(spec, which)})
        model = self.model(which)
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", model.name).strip("-")
        frames_as_images = self.config.protocol == "seed" and self.dataset(dataset_name).kind == "video"
        path = self.features_dir / f"{slug}-{which}" / f"{dataset_name}-{self.config.size}-seed{self.config.seed}"
        return extract_dataset(model, self.dataset(dataset_name), path, stages=stages,
                               batch_size=self.config.batch_size, store_dtype=self.config.store_dtype,
                               frames_as_images=frames_as_images)

    def experiments(self) -> tuple[ExperimentSpec, ...]:
        return Q2

    # -- probing ---------------------------------------------------------------------------

    def run_experiment(self, spec: ExperimentSpec, iou_by_stage: dict[str, np.ndarray]) -> ExperimentOutcome:
        outcome = ExperimentOutcome(rows=[])
        dataset = self.dataset(spec.dataset)
        samples = list(dataset)
        dataset_key = self.pool.add_dataset(dataset)
        best: dict[str, BestStage] = {}
        # extraction first: its own progress bar cannot nest inside the probing one
        plan = [(which, self.store(which, spec.dataset), self.experiment_stages(spec, which))
                for which in self.variants() if self.experiment_stages(spec, which)]
        probes = probes_for(spec, self.config.protocol)
        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(f"{spec.id} probes", total=sum(len(stages) for _, _, stages in plan) * len(probes))

            def collect(fits: _StageFits) -> None:
                progress.update(task, description=f"{spec.id} {fits.probe.probe} @ {fits.stage} ({fits.which})")
                self._collect(spec, fits, outcome, best, iou_by_stage)
                progress.advance(task)

            # Fits run ahead on the workers; results are read in submission order, so the rows are
            # the same whatever the number of workers. The window bounds the results held at once.
            window: deque[_StageFits] = deque()
            for which, store, stages in plan:
                for stage in stages:
                    for probe in probes:
                        window.append(self._submit(spec, which, store, stage, probe, dataset_key))
                        while len(window) > 2 * self.pool.workers:
                            collect(window.popleft())
            while window:
                collect(window.popleft())
        self._experiment_extras(spec, outcome, iou_by_stage)
        outcome.artifacts += self._artifacts(spec, best, samples)
        return outcome

    def _submit(self, spec: ExperimentSpec, which: str, store: FeatureStore, stage: str, probe: ProbeSpec,
                dataset_key: str) -> _StageFits:
        """The probe's fit on this stage and, on the main model, its controls' fits."""
        options = QUICK_PROBE_OPTIONS.get(probe.probe, {}) if self.config.size == "quick" else {}
        request = FitRequest(probe.probe, probe.task, str(store.root), stage, dataset_key,
                             with_images=probe.task == "reconstruction", seed=self.config.seed,
                             options=tuple(sorted(options.items())))
        fit = self.pool.submit(request)
        controls = ({name: self.pool.submit(replace(request, control=name)) for name in probe.controls}
                    if which == "main" else {})
        return _StageFits(which, stage, probe, fit, controls)

    def _collect(self, spec: ExperimentSpec, fits: _StageFits, outcome: ExperimentOutcome,
                 best: dict[str, BestStage], iou_by_stage: dict[str, np.ndarray]) -> None:
        which, stage, probe = fits.which, fits.stage, fits.probe
        control = {"main": "none", "pixels": "pixels", "random-init": "random-init"}[which]
        model_name = self.model(which).name
        label = probe.probe
        result = fits.fit.result()
        rows = self._rows(spec, stage, label, result, control, model_name)
        outcome.rows += rows
        if which == "main":
            outcome.curves[f"{spec.id}/{stage}/{label}/{probe.task}"] = result.history
            headline, key = _headline(rows), f"{label}/{probe.task}"
            if headline is not None and (key not in best or headline > best[key][0]):
                best[key] = (headline, stage, result)
        if which in ("main", "pixels") and probe.probe == "dense-linear" and "matched_iou" in result.per_item:
            iou_by_stage[stage] = result.per_item["matched_iou"]
        for name, future in fits.controls.items():
            controlled = future.result()
            outcome.rows += self._rows(spec, stage, label, controlled, name, model_name)
            if name == "control-task":
                outcome.rows += self._selectivity(spec.id, stage, label, result, controlled, model_name)

    def _rows(self, spec: ExperimentSpec, stage: str, probe: str, result: ProbeResult, control: str,
              model: str) -> list[MetricRow]:
        experiment, rows = spec.id, []
        n = len(next(iter(result.per_item.values()))) if result.per_item else 0
        for raw_name, value in result.metrics.items():
            if raw_name.startswith(spec.skip_metrics):
                continue
            metric = METRIC_NAMES.get(raw_name, raw_name)
            low = high = None
            if raw_name in result.per_item and np.isfinite(result.per_item[raw_name]).any():
                ci = bootstrap_ci(result.per_item[raw_name], self.config.n_bootstrap, self.config.seed)
                low, high = ci.low, ci.high
            elif raw_name.startswith("map") and result.detection is not None:
                ci = bootstrap_map_ci(result.detection, raw_name, self.config.n_bootstrap, self.config.seed)
                low, high = ci.low, ci.high
            rows.append(MetricRow(experiment=experiment, stage=stage, probe=probe, metric=metric, value=value,
                                  ci_low=low, ci_high=high, n=n, control=control, model=model))
        for raw_name, reason in result.unavailable.items():
            if raw_name.startswith(spec.skip_metrics):
                continue
            rows.append(MetricRow(experiment=experiment, stage=stage, probe=probe,
                                  metric=METRIC_NAMES.get(raw_name, raw_name), value=None, n=n, control=control,
                                  model=model, unavailable_reason=reason))
        return rows

    def _selectivity(self, experiment: str, stage: str, probe: str, task: ProbeResult, control: ProbeResult,
                     model: str) -> list[MetricRow]:
        """Task − control-task score, with the paired bootstrap CI (same test images)."""
        rows = []
        for raw_name, per_item in task.per_item.items():
            if raw_name not in control.per_item or not np.isfinite(per_item).any():
                continue
            ci = paired_bootstrap_diff(per_item, control.per_item[raw_name], self.config.n_bootstrap, self.config.seed)
            rows.append(MetricRow(experiment=experiment, stage=stage, probe=probe,
                                  metric=METRIC_NAMES.get(raw_name, raw_name), value=ci.estimate, ci_low=ci.low,
                                  ci_high=ci.high, n=ci.n, control="selectivity", model=model))
        return rows

    def _experiment_extras(self, spec: ExperimentSpec, outcome: ExperimentOutcome,
                           iou_by_stage: dict[str, np.ndarray]) -> None:
        """Measured differences and composites: merger IoU drop, compression, IRS."""
        main = self.model("main")
        if spec.id == "e_q2_2":
            pairs = [("vision.pre_merge", "vision.post_merge"), ("pixels.patch", "pixels.merged")]
            for pre, post in pairs:
                if pre in iou_by_stage and post in iou_by_stage:
                    ci = paired_bootstrap_diff(iou_by_stage[pre], iou_by_stage[post], self.config.n_bootstrap,
                                               self.config.seed)
                    on_model = pre.startswith("vision")
                    outcome.rows.append(MetricRow(
                        experiment=spec.id, stage=post, probe="dense-linear", metric="iou_drop", value=ci.estimate,
                        ci_low=ci.low, ci_high=ci.high, n=ci.n, model=main.name if on_model else "pixels",
                        control="none" if on_model else "pixels",
                        note=f"IoU({pre}) − IoU({post}), paired bootstrap over test images"))
            infos = {s.name: s for s in main.stages}
            if "vision.pre_merge" in infos and "vision.post_merge" in infos:
                ratio = infos["vision.pre_merge"].tokens / infos["vision.post_merge"].tokens
                outcome.rows.append(MetricRow(experiment=spec.id, stage="vision.post_merge", probe="geometry",
                                              metric="compression_ratio", value=ratio, n=1, model=main.name,
                                              note="tokens before ÷ after the merger"))
        if spec.id == "e_q2_5":
            outcome.rows += self._irs_rows(spec.id, outcome.rows, iou_by_stage)

    def _irs_rows(self, experiment: str, rows: list[MetricRow], iou_by_stage: dict[str, np.ndarray]) -> list[MetricRow]:
        """IRS per stage from that stage's own IoU (E-Q2.1–3), LPIPS and edge F1 (METHODOLOGY #7)."""
        out = []
        decoder_rows = [r for r in rows if r.probe == "decoder" and r.control in ("none", "pixels")]
        for stage, control, model in sorted({(r.stage, r.control, r.model) for r in decoder_rows}):
            at = {r.metric: r for r in decoder_rows if r.stage == stage and r.control == control}

            def value(metric: str, at: dict[str, MetricRow] = at) -> MetricValue:
                row = at.get(metric)
                if row is None or row.value is None:
                    reason = row.unavailable_reason if row is not None else "not measured at this stage"
                    return MetricValue.unavailable(metric, reason or "not measured")
                return MetricValue(metric, row.value)

            iou = iou_by_stage.get(stage)
            no_iou = "no box IoU measured at this stage (E-Q2.1–3 do not read it)"
            iou_value = (MetricValue("iou", float(np.nanmean(iou))) if iou is not None
                         else MetricValue.unavailable("iou", no_iou))
            score = irs(iou_value, value("lpips"), value("edge_f1"))
            out.append(MetricRow(experiment=experiment, stage=stage, probe="decoder", metric="irs", value=score.value,
                                 n=at["edge_f1"].n if "edge_f1" in at else 0, control=control, model=model,
                                 unavailable_reason=score.reason,
                                 note="0.4·IoU/0.85 + 0.3·(1−LPIPS)/0.7 + 0.3·EdgeF1/0.8"))
        return out

    # -- artifacts --------------------------------------------------------------------------

    def _artifacts(self, spec: ExperimentSpec, best: dict[str, BestStage], samples: list[Sample]) -> list[str]:
        """Predictions of each probe at its best stage, drawn over the test images."""
        by_key = {sample.key: sample for sample in samples}
        # the test split in dataset order: the order every probe's predictions are in
        test_keys = [s.key for s in samples if s.split == "test"]
        test_targets = [s.target for s in samples if s.split == "test"]
        written: list[str] = []
        for key, (_, stage, result) in best.items():
            path = self.artifacts_dir / f"{spec.id}_{key.replace('/', '_')}_{stage}.png"
            title = f"{spec.id} {result.probe} ({result.task}) at {stage}"
            predictions, shown = result.predictions, min(8, len(test_keys))
            if "detections" in predictions:
                images = [by_key[key].image for key in test_keys[:shown]]
                truth = [np.asarray(t["boxes"]) for t in test_targets[:shown]]
                detections = predictions["detections"][:shown]
                if result.probe == "attention":
                    plots.save_detection_overlay(images, truth, [d.boxes for d in detections],
                                                 [d.scores for d in detections], path, title=title)
                else:
                    plots.save_box_overlay(images, truth, [d.boxes for d in detections], path, title=title)
            elif "reconstructions" in predictions:
                originals = [by_key[key].image for key in test_keys[:shown]]
                plots.save_reconstruction_grid(originals, list(predictions["reconstructions"][:shown]), path,
                                               title=title)
            elif result.task in ("direction", "speed", "order"):
                truth, predicted = labels_for(result.task, test_targets), np.asarray(predictions[result.task])
                classes = int(max(truth.max(), predicted.max())) + 1
                matrix = np.zeros((classes, classes), dtype=int)
                np.add.at(matrix, (truth, predicted), 1)
                names = [str(c) for c in range(classes)] if result.task != "order" else ["natural", "reversed"]
                plots.save_confusion_matrix(matrix, names, path, title=title)
            else:
                continue
            written.append(str(path.relative_to(self.out)))
        analysis = {key: {"best_stage": stage, "headline": value} for key, (value, stage, _) in best.items()}
        (self.artifacts_dir / f"{spec.id}_analysis.json").write_text(json.dumps(analysis, indent=2))
        written.append(f"artifacts/{spec.id}_analysis.json")
        return written

    # -- the whole study -------------------------------------------------------------------

    def run(self) -> ReportPaths:
        self.prepare()
        with ProbePool(self.config.probe_workers or auto_workers(default_device())) as self.pool:
            outcomes, status = self._run_experiments()
        return self.report(outcomes, status)

    def _run_experiments(self) -> tuple[dict[str, ExperimentOutcome], dict[str, str]]:
        iou_by_stage: dict[str, np.ndarray] = {}
        outcomes: dict[str, ExperimentOutcome] = {}
        status: dict[str, str] = {}
        for spec in self.experiments():
            done = self.experiments_dir / f"{spec.id}.json"
            if done.exists():
                outcomes[spec.id] = _load_outcome(done)
                iou_by_stage.update({k: np.asarray(v, dtype=float) for k, v in
                                     json.loads(done.read_text()).get("iou_by_stage", {}).items()})
                status[spec.id] = "completed"
                console.print(f"[dim]{spec.id}: finished earlier, kept[/]")
                continue
            if not any(self.experiment_stages(spec, w) for w in ("main",)):
                status[spec.id] = "skipped"
                outcomes[spec.id] = ExperimentOutcome(rows=[])
                console.print(f"{spec.id}: skipped ({self.config.model} has no stage it reads)")
                continue
            console.print(f"[bold]{spec.id}[/] {spec.title}")
            before = set(iou_by_stage)
            outcome = self.run_experiment(spec, iou_by_stage)
            outcomes[spec.id] = outcome
            status[spec.id] = "completed"
            new_iou = {k: v.tolist() for k, v in iou_by_stage.items() if k not in before}
            _save_outcome(done, outcome, new_iou)
        return outcomes, status

    def report(self, outcomes: dict[str, ExperimentOutcome], status: dict[str, str]) -> ReportPaths:
        rows = [row for outcome in outcomes.values() for row in outcome.rows]
        main = self.model("main")
        context = RunContext(
            model=main.name,
            weights_random=self.weights_random(),
            suite=self.config.suite,
            protocol=self.config.protocol,
            stages=sorted({r.stage for r in rows if r.control == "none"}),
            config=yaml.safe_load((self.out / "config.yaml").read_text()),
            env=environment(main, self.config.seed),
            started_at=self.started_at,
            completed_at=datetime.now(timezone.utc),
            experiment_status=status,  # type: ignore[arg-type]
            artifacts={k: o.artifacts for k, o in outcomes.items()},
            training_curves={k: v for o in outcomes.values() for k, v in o.curves.items()},
            executed_by=f"stageprobe {stageprobe.__version__}",
        )
        (self.out / "env.json").write_text(json.dumps(context.env, indent=2, default=str) + "\n")
        return write_run_report(self.out, rows, context)


def run_study(config: RunConfig, out: Path | None = None, cache_dir: Path | None = None) -> ReportPaths:
    return StudyRun(config, out or default_run_dir(config.model), cache_dir).run()


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


def _headline(rows: list[MetricRow]) -> float | None:
    """The number that picks the stage whose predictions are drawn: the probe's main score."""
    for metric in ("iou", "map_50", "relation_acc", "edge_f1", "direction_acc", "speed_acc", "order_acc"):
        for row in rows:
            if row.metric == metric and row.value is not None:
                return row.value
    return None


def _save_outcome(path: Path, outcome: ExperimentOutcome, iou_by_stage: dict[str, list[float]]) -> None:
    payload = {"rows": [r.model_dump() for r in outcome.rows], "artifacts": outcome.artifacts,
               "curves": outcome.curves, "iou_by_stage": iou_by_stage}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=float))
    tmp.replace(path)  # an experiment is either wholly recorded or redone


def _load_outcome(path: Path) -> ExperimentOutcome:
    payload = json.loads(path.read_text())
    return ExperimentOutcome([MetricRow(**r) for r in payload["rows"]], payload["artifacts"], payload["curves"])
