"""The one validation pass a command runs before it writes a byte or loads a model.

Checks register themselves for the commands they concern (`@check("run", "extract")`) and run in
registration order over the options the command line gave; the first problem is one
`UserInputError`, a value beyond sense is capped with a warning. Another option or command adds one
function here. A dataset checks itself: building it (`load_dataset`) reads its files — a missing
path, JSON that is not COCO, a folder without readable images are refused there — so a new dataset
kind brings its own check with its registration.

This module imports no torch: `check_run_plan`, which needs the suite, runs after the cheap checks
and still before anything is written.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageprobe._checks import check_device, check_positive, check_writable_dir, parse_size
from stageprobe.errors import UserInputError

if TYPE_CHECKING:
    from stageprobe.suites._spec import Suite

#: most fits of the deciding probes and every gradient-trained probe (`--seeds`): each seed refits every
#: one of them, so 20 seeds is already 20× the study's fitting time
MAX_SEEDS = 20
#: fewest samples of each split any experiment's probes and confidence intervals work with: a ridge
#: fit needs rows to spare, choosing a stage needs validation samples, a bootstrap test samples
MIN_SPLIT_SAMPLES: Mapping[str, int] = {"train": 4, "val": 2, "test": 2}
#: how long `check_run_plan` may spend finding the smallest dataset size that would do
SEARCH_SECONDS = 1.0
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class Request:
    """A command's options as given (None = not given), and warnings for values that were capped."""

    command: str
    options: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def get(self, name: str) -> Any:
        return self.options.get(name)


Check = Callable[[Request], None]
_CHECKS: list[tuple[frozenset[str], Check]] = []


def check(*commands: str) -> Callable[[Check], Check]:
    """Register a check of the options of `commands` (run in registration order)."""

    def register(function: Check) -> Check:
        _CHECKS.append((frozenset(commands), function))
        return function

    return register


def validate_options(command: str, options: Mapping[str, Any]) -> Request:
    """Run every check registered for `command`; returns the options with capped values and the warnings."""
    request = Request(command, dict(options))
    for commands, function in _CHECKS:
        if command in commands:
            function(request)
    return request


@check("run", "extract", "bench", "calibrate")
def _device(request: Request) -> None:
    check_device(request.get("device") or "auto")
    device_map = request.get("device_map")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UserInputError(f"--device-map {device_map!r} is not a placement accelerate knows; "
                             f"pass one of {', '.join(DEVICE_MAPS)}")


@check("run", "extract", "calibrate", "bench")
def _model(request: Request) -> None:
    """A preset by name; a Hub id (org/name) or a local directory is read later, before anything is written."""
    from stageprobe.models import _catalog

    model = str(request.get("model"))
    if model in _catalog.preset_descriptions() or "/" in model or model.startswith((".", "~")) or Path(model).exists():
        return
    raise UserInputError(f"unknown model {model!r}. Presets: {', '.join(sorted(_catalog.preset_descriptions()))}; "
                         "or pass a Hugging Face Hub id (org/name) or a local directory with config.json")


@check("run", "extract", "calibrate")
def _dtype(request: Request) -> None:
    dtype = request.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise UserInputError(f"--dtype {dtype!r} is not a model dtype; pass auto, fp32, bf16 or fp16")


@check("run")
def _size(request: Request) -> None:
    if request.get("quick") and request.get("full"):
        raise UserInputError("--quick and --full exclude each other; pick one")
    if request.get("protocol") not in (None, "stageprobe", "seed"):
        raise UserInputError(f"--protocol {request.get('protocol')!r} is not a protocol; pass stageprobe or seed")


@check("run", "extract", "calibrate", "bench")
def _counts(request: Request) -> None:
    for name in ("batch_size", "limit", "n", "shard_size", "images", "repeats"):
        check_positive(f"--{name.replace('_', '-')}", request.get(name))
    if (request.get("rss_images") or 0) < 0:
        raise UserInputError(f"--rss-images must be at least 0, got {request.get('rss_images')}")


@check("run", "plan")
def _seeds(request: Request) -> None:
    seeds = request.get("seeds")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise UserInputError(
            f"--seeds {seeds} is outside 1…{MAX_SEEDS}: each seed refits the deciding probes and every "
            "gradient-trained probe, so "
            f"{MAX_SEEDS} seeds already cost {MAX_SEEDS}× the fitting time. (--seed picks the seed of data, "
            "splits and probes; --seeds how many probe seeds to fit.) Pass --seeds 3 for a probe-seed spread")


@check("run")
def _max_disk(request: Request) -> None:
    """`--max-disk` as bytes (80G, 500M or a number of bytes)."""
    if request.get("max_disk") is not None:
        request.options["max_disk"] = parse_size(request.get("max_disk"))


@check("run")
def _probe_workers(request: Request) -> None:
    workers = request.get("probe_workers")
    if workers is None:
        return
    if workers < 1:
        raise UserInputError(f"--probe-workers must be at least 1, got {workers}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > cores:
        request.options["probe_workers"] = cores
        request.warnings.append(f"--probe-workers {workers} is more than the {cores} core(s) this process may "
                                f"use: fitting with {cores} (each worker is a process holding a stage of features)")


@check("run")
def _experiments(request: Request) -> None:
    experiments = request.get("experiments")
    if experiments is not None and not [part for part in experiments.split(",") if part.strip()]:
        raise UserInputError(f"--experiments {experiments!r} names no experiment; pass ids such as E-Q2.1,E-Q2.5 "
                             "(see `stageprobe run --experiments list`) or leave it out to run all")


@check("run", "calibrate")
def _calibration_model(request: Request) -> None:
    if request.command == "run" and not request.get("calibrate"):
        return
    from stageprobe.models import _catalog

    model = request.get("model")
    pixels = next(family for family in _catalog.FAMILIES if family.module.endswith(".pixels"))
    if model in pixels.presets:
        flag = "--calibrate" if request.command == "run" else "calibrate"
        raise UserInputError(f"{flag} plants losses inside a network's stages; {model!r} is the pixel baseline, "
                             "which has none. Calibrate a transformers model (e.g. --model qwen2.5-vl-tiny)")


@check("run", "extract", "calibrate")
def _output_folders(request: Request) -> None:
    for name in ("out", "cache_dir"):
        path = request.get(name)
        if path is not None:
            check_writable_dir(Path(path), f"--{name.replace('_', '-')}")


@check("run")
def _data(request: Request) -> None:
    """Each `--data KEY=DATASET` names a family and a dataset that opens: files exist and parse."""
    if not request.get("data"):
        return
    from stageprobe.datasets import load_dataset, parse_data_options

    data = parse_data_options(request.get("data"))
    for family, spec in data.items():
        _open_dataset(lambda spec=spec: load_dataset(spec), f"--data {family}={spec}")
    request.options["data"] = data


@check("extract")
def _extract_dataset(request: Request) -> None:
    """The dataset opens (n and seed are passed where it takes them, as the extraction will)."""
    from stageprobe.datasets import dataset_options, load_dataset, parse_spec

    spec = request.get("dataset")
    accepted = dataset_options(parse_spec(spec)[0])
    wanted = {"n": request.get("n"), "seed": request.get("seed"), "skip_bad": request.get("skip_bad") or None}
    options = {key: value for key, value in wanted.items() if value is not None and key in accepted}
    _open_dataset(lambda: load_dataset(spec, **options), f"--dataset {spec}")


def _open_dataset(build: Callable[[], Any], where: str) -> None:
    """Build a dataset (which reads and checks its files); an OS error names the option it came from."""
    try:
        build()
    except OSError as error:
        raise UserInputError(f"{where}: {error.strerror or error} ({error.filename or 'a file it reads'}); "
                             "check the path and its permissions") from None


def check_run_plan(suite: Suite, experiments: Iterable[str], size: str, data: Mapping[str, str],
                   limit: int | None, seed: int) -> None:
    """Each data family the chosen experiments read holds enough samples in every split (after
    --limit or an `n=` in its --data spec), with the minimum stated."""
    from stageprobe.datasets import load_dataset

    readers: dict[str, list[str]] = {}
    for experiment_id in experiments:
        spec = suite.experiment(experiment_id)
        readers.setdefault(spec.family, []).append(spec.label or spec.id)  # the report's heading
    short: list[_Shortfall] = []
    for family, labels in readers.items():
        spec = data.get(family) or suite.data[family]  # type: ignore[index]
        default_n = suite.sizes[size][family]  # type: ignore[index]
        dataset = load_dataset(spec, n=default_n if limit is None else min(default_n, limit), seed=seed)
        counts = _split_counts(dataset)
        if not _large_enough(counts):
            short.append(_Shortfall(labels, family, spec, len(dataset), counts,
                                    _smallest_size(spec, seed, len(dataset), default_n)))
    if short:
        raise UserInputError(_too_small(short, limit))


@check("run")
def _max_tiles(request: Request) -> None:
    check_positive("--max-tiles", request.get("max_tiles"))


def check_run_tiles(model: str, max_tiles: int | None, suite: Suite, experiments: Iterable[str], size: str,
                    data: Mapping[str, str], limit: int | None, seed: int, trust_remote_code: bool) -> None:
    """No image of the data the chosen experiments read is cut by a tiling model's processor into more tiles
    than `--max-tiles` (or than the processor keeps cell by cell): refused before any weight is read, never
    an out-of-memory mid-run. A dataset renders every sample at one size, so its first sample stands for all."""
    from stageprobe.datasets import load_dataset
    from stageprobe.models.registry import check_image_tiles

    families = {suite.experiment(e).family for e in experiments}
    for family in sorted(families):
        spec = data.get(family) or suite.data[family]  # type: ignore[index]
        default_n = suite.sizes[size][family]  # type: ignore[index]
        sample = load_dataset(spec, n=default_n if limit is None else min(default_n, limit), seed=seed)[0]
        image = sample.image if sample.image is not None else (sample.frames or [None])[0]
        if image is None or len(sample.frames or []) > 1:  # clips: one tile a frame in every tiling family
            continue
        try:
            check_image_tiles(model, [(image.height, image.width)], max_tiles, trust_remote_code)
        except UserInputError as error:
            raise UserInputError(f"the {family} data ({spec}): {error}") from None


@dataclass
class _Shortfall:
    """A data family whose splits are too small for the experiments reading it."""

    labels: list[str]
    family: str
    spec: str
    size: int
    counts: Counter[str]
    smallest: int | None


def _split_counts(dataset: Any) -> Counter[str]:
    return Counter(dataset.sample_split(index) for index in range(len(dataset)))


def _large_enough(counts: Counter[str]) -> bool:
    return all(counts[split] >= least for split, least in MIN_SPLIT_SAMPLES.items())


def _smallest_size(spec: str, seed: int, start: int, most: int) -> int | None:
    """The smallest sample count above `start` (up to `most`) whose splits are large enough, where the
    search fits in SEARCH_SECONDS; else None. An `n=` in the spec is replaced by each count tried."""
    from stageprobe.datasets import load_dataset

    spec = ":".join(part for part in spec.split(":") if not part.startswith("n="))
    deadline = time.monotonic() + SEARCH_SECONDS
    for n in range(start + 1, most + 1):
        if time.monotonic() > deadline:
            return None
        if _large_enough(_split_counts(load_dataset(spec, n=n, seed=seed))):
            return n
    return None


def _too_small(short: list[_Shortfall], limit: int | None) -> str:
    first = short[0]
    needs = ", ".join(f"{least} {split}" for split, least in MIN_SPLIT_SAMPLES.items())
    got = ", ".join(f"{first.counts[split]} {split}" for split in MIN_SPLIT_SAMPLES)
    names = ", ".join(first.labels[:-1]) + (" and " if len(first.labels) > 1 else "") + first.labels[-1]
    verb, their = ("needs", "its") if len(first.labels) == 1 else ("need", "their")
    at_least = f" ≥ {first.smallest} samples for {their} train/val/test splits" if first.smallest else " more samples"
    others = "".join(f"; so do {', '.join(s.labels)} ({s.family} data: {s.size} samples)" for s in short[1:])
    sizes = [s.smallest for s in short]
    needed = max(sizes) if None not in sizes else None  # type: ignore[type-var]
    if "n=" in first.spec:
        fix = f"raise n= in --data {first.family}={first.spec}" + (f" to {first.smallest}" if first.smallest else "")
    elif limit is not None:
        fix = f"pass --limit {needed} or more" if needed else "leave out --limit"
    else:
        fix = f"give the {first.family} data more samples"
    return (f"{names} {verb}{at_least}: {first.size} samples of the {first.family} data ({first.spec}) split into "
            f"{got}, and the probes and confidence intervals need at least {needs}{others}; {fix}")
