"""cProfile one probe fit of a finished (or running) study, on that run's own stored features.

The fit is built as the run builds it (`FitRequest`: the suite's options, `--quick`'s where the run is
quick) and run in this process on one thread, as a worker runs it. Prints the CPU seconds and the
functions with the most cumulative time.

Run: python benchmarks/profile_fit.py RUN_DIR FAMILY STAGE PROBE [--task boxes] [--variant main]
     [--control control-task] [--seed 0] [--top 25] [--precision bfloat16]
e.g. python benchmarks/profile_fit.py runs/quick spatial pixels.patch dense-context --variant pixels
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from stageprobe.datasets import load_dataset
from stageprobe.suites import get_suite
from stageprobe.suites.workers import FitRequest, dataset_key, fit_request


def build_request(run_dir: Path, family: str, stage: str, probe: str, task: str, variant: str,
                  control: str | None, seed: int) -> FitRequest:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    suite = get_suite(config["suite"])
    spec = (config.get("data") or {}).get(family) or suite.data[family]
    dataset = load_dataset(spec, n=config["sizes"][family], seed=config["seed"])
    options: dict[str, object] = {}
    for experiment in suite.experiments:
        for candidate in experiment.probes:
            if candidate.probe == probe and candidate.task == task:
                options = dict(candidate.options)
    if config["size"] == "quick":
        options.update(suite.quick_probe_options.get(probe, {}))
    # the store's folder as `Measurement.store_path` names it
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", spec).strip("-")[:60]
    stores = Path(config["features_dir"]).glob(f"*-{variant}/{slug}-n{len(dataset)}-seed{config['seed']}*")
    store = next(s for s in stores if (s / stage).exists())
    return FitRequest(probe, task, str(store), stage, dataset_key(dataset), with_images=task == "reconstruction",
                      seed=seed, control=control, options=tuple(sorted(options.items())),
                      score_val=variant == "main" and control is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("family")
    parser.add_argument("stage")
    parser.add_argument("probe")
    parser.add_argument("--task", default="boxes")
    parser.add_argument("--variant", default="main", choices=("main", "pixels", "random-init"))
    parser.add_argument("--control")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                        help="the probe precision of the fit (a run's resolved --probe-precision)")
    args = parser.parse_args()
    request = replace(build_request(args.run_dir, args.family, args.stage, args.probe, args.task, args.variant,
                                    args.control, args.seed), precision=args.precision)
    torch.set_num_threads(1)
    profile = cProfile.Profile(time.process_time)  # CPU seconds: the machine may be shared
    cpu = time.process_time()
    output = profile.runcall(fit_request, request)
    print(f"{request.probe} @ {request.stage} ({args.variant}): {time.process_time() - cpu:.1f} CPU-s, "
          f"{output.seconds:.1f} s in the fit; metrics {output.result.metrics}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
