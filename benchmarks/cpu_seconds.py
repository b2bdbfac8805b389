"""CPU seconds of a command and every process it starts, probe workers included.

`/usr/bin/time` counts only the children a process waits for. `stageprobe run`'s probe workers are
children of multiprocessing's fork server, which the main process never waits for, so their CPU time
is missing from `time -v` (a 4 CPU-s forkserver pool read as 0.05 s, measured). This samples the whole
process tree every `--interval` seconds and adds up each process's own user+sys time (a process loses
at most its last interval), and reports the peak of the tree's summed RSS.

Run: python benchmarks/cpu_seconds.py [--interval 0.2] [--json OUT] -- COMMAND ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def measure(command: list[str], interval: float) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    cpu: dict[int, float] = {}
    peak_rss = 0
    while child.poll() is None:
        rss = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                cpu[process.pid] = times.user + times.system
                rss += process.memory_info().rss
            except psutil.Error:
                continue
        peak_rss = max(peak_rss, rss)
        time.sleep(interval)
    return {"exit_code": child.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round(sum(cpu.values()), 1), "processes": len(cpu), "peak_tree_rss_gb": round(peak_rss / 2**30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    result = measure(command, args.interval)
    print(json.dumps(result), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result) + "\n")
    sys.exit(int(result["exit_code"]))


if __name__ == "__main__":
    main()
