"""CPU seconds of one fit of each gradient-trained probe in float32 and in bfloat16 (`--probe-precision`).

On the pixel baseline's features of the study's own data at its `--size` (default: the default run's 600
spatial / 160 detail images), with the study's probe options (and `--quick`'s where --size quick), one
thread, as a probe worker fits. Prints per probe and stage: CPU-s of the fit in each precision (the
features are extracted once, before), their ratio and the probe's headline test metric in each.
A probe keeps bfloat16 only where the ratio is ≥ 1.3 (the rule of issue 24 item 5). Default probes: those that
compute in the run's precision (`mixed_precision_probes()`); `attention` can be named, but it now computes in
float32 whatever the setting (its bfloat16 version gained 1.26× and 1.10×: benchmarks/README.md).

Run: python benchmarks/precision_fits.py [--size default] [--probes dense-context,decoder,decoder-pooled]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.probes import ProbeData, fit_probe, mixed_precision_probes, split_probe_data
from stageprobe.probes.training import probe_precision
from stageprobe.suites import get_suite
from stageprobe.suites.workers import image_array

#: probe → (task, data family, the metric printed)
PROBES = {"dense-context": ("boxes", "spatial", "matched_iou"), "attention": ("boxes", "spatial", "map_50"),
          "decoder": ("reconstruction", "detail", "ssim"), "decoder-pooled": ("reconstruction", "detail", "ssim")}
STAGES = ("pixels.patch", "pixels.merged")


def splits_of(family: str, stage: str, size: str, with_images: bool) -> dict[str, ProbeData]:
    suite = get_suite("q2")
    dataset = load_dataset(suite.data[family], n=suite.sizes[size][family], seed=0)
    samples = [dataset[i] for i in range(len(dataset))]
    model = sp.load_model("pixels")
    features = torch.cat([model.extract([s.image for s in samples[i:i + 50]], stages=[stage])[stage]
                          for i in range(0, len(samples), 50)]).to(torch.float16)  # as a store keeps them
    return split_probe_data(features, samples, image_array(samples) if with_images else None)


def probe_options(probe: str, size: str) -> dict[str, Any]:
    suite = get_suite("q2")
    options: dict[str, Any] = {}
    for experiment in suite.experiments:
        for candidate in experiment.probes:
            if candidate.probe == probe:
                options = dict(candidate.options)
    if size == "quick":
        options.update(suite.quick_probe_options.get(probe, {}))
    return options


def timed_fit(probe: str, splits: dict[str, ProbeData], precision: str, options: dict[str, Any]) -> tuple[float, float]:
    task, _, metric = PROBES[probe]
    started = time.process_time()
    with probe_precision(precision):
        result = fit_probe(probe, task, splits["train"], splits["val"], splits["test"], seed=0, **options)
    return time.process_time() - started, result.metrics[metric]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", choices=("quick", "default"))
    parser.add_argument("--probes", default=",".join(mixed_precision_probes()))
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'probe':16} {'stage':14} {'fp32 CPU-s':>10} {'bf16 CPU-s':>10} {'ratio':>6}  metric fp32 → bf16")
    for probe in args.probes.split(","):
        task, family, metric = PROBES[probe]
        for stage in args.stages.split(","):
            splits = splits_of(family, stage, args.size, task == "reconstruction")
            options = probe_options(probe, args.size)
            full, full_metric = timed_fit(probe, splits, "float32", options)
            reduced, reduced_metric = timed_fit(probe, splits, "bfloat16", options)
            print(f"{probe:16} {stage:14} {full:10.1f} {reduced:10.1f} {full / reduced:6.2f}  "
                  f"{metric} {full_metric:.3f} → {reduced_metric:.3f}", flush=True)


if __name__ == "__main__":
    main()
