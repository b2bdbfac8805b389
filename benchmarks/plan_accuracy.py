"""How close `stageprobe plan`'s time estimate comes to a finished run's recorded times.

Runs `stageprobe plan --json` with the finished run's settings (read from RUN_DIR/config.yaml) and
compares, as estimate / actual:

- the number of probe fits (the experiments' records count every fit that ran once; they must agree);
- fit seconds: the plan's fit CPU seconds against the fits' worker seconds the run recorded (wall seconds
  in each worker: on a loaded machine they exceed CPU seconds);
- the run's wall time on experiments (extraction and fitting, as `benchmarks/run_times.py` sums it)
  against the plan's wall estimate for an idle machine;
- where LOG is the run's `/usr/bin/time -v` output: the run's CPU seconds (user + system, children
  included) against the plan's CPU seconds (extraction + fits), the comparison the neighbours' load
  changes least.

    python benchmarks/plan_accuracy.py RUN_DIR [--log RUN.log] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from run_times import load_timings


def plan_command(config: dict[str, Any]) -> list[str]:
    """`stageprobe plan --json` with the options of the run that wrote `config`."""
    command = [sys.executable, "-m", "stageprobe", "plan", "--json", "--model", str(config["model"]),
               "--batch-size", str(config.get("batch_size", 8)), "--store-dtype", str(config.get("store_dtype",
                                                                                               "float16"))]
    if config.get("size") in ("quick", "full"):
        command.append(f"--{config['size']}")
    for stage in config.get("stages") or []:
        command += ["--stages", stage]
    for family, dataset in (config.get("data") or {}).items():
        command += ["--data", f"{family}={dataset}"]
    if config.get("experiments"):
        command += ["--experiments", ",".join(config["experiments"])]
    for option in ("limit", "seeds", "probe_workers"):
        if config.get(option) is not None:
            command += [f"--{option.replace('_', '-')}", str(config[option])]
    if not config.get("controls", True):
        command.append("--no-controls")
    return command


def run_cpu_seconds(log: Path) -> tuple[float, float] | None:
    """(user + system CPU seconds, wall seconds) from a `/usr/bin/time -v` report, if the log has one."""
    text = log.read_text(errors="replace")
    found = {key: re.search(rf"{key} \(seconds\): ([\d.]+)", text) for key in ("User time", "System time")}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if not all(found.values()) or wall is None:
        return None
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(value * 60**k for k, value in enumerate(reversed(parts)))
    return sum(float(m.group(1)) for m in found.values() if m), seconds


def compare(run_dir: Path, log: Path | None) -> dict[str, Any]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    done = subprocess.run(plan_command(config), capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    estimate = json.loads(done.stdout)["time"]
    timings = load_timings(run_dir)
    fits = [fit for timing in timings.values() for fit in timing.get("fits", [])]
    actual = {"fits": sum(fit["fits"] for fit in fits if not fit["reused"]),
              "fit_worker_s": sum(fit["seconds"] for fit in fits),
              "experiments_wall_s": sum(timing.get("seconds", 0.0) for timing in timings.values())}
    result = {"run": str(run_dir), "model": config["model"], "size": config["size"], "estimate": estimate,
              "actual": actual, "ratios": {
                  "fits": estimate["fits"] / actual["fits"],
                  "fit_cpu_s / fit_worker_s": estimate["fit_cpu_s"] / actual["fit_worker_s"],
                  "wall_s / experiments_wall_s": (estimate["wall_s"] or float("nan")) / actual["experiments_wall_s"]}}
    measured = run_cpu_seconds(log) if log else None
    if measured:
        cpu, wall = measured
        actual.update({"run_cpu_s": cpu, "run_wall_s": wall})
        result["ratios"]["cpu_s / run_cpu_s"] = (estimate["extraction_cpu_s"] + estimate["fit_cpu_s"]) / cpu
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--log", type=Path, default=None, help="the run's `/usr/bin/time -v` output")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = compare(args.run_dir, args.log)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    estimate, actual = result["estimate"], result["actual"]
    print(f"{result['model']} {result['size']} run in {result['run']}")
    print(f"  plan: {estimate['fits']} fits, extraction {estimate['extraction_cpu_s']:.0f} CPU-s, fits "
          f"{estimate['fit_cpu_s']:.0f} CPU-s, wall {estimate['wall_s']} s on an idle machine "
          f"({estimate['cores']} cores, {estimate['probe_workers']} workers)")
    print(f"  run:  {actual['fits']} fits, fit worker seconds {actual['fit_worker_s']:.0f}, experiments' wall "
          f"{actual['experiments_wall_s']:.0f} s" + (f", {actual['run_cpu_s']:.0f} CPU-s in "
                                                        f"{actual['run_wall_s']:.0f} s" if "run_cpu_s" in actual
                                                        else ""))
    for name, ratio in result["ratios"].items():
        print(f"  estimate / actual, {name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
