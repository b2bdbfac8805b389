"""How close `stageprobe plan`'s time estimate comes to a finished run's recorded times.

Runs `stageprobe plan --json` with the finished run's settings (read from RUN_DIR/config.yaml) and
compares, as estimate / actual:

- the number of probe fits (the experiments' records count every fit that ran once; they must agree);
- fit seconds: the plan's fit CPU seconds against the fits' worker seconds the run recorded (wall seconds
  in each worker: on a loaded machine they exceed CPU seconds);
- the run's wall time on experiments (extraction and fitting, as `benchmarks/run_times.py` sums it)
  against the plan's wall estimate for an idle machine;
- with `--run`, which starts the run itself and samples the CPU seconds of it and every process it
  starts (`/proc/PID/stat`, every 0.2 s; the probe workers are children of multiprocessing's fork
  server, which `/usr/bin/time` does not count): the run's CPU seconds against the plan's CPU seconds
  (extraction + fits), the comparison the neighbours' load changes least. The main process's CPU
  seconds beyond the extraction estimate are the work the plan does not estimate (bootstrap CIs,
  derived metrics, figures, the report).

    python benchmarks/plan_accuracy.py RUN_DIR [--json]
    python benchmarks/plan_accuracy.py RUN_DIR --run "stageprobe run --quick --out RUN_DIR"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
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


def process_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_and_sample(command: list[str]) -> dict[str, float]:
    """Run `command`; its wall seconds and the CPU seconds of it and all its descendants, last sampled."""
    started = time.perf_counter()
    child = subprocess.Popen(command)
    last: dict[int, float] = {}
    while child.poll() is None:
        alive = {pid: info for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if (info := process_cpu(pid)) is not None}
        family, grew = {child.pid}, True
        while grew:  # the run's process tree: whatever descends from it
            new = {pid for pid, (parent, _cpu) in alive.items() if parent in family} - family
            family |= new
            grew = bool(new)
        last.update({pid: alive[pid][1] for pid in family if pid in alive})
        time.sleep(0.2)
    if child.returncode != 0:
        raise SystemExit(f"the run failed (exit {child.returncode})")
    return {"run_cpu_s": sum(last.values()), "main_cpu_s": last.get(child.pid, 0.0),
            "run_wall_s": time.perf_counter() - started}


def compare(run_dir: Path, measured: dict[str, float] | None) -> dict[str, Any]:
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
    if measured:
        actual.update(measured)
        result["ratios"]["cpu_s / run_cpu_s"] = (estimate["extraction_cpu_s"] + estimate["fit_cpu_s"]) / \
            measured["run_cpu_s"]
        result["ratios"]["fit_cpu_s / workers' cpu_s"] = estimate["fit_cpu_s"] / (measured["run_cpu_s"] -
                                                                                 measured["main_cpu_s"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--run", default=None,
                        help="start this run first (a command line; its --out must be RUN_DIR) and sample its CPU")
    args = parser.parse_args()
    measured = run_and_sample(shlex.split(args.run)) if args.run else None
    result = compare(args.run_dir, measured)
    if args.json and measured:
        (args.run_dir / "plan_accuracy.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    estimate, actual = result["estimate"], result["actual"]
    print(f"{result['model']} {result['size']} run in {result['run']}")
    print(f"  plan: {estimate['fits']} fits, extraction {estimate['extraction_cpu_s']:.0f} CPU-s, fits "
          f"{estimate['fit_cpu_s']:.0f} CPU-s, wall {estimate['wall_s']} s on an idle machine "
          f"({estimate['cores']} cores, {estimate['probe_workers']} workers)")
    sampled = (f", {actual['run_cpu_s']:.0f} CPU-s in {actual['run_wall_s']:.0f} s (main process "
               f"{actual['main_cpu_s']:.0f} CPU-s)") if "run_cpu_s" in actual else ""
    print(f"  run:  {actual['fits']} fits, fit worker seconds {actual['fit_worker_s']:.0f}, experiments' wall "
          f"{actual['experiments_wall_s']:.0f} s{sampled}")
    for name, ratio in result["ratios"].items():
        print(f"  estimate / actual, {name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
