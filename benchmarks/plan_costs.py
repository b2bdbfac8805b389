"""Measure the costs `stageprobe plan` estimates time from, and write them to the package's `_costs.json`.

Everything is CPU seconds of one thread (`time.process_time` with torch on one thread): on a shared
machine that is the figure the neighbours change least, and wall time on an idle machine is it divided
by the cores used. What is measured (`stageprobe.suites._costs` says how the plan uses it):

1. **Extraction, per stage kind**: a forward hook before and after each stage's module (no differencing,
   so no cost can come out negative), on `qwen2.5-vl-tiny` (64/128 wide) and `qwen2.5-vl-7b-width-random`
   (Qwen2.5-VL-7B's 1,280/3,584 widths, 4 ViT blocks, 2 LLM layers), `--repeats` forwards each, the
   median per module and image. Two widths per kind give the law a + b·tokens·width². What lies outside
   the stage modules (processor, data, writing the store) is measured with `extract_dataset` on the tiny
   preset, per input pixel; so is the pixel baseline.
2. **Probe fits, per (probe, task, options)** the default and quick studies make (the mixed-precision
   probes twice where this CPU computes bfloat16 natively: in float32 and, as `key@bfloat16`, in
   bfloat16): features of the tiny preset at a stage that fit reads, on that experiment's own data and
   targets, widened to the 7B width of that grid by a fixed random projection (the same information in a
   wider space), at two image counts and two widths; `c · n^α · (tokens·width)^β` fitted by least squares
   in logs, and its largest miss on the four points kept beside it.

    python benchmarks/plan_costs.py                      # writes src/stageprobe/suites/_costs.json
    python benchmarks/plan_costs.py --out /tmp/costs.json --images 48 400 --wide-images 48 96
    python benchmarks/plan_costs.py --check 600 --only dense-context/boxes attention/boxes   # the law out of range
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stageprobe.datasets import load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureStore
from stageprobe.models import StageModel, load_model
from stageprobe.probes import fit_probe, split_probe_data
from stageprobe.probes.training import native_bf16, probe_precision
from stageprobe.suites._costs import COSTS_FILE, FitPlan, precision_key, stage_kind
from stageprobe.suites._plan import meta_measurement, plan_run
from stageprobe.suites.runner import RunConfig
from stageprobe.suites.workers import image_array

TINY, WIDE = "qwen2.5-vl-tiny", "qwen2.5-vl-7b-width-random"
#: Qwen2.5-VL-7B's width at the patch grid (ViT) and at the merged grid (merger output, LLM)
WIDE_DIMS = {"patch": 1280, "merged": 3584}


def provenance(argv: Sequence[str]) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "threads": 1, "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat(),
            "load_average_at_start": round(os.getloadavg()[0], 1),
            "command": " ".join(["python benchmarks/plan_costs.py", *argv]),
            "units": "CPU seconds of one thread (time.process_time, torch on one thread)"}


# -- extraction --------------------------------------------------------------------------------------

def module_seconds(model: StageModel, batch: Sequence[Any], repeats: int) -> dict[str, dict[str, float]]:
    """Per stage kind: median CPU seconds per image of one module of that kind, its tokens and width."""
    height, width = batch[0].size[1], batch[0].size[0]
    table = model.stage_table(height, width)  # type: ignore[attr-defined]
    infos = {info.name: info for info in model.stages_for(height, width)}
    modules: dict[torch.nn.Module, tuple[str, int, int]] = {}
    for spec in table:
        kind = stage_kind(spec.name, spec.description, spec.hook)
        if kind is not None:
            info = infos[spec.name]
            modules.setdefault(model.hf_model.get_submodule(spec.module), (kind, info.tokens, info.dim))  # type: ignore[attr-defined]
    spent: dict[str, list[float]] = defaultdict(list)
    started: dict[torch.nn.Module, float] = {}
    handles = []
    for module, (kind, _tokens, _dim) in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, _args: started.__setitem__(m, time.process_time())))
        handles.append(module.register_forward_hook(
            lambda m, _args, _out, kind=kind: spent[kind].append((time.process_time() - started[m]) / len(batch))))
    deepest = [spec.name for spec in table if stage_kind(spec.name, spec.description, spec.hook)][-1]
    try:
        model.extract(batch[:1], stages=[deepest])  # warm-up, not counted
        spent.clear()
        for _ in range(repeats):
            model.extract(batch, stages=[deepest])
    finally:
        for handle in handles:
            handle.remove()
    shapes = {kind: (tokens, dim) for kind, tokens, dim in modules.values()}
    return {kind: {"cpu_s_per_image": statistics.median(values), "tokens": shapes[kind][0], "dim": shapes[kind][1],
                   "x": shapes[kind][0] * shapes[kind][1] ** 2, "samples": len(values)}
            for kind, values in spent.items()}


def line_through(points: list[dict[str, Any]]) -> dict[str, float]:
    """a + b·x through two measured points (a, b ≥ 0: a cost does not fall with width)."""
    (x1, y1), (x2, y2) = sorted((p["x"], p["cpu_s_per_image"]) for p in points)
    b = max(0.0, (y2 - y1) / (x2 - x1))
    return {"a": max(0.0, y1 - b * x1), "b": b}


def cpu_of(work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def extraction_costs(repeats: int) -> dict[str, Any]:
    shapes = load_dataset("shapes", n=8, seed=0)
    images = [sample.image for sample in shapes]
    measured: dict[str, dict[str, dict[str, float]]] = {}
    for preset, batch in ((TINY, images), (WIDE, images[:2])):
        model = load_model(preset, device="cpu", dtype="fp32")
        measured[preset] = module_seconds(model, batch, repeats)
        print(f"  {preset}: " + ", ".join(f"{k} {v['cpu_s_per_image']:.4f}" for k, v in measured[preset].items()),
              flush=True)
        del model
    kinds = {kind: {**line_through([measured[TINY][kind], measured[WIDE][kind]]),
                    "points": {preset: measured[preset][kind] for preset in measured}}
             for kind in measured[WIDE] if kind in measured[TINY]}
    overhead, pixels = outside_modules(repeats)
    return {"kinds": kinds, "overhead_cpu_s_per_pixel": overhead, "pixels_cpu_s_per_pixel": pixels,
            "law": "CPU-s per image = a + b × tokens × width², a and b through the two presets' points"}


def outside_modules(repeats: int) -> tuple[float, float]:
    """CPU seconds per input pixel of `extract_dataset` outside the stage modules (tiny preset), and of the
    pixel baseline's whole extraction."""
    dataset = load_dataset("shapes", n=32, seed=0)
    pixels = sum(s.image.size[0] * s.image.size[1] for s in dataset)
    model = load_model(TINY, device="cpu", dtype="fp32")
    inside = sum(v["cpu_s_per_image"] * v["samples"] / repeats for v in module_seconds(
        model, [s.image for s in dataset][:8], repeats).values()) * len(dataset)
    baseline = load_model("pixels", device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        whole = statistics.median(cpu_of(lambda k=k: extract_dataset(model, dataset, Path(folder) / f"m{k}",
                                                                     progress=False)) for k in range(repeats))
        pixel = statistics.median(cpu_of(lambda k=k: extract_dataset(baseline, dataset, Path(folder) / f"p{k}",
                                                                     progress=False)) for k in range(repeats))
    return max(0.0, whole - inside) / pixels, pixel / pixels


# -- probe fits --------------------------------------------------------------------------------------

def fit_kinds() -> dict[str, FitPlan]:
    """One fit on the main model for each (probe, task, options) the default and quick studies make."""
    chosen: dict[str, FitPlan] = {}
    for size in ("default", "quick"):
        plan = plan_run(RunConfig(model=TINY, size=size), Path(tempfile.gettempdir()) / "plan-costs")
        for fit in plan.fits:
            if fit.variant == "main":
                chosen.setdefault(fit.key, fit)
    return chosen


@cache
def tiny_model() -> StageModel:
    return load_model(TINY, device="cpu", dtype="fp32")


@cache
def stage_features(family: str, stage: str, n: int) -> tuple[torch.Tensor, Any]:
    """The tiny preset's features of `stage` on `n` samples of the study's `family` data, and the data."""
    measurement = meta_measurement(RunConfig(model=TINY), Path(tempfile.gettempdir()))
    dataset = load_dataset(measurement.dataset_spec(family), n=n, seed=0)
    model = tiny_model()
    with tempfile.TemporaryDirectory() as folder:
        store = extract_dataset(model, dataset, Path(folder) / "store", stages=[stage], progress=False)
        features = FeatureStore.open(store.root).load(stage).float()
    return features, dataset


def fit_cpu_s(fit: FitPlan, features: torch.Tensor, dataset: Any, precision: str = "float32") -> float:
    probe, task = fit.key.split("[")[0].split("/")
    options = {}
    if "[" in fit.key:
        for part in fit.key.split("[", 1)[1].rstrip("]").split(","):
            name, value = part.split("=")
            options[name] = int(value)
    images = image_array(dataset) if task == "reconstruction" else None
    splits = split_probe_data(features, list(dataset), images)
    with probe_precision(precision):
        return cpu_of(lambda: fit_probe(probe, task, splits["train"], splits["val"], splits["test"], seed=0,
                                        **options))


def widened(features: torch.Tensor, dim: int) -> torch.Tensor:
    """The same features in `dim` dimensions: a fixed random projection keeps what a probe can find."""
    projection = torch.randn(features.shape[-1], dim, generator=torch.Generator().manual_seed(0))
    return features @ (projection / features.shape[-1] ** 0.5)


def fit_law(points: list[dict[str, float]]) -> dict[str, float]:
    """c · n^α · (tokens·width)^β by least squares in logs, and its largest relative miss on the points."""
    design = np.array([[1.0, np.log(p["n"]), np.log(p["tokens"] * p["dim"])] for p in points])
    seconds = np.array([p["cpu_s"] for p in points])
    (log_c, alpha, beta), *_ = np.linalg.lstsq(design, np.log(seconds), rcond=None)
    predicted = np.exp(design @ np.array([log_c, alpha, beta]))
    return {"c": float(np.exp(log_c)), "alpha": float(alpha), "beta": float(beta),
            "max_relative_miss": float(np.max(np.abs(predicted / seconds - 1)))}


def fit_precisions(key: str) -> list[str]:
    """float32 for every fit; bfloat16 too for a mixed-precision probe where this CPU computes it natively."""
    native = native_bf16(torch.device("cpu"))
    return ["float32"] + (["bfloat16"] if native and precision_key(key, "bfloat16") != key else [])


def measure_fit(fit: FitPlan, images: Sequence[int], wide_images: Sequence[int],
                precision: str = "float32") -> dict[str, Any]:
    wide = WIDE_DIMS["merged" if fit.stage.startswith("language.") or fit.stage == "vision.post_merge" else "patch"]
    points = []
    for n in sorted({*images, *wide_images}):
        features, dataset = stage_features(fit.family, fit.stage, n)
        for dim in ([fit.dim] if n in images else []) + ([wide] if n in wide_images else []):
            x = features if dim == fit.dim else widened(features, dim)
            points.append({"n": n, "tokens": fit.tokens, "dim": dim,
                           "cpu_s": fit_cpu_s(fit, x, dataset, precision)})
            print(f"    {precision_key(fit.key, precision)} n={n} dim={dim}: {points[-1]['cpu_s']:.2f} CPU-s",
                  flush=True)
            del x
    return {**fit_law(points), "family": fit.family, "stage": fit.stage, "points": points}


def check_law(path: Path, images: int, keys: Sequence[str]) -> None:
    """One fit per key on `images` images at the tiny width: measured against the law in `path`."""
    data = json.loads(path.read_text())
    for key, fit in fit_kinds().items():
        if key not in keys:
            continue
        law = data["fits"][key]
        features, dataset = stage_features(fit.family, fit.stage, images)
        measured = fit_cpu_s(fit, features, dataset)
        predicted = law["c"] * images ** law["alpha"] * float(fit.tokens * fit.dim) ** law["beta"]
        law.setdefault("checks", []).append({"n": images, "tokens": fit.tokens, "dim": fit.dim, "cpu_s": measured,
                                             "law_cpu_s": predicted})
        print(f"  {key} n={images}: measured {measured:.1f} CPU-s, law {predicted:.1f}", flush=True)
        path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=COSTS_FILE)
    parser.add_argument("--repeats", type=int, default=3, help="forwards per preset (the median is kept)")
    parser.add_argument("--images", type=int, nargs=2, default=(48, 400), help="image counts at the tiny width")
    parser.add_argument("--wide-images", type=int, nargs=2, default=(48, 96), help="image counts at the 7B width")
    parser.add_argument("--only", nargs="*", default=None, help="measure only these fit keys (others kept)")
    parser.add_argument("--check", type=int, default=None, metavar="N",
                        help="instead of measuring: fit the --only keys on N images at the tiny width and keep "
                             "the measured CPU seconds beside the law's (a test of the law out of its range)")
    args = parser.parse_args()
    if args.check:
        check_law(args.out, args.check, args.only or [])
        return
    torch.set_num_threads(1)
    previous = json.loads(args.out.read_text()) if args.out.is_file() and args.only else {}
    result: dict[str, Any] = {"provenance": provenance(sys.argv[1:]), "extraction": previous.get("extraction"),
                              "fits": previous.get("fits", {})}
    if args.only is None:
        print("extraction, CPU-s per image and module:", flush=True)
        result["extraction"] = extraction_costs(args.repeats)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, fit in fit_kinds().items():
        if args.only is not None and key not in args.only:
            continue
        for precision in fit_precisions(key):
            print(f"  {precision_key(key, precision)} at {fit.stage} ({fit.family}):", flush=True)
            result["fits"][precision_key(key, precision)] = measure_fit(fit, args.images, args.wide_images, precision)
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # kept after each fit: a long run can stop
    result["provenance"]["load_average_at_end"] = round(os.getloadavg()[0], 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
