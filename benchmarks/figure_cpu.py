"""CPU seconds a run spends drawing its figures, per kind, without a profiler's overhead.

cProfile multiplies matplotlib's cost about 2.5× (it is hundreds of thousands of small Python calls per
figure), so a profile of a whole run overstates the figures' share. This runs a `stageprobe` command in
this process with every figure function of `stageprobe.report.plots` timed by `time.process_time` (this
process's CPU, which is where the figures are drawn), then prints the CPU seconds and count per kind.

Run: python benchmarks/figure_cpu.py [--json OUT] -- run --quick --out DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIGURES = ("save_box_overlay", "save_detection_overlay", "save_reconstruction_grid", "save_confusion_matrix",
           "save_training_curves", "plot_decay_curves", "plot_retention_vs_pixels", "plot_stage_heatmap")


def _timed(function: Callable[..., Any], spent: dict[str, list[float]]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent.setdefault(function.__name__, []).append(time.process_time() - started)
    return timed


def instrument() -> dict[str, list[float]]:
    """Wrap every figure function where the run looks it up: the plots module and the report's table."""
    from stageprobe.report import plots, render

    spent: dict[str, list[float]] = {}
    for name in FIGURES:
        setattr(plots, name, _timed(getattr(plots, name), spent))
    for key, function in render.DERIVED_PLOTS.items():
        render.DERIVED_PLOTS[key] = getattr(plots, function.__name__)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the per-kind seconds here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then stageprobe's arguments")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    spent = instrument()
    from stageprobe.cli import main as stageprobe

    sys.argv = ["stageprobe", *command]
    started = time.process_time()
    try:
        stageprobe()
    except SystemExit as done:
        if done.code:
            raise
    summary = {name: {"figures": len(seconds), "cpu_s": round(sum(seconds), 2)} for name, seconds in spent.items()}
    total = round(sum(s["cpu_s"] for s in summary.values()), 2)
    for name, row in sorted(summary.items(), key=lambda item: -item[1]["cpu_s"]):
        print(f"{name:28s} {row['figures']:3d} figures {row['cpu_s']:7.2f} CPU-s")
    print(f"{'figures in all':28s} {sum(s['figures'] for s in summary.values()):3d} figures {total:7.2f} CPU-s "
          f"(main process in all: {time.process_time() - started:.1f} CPU-s)")
    if args.json:
        args.json.write_text(json.dumps({"kinds": summary, "total_cpu_s": total}, indent=2) + "\n")


if __name__ == "__main__":
    main()
