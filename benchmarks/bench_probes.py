"""Time every E-Q2.1 probe (pooled box, dense box + patch class, relation) on synthetic features
shaped like qwen2.5-vl-tiny stages: 1,000 images × 10 stages, 32×32 grid, 128 dims.

Run: python benchmarks/bench_probes.py [--images 1000] [--stages 10] [--dim 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stageprobe.probes import ProbeData, fit_probe

COLOURS = ["red", "green", "blue", "yellow"]
IMAGE = 448


def synthetic_split(n: int, grid: int, dim: int, seed: int) -> ProbeData:
    """Random shapes as square masks; each token = a fixed random embedding of its cell's
    per-colour coverage + noise, so the probes have something real to find."""
    rng = np.random.default_rng(seed)
    targets = []
    cover = np.zeros((n, grid, grid, len(COLOURS)), dtype=np.float32)
    cell = IMAGE // grid
    for i in range(n):
        k = int(rng.integers(1, 4))
        colours = [str(c) for c in rng.choice(COLOURS, k, replace=False)]
        boxes, masks = [], np.zeros((k, IMAGE, IMAGE), dtype=bool)
        for j in range(k):
            side = int(rng.integers(30, 80))
            x0, y0 = (int(v) for v in rng.integers(0, IMAGE - side, 2))
            masks[j, y0:y0 + side, x0:x0 + side] = True
            boxes.append([x0, y0, x0 + side, y0 + side])
            pooled = masks[j].reshape(grid, cell, grid, cell).mean(axis=(1, 3))
            cover[i, :, :, COLOURS.index(colours[j])] += pooled
        b = np.asarray(boxes, dtype=np.float32)
        centres = (b[:, :2] + b[:, 2:]) / 2
        relations = []
        for a in range(k):
            for c in range(k):
                if a != c:
                    dx, dy = centres[a] - centres[c]
                    if abs(dx) >= abs(dy):
                        rel = "left-of" if dx < 0 else "right-of"
                    else:
                        rel = "above" if dy < 0 else "below"
                    relations.append({"a": colours[a], "b": colours[c], "relation": rel})
        targets.append({"boxes": b, "labels": rng.integers(0, 3, k), "colors": colours, "masks": masks,
                        "relations": relations})
    # One embedding for every split, as one model stage would give.
    embed = np.random.default_rng(1234).normal(size=(len(COLOURS), dim)).astype(np.float32)
    feats = cover @ embed + 0.1 * rng.normal(size=(n, grid, grid, dim)).astype(np.float32)
    return ProbeData(torch.from_numpy(feats[:, None]), targets, (IMAGE, IMAGE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--stages", type=int, default=10)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--grid", type=int, default=32)
    args = parser.parse_args()
    n_train, n_val = int(args.images * 0.65), int(args.images * 0.15)
    t0 = time.perf_counter()
    train = synthetic_split(n_train, args.grid, args.dim, 0)
    val = synthetic_split(n_val, args.grid, args.dim, 1)
    test = synthetic_split(args.images - n_train - n_val, args.grid, args.dim, 2)
    print(f"data: {time.perf_counter() - t0:.1f} s (not counted)")
    start = time.perf_counter()
    for stage in range(args.stages):
        t = time.perf_counter()
        pooled = fit_probe("pooled-linear", "boxes", train, val, test, seed=0)
        dense = fit_probe("dense-linear", "boxes", train, val, test, seed=0)  # also gives patch class
        relation = fit_probe("relation", "relation", train, val, test, seed=0)
        print(f"stage {stage}: {time.perf_counter() - t:.1f} s  pooled IoU {pooled.metrics['matched_iou']:.2f}  "
              f"dense IoU {dense.metrics['matched_iou']:.2f}  patch acc {dense.metrics['patch_acc']:.2f}  "
              f"relation acc {relation.metrics['relation_acc']:.2f}", flush=True)
    total = time.perf_counter() - start
    print(f"total for {args.stages} stages × {args.images} images × {args.dim} dims on "
          f"{torch.get_num_threads()} threads: {total:.1f} s (target ≤ 180 s)")


if __name__ == "__main__":
    main()
