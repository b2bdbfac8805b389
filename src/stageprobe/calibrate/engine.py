"""Calibration: plant a known loss at a known stage and check the study's probes find it there.

A flat stage curve is evidence that nothing was lost only if the same probes, on the same
model and data, would have shown a drop had something been lost. For each plant
(`models/planting.py`) this module extracts the plant's dataset through the planted model and
through the unplanted one (the reference), fits the study's probes at every stage read, and asks:

- **found at**: the first stage k where the planted curve drops against the stage before it
  (paired bootstrap CI of k−1 minus k above 0) by more than the reference curve drops there
  (so a drop the unplanted model also has is not credited to the plant);
- **earlier unchanged**: every stage before the plant scores the same as the reference (CI of
  the paired difference holds 0);
- **stays down**: every later stage is still below the reference, or (where the reference has
  lost the information too) not above the planted stage: the probe does not recover the loss.

Each plant is read by the deciding probe of the suite's information type that declares it (the
probe its verdicts are read with), on that type's data family; its secondary probes are shown
beside and do not decide. A loss plant PASSes when it is found at its own stage, earlier stages
are unchanged and the loss stays down, for every metric of the deciding probe. `none` PASSes when no stage differs.
The reference's stage-over-stage CIs also give the smallest drop the run can detect.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stageprobe.calibrate.report import calibration_dict, calibration_markdown
from stageprobe.datasets import Dataset, load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.metrics._catalog import higher_is_better, report_name
from stageprobe.models.base import StageModel
from stageprobe.models.planting import PLANT_TYPES, Plant, PlantedModel, plantable_stages
from stageprobe.probes import ProbeResult, fit_probe, split_probe_data
from stageprobe.stats import (
    BootstrapCI,
    bootstrap_ci,
    familywise_beyond,
    mde_from_ci,
    paired_bootstrap_diff,
    paired_mde,
)
from stageprobe.suites._spec import InformationType, Suite
from stageprobe.suites.workers import image_array


@dataclass(frozen=True)
class ProbeCheck:
    """One probe metric that should see a loss of its information type (metric named as metrics.csv does)."""

    probe: str
    task: str
    metric: str
    #: False for metrics where lower is better (distances)
    higher_is_better: bool = True
    #: the information type's deciding probe: it decides PASS/FAIL; secondary probes are shown beside
    primary: bool = True


def checks_of(info: InformationType) -> tuple[ProbeCheck, ...]:
    """The probe metrics that read a plant of `info`: its deciding probe's metrics, which decide the
    verdict, then its secondary probes marked for calibration, shown beside."""
    deciding = tuple(ProbeCheck(r.probe, r.task, r.metric, higher_is_better(r.metric)) for r in info.deciding)
    secondary = tuple(ProbeCheck(r.probe, r.task, r.metric, higher_is_better(r.metric), primary=False)
                      for r in info.secondary if r.calibrate)
    return deciding + secondary


def item_scores(result: ProbeResult, metric: str) -> np.ndarray | None:
    """A fit's per-test-item scores of `metric` (metrics.csv's name or the probe's own), None if not scored."""
    for raw, scores in result.per_item.items():
        if raw == metric or report_name(raw) == metric:
            return scores
    return None


Size = Literal["quick", "default", "full"]

#: stages never read by calibration unless planted at: pixel re-encodings and duplicates
SKIPPED_STAGES = ("vision.patch_embed", "vision.embed", "vision.pre_merge", "language.norm")


def default_plants(model: StageModel, suite: Suite) -> list[Plant]:
    """Each plant type the suite declares at a middle ViT block, at the connector's output
    (vision.post_merge; Gemma 3's vision.post_pool) and at a middle LLM layer (a ViT encoder: a middle
    and the last block); erase-time only where the model takes video."""
    names = plantable_stages(model)
    blocks = [s for s in names if s.startswith("vision.block.")]
    layers = [s for s in names if s.startswith("language.layer.")]
    sites = [blocks[len(blocks) // 2]]
    post = model.connector_stages[1]
    sites += [post] if post in names else [blocks[-1]]
    sites += [layers[len(layers) // 2]] if layers else []
    declared = {name for info in suite.information for name in info.plants}
    types = [t for t in PLANT_TYPES.values() if t.name in declared and (model.supports_video or not t.needs_video)]
    return [Plant(t, stage) for stage in dict.fromkeys(sites) for t in types]


def calibration_stages(model: StageModel, plant: Plant, size: Size, patterns: Sequence[str] | None = None
                       ) -> list[str]:
    """Stages read for one plant, in pipeline order: always the plant, its neighbours and the
    post-merge stage; `quick` adds the first and last of each family, else every block and four
    evenly spaced LLM layers. `patterns` (globs) limit the stages read; the plant's stays."""
    every = plantable_stages(model)
    # a plant at the first block still needs a stage before it to drop from: then a skipped one
    before = every[max(every.index(plant.stage) - 1, 0)]
    skipped = (*SKIPPED_STAGES, model.connector_stages[0])
    chain = [s for s in every if s not in skipped or s in (plant.stage, before)]
    if patterns is not None:
        chain = [s for s in chain if s == plant.stage or any(fnmatch.fnmatchcase(s, p) for p in patterns)]
    at = chain.index(plant.stage)
    wanted = {chain[max(at - 1, 0)], plant.stage, chain[min(at + 1, len(chain) - 1)]}
    wanted.update(s for s in chain if s == model.connector_stages[1])
    for prefix in ("vision.block.", "language.layer."):
        family = [s for s in chain if s.startswith(prefix)]
        limit = 2 if size == "quick" else (4 if prefix == "language.layer." else len(family))
        picks = range(min(limit, len(family)))
        wanted.update(family[round(i * (len(family) - 1) / max(limit - 1, 1))] for i in picks)
    return [s for s in chain if s in wanted]


@dataclass
class CheckOutcome:
    """One probe metric's reading of one plant."""

    check: ProbeCheck
    stages: list[str]
    reference: dict[str, float]
    planted: dict[str, float]
    #: the planted model's score at each stage with its bootstrap CI (e.g. to compare with chance)
    planted_ci: dict[str, BootstrapCI]
    #: reference − planted at each stage (signed so that > 0 is information lost)
    loss_vs_reference: dict[str, BootstrapCI]
    #: stage k−1 − stage k on the planted curve, and its excess over the reference curve's drop
    stage_drop: dict[str, BootstrapCI]
    excess_drop: dict[str, BootstrapCI]
    found_at: str | None
    earlier_unchanged: bool
    stays_down: bool
    verdict: str


@dataclass
class PlantOutcome:
    plant: Plant
    #: the suite's information type whose probes read this plant
    information: str
    dataset: str
    checks: list[CheckOutcome]
    #: "probe/metric" → why it could not be read (e.g. LPIPS without its weights)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        primary = [c.verdict for c in self.checks if c.check.primary]
        return "PASS" if primary and all(v == "PASS" for v in primary) else "FAIL"


@dataclass(frozen=True)
class DetectableDrop:
    """The minimum drop (α = 0.05, 80 % power) one probe metric can tell from 0 on the unplanted model's data."""

    n_test: int
    #: the largest over the stages read: a drop this large is detectable between any two neighbours
    drop: float
    #: stage → minimum detectable effect of the paired difference between that stage and the one read before it
    stages: dict[str, float]
    #: the data it was read on (the information type's family and its dataset)
    family: str
    dataset: str


@dataclass
class Calibration:
    model: str
    size: str
    plants: list[PlantOutcome]
    #: information type → "probe/metric" → its minimum detectable drop (α = 0.05, 80 % power)
    detectable: dict[str, dict[str, DetectableDrop]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the `calibration` key of results.yaml."""
        return calibration_dict(self)

    def to_markdown(self) -> str:
        """The `## Calibration` section of FINDINGS.md."""
        return calibration_markdown(self)


def _covers(ci: BootstrapCI, value: float = 0.0) -> bool:
    return bool(ci.low <= value <= ci.high) or not np.isfinite([ci.low, ci.high]).all()


def analyse(check: ProbeCheck, plant: Plant, stages: list[str], reference: dict[str, np.ndarray],
            planted: dict[str, np.ndarray], n_bootstrap: int = 1000, seed: int = 0) -> CheckOutcome:
    """The calibration verdict of one probe metric from per-test-item scores at each stage."""
    sign = 1.0 if check.higher_is_better else -1.0
    ref = {s: sign * reference[s] for s in stages}
    got = {s: sign * planted[s] for s in stages}
    loss = {s: paired_bootstrap_diff(ref[s], got[s], n_bootstrap, seed) for s in stages}
    drop, excess = {}, {}
    for before, stage in itertools.pairwise(stages):
        drop[stage] = paired_bootstrap_diff(got[before], got[stage], n_bootstrap, seed)
        planted_drop, reference_drop = got[before] - got[stage], ref[before] - ref[stage]
        excess[stage] = paired_bootstrap_diff(planted_drop, reference_drop, n_bootstrap, seed)
    found_at = _first_drop(stages, loss, drop, excess)
    at = stages.index(plant.stage)
    earlier_unchanged = all(_covers(loss[s]) for s in stages[:at])
    # A later stage stays down if it is still below the unplanted model, or — where the unplanted
    # model has lost the information too and cannot show the plant — if it does not climb back
    # above the planted stage. (Once tokens differ by position again, e.g. after attention with
    # RoPE, a probe can learn a location prior and rise a little from the floor: that is no recovery.)
    stays_down = all(loss[s].low > 0 or paired_bootstrap_diff(got[s], got[plant.stage], n_bootstrap, seed).low <= 0
                     for s in stages[at + 1:])
    if plant.type.name == "none":
        passed = found_at is None and all(_covers(ci) for ci in loss.values())
    else:
        passed = found_at == plant.stage and earlier_unchanged and stays_down
    means = {s: float(np.nanmean(reference[s])) for s in stages}, {s: float(np.nanmean(planted[s])) for s in stages}
    planted_ci = {s: bootstrap_ci(planted[s], n_bootstrap, seed) for s in stages}
    return CheckOutcome(check, stages, *means, planted_ci, loss, drop, excess, found_at, earlier_unchanged, stays_down,
                        "PASS" if passed else "FAIL")


def _first_drop(stages: list[str], loss: dict[str, BootstrapCI], drop: dict[str, BootstrapCI],
                excess: dict[str, BootstrapCI]) -> str | None:
    """The first stage whose drop (and its excess over the unplanted model's) is above 0 with Holm's
    family-wise control over every stage scanned. The first stage read has no stage before it: there
    only the unplanted model is the baseline. A stage must clear both tests, so it takes the larger
    p-value of the two (intersection-union)."""
    def beyond(ci: BootstrapCI) -> tuple[float, float, float]:
        return ci.estimate, ci.low, ci.high

    tests = [[beyond(loss[s])] if s == stages[0] else [beyond(drop[s]), beyond(excess[s])] for s in stages]
    found = familywise_beyond([min(t, key=_evidence) for t in tests])
    return next((s for s, kept in zip(stages, found, strict=True) if kept), None)


def _evidence(estimate: tuple[float, float, float]) -> float:
    """How far the estimate lies above 0 in standard errors (the weaker test decides)."""
    value, low, high = estimate
    return value / (high - low) if high > low else (np.inf if value > 0 else -np.inf)


def stage_detectable(stages: list[str], reference: dict[str, np.ndarray], n_bootstrap: int = 1000,
                     seed: int = 0) -> tuple[int, dict[str, float]]:
    """(n test items, stage → minimum detectable effect at α = 0.05 and 80 % power of the paired
    difference between that stage and the one before it on the reference curve); one stage only:
    two independent stages as uncertain as it is."""
    effects: dict[str, float] = {}
    n = 0
    for before, stage in itertools.pairwise(stages):
        if (np.isfinite(reference[before]) & np.isfinite(reference[stage])).any():
            pairs, effects[stage] = paired_mde(reference[before], reference[stage], n_bootstrap, seed)
            n = max(n, pairs)
    if not effects:
        ci = bootstrap_ci(reference[stages[0]], n_bootstrap, seed)
        return ci.n, {stages[0]: float(np.sqrt(2)) * mde_from_ci(ci.low, ci.high, ci.confidence)}
    return n, effects


def detectable_drop(stages: list[str], reference: dict[str, np.ndarray], n_bootstrap: int = 1000,
                    seed: int = 0) -> tuple[int, float]:
    """(n test items, largest minimum detectable effect at α = 0.05 and 80 % power of the paired
    difference between adjacent reference stages): a true drop this large between any two
    neighbouring stages has a CI that excludes 0 in at least 80 % of runs."""
    n, effects = stage_detectable(stages, reference, n_bootstrap, seed)
    return n, max(effects.values())


class _Fits:
    """Probe fits per (store, stage, probe, task), with the stage's splits loaded once."""

    def __init__(self, dataset: Dataset, size: Size, seed: int, quick_options: Mapping[str, Mapping[str, Any]]
                 ) -> None:
        self.samples = list(dataset)
        self._images: np.ndarray | None = None
        self.size = size
        self.seed = seed
        self.quick_options = quick_options
        self.results: dict[tuple[str, str, str, str], ProbeResult] = {}

    def images(self) -> np.ndarray:
        """The reconstruction targets, made on first use (only the detail probes need them)."""
        if self._images is None:
            self._images = image_array(self.samples)
        return self._images

    def fit(self, store: FeatureStore, stage: str, features: torch.Tensor, check: ProbeCheck) -> ProbeResult:
        key = (str(store.root), stage, check.probe, check.task)
        if key not in self.results:
            images = self.images() if check.task == "reconstruction" else None
            splits = split_probe_data(features, self.samples, images)
            options = dict(self.quick_options.get(check.probe, {})) if self.size == "quick" else {}
            self.results[key] = fit_probe(check.probe, check.task, splits["train"], splits["val"], splits["test"],
                                          seed=self.seed, **options)
        return self.results[key]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@]+", "-", text).strip("-")


@dataclass
class Calibrator:
    """Runs plants on one model with a suite's information types: each plant is read by the deciding
    probe of the type that declares it (plus its secondary probes, shown beside), on that type's data
    family. Feature stores go under `work_dir` (reused on a rerun)."""

    model: StageModel
    suite: Suite
    work_dir: Path
    size: Size = "default"
    seed: int = 0
    n_bootstrap: int = 1000
    batch_size: int = 8
    #: per dataset name, options overriding the study's (e.g. {"shapes": {"image_size": 224}})
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: stage globs that limit what is read (None: the defaults of `calibration_stages`)
    stage_patterns: list[str] | None = None

    def dataset(self, info: InformationType) -> Dataset:
        name = self.suite.data[info.family]
        options = {"n": self.suite.sizes[self.size][info.family], "seed": self.seed,
                   **self.dataset_options.get(name, {})}
        return load_dataset(name, **options)

    def run(self, plants: Sequence[Plant]) -> Calibration:
        by_info: dict[str, list[Plant]] = {}
        for plant in plants:  # every plant is checked before anything is extracted
            by_info.setdefault(self.suite.row_of_plant(plant.type.name).name, []).append(plant)
        outcomes: list[PlantOutcome] = []
        detectable: dict[str, dict[str, DetectableDrop]] = {}
        for name, group in by_info.items():
            info = self.suite.row(name)
            dataset = self.dataset(info)
            fits = _Fits(dataset, self.size, self.seed, self.suite.quick_probe_options)
            stages = {p.label: calibration_stages(self.model, p, self.size, self.stage_patterns) for p in group}
            every_stage = [s for s in self.model.stage_names if any(s in v for v in stages.values())]
            reference = self._extract(self.model, dataset, self.suite.data[info.family], every_stage)
            for plant in group:
                planted = self._extract(PlantedModel(self.model, plant, self.seed), dataset,
                                        self.suite.data[info.family], stages[plant.label])
                checks, unavailable = self._read(info, plant, stages[plant.label], reference, planted, fits)
                outcomes.append(PlantOutcome(plant, info.name, self.suite.data[info.family], checks, unavailable))
            detectable[info.name] = self._detectable(info, reference, every_stage, fits)
        return Calibration(self.model.name, self.size, outcomes, detectable)

    def _extract(self, model: StageModel, dataset: Dataset, name: str, stages: list[str]) -> FeatureStore:
        # one store per stage list: a store refuses to be resumed with other stages
        stage_hash = hashlib.sha256(",".join(stages).encode()).hexdigest()[:8]
        store = f"{_slug(name)}-{self.size}-seed{self.seed}-{stage_hash}"
        path = self.work_dir / "features" / _slug(model.name) / store
        return extract_dataset(model, dataset, path, stages=stages, batch_size=self.batch_size)

    def _read(self, info: InformationType, plant: Plant, stages: list[str], reference: FeatureStore,
              planted: FeatureStore, fits: _Fits) -> tuple[list[CheckOutcome], dict[str, str]]:
        scores: dict[ProbeCheck, dict[str, dict[str, np.ndarray]]] = {}
        unavailable: dict[str, str] = {}
        for stage in stages:
            ref_features, got_features = reference.load(stage), planted.load(stage)
            # the same features give the same (deterministic, seeded) fit: reuse the reference's
            same = torch.equal(ref_features, got_features)
            for check in checks_of(info):
                ref_fit = fits.fit(reference, stage, ref_features, check)
                got_fit = ref_fit if same else fits.fit(planted, stage, got_features, check)
                ref_scores, got_scores = item_scores(ref_fit, check.metric), item_scores(got_fit, check.metric)
                if ref_scores is None or got_scores is None:
                    unavailable[f"{check.probe}/{check.metric}"] = (ref_fit.unavailable.get(check.metric)
                                                                    or "not scored by this probe")
                    continue
                scores.setdefault(check, {"reference": {}, "planted": {}})
                scores[check]["reference"][stage] = ref_scores
                scores[check]["planted"][stage] = got_scores
        readable = [c for c in checks_of(info) if f"{c.probe}/{c.metric}" not in unavailable]
        return [analyse(check, plant, stages, scores[check]["reference"], scores[check]["planted"],
                        self.n_bootstrap, self.seed) for check in readable], unavailable

    def _detectable(self, info: InformationType, reference: FeatureStore, stages: list[str], fits: _Fits
                    ) -> dict[str, DetectableDrop]:
        """Each probe metric's minimum detectable drop (α = 0.05, 80 % power) at every stage the reference
        was read at."""
        table: dict[str, DetectableDrop] = {}
        for check in checks_of(info):
            per_stage = {s: item_scores(fits.fit(reference, s, reference.load(s), check), check.metric)
                         for s in stages}
            if any(v is None for v in per_stage.values()):
                continue
            n, effects = stage_detectable(stages, per_stage, self.n_bootstrap, self.seed)  # type: ignore[arg-type]
            table[f"{check.probe}/{check.metric}"] = DetectableDrop(n, max(effects.values()), effects, info.family,
                                                                    self.suite.data[info.family])
        return table
