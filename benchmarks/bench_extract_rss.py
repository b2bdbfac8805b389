"""Peak resident memory of feature extraction on N and factor·N samples.

Streaming extraction keeps a few shards in memory whatever the dataset size, so the peak should
barely move when the dataset grows tenfold, while the store on disk grows tenfold. Each size runs
in a fresh subprocess so one measurement's peak cannot leak into the next.

    python benchmarks/bench_extract_rss.py --model pixels --dataset shapes --n 32 --factor 10
    python benchmarks/bench_extract_rss.py --model qwen2.5-vl-tiny --n 16 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(args: argparse.Namespace, samples: int, out_dir: Path) -> dict[str, Any]:
    """Runs inside the child process: one extraction, its peak RSS and timing."""
    import stageprobe
    from stageprobe.datasets import load_dataset
    from stageprobe.features import extract_dataset

    model = stageprobe.load_model(args.model, device=args.device)
    dataset = load_dataset(args.dataset, n=samples)
    peak_before = peak_rss_mib()
    started = time.perf_counter()
    store = extract_dataset(model, dataset, out_dir, stages=args.stages, batch_size=args.batch_size,
                            store_dtype=args.store_dtype, shard_size=args.shard_size, progress=False)
    seconds = time.perf_counter() - started
    store_bytes = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    return {
        "samples": samples, "peak_rss_before_extract_mib": round(peak_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1), "extract_s": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 2), "store_mib": round(store_bytes / 2**20, 1),
        "stages": len(store.stages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pixels")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--n", type=int, default=32, help="samples of the small run")
    parser.add_argument("--factor", type=int, default=10, help="the large run has factor·n samples")
    parser.add_argument("--stages", nargs="*", default=None, help="stage glob patterns (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--store-dtype", default="float16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child-samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_samples is not None:
        print(json.dumps(measure(args, args.child_samples, args.child_out)))
        return

    forwarded = [arg for arg in sys.argv[1:] if arg != "--json"]
    runs = []
    for samples in (args.n, args.n * args.factor):
        with tempfile.TemporaryDirectory(prefix="stageprobe-rss-") as scratch:
            child = subprocess.run(
                [sys.executable, __file__, *forwarded, "--child-samples", str(samples),
                 "--child-out", str(Path(scratch) / "store")],
                check=True, capture_output=True, text=True,
            )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    small, large = runs
    summary = {
        "model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
        "shard_size": args.shard_size, "store_dtype": args.store_dtype, "runs": runs,
        "peak_rss_growth_mib": round(large["peak_rss_mib"] - small["peak_rss_mib"], 1),
        "store_growth": round(large["store_mib"] / max(small["store_mib"], 1e-9), 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.model} on {args.dataset}, batch {args.batch_size}, shard {args.shard_size}, "
          f"{args.store_dtype}")
    print(f"{'samples':>8} {'peak RSS MiB':>13} {'before extract':>15} {'store MiB':>10} {'s':>7} "
          f"{'samples/s':>10}")
    for run in runs:
        print(f"{run['samples']:>8} {run['peak_rss_mib']:>13} {run['peak_rss_before_extract_mib']:>15} "
              f"{run['store_mib']:>10} {run['extract_s']:>7} {run['samples_per_s']:>10}")
    print(f"peak RSS grew {summary['peak_rss_growth_mib']} MiB for a store {summary['store_growth']}× larger")


if __name__ == "__main__":
    main()
