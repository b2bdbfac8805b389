"""`stageprobe bench`: what extraction costs, against the model's own forward and the seed protocol.

Measured on one batch of 448×448 `shapes` images:

* `plain_forward_s` — the model's forward with no hooks (`StageModel.plain_forward`): the floor.
* `extract_all_s` — `StageModel.extract` of every stage in one pass; `overhead_ratio` is the two's
  quotient. Both are medians of `repeats` runs after a warm-up, run alternately so a change in
  machine load hits both alike.
* `seed_protocol_s` — the original harness's way (METHODOLOGY defect 10): one forward per
  extraction point per experiment, one image at a time. For every Q2 experiment, for every stage
  of this model it reads (its patterns, LLM layers thinned as the suite thins them), for every
  image: `extract([image], stages=[stage])`. Each distinct stage's batch-1 cost is timed on a few
  images and multiplied by how many (experiment, image) pairs read it. `ours_s` is `extract_all_s`
  (one batched pass serving every experiment); `speedup_vs_seed_protocol` is their quotient.
* `probe_fit_stage_images_per_s` — (stages × images) / seconds to fit the closed-form
  `dense-linear` box probe on every extracted stage of the batch (split by each sample's split).
* `peak_gpu_mb` — the most GPU memory torch held during the timed forwards (CUDA only).
* `peak_rss_mb_small` / `_large` — peak resident memory of a `stageprobe extract` subprocess of
  the same model on N and 10·N images; `rss_ratio` shows that streaming keeps it flat.
"""

from __future__ import annotations

import fnmatch
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.table import Table

from stageprobe.datasets import Sample, load_dataset
from stageprobe.models import StageModel, load_model
from stageprobe.suites._spec import with_connector
from stageprobe.suites.q2 import EXPERIMENTS as Q2_EXPERIMENTS
from stageprobe.suites.q2 import SUITE, thin_stages

IMAGE_SIZE = 448
#: metric → (target, "max" if the value must not exceed it, "min" if it must reach it)
TARGETS: dict[str, tuple[float, str]] = {
    "overhead_ratio": (1.15, "max"),
    "speedup_vs_seed_protocol": (10.0, "min"),
    "rss_ratio": (1.5, "max"),
}
RSS_FACTOR = 10


@dataclass(frozen=True)
class BenchSettings:
    model: str = "qwen2.5-vl-tiny"
    images: int = 16
    device: str = "auto"
    repeats: int = 3
    #: images per distinct stage actually timed under the seed protocol (then extrapolated)
    seed_images: int = 2
    #: small RSS run size (the large one is RSS_FACTOR times more); 0 skips the RSS runs
    rss_images: int = 16


def bench_samples(count: int, seed: int = 0) -> list[Sample]:
    dataset = load_dataset("shapes", n=count, seed=seed, image_size=IMAGE_SIZE)
    return [dataset[i] for i in range(count)]


def median_seconds(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each call after one warm-up of each; the calls take turns in every round."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def seed_protocol_reads(model: StageModel) -> Counter[str]:
    """How many Q2 experiments read each of the model's stages (what the seed ran a forward for)."""
    available = model.stage_names
    reads: Counter[str] = Counter()
    for spec in with_connector(SUITE, model.connector_stages).experiments:  # the model's own connector pair
        wanted = [s for s in available if any(fnmatch.fnmatchcase(s, p) for p in spec.stages)]
        reads.update(thin_stages(wanted, "language.layer.", spec.max_language_layers))
    return reads


def time_seed_protocol(model: StageModel, images: Sequence[Image.Image], seed_images: int) -> tuple[float, str]:
    """Seconds the seed protocol would take on `images`, extrapolated from `seed_images` per stage."""
    reads = seed_protocol_reads(model)
    timed = list(images[:max(1, min(seed_images, len(images)))])
    model.extract([timed[0]], stages=[next(iter(reads))])  # warm-up
    per_call: dict[str, float] = {}
    for stage in reads:
        started = time.perf_counter()
        for image in timed:
            model.extract([image], stages=[stage])
        per_call[stage] = (time.perf_counter() - started) / len(timed)
    calls = sum(reads.values()) * len(images)
    seconds = sum(per_call[stage] * count for stage, count in reads.items()) * len(images)
    note = (f"{calls} batch-1 forwards ({sum(reads.values())} (experiment, stage) reads × {len(images)} images "
            f"over {len(Q2_EXPERIMENTS)} Q2 experiments, {len(reads)} distinct stages); each distinct stage timed on "
            f"{len(timed)} image(s) and extrapolated linearly to {len(images)}")
    return seconds, note


def probe_throughput(features: dict[str, torch.Tensor], samples: Sequence[Sample]) -> tuple[float, str]:
    """(stages × images) per second fitting the closed-form dense box probe on every stage."""
    from stageprobe.probes import fit_probe, split_probe_data

    def fit(stage: str) -> None:
        splits = split_probe_data(features[stage], samples)
        fit_probe("dense-linear", "boxes", splits["train"], splits["val"], splits["test"])

    fit(next(iter(features)))  # warm-up: first-call imports and allocations
    started = time.perf_counter()
    for stage in features:
        fit(stage)
    seconds = time.perf_counter() - started
    return len(features) * len(samples) / seconds, (
        f"dense-linear boxes probe fit + test on {len(features)} stages × {len(samples)} images in {seconds:.2f} s")


def peak_rss_mb(model: str, images: int, device: str, out: Path) -> float:
    """Peak RSS (MiB) of one `stageprobe extract` subprocess of every stage on `images` shapes images."""
    command = [sys.executable, "-m", "stageprobe", "extract", "--model", model, "--dataset", "shapes",
               "--n", str(images), "--out", str(out), "--device", device]
    with tempfile.TemporaryFile() as log:
        # WORLD_SIZE=1: a bench started under torchrun must not make its child join the process group.
        child = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, "WORLD_SIZE": "1"})
        # wait4 reports this child's own peak; RUSAGE_CHILDREN would mix in earlier children.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"`{' '.join(command)}` failed with exit code {child.returncode}:\n{tail}")
    kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss  # bytes on macOS
    return kib / 1024


def run_bench(settings: BenchSettings, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every measurement of the module docstring, as one flat dict (+ `notes` saying how)."""
    notes: dict[str, str] = {}
    model = load_model(settings.model, device=settings.device)
    samples = bench_samples(settings.images)
    images = [sample.image for sample in samples if sample.image is not None]

    log(f"plain forward vs extract of all stages, batch of {len(images)}")
    seconds = median_seconds({"plain": lambda: model.plain_forward(images), "extract": lambda: model.extract(images)},
                             settings.repeats)
    plain_s, extract_s = seconds["plain"], seconds["extract"]
    peak_gpu_mb = torch.cuda.max_memory_allocated(model.device) / 2**20 if model.device.type == "cuda" else None
    notes["peak_gpu_mb"] = ("torch.cuda.max_memory_allocated over the timed forwards" if peak_gpu_mb is not None
                            else "unavailable: not on a CUDA device")
    notes["extract_all_s"] = (f"median of {settings.repeats} after a warm-up, {len(model.stage_names)} stages, "
                              f"batch of {len(images)} {IMAGE_SIZE}×{IMAGE_SIZE} images")

    log("seed protocol: one batch-1 forward per stage per experiment per image")
    seed_s, notes["seed_protocol_s"] = time_seed_protocol(model, images, settings.seed_images)
    notes["ours_s"] = "= extract_all_s: one batched forward capturing every stage, shared by all experiments"

    log("probe fitting")
    features = model.extract(images)
    try:
        probe_rate: float | None
        probe_rate, notes["probe_fit_stage_images_per_s"] = probe_throughput(features, samples)
    except Exception as error:  # another team's module: report it unavailable rather than lose the bench
        probe_rate = None
        notes["probe_fit_stage_images_per_s"] = f"unavailable: {type(error).__name__}: {error}"

    rss_small = rss_large = rss_ratio = None
    if settings.rss_images > 0:
        small, large = settings.rss_images, settings.rss_images * RSS_FACTOR
        log(f"peak RSS of `stageprobe extract` on {small} and {large} images")
        with tempfile.TemporaryDirectory(prefix="stageprobe-bench-") as scratch:
            rss_small = peak_rss_mb(settings.model, small, settings.device, Path(scratch) / "small")
            rss_large = peak_rss_mb(settings.model, large, settings.device, Path(scratch) / "large")
        rss_ratio = rss_large / rss_small
        notes["rss"] = (f"`stageprobe extract` subprocess, every stage, shapes {IMAGE_SIZE} px, defaults "
                        f"(batch 8, shard 64, float16), on {small} and {large} images")
    else:
        notes["rss"] = "unavailable: skipped (rss_images=0)"

    return {
        "model": settings.model,
        "device": str(model.device),
        "images": len(images),
        "torch": torch.__version__,
        "plain_forward_s": plain_s,
        "extract_all_s": extract_s,
        "overhead_ratio": extract_s / plain_s,
        "seed_protocol_s": seed_s,
        "ours_s": extract_s,
        "speedup_vs_seed_protocol": seed_s / extract_s,
        "probe_fit_stage_images_per_s": probe_rate,
        "peak_gpu_mb": peak_gpu_mb,
        "peak_rss_mb_small": rss_small,
        "peak_rss_mb_large": rss_large,
        "rss_ratio": rss_ratio,
        "notes": notes,
    }


def verdict(metric: str, value: float | None) -> str | None:
    """PASS / FAIL against the target of `metric`; None for metrics without a target."""
    if metric not in TARGETS:
        return None
    if value is None:
        return "n/a"
    target, kind = TARGETS[metric]
    return "PASS" if (value <= target if kind == "max" else value >= target) else "FAIL"


def target_text(metric: str) -> str:
    if metric not in TARGETS:
        return ""
    target, kind = TARGETS[metric]
    return f"{'≤' if kind == 'max' else '≥'} {target:g}"


#: (key, label, unit) of the rows the table shows, in order
ROWS = (
    ("plain_forward_s", "plain forward (floor)", "s"),
    ("extract_all_s", "extract, all stages", "s"),
    ("overhead_ratio", "extraction overhead", "×"),
    ("seed_protocol_s", "seed protocol", "s"),
    ("ours_s", "ours (one batched pass)", "s"),
    ("speedup_vs_seed_protocol", "speedup vs seed protocol", "×"),
    ("probe_fit_stage_images_per_s", "dense probe fitting", "stage·images/s"),
    ("peak_gpu_mb", "peak GPU memory", "MiB"),
    ("peak_rss_mb_small", "peak RSS, small run", "MiB"),
    ("peak_rss_mb_large", f"peak RSS, {RSS_FACTOR}× larger run", "MiB"),
    ("rss_ratio", "peak RSS ratio", "×"),
)

FORMATS = {"s": ".3f", "×": ".2f", "stage·images/s": ".1f", "MiB": ".0f"}


def bench_table(result: dict[str, Any]) -> Table:
    """The result as a rich table with PASS / FAIL beside each targeted metric, notes below."""
    table = Table("metric", "value", "target", "verdict",
                  title=f"{result['model']} on {result['device']}, batch of {result['images']} "
                        f"{IMAGE_SIZE}×{IMAGE_SIZE} images, torch {result['torch']}")
    for key, label, unit in ROWS:
        value = result[key]
        shown = "unavailable" if value is None else f"{value:{FORMATS[unit]}} {unit}"
        mark = verdict(key, value) or ""
        colour = {"PASS": "green", "FAIL": "red"}.get(mark, "dim")
        table.add_row(label, shown, target_text(key), f"[{colour}]{mark}[/]" if mark else "")
    table.caption = "\n".join(f"{key}: {note}" for key, note in result["notes"].items())
    table.caption_justify = "left"
    return table
