"""`stageprobe run`: data → features (once per model and dataset) → probes + controls → report.

Generic over suites: the suite (`stageprobe.suites.q2`) declares experiments, their data family,
stages, probes and hooks; this module resolves data, extracts features, fits probes and records
what they measured. `Measurement` does the measuring and needs no run directory (calibration reuses
it); `StudyRun` adds the run directory: checks, resume, and the report.

Every finished piece is on disk before the next starts — feature shards, then one JSON per
experiment — so an interrupted run resumes where it stopped and ends with the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

import stageprobe
from stageprobe._progress import working
from stageprobe.datasets import DATA_FAMILIES, dataset_record
from stageprobe.errors import UserInputError
from stageprobe.models import StageModel, load_model
from stageprobe.models.pixels import pixel_baseline_for
from stageprobe.probes.training import default_device, probe_precision, resolve_precision
from stageprobe.report.render import ReportPaths, write_run_report
from stageprobe.report.schema import RunContext
from stageprobe.suites import DEFAULT_SUITE, SUITES, get_suite
from stageprobe.suites._measure import (
    ExperimentOutcome,
    Measurement,
    console,
    environment,
    load_outcome,
    save_outcome,
)
from stageprobe.suites._spec import ExperimentSpec, Family, Suite, with_connector
from stageprobe.suites.workers import ProbePool, auto_workers

__all__ = ["ExperimentOutcome", "Measurement", "RunConfig", "StudyRun", "default_run_dir", "environment",
           "run_study"]

FAMILIES: tuple[Family, ...] = tuple(DATA_FAMILIES)  # type: ignore[assignment]
#: files and folders a run writes; `--overwrite` removes exactly these
RUN_OUTPUTS = ("experiments", "artifacts", "results.yaml", "metrics.csv", "FINDINGS.md", "report.html",
               "config.yaml", "env.json", "calibration")
#: why a video experiment is skipped on a model that reads images only
NO_VIDEO_INPUT = "not applicable: no video input"
#: settings that do not change any number: placement, speed, which experiments, disk budget (`verdict_stage`
#: is part of the identity: a run's verdicts are read at one stage, so a resume with another is refused,
#: naming both)
NOT_IN_IDENTITY = frozenset({"device", "device_map", "batch_size", "probe_workers", "experiments", "calibrate",
                             "max_disk"})


class RunConfig(BaseModel):
    """Everything that decides a run's numbers; written to config.yaml and hashed for resume."""

    model_config = ConfigDict(extra="forbid")

    model: str = "qwen2.5-vl-tiny"
    suite: str = DEFAULT_SUITE
    size: str = "default"
    stages: list[str] | None = None
    protocol: str = "stageprobe"
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
    #: run only these experiment ids (None = all of the suite)
    experiments: list[str] | None = None
    #: at most this many samples per dataset
    limit: int | None = Field(default=None, ge=1)
    #: fits of every gradient-trained probe, with probe seeds seed, seed+1, …; None: the suite's default
    #: for its deciding probes at their deciding stages (3 at the default size), one fit elsewhere
    seeds: int | None = Field(default=None, ge=1)
    #: judge every target at this stage instead of the suite's declared one
    verdict_stage: str | None = None
    #: data family (spatial, detail, motion) → dataset spec, e.g. "coco:/data/instances.json"
    data: dict[str, str] = Field(default_factory=dict)
    #: after the experiments, plant known losses and check the probes find them (`run --calibrate`)
    calibrate: bool = False
    #: bytes the feature stores may take on disk at once (`--max-disk`); None: the free space less a margin.
    #: A study whose stores do not fit runs in stage groups that do (same numbers, one forward per group)
    max_disk: int | None = Field(default=None, ge=1)
    #: measure the random-init twin of a pretrained model (what training did); `--no-twin` skips it
    twin: bool = True
    #: what the gradient-trained probes compute in (`--probe-precision`), resolved once, here, in the main
    #: process: "auto" → bfloat16 where the probes' device does it natively, else float32. The resolved
    #: value is recorded, sent with every fit and part of the identity (a resume in another precision refits)
    probe_precision: str = Field(default="auto", validate_default=True)

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, suite: str) -> str:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; the available suites are {', '.join(sorted(SUITES))}")
        return suite

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str) -> str:
        if size not in ("quick", "default", "full"):
            raise ValueError(f"unknown size {size!r}; use quick, default or full")
        return size

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, protocol: str) -> str:
        if protocol not in ("stageprobe", "seed"):
            raise ValueError(f"unknown protocol {protocol!r}; use stageprobe or seed")
        return protocol

    @field_validator("data")
    @classmethod
    def _known_families(cls, data: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(data) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown data family {', '.join(unknown)}; use {', '.join(FAMILIES)} "
                             "(e.g. spatial=coco:/path/instances.json)")
        return data

    @field_validator("probe_precision")
    @classmethod
    def _resolved_precision(cls, precision: str) -> str:
        return resolve_precision(precision)

    def identity_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(NOT_IN_IDENTITY))

    def identity(self) -> str:
        """Hash of the settings that change numbers."""
        return hashlib.sha256(json.dumps(self.identity_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def the_suite(self) -> Suite:
        return get_suite(self.suite)


def default_run_dir(model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")
    return Path("runs") / f"{slug}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def _differences(there: dict[str, Any], now: dict[str, Any]) -> str:
    keys = sorted(k for k in set(there) | set(now) if there.get(k) != now.get(k))
    return "; ".join(f"{k}: there {there.get(k)!r}, now {now.get(k)!r}" for k in keys)


class StudyRun:
    """One run directory: its config, its experiments, its report. The measuring is `Measurement`'s."""

    def __init__(self, config: RunConfig, out: Path, cache_dir: Path | None = None, overwrite: bool = False) -> None:
        self.config = config
        self.suite = config.the_suite()
        self.out = out
        self.overwrite = overwrite
        self.features_dir = cache_dir or out / "features"
        self.experiments_dir = out / "experiments"
        self.artifacts_dir = out / "artifacts"
        self.started_at = datetime.now(timezone.utc)
        self._models: dict[str, StageModel] = {}
        #: experiment → why it does not apply to this model (said in its finding)
        self.not_applicable: dict[str, str] = {}
        self.measurement = Measurement(config, self.model, self.features_dir, self.artifacts_dir, out)
        #: the stage groups that keep the stores within the disk budget (one group: everything at once)
        self.stage_groups: list[list[tuple[str, str, str]]] = []

    # -- set-up ------------------------------------------------------------------------------

    def selected(self) -> list[str]:
        """The experiment ids this run measures; an unknown id is a user error listing the known ones."""
        known = list(self.suite.experiment_ids)
        if self.config.experiments is None:
            return known
        unknown = [e for e in self.config.experiments if e not in known]
        if unknown:
            raise UserInputError(f"--experiments: unknown {', '.join(unknown)}; the {self.suite.name} suite has "
                                 f"{', '.join(known)}")
        return [e for e in known if e in self.config.experiments]

    def check(self) -> dict[str, Any] | None:
        """Every check before anything is written; returns the previous config.yaml, if any."""
        self.selected()
        if self.config.calibrate:
            import stageprobe.calibrate  # noqa: F401 — a calibration that cannot load fails now, not after the study
        config_path = self.out / "config.yaml"
        if self.out.exists() and not self.out.is_dir():
            raise UserInputError(f"--out {self.out} is a file; pass a directory")
        previous = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
        if previous and previous.get("identity") != self.config.identity() and not self.overwrite:
            there = {k: previous.get(k) for k in self.config.identity_settings()}
            raise UserInputError(
                f"{self.out} holds a run with other settings ({_differences(there, self.config.identity_settings())}); "
                "pass the same settings to resume it, another --out, or --overwrite to start afresh")
        stages = self.model("main").stage_names
        self._check_twin()
        # the suite reads this model's own connector pair wherever it names the merge pair
        self.suite = self.measurement.suite = with_connector(self.suite, self.model("main").connector_stages)
        if self.config.verdict_stage is not None and self.config.verdict_stage not in stages:
            raise UserInputError(f"--verdict-stage {self.config.verdict_stage!r} is not a stage of "
                                 f"{self.config.model}; its stages are {', '.join(stages)}")
        self.stage_groups = self.plan_disk()
        return previous if not self.overwrite else None

    def plan_disk(self) -> list[list[tuple[str, str, str]]]:
        """The stores this run writes, against `--max-disk` or the free space less a margin: the stage groups
        that fit (UserInputError, with the plan's recipe, if one stage alone does not)."""
        from stageprobe.suites._plan import disk_budget, human, plan_run

        plan = plan_run(self.config, self.features_dir, self.measurement)
        budget = disk_budget(plan, self.config.max_disk)
        groups = plan.stage_groups(budget)
        passes = "one pass" if len(groups) == 1 else f"{len(groups)} stage groups, one forward pass each"
        self.measurement.say(f"features: {human(plan.total_bytes)} in {len(plan.stores)} stores, disk budget "
                             f"{human(budget)} ({passes}; `stageprobe plan` for the details)")
        for line in (estimate.lines() if (estimate := plan.estimate(groups)) else []):
            self.measurement.say(line)
        return groups

    def _check_twin(self) -> None:
        """Build the random-init twin now, before any work, where the run will measure it: a twin that
        cannot be built (a config this device cannot instantiate, too little memory) is said at once."""
        main = self.model("main")
        if not (self.config.controls and self.config.twin and self.config.model != "pixels"
                and not self.weights_random() and hasattr(main, "random_init_twin")):
            return
        try:
            self.model("random-init")
        except Exception as error:  # any failure to build it is the same message to the user
            raise UserInputError(
                f"the random-init twin of {self.config.model} cannot be built on this device "
                f"({type(error).__name__}: {error}); pass --no-twin to run without it (the answer then cannot "
                "say what training did)") from None

    def prepare(self) -> None:
        """Check everything, then (and only then) record the config; `--overwrite` clears the old run."""
        previous = self.check()
        if self.overwrite:
            for name in RUN_OUTPUTS:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            if self.features_dir == self.out / "features":
                shutil.rmtree(self.features_dir, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.experiments_dir.mkdir(exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        state = self.experiments_dir / "run.json"
        if previous and state.is_file():
            self.started_at = datetime.fromisoformat(json.loads(state.read_text())["started_at"])
        else:
            state.write_text(json.dumps({"started_at": self.started_at.isoformat()}))
        resolved = {**self.config.model_dump(), "identity": self.config.identity(),
                    "features_dir": str(self.features_dir), "sizes": dict(self.suite.sizes[self.config.size]),
                    "datasets": {f: self.measurement.dataset_spec(f) for f in FAMILIES}}
        (self.out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    def model(self, which: str) -> StageModel:
        """`main`, `pixels` or `random-init` (the main model's architecture with fresh weights)."""
        if which not in self._models:
            if which == "pixels":
                # the pixel baseline on the model's own grids (14/28 px for Qwen2.x, 16/32 px for Qwen3)
                self._models[which] = pixel_baseline_for(self.model("main"))
            elif which == "main":
                with working(console, f"loading {self.config.model}", disable=self.measurement.quiet):
                    self._models[which] = load_model(self.config.model, device=self.config.device,
                                                     dtype=self.config.dtype, device_map=self.config.device_map,
                                                     trust_remote_code=self.config.trust_remote_code)
            else:
                self._models[which] = self.model("main").random_init_twin(seed=self.config.seed + 1)  # type: ignore[attr-defined]
        return self._models[which]

    def weights_random(self) -> bool:
        return self.model("main").weights_id.startswith("random")

    # -- the whole study -------------------------------------------------------------------

    def run(self) -> ReportPaths:
        self.prepare()
        with ProbePool(self.config.probe_workers or auto_workers(default_device())) as pool:
            self.measurement.pool = pool
            outcomes, status, all_kept = self._run_experiments()
        calibration_kept = (self.out / "calibration" / "calibration.yaml").is_file()
        calibration = self.calibrate() if self.config.calibrate else None
        return self.report(outcomes, status, all_kept and (calibration is None or calibration_kept), calibration)

    def calibrate(self) -> dict[str, Any]:
        """Planted-loss calibration of the main model (kept in calibration/ and reused on a rerun)."""
        done = self.out / "calibration" / "calibration.yaml"
        if done.is_file():
            self.measurement.say("[dim]calibration: finished earlier, kept[/]")
            return dict(yaml.safe_load(done.read_text())["calibration"])
        from stageprobe.calibrate import Calibrator, default_plants, write_calibration

        self.measurement.say("[bold]calibration[/] planted losses")
        main = self.model("main")
        calibrator = Calibrator(main, self.suite, self.out / "calibration", size=self.config.size,  # type: ignore[arg-type]
                                seed=self.config.seed, n_bootstrap=self.config.n_bootstrap,
                                batch_size=self.config.batch_size, stage_patterns=self.config.stages)
        with probe_precision(self.config.probe_precision):
            result = calibrator.run(default_plants(main, self.suite))
        write_calibration(result, self.out / "calibration")
        return result.to_dict()

    def _run_experiments(self) -> tuple[dict[str, ExperimentOutcome], dict[str, str], bool]:
        outcomes: dict[str, ExperimentOutcome] = {}
        status: dict[str, str] = {}
        to_run: list[ExperimentSpec] = []
        for experiment in self.selected():
            spec = self.suite.experiment(experiment)
            done = self.experiments_dir / f"{spec.id}.json"
            if done.exists():
                outcomes[spec.id] = load_outcome(done)
                status[spec.id] = "completed"
                self.measurement.say(f"[dim]{spec.id}: finished earlier, kept[/]")
            elif self.measurement.no_video_input(spec.family):
                status[spec.id] = "skipped"
                outcomes[spec.id] = ExperimentOutcome(rows=[])
                self.not_applicable[spec.id] = NO_VIDEO_INPUT
                self.measurement.say(f"{spec.id}: {NO_VIDEO_INPUT} ({self.config.model} reads images only)")
            elif not self.measurement.experiment_stages(spec, "main"):
                status[spec.id] = "skipped"
                outcomes[spec.id] = ExperimentOutcome(rows=[])
                self.measurement.say(f"{spec.id}: skipped ({self.config.model} has no stage it reads)")
            else:
                to_run.append(spec)

        def save(spec: ExperimentSpec, outcome: ExperimentOutcome) -> None:
            status[spec.id] = "completed"
            save_outcome(self.experiments_dir / f"{spec.id}.json", outcome)

        if len(self.stage_groups) > 1:
            self._run_in_stage_groups(to_run, outcomes, save)
        else:
            self.measurement.run_experiments(to_run, outcomes, save)
        # the report lists experiments in suite order, whatever order they finished in
        ordered = {e: outcomes[e] for e in self.selected() if e in outcomes}
        return ordered, {e: status[e] for e in self.selected() if e in status}, not to_run

    def _run_in_stage_groups(self, to_run: list[ExperimentSpec], outcomes: dict[str, ExperimentOutcome],
                             save: Callable[[ExperimentSpec, ExperimentOutcome], None]) -> None:
        """Stage group by stage group; each finished group's rows are kept under experiments/groups/, so an
        interrupted run resumes at the group it was in (with the same groups and experiments)."""
        groups_dir = self.experiments_dir / "groups"
        layout = {"groups": self.stage_groups, "experiments": [spec.id for spec in to_run]}
        kept: dict[int, dict[str, ExperimentOutcome]] = {}
        for k in range(len(self.stage_groups)):
            path = groups_dir / f"group-{k}.json"
            if path.is_file() and json.loads(path.read_text()).get("layout") == json.loads(json.dumps(layout)):
                kept[k] = {i: load_outcome(groups_dir / f"group-{k}-{i}.json") for i in layout["experiments"]}

        def group_done(k: int, part: dict[str, ExperimentOutcome]) -> None:
            groups_dir.mkdir(exist_ok=True)
            for spec_id, outcome in part.items():
                save_outcome(groups_dir / f"group-{k}-{spec_id}.json", outcome)
            (groups_dir / f"group-{k}.json").write_text(json.dumps({"layout": layout}))

        self.measurement.run_in_stage_groups(to_run, self.stage_groups, outcomes, save, kept, group_done)
        shutil.rmtree(groups_dir, ignore_errors=True)

    def report(self, outcomes: dict[str, ExperimentOutcome], status: dict[str, str],
               all_kept: bool = False, calibration: dict[str, Any] | None = None) -> ReportPaths:
        rows = [row for outcome in outcomes.values() for row in outcome.rows]
        main = self.model("main")
        completed_at = datetime.now(timezone.utc)
        previous = self.out / "results.yaml"
        if all_kept and previous.is_file():
            # a finished run rerun: nothing was measured again, so its times stay what they were
            stored = yaml.safe_load(previous.read_text()) or {}
            completed_at = datetime.fromisoformat(str(stored.get("completed_at", completed_at.isoformat()))
                                                  .replace("Z", "+00:00"))
        context = RunContext(
            model=main.name,
            weights_random=self.weights_random(),
            suite=self.config.suite,
            protocol=self.config.protocol,  # type: ignore[arg-type]
            stages=sorted({r.stage for r in rows if r.of_model}),
            config=yaml.safe_load((self.out / "config.yaml").read_text()),
            env=environment(main, self.config.seed),
            started_at=self.started_at,
            completed_at=completed_at,
            experiment_status=status,  # type: ignore[arg-type]
            experiment_errors=dict(self.not_applicable),
            artifacts={k: o.artifacts for k, o in outcomes.items()},
            executed_by=f"stageprobe {stageprobe.__version__}",
            calibration=calibration,
        )
        context.config["datasets"] = self._dataset_records(status)
        (self.out / "config.yaml").write_text(yaml.safe_dump(context.config, sort_keys=False))
        context.env["video_grid"] = self._video_grid(status)
        env_path = self.out / "env.json"
        if env_path.is_file():
            context.env = json.loads(env_path.read_text())  # the environment that measured the numbers
        else:
            env_path.write_text(json.dumps(context.env, indent=2, default=str) + "\n")
        with working(console, "writing FINDINGS.md and report.html", disable=self.measurement.quiet):
            return write_run_report(self.out, rows, context)


    def _families(self, status: dict[str, str]) -> list[Family]:
        measured = [self.suite.experiment(e).family for e, state in status.items() if state == "completed"]
        return [family for family in FAMILIES if family in measured]

    def _dataset_records(self, status: dict[str, str]) -> dict[str, Any]:
        """Each data family's resolved spec and content hash (the data the numbers were measured on)."""
        return {family: dataset_record(self.measurement.dataset(family)) for family in self._families(status)}

    def _video_grid(self, status: dict[str, str]) -> dict[str, Any] | None:
        """The token grid the model's video path gives the clips (frames × height × width in, T×H×W out)."""
        main = self.model("main")
        videos = [f for f in self._families(status) if self.measurement.dataset(f).kind == "video"]
        if not main.supports_video or not videos:
            return None
        frames = self.measurement.dataset(videos[0])[0].frames or []
        width, height = frames[0].size
        stages = {info.name: info for info in main.stages_for(height, width, len(frames))}
        info = stages.get(main.connector_stages[1]) or list(stages.values())[-1]
        return {"frames": len(frames), "height": height, "width": width, "stage": info.name, "grid": list(info.grid)}


def run_study(config: RunConfig, out: Path | None = None, cache_dir: Path | None = None,
              overwrite: bool = False) -> ReportPaths:
    return StudyRun(config, out or default_run_dir(config.model), cache_dir, overwrite).run()
