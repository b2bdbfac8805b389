"""Control rows on raw pixels and on a model at the same grid: can each control come out differently?

For each probe family the task score, the control-task score, their selectivity (paired bootstrap
CI; control − task for lower-is-better metrics) and, for box probes, the within-object token
shuffle — on `pixels.merged` and on a model's `vision.post_merge` (same 28 px grid for Qwen2.x).

Run: python benchmarks/controls_pixels_vs_model.py [--model qwen2.5-vl-tiny] [--images 200] [--clips 96]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.metrics._catalog import higher_is_better
from stageprobe.probes import ProbeData, fit_probe, split_probe_data
from stageprobe.stats import paired_bootstrap_diff

#: (dataset, n argument, probe, task, headline metrics, controls)
CHECKS = (
    ("shapes", "images", "dense-context", "boxes", ("matched_iou",), ("control-task", "token-shuffle")),
    ("motion", "clips", "token-flow", "direction", ("direction_acc", "flow_angle_error_deg"), ("control-task",)),
    ("textures", "images", "recon-linear", "reconstruction", ("ssim", "edge_f1"), ("control-task",)),
)


def splits_at(model: Any, dataset: str, n: int, stage: str, with_images: bool) -> dict[str, ProbeData]:
    data = load_dataset(dataset, n=n, seed=0)
    samples = [data[i] for i in range(len(data))]
    chunks = []
    for k in range(0, len(samples), 16):
        batch = samples[k:k + 16]
        if batch[0].frames is not None:
            out = model.extract(videos=[b.frames for b in batch], stages=[stage])
        else:
            out = model.extract([b.image for b in batch], stages=[stage])
        chunks.append(out[stage].float().to(torch.float16))
    images = None
    if with_images:
        images = np.stack([np.asarray(s.image.convert("RGB"), dtype=np.float32) / 255 for s in samples])
    return split_probe_data(torch.cat(chunks), samples, images)


def selectivity(metric: str, task: np.ndarray, control: np.ndarray) -> str:
    a, b = (task, control) if higher_is_better(metric) else (control, task)
    ci = paired_bootstrap_diff(a, b)
    return f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-vl-tiny")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--clips", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| features | probe | metric | task | control task | selectivity [95% CI] | token shuffle |")
    print("|---|---|---|---|---|---|---|")
    for label, model_name, stage in (("pixels", "pixels", "pixels.merged"),
                                     (args.model, args.model, "vision.post_merge")):
        model = sp.load_model(model_name)
        for dataset, size, probe, task, metrics, controls in CHECKS:
            started = time.perf_counter()
            n = args.images if size == "images" else args.clips
            splits = splits_at(model, dataset, n, stage, task == "reconstruction")
            fits = {c: fit_probe(probe, task, splits["train"], splits["val"], splits["test"], seed=0, control=c)
                    for c in (None, *controls)}
            for metric in metrics:
                task_items, control_items = fits[None].per_item[metric], fits["control-task"].per_item[metric]
                shuffle = (f"{fits['token-shuffle'].metrics[metric]:.3f}" if "token-shuffle" in fits else "—")
                print(f"| {label} `{stage}` | {probe} | {metric} | {np.nanmean(task_items):.3f} | "
                      f"{np.nanmean(control_items):.3f} | {selectivity(metric, task_items, control_items)} | "
                      f"{shuffle} |", flush=True)
            print(f"<!-- {label} {dataset} {probe}: {time.perf_counter() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
