"""Choose the `token-flow` probe's design on train/val photos only, then measure it once on test.

The design choices — token dims the flow is solved in (`flow_dim`), the neighbourhood whose tokens
enter a cell's shift response (`neighbours`), the direction read-out, the λ grid of the shift
generators — are scored by grouped cross-validation over the **train and val photos** of `pan`
(camera pans over bundled photos) and the train and val clips of `motion` (moving shapes), both at
`pixels.merged`: each dataset's groups (photos; clips) are dealt into folds; for each fold the
probe is fitted on the clips of the other groups but one fold (that one is its val, for λ and the
classifier), and scored on the fold's clips. The design with the best mean accuracy over
direction, speed and order, folds and both datasets is chosen — on a tie to three decimals, the
smallest (fewest dims, fewest neighbours, default λ grid, heading alone); only then is it fitted
on each dataset's train / val split and scored on its test split, once, with CIs that resample
test photos (pan) or clips (motion).

Run: python benchmarks/token_flow_design.py [--clips 240] [--folds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.metrics.classification import accuracy
from stageprobe.probes import ProbeData, fit_probe, split_probe_data
from stageprobe.probes.temporal import fit_task_classifier
from stageprobe.probes.token_flow import (
    DIRECTION_READ_OUTS,
    LAMBDA_GRIDS,
    NEIGHBOURHOODS,
    _FlowBasis,
    fit_shift_generators,
    motion_read_outs,
    step_velocities,
)
from stageprobe.stats import bootstrap_ci

TASKS = ("direction", "speed", "order")
FLOW_DIMS = (8, 16, 32)
STAGE = "pixels.merged"


@dataclass(frozen=True)
class Design:
    flow_dim: int
    neighbours: int
    lambdas: str
    direction_read_out: str

    def options(self) -> dict[str, Any]:
        return {"flow_dim": self.flow_dim, "neighbours": self.neighbours, "lambdas": self.lambdas,
                "direction_read_out": self.direction_read_out}


def features_of(name: str, clips: int, seed: int) -> tuple[list[Any], torch.Tensor]:
    dataset = load_dataset(name, n=clips, seed=seed)
    samples = [dataset[i] for i in range(len(dataset))]
    model = sp.load_model("pixels")
    chunks = [model.extract(videos=[s.frames for s in samples[k:k + 24]], stages=[STAGE])[STAGE].to(torch.float16)
              for k in range(0, len(samples), 24)]
    return samples, torch.cat(chunks)


def folds_of(photos: list[str], n_folds: int, seed: int) -> list[list[str]]:
    order = [photos[i] for i in np.random.default_rng(seed).permutation(len(photos))]
    return [order[k::n_folds] for k in range(n_folds)]


def subset(features: torch.Tensor, samples: list[Any], photos: list[str]) -> ProbeData:
    index = [i for i, s in enumerate(samples) if s.group in photos]
    first = samples[index[0]].frames[0]
    return ProbeData(features[index], [samples[i].target for i in index], (first.size[1], first.size[0]))


def fold_scores(train: ProbeData, val: ProbeData, held: ProbeData, seed: int) -> dict[Design, dict[str, float]]:
    """Accuracy on the held-out photos of every design, sharing the basis and generators of each
    (flow_dim, neighbours, λ grid) across tasks and direction read-outs."""
    out: dict[Design, dict[str, float]] = {}
    for flow_dim in FLOW_DIMS:
        basis = _FlowBasis(train.features, flow_dim, seed)
        reduced = [basis(d) for d in (train, val, held)]
        for neighbours, lambdas in itertools.product(NEIGHBOURHOODS, LAMBDA_GRIDS):
            generators, _ = fit_shift_generators(reduced[0], step_velocities(train), reduced[1],
                                                 step_velocities(val), seed, neighbours, lambdas)
            flows = [generators.flow(z) for z in reduced]
            for read_out in DIRECTION_READ_OUTS:
                scores = {}
                for task in TASKS:
                    designs = [motion_read_outs(f, task, read_out) for f in flows]
                    classifier, truth = fit_task_classifier(task, train, val, held, designs, {})
                    scores[task] = accuracy(truth, classifier(designs[2]).argmax(1).numpy())
                out[Design(flow_dim, neighbours, lambdas, read_out)] = scores
    return out


def cross_validate(samples: list[Any], features: torch.Tensor, n_folds: int,
                   seed: int) -> dict[Design, list[dict[str, float]]]:
    """Per design, the held-out accuracies of each fold over the train and val groups only."""
    groups = sorted({s.group for s in samples if s.split in ("train", "val")})
    folds = folds_of(groups, n_folds, seed)
    per_design: dict[Design, list[dict[str, float]]] = {}
    for k, held in enumerate(folds):
        val = folds[(k + 1) % n_folds]
        train = [g for g in groups if g not in held and g not in val]
        started = time.perf_counter()
        scores = fold_scores(subset(features, samples, train), subset(features, samples, val),
                             subset(features, samples, held), seed)
        for design, value in scores.items():
            per_design.setdefault(design, []).append(value)
        print(f"fold {k + 1}/{n_folds}: {len(held)} groups held out, e.g. {held[:2]} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return per_design


def _simplicity(row: dict[str, Any]) -> tuple:
    return (-round(row["mean"], 3), row["flow_dim"], row["neighbours"], row["lambdas"] != "default",
            row["direction_read_out"] != "heading")


def select(per_dataset: dict[str, dict[Design, list[dict[str, float]]]]) -> tuple[Design, list[dict]]:
    table = []
    for design in next(iter(per_dataset.values())):
        row: dict[str, Any] = design.options()
        for name, per_design in per_dataset.items():
            row.update({f"{name}.{t}": float(np.mean([f[t] for f in per_design[design]])) for t in TASKS})
        row["mean"] = float(np.mean([row[f"{name}.{t}"] for name in per_dataset for t in TASKS]))
        table.append(row)
    table.sort(key=_simplicity)
    best = table[0]
    return Design(best["flow_dim"], best["neighbours"], best["lambdas"], best["direction_read_out"]), table


def measure_once(samples: list[Any], features: torch.Tensor, design: Design, seed: int) -> dict[str, Any]:
    splits = split_probe_data(features, samples)
    groups = [s.group for s in samples if s.split == "test"]
    out: dict[str, Any] = {"test_groups": len(set(groups)), "test_clips": len(groups)}
    if len(set(groups)) < 10:
        out["test_photos"] = sorted(set(groups))
    for task in TASKS:
        result = fit_probe("token-flow", task, splits["train"], splits["val"], splits["test"], seed=seed,
                           **design.options())
        ci = bootstrap_ci(result.per_item[f"{task}_acc"], 2000, seed, groups=groups)
        out[task] = {"acc": ci.estimate, "ci": [ci.low, ci.high]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = {name: features_of(name, args.clips, args.seed) for name in ("pan", "motion")}
    design, table = select({name: cross_validate(*d, args.folds, args.seed) for name, d in data.items()})
    columns = [f"{name}.{t}" for name in data for t in TASKS]
    print("| flow_dim | neighbours | λ grid | direction read-out | " + " | ".join(columns) + " | mean |")
    print("|---" * (5 + len(columns)) + "|")
    for row in table:
        print(f"| {row['flow_dim']} | {row['neighbours']} | {row['lambdas']} | {row['direction_read_out']} | "
              + " | ".join(f"{row[c]:.3f}" for c in columns) + f" | {row['mean']:.3f} |")
    print(f"chosen on train/val only: {design.options()}")
    test = {name: measure_once(*d, design, args.seed) for name, d in data.items()}
    print(f"test, measured once: {json.dumps(test)}")
    if args.json is not None:
        args.json.write_text(json.dumps({"chosen": design.options(), "cross_validation": table, "test": test},
                                        indent=1))


if __name__ == "__main__":
    main()
