"""What a run will cost before it starts (`stageprobe plan`, and the first lines of `run`): the stages
each model variant stores for each data family, their bytes, host memory of extraction and of one probe
worker, and the free disk where the stores go. Nothing here loads weights: models are built on the
meta device from their config, and each dataset renders one sample to learn its input size.

The byte counts are exact (tokens × width × the store dtype's bytes, the same arithmetic the feature
store writes); memory figures are estimates and say so, and so is the time (`_costs`: measured per-stage and
per-probe costs, the machine they were measured on named).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stageprobe._checks import human
from stageprobe.errors import UserInputError
from stageprobe.features.store import STORE_DTYPES, resolve_store_dtype
from stageprobe.models import PRESETS, StageInfo, StageModel
from stageprobe.models.pixels import pixel_baseline_for
from stageprobe.models.registry import SKELETONS, _config_and_factory, load_families
from stageprobe.suites._costs import FitPlan, TimeEstimate, forward_costs, load_costs, planned_fits
from stageprobe.suites._spec import with_connector

if TYPE_CHECKING:
    from stageprobe.suites._measure import Measurement
    from stageprobe.suites.runner import RunConfig

#: space left free on the store's disk when `--max-disk` is not given (the OS and the report need some)
DISK_MARGIN = 2 * 1024**3
#: samples per shard file of a feature store (`extract_dataset`'s default)
SHARD_SIZE = 64
#: an upper bound of what a stage adds on disk beside its tensors: the safetensors header of each shard,
#: a share of each shard's checksum record and of the store's manifest (measured: 56 B, 1.0–1.6 KiB, 2–4 KiB)
SHARD_OVERHEAD, STORE_OVERHEAD = 4096, 16384
@dataclass(frozen=True)
class StagePlan:
    name: str
    grid: tuple[int, int, int]
    dim: int
    bytes_per_sample: int


@dataclass
class StorePlan:
    """One feature store: a model variant's stages over one data family's samples."""

    variant: str
    family: str
    dataset: str
    samples: int
    #: (frames, height, width) of one input
    input_size: tuple[int, int, int]
    stages: list[StagePlan] = field(default_factory=list)
    #: CPU seconds per sample of a forward stopped after each stored stage (estimated, `_costs`)
    forward_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.samples * sum(stage.bytes_per_sample for stage in self.stages)

    def stage_disk_bytes(self, stage: StagePlan) -> int:
        """The files `stage` adds to this store: its tensors and an upper bound of headers and records."""
        shards = -(-self.samples // SHARD_SIZE)
        return self.samples * stage.bytes_per_sample + shards * SHARD_OVERHEAD + STORE_OVERHEAD

    def largest_stage_bytes(self) -> int:
        return self.samples * max((stage.bytes_per_sample for stage in self.stages), default=0)


@dataclass
class RunPlan:
    model: str
    size: str
    store_dtype: str
    stores: list[StorePlan]
    store_root: str
    free_disk: int
    #: parameters × the dtype's bytes of the main model (what extraction holds besides a batch)
    weight_bytes: int
    batch_size: int
    #: every stage of the model for one square image of `image_size` px, whatever the run keeps
    image_size: int = 448
    model_stages: list[StagePlan] = field(default_factory=list)
    #: every probe fit the run makes, with its estimated cost
    fits: list[FitPlan] = field(default_factory=list)
    #: "cpu" or the GPU the run would use; the cores extraction may use and the probe workers
    device: str = "cpu"
    cores: int = 1
    workers: int = 1
    #: where the costs were measured (`_costs.json`'s provenance); None: no costs file, no time estimate
    measured_on: dict[str, Any] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(store.bytes for store in self.stores)

    @property
    def bytes_per_image(self) -> int:
        """Every stage of the model for one `image_size`² image (what an unselective `extract` stores)."""
        return sum(stage.bytes_per_sample for stage in self.model_stages)

    def extraction_ram(self) -> int:
        """Estimate: the weights, plus one batch of every stage of the widest store in float32 (the
        captured activations before they are cast to the store dtype), twice for the raster copy."""
        element = STORE_DTYPES[resolve_store_dtype(self.store_dtype)].itemsize
        batch = max((sum(s.bytes_per_sample for s in store.stages) for store in self.stores), default=0)
        return self.weight_bytes + 2 * self.batch_size * batch * 4 // element

    def worker_ram(self) -> int:
        """Estimate: one probe worker loads one stage of a whole dataset as float32, and a copy of it."""
        element = STORE_DTYPES[resolve_store_dtype(self.store_dtype)].itemsize
        return 2 * max((store.largest_stage_bytes() for store in self.stores), default=0) * 4 // element

    def stage_groups(self, budget: int) -> list[list[tuple[str, str, str]]]:
        """(variant, family, stage) triples in groups whose stores fit `budget` bytes together, in order."""
        groups: list[list[tuple[str, str, str]]] = [[]]
        used = 0
        for store in self.stores:
            for stage in store.stages:
                cost = store.stage_disk_bytes(stage)
                if cost > budget:
                    raise UserInputError(
                        f"--max-disk {human(budget)} cannot hold even one stage: {stage.name} of the "
                        f"{store.variant} model on {store.family} data needs {human(cost)}. Keep fewer stages "
                        "(--stages), a smaller store dtype (--store-dtype bfloat16), fewer samples (--limit) or "
                        "a larger disk (--cache-dir on a bigger volume)")
                if used + cost > budget and groups[-1]:
                    groups.append([])
                    used = 0
                groups[-1].append((store.variant, store.family, stage.name))
                used += cost
        return groups

    def estimate(self, groups: list[list[tuple[str, str, str]]] | None = None) -> TimeEstimate | None:
        """Time of extraction (one forward per store and stage group, to its deepest stage) and of the
        fits, from the measured costs; None without a costs file."""
        if self.measured_on is None:
            return None
        groups = groups or [[(s.variant, s.family, stage.name) for s in self.stores for stage in s.stages]]
        stores = {(s.variant, s.family): s for s in self.stores}
        extraction, forwards = 0.0, 0
        for group in groups:
            reached: dict[tuple[str, str], float] = {}
            for variant, family, stage in group:
                store = stores[(variant, family)]
                reached[(variant, family)] = max(reached.get((variant, family), 0.0), store.forward_cpu_s[stage])
            extraction += sum(stores[key].samples * cost for key, cost in reached.items())
            forwards += len(reached)
        measured = [fit for fit in self.fits if fit.cpu_s is not None]
        return TimeEstimate(self.device, extraction, sum(fit.count * (fit.cpu_s or 0.0) for fit in measured),
                            sum(fit.count for fit in self.fits), sum(f.count for f in self.fits if f.cpu_s is None),
                            self.cores, self.workers, forwards, self.measured_on)

    def as_json(self, groups: list[list[tuple[str, str, str]]] | None = None) -> dict[str, Any]:
        plain = asdict(self)
        del plain["fits"], plain["measured_on"]  # the fits are summed in "time"; where they were measured too
        estimate = self.estimate(groups)
        return {**plain, "total_bytes": self.total_bytes, "bytes_per_image": self.bytes_per_image,
                "extraction_ram_bytes": self.extraction_ram(),
                "worker_ram_bytes": self.worker_ram(), "estimates": "RAM figures are estimates; bytes are exact",
                "time": estimate.as_json() if estimate else None}


def disk_budget(plan: RunPlan, max_disk: int | None) -> int:
    """`--max-disk`, else the free space where the stores go (plus what stores there hold already) less a margin."""
    if max_disk is not None:
        return max_disk
    return max(1, plan.free_disk + tree_bytes(Path(plan.store_root)) - DISK_MARGIN)


def meta_model(name: str, trust_remote_code: bool = False) -> StageModel:
    """`name` built on the meta device from its config: stages and parameter counts, no weights."""
    load_families()
    meta = torch.device("meta")
    if name in PRESETS:
        return PRESETS[name].factory(device=meta, dtype=torch.bfloat16)
    config, build_skeleton = _config_and_factory(name, trust_remote_code, SKELETONS)
    return build_skeleton(name, config, trust_remote_code=trust_remote_code)


def weight_bytes(model: StageModel) -> int:
    module = getattr(model, "hf_model", None)
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 if it does not exist): stores a resumed run already holds."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def free_disk(path: Path) -> int:
    """Free bytes on the volume that holds `path` (its nearest existing parent)."""
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def meta_measurement(config: RunConfig, store_root: Path) -> Measurement:
    """The run's stage and data choices over the model built on the meta device (no weights)."""
    from stageprobe.suites._measure import Measurement

    skeleton = meta_model(config.model, config.trust_remote_code)
    models = {"main": skeleton, "pixels": pixel_baseline_for(skeleton), "random-init": skeleton}
    measurement = Measurement(config, models.__getitem__, store_root, quiet=True)
    measurement.suite = with_connector(measurement.suite, skeleton.connector_stages)
    return measurement


def run_device(config: RunConfig) -> str:
    """"cpu" or the CUDA device the run would use."""
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def plan_run(config: RunConfig, store_root: Path, measurement: Measurement | None = None,
             image_size: int = 448) -> RunPlan:
    """The stores `config`'s run writes under `store_root`, from the same stage and data choices the run
    makes: `measurement`'s (a run's, with its loaded models), else one over the model built on the meta device."""
    from stageprobe.suites.workers import auto_workers

    measurement = measurement or meta_measurement(config, store_root)
    costs = load_costs()
    main = measurement.model("main")
    element = STORE_DTYPES[resolve_store_dtype(config.store_dtype)].itemsize
    # the run measures no video experiment on a model without video input
    specs = [spec for spec in measurement.suite.experiments
             if (config.experiments is None or spec.id in config.experiments)
             and not measurement.no_video_input(spec.family)]
    stores: list[StorePlan] = []
    for which in measurement.variants():
        for family in dict.fromkeys(spec.family for spec in specs):
            if not any(measurement.experiment_stages(spec, which) for spec in specs if spec.family == family):
                continue
            wanted = set(measurement.store_stages(which, family))
            dataset = measurement.dataset(family)
            first = dataset[0]
            frames = first.frames or [first.image]
            width, height = frames[0].size
            infos: list[StageInfo] = measurement.model(which).stages_for(height, width, len(frames))
            stages = [StagePlan(i.name, tuple(i.grid), i.dim, i.tokens * i.dim * element)
                      for i in infos if i.name in wanted]
            size = (len(frames), height, width)
            reached = forward_costs(measurement.model(which), costs, size) if costs else {}
            stores.append(StorePlan(which, family, measurement.dataset_spec(family), len(dataset), size, stages,
                                    {stage.name: reached.get(stage.name, 0.0) for stage in stages}))
    every = [StagePlan(i.name, tuple(i.grid), i.dim, i.tokens * i.dim * element)
             for i in main.stages_for(image_size, image_size)]
    device = run_device(config)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return RunPlan(config.model, config.size, config.store_dtype, stores, str(store_root), free_disk(store_root),
                   weight_bytes(main), config.batch_size, image_size, every, planned_fits(measurement, specs, costs),
                   device, cores, config.probe_workers or auto_workers(torch.device(device)),
                   costs.provenance if costs else None)
