"""What the study costs at Qwen2.5-VL-7B's width on this CPU, and the full-depth 7B study projected from it.

`qwen2.5-vl-7b-width-random` has the 7B's widths, heads, patch, merge and window sizes (ViT 1,280 wide,
16 heads; LLM 3,584 wide, 28 heads) but 4 ViT blocks and 2 LLM layers. Each stage therefore costs what
one of the 7B's costs:

1. extraction: CPU seconds per 448×448 shapes image of each stage's module, timed by forward hooks
   before and after it (`plan_costs.module_seconds`: no differencing, so no stage can come out negative),
   `--repeats` forwards, the median per module kind;
2. store bytes per stage (exact: tokens × width × 2 bytes);
3. probe fits at both grids (1,024 tokens × 1,280 and 256 tokens × 3,584) on synthetic features with the
   real shapes targets (`bench_probes.synthetic_split`: a fit's cost depends on shapes, not on values),
   each in its own process for its peak RSS, on N images and scaled linearly to the default study's 600;
4. the projection: `stageprobe plan`'s estimate for `qwen2.5-vl-7b-random` (full depth, the default
   study) from the costs in the package's `_costs.json` (`benchmarks/plan_costs.py`), on this machine's
   cores, with the share of each phase.

Times are CPU seconds of one thread (torch on one thread; fits are single-threaded anyway): on a shared
machine they are the figure that depends least on the neighbours; wall on an idle machine ≈ CPU seconds /
cores used.

    python benchmarks/cost_7b_width.py [--images 2] [--repeats 3] [--fit-images 60] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: the default study's spatial set and the stages a full-depth 7B has of each kind
DEFAULT_IMAGES = 600
FULL_7B = {"patch embed": 1, "window block": 28, "full-attention block": 4, "merger": 1, "LLM layer": 28}
#: the deciding and secondary box probes of the study, at the two grids they read
FITS = (("dense-context", "boxes"), ("dense-linear", "boxes"), ("attention", "boxes"), ("relation", "relation"))
GRIDS = {"patch grid (1,024 × 1,280)": (32, 1280), "merged grid (256 × 3,584)": (16, 3584)}


def timed(work: Any) -> tuple[float, float]:
    """(wall, CPU) seconds of `work()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def extraction_costs(images: int, repeats: int) -> dict[str, Any]:
    from plan_costs import module_seconds

    from stageprobe.datasets import load_dataset
    from stageprobe.models import load_model

    model = load_model("qwen2.5-vl-7b-width-random", device="cpu", dtype="fp32")
    batch = [sample.image for sample in load_dataset("shapes", n=images)]
    cpu = {kind: measured["cpu_s_per_image"] for kind, measured in module_seconds(model, batch, repeats).items()}
    stage_bytes = {info.name: info.tokens * info.dim * 2 for info in model.stages_for(448, 448)}
    return {"images": images, "repeats": repeats, "cpu_s_per_image": cpu,
            "bytes_per_image": {"patch-grid stage": stage_bytes["vision.pre_merge"],
                                "merged stage": stage_bytes["vision.post_merge"]}}


def fit_in_child(probe: str, task: str, grid: int, dim: int, images: int) -> dict[str, float]:
    """One fit in its own process: its wall and CPU seconds and peak RSS (MiB)."""
    command = [sys.executable, __file__, "--fit", probe, task, str(grid), str(dim), str(images)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fit {probe} at {grid}×{grid}×{dim} failed")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mib": usage.ru_maxrss / 1024}


def fit_once(probe: str, task: str, grid: int, dim: int, images: int) -> None:
    """The child's side: synthetic features of this shape with real shapes targets, one fit, its times."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_probes import synthetic_split

    from stageprobe.probes import fit_probe

    n_train, n_val = int(images * 0.65), int(images * 0.15)
    splits = [synthetic_split(n, grid, dim, seed) for seed, n in enumerate((n_train, n_val, images - n_train - n_val))]
    wall, cpu = timed(lambda: fit_probe(probe, task, *splits, seed=0))
    print(json.dumps({"wall_s": wall, "cpu_s": cpu}))


def fit_costs(images: int) -> list[dict[str, Any]]:
    rows = []
    for label, (grid, dim) in GRIDS.items():
        for probe, task in FITS:
            measured = fit_in_child(probe, task, grid, dim, images)
            scale = DEFAULT_IMAGES / images
            rows.append({"grid": label, "probe": probe, "images": images, **measured,
                         "cpu_s_at_600": measured["cpu_s"] * scale,
                         "cpu_s_at_600_by_plan_law": law_at_600(probe, task, grid, dim)})
            print(f"  {probe:14s} {label}: {measured['cpu_s']:.1f} CPU-s, {measured['wall_s']:.1f} s wall, "
                  f"{measured['peak_rss_mib']:.0f} MiB peak", flush=True)
    return rows


def law_at_600(probe: str, task: str, grid: int, dim: int) -> float | None:
    """The same fit at 600 images by the law `plan` uses (`_costs.json`), for comparison."""
    from stageprobe.suites._costs import fit_key, load_costs

    costs = load_costs()
    return costs.fit_seconds(fit_key(probe, task, ()), DEFAULT_IMAGES, grid * grid, dim) if costs else None


def projection(extraction: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds per image of the full-depth 7B's forward, and `plan`'s estimate of its default study."""
    from stageprobe.suites._plan import plan_run
    from stageprobe.suites.runner import RunConfig

    cpu = extraction["cpu_s_per_image"]
    per_image = sum(count * cpu[kind] for kind, count in FULL_7B.items())
    plan = plan_run(RunConfig(model="qwen2.5-vl-7b-random"), Path("/tmp/cost-7b-width-plan"))
    estimate = plan.estimate()
    if estimate is None:
        return {"cpu_s_per_image_full_7b": per_image}
    total = estimate.extraction_cpu_s + estimate.fit_cpu_s
    by_probe: dict[str, float] = {}
    for fit in plan.fits:
        by_probe[fit.key] = by_probe.get(fit.key, 0.0) + fit.count * (fit.cpu_s or 0.0)
    return {"cpu_s_per_image_full_7b": per_image, "cpu_s_spatial_set": per_image * DEFAULT_IMAGES,
            "plan": estimate.as_json(), "share": {"extraction": estimate.extraction_cpu_s / total,
                                                  "fits": estimate.fit_cpu_s / total},
            "fit_cpu_s_by_probe": dict(sorted(by_probe.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="images per extraction batch")
    parser.add_argument("--repeats", type=int, default=3, help="forwards timed (the median is kept)")
    parser.add_argument("--fit-images", type=int, default=60, help="images per fit (scaled to 600)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fit", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit:
        probe, task, grid, dim, images = args.fit
        fit_once(probe, task, int(grid), int(dim), int(images))
        return
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    # fits first: a child's peak RSS counts the pages of the parent it was forked from (the loaded model)
    fits = fit_costs(args.fit_images)
    extraction = extraction_costs(args.images, args.repeats)
    print(json.dumps(extraction, indent=2))
    projected = projection(extraction)
    print(json.dumps(projected, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"extraction": extraction, "projection": projected, "fits": fits}, indent=2))


if __name__ == "__main__":
    main()
