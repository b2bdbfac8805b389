"""Where a `stageprobe run` spent its time, from the timing each experiment records.

Every experiment's JSON under RUN_DIR/experiments keeps its wall seconds and each probe fit's worker
seconds (controls and probe seeds included; a fit an earlier experiment already made on the same data
counts once). Experiments overlap — the next ones are extracted and fitted while one is collected — so
an experiment's wall seconds run from its start or the previous one's end, whichever is later, to its
end: they add up to the run's time spent on experiments.

Run: python benchmarks/run_times.py RUN_DIR [--by probe|stage|variant] [--cpu]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load_timings(run_dir: Path) -> dict[str, dict]:
    """Experiment id → its recorded timing, in the order the run wrote them."""
    files = sorted((run_dir / "experiments").glob("e_*.json"), key=lambda p: p.stat().st_mtime)
    return {p.stem: json.loads(p.read_text()).get("timing", {}) for p in files}


def summary(timings: dict[str, dict], by: str, cpu: bool = False) -> list[str]:
    """One line per experiment; with `cpu`, the fits' CPU seconds (and the main process's) instead of
    their wall seconds (runs recorded before CPU seconds were kept show nan)."""
    unit = "cpu s" if cpu else "fit s"
    lines = [f"{'experiment':<16} {'wall s':>8} {'main cpu':>8} {'fits':>5} {unit:>8}  largest by {by} ({unit})"]
    for experiment, timing in timings.items():
        fits = timing.get("fits", [])
        key = "cpu_seconds" if cpu else "seconds"
        groups: dict[str, float] = defaultdict(float)
        for fit in fits:
            groups[fit[by]] += fit.get(key, float("nan"))
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])[:3])
        fit_seconds = sum(f.get(key, float("nan")) for f in fits)
        count = sum(f["fits"] for f in fits if not f["reused"])
        wall, main_cpu = timing.get("seconds", float("nan")), timing.get("main_cpu_seconds", float("nan"))
        lines.append(f"{experiment:<16} {wall:>8.1f} {main_cpu:>8.1f} {count:>5} {fit_seconds:>8.1f}  {top}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--by", choices=("probe", "stage", "variant"), default="probe")
    parser.add_argument("--cpu", action="store_true", help="the fits' CPU seconds instead of their wall seconds")
    args = parser.parse_args()
    print("\n".join(summary(load_timings(args.run_dir), args.by, args.cpu)))


if __name__ == "__main__":
    main()
