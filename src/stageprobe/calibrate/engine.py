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

A loss plant PASSes when it is found at its own stage, earlier stages are unchanged and the loss
stays down, for every primary probe of its information type. `none` PASSes when no stage differs.
The reference's stage-over-stage CIs also give the smallest drop the run can detect.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stageprobe.calibrate.report import calibration_dict, calibration_markdown
from stageprobe.datasets import Dataset, load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.models.base import StageModel
from stageprobe.models.planting import PLANT_TYPES, Plant, PlantedModel, plantable_stages
from stageprobe.probes import ProbeResult, fit_probe, split_probe_data
from stageprobe.stats import BootstrapCI, bootstrap_ci, paired_bootstrap_diff
from stageprobe.suites.q2 import SUITE
from stageprobe.suites.workers import image_array


@dataclass(frozen=True)
class ProbeCheck:
    """One probe metric that should see a loss of its information type."""

    probe: str
    task: str
    metric: str
    #: False for metrics where lower is better (distances)
    higher_is_better: bool = True
    #: primary checks decide PASS/FAIL; the others (the seed's pooled probes) are shown beside
    primary: bool = True


#: The probes that judge each information type: the study's primary probe families. Change a row
#: here when the study's primary probe for that information type changes.
PROBES_BY_INFORMATION: dict[str, tuple[ProbeCheck, ...]] = {
    "position": (ProbeCheck("dense-linear", "boxes", "matched_iou"),
                 ProbeCheck("relation", "relation", "relation_acc"),
                 ProbeCheck("pooled-linear", "boxes", "matched_iou", primary=False)),
    "detail": (ProbeCheck("recon-linear", "reconstruction", "ssim"),
               ProbeCheck("recon-linear", "reconstruction", "edge_f1")),
    "time": tuple(ProbeCheck("temporal-dense", task, f"{task}_acc") for task in ("direction", "speed", "order")),
}
#: `none` (the reference plant) is read with the position probes: the cheapest full check.
PROBES_BY_INFORMATION["none"] = PROBES_BY_INFORMATION["position"]
#: the study's data family each information type is planted and read on: the family's default
#: dataset (detail: the procedural textures E-Q2.5 judges, not the real photos) and sample counts
FAMILY_BY_INFORMATION = {"position": "spatial", "detail": "detail", "time": "motion", "none": "spatial"}
DATASET_BY_INFORMATION = {info: SUITE.data[family] for info, family in FAMILY_BY_INFORMATION.items()}
FAMILY_OF_DATASET = {SUITE.data[family]: family for family in FAMILY_BY_INFORMATION.values()}
Size = Literal["quick", "default", "full"]

#: stages never read by calibration unless planted at: pixel re-encodings and duplicates
SKIPPED_STAGES = ("vision.patch_embed", "vision.embed", "vision.pre_merge", "language.norm")


def default_plants(model: StageModel) -> list[Plant]:
    """Each plant type at a middle ViT block, at the connector's output (vision.post_merge; Gemma 3's
    vision.post_pool) and at a middle LLM layer (a ViT encoder: a middle and the last block);
    erase-time only where the model takes video."""
    names = plantable_stages(model)
    blocks = [s for s in names if s.startswith("vision.block.")]
    layers = [s for s in names if s.startswith("language.layer.")]
    sites = [blocks[len(blocks) // 2]]
    post = model.connector_stages[1]
    sites += [post] if post in names else [blocks[-1]]
    sites += [layers[len(layers) // 2]] if layers else []
    types = [t for t in PLANT_TYPES.values() if model.supports_video or not t.needs_video]
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
    information: str
    dataset: str
    checks: list[CheckOutcome]

    @property
    def verdict(self) -> str:
        primary = [c.verdict for c in self.checks if c.check.primary]
        return "PASS" if primary and all(v == "PASS" for v in primary) else "FAIL"


@dataclass
class Calibration:
    model: str
    size: str
    plants: list[PlantOutcome]
    #: information → "probe/metric" → (n test items, smallest detectable drop)
    detectable: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)

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
    # the first stage read has no stage before it: there only the unplanted model is the baseline
    found_at = next((s for s in stages if (loss[s].low > 0 if s == stages[0] else
                                            drop[s].low > 0 and excess[s].low > 0)), None)
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


def detectable_drop(stages: list[str], reference: dict[str, np.ndarray], n_bootstrap: int = 1000,
                    seed: int = 0) -> tuple[int, float]:
    """(n test items, largest half-width of the paired CI between adjacent reference stages): a
    drop at least this large between any two neighbouring stages has a CI that excludes 0."""
    widths, n = [], 0
    for before, stage in itertools.pairwise(stages):
        ci = paired_bootstrap_diff(reference[before], reference[stage], n_bootstrap, seed)
        if np.isfinite([ci.low, ci.high]).all():
            widths.append((ci.high - ci.low) / 2)
            n = max(n, ci.n)
    if not widths:  # one stage only: the single-stage CI's half-width is the scale
        ci = bootstrap_ci(reference[stages[0]], n_bootstrap, seed)
        return ci.n, (ci.high - ci.low) / 2
    return n, float(max(widths))


class _Fits:
    """Probe fits per (store, stage, probe, task), with the stage's splits loaded once."""

    def __init__(self, dataset: Dataset, size: Size, seed: int) -> None:
        self.samples = list(dataset)
        self._images: np.ndarray | None = None
        self.size = size
        self.seed = seed
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
            options = dict(SUITE.quick_probe_options.get(check.probe, {})) if self.size == "quick" else {}
            self.results[key] = fit_probe(check.probe, check.task, splits["train"], splits["val"], splits["test"],
                                          seed=self.seed, **options)
        return self.results[key]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@]+", "-", text).strip("-")


@dataclass
class Calibrator:
    """Runs plants on one model; feature stores go under `work_dir` (reused on a rerun)."""

    model: StageModel
    work_dir: Path
    size: Size = "default"
    seed: int = 0
    n_bootstrap: int = 1000
    batch_size: int = 8
    #: per dataset name, options overriding the study's (e.g. {"shapes": {"image_size": 224}})
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: information type → the probe metrics that judge it (`PROBES_BY_INFORMATION` by default)
    probes: dict[str, tuple[ProbeCheck, ...]] = field(default_factory=lambda: dict(PROBES_BY_INFORMATION))
    #: stage globs that limit what is read (None: the defaults of `calibration_stages`)
    stage_patterns: list[str] | None = None

    def dataset(self, name: str) -> Dataset:
        n = SUITE.sizes[self.size][FAMILY_OF_DATASET[name]]  # type: ignore[index]
        options = {"n": n, "seed": self.seed, **self.dataset_options.get(name, {})}
        return load_dataset(name, **options)

    def run(self, plants: Sequence[Plant]) -> Calibration:
        outcomes: list[PlantOutcome] = []
        detectable: dict[str, dict[str, tuple[int, float]]] = {}
        by_dataset: dict[str, list[Plant]] = {}
        for plant in plants:
            by_dataset.setdefault(DATASET_BY_INFORMATION[plant.type.information], []).append(plant)
        for name, group in by_dataset.items():
            dataset = self.dataset(name)
            fits = _Fits(dataset, self.size, self.seed)
            stages = {p.label: calibration_stages(self.model, p, self.size, self.stage_patterns) for p in group}
            every_stage = [s for s in self.model.stage_names if any(s in v for v in stages.values())]
            reference = self._extract(self.model, dataset, name, every_stage)
            for plant in group:
                planted = self._extract(PlantedModel(self.model, plant, self.seed), dataset, name, stages[plant.label])
                checks = self._read(plant, stages[plant.label], reference, planted, fits)
                outcomes.append(PlantOutcome(plant, plant.type.information, name, checks))
            self._detectable(group, reference, every_stage, fits, detectable)
        return Calibration(self.model.name, self.size, outcomes, detectable)

    def _extract(self, model: StageModel, dataset: Dataset, name: str, stages: list[str]) -> FeatureStore:
        # one store per stage list: a store refuses to be resumed with other stages
        stage_hash = hashlib.sha256(",".join(stages).encode()).hexdigest()[:8]
        store = f"{_slug(name)}-{self.size}-seed{self.seed}-{stage_hash}"
        path = self.work_dir / "features" / _slug(model.name) / store
        return extract_dataset(model, dataset, path, stages=stages, batch_size=self.batch_size)

    def _read(self, plant: Plant, stages: list[str], reference: FeatureStore, planted: FeatureStore,
              fits: _Fits) -> list[CheckOutcome]:
        scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for stage in stages:
            ref_features, got_features = reference.load(stage), planted.load(stage)
            # the same features give the same (deterministic, seeded) fit: reuse the reference's
            same = torch.equal(ref_features, got_features)
            for check in self.probes[plant.type.information]:
                ref_fit = fits.fit(reference, stage, ref_features, check)
                got_fit = ref_fit if same else fits.fit(planted, stage, got_features, check)
                key = f"{check.probe}/{check.metric}"
                scores.setdefault(key, {"reference": {}, "planted": {}})
                scores[key]["reference"][stage] = ref_fit.per_item[check.metric]
                scores[key]["planted"][stage] = got_fit.per_item[check.metric]
        return [analyse(check, plant, stages, scores[f"{check.probe}/{check.metric}"]["reference"],
                        scores[f"{check.probe}/{check.metric}"]["planted"], self.n_bootstrap, self.seed)
                for check in self.probes[plant.type.information]]

    def _detectable(self, group: list[Plant], reference: FeatureStore, stages: list[str], fits: _Fits,
                    detectable: dict[str, dict[str, tuple[int, float]]]) -> None:
        """The smallest detectable drop of each probe metric over every stage the reference was read at."""
        for information in dict.fromkeys(p.type.information for p in group):
            # `none` reads the position probes on the same data: one table for both
            table = detectable.setdefault("position" if information == "none" else information, {})
            for check in self.probes[information]:
                per_stage = {s: fits.fit(reference, s, reference.load(s), check).per_item[check.metric]
                             for s in stages}
                table.setdefault(f"{check.probe}/{check.metric}",
                                 detectable_drop(stages, per_stage, self.n_bootstrap, self.seed))
