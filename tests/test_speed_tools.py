"""Known answers for the speed tools in benchmarks/: the row-for-row metrics diff finds a planted
difference (and only it), and the CPU counter sees CPU time spent in fork-server workers, which
`/usr/bin/time` (waited-for children only) misses."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
COLUMNS = ["experiment", "stage", "probe", "metric", "value", "ci_low", "ci_high", "n", "control", "model",
           "unavailable_reason", "note", "variant"]


def _write_run(run: Path, values: list[float]) -> None:
    run.mkdir()
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        for i, value in enumerate(values):
            writer.writerow({"experiment": "e_q2_1", "stage": f"s{i}", "probe": "dense-linear", "metric": "iou",
                             "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 10, "control": "",
                             "model": "m", "unavailable_reason": "", "note": "", "variant": "model"})


def _compare(a: Path, b: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCHMARKS / "compare_metrics.py"), str(a), str(b), *options],
                          capture_output=True, text=True, check=False)


def test_compare_metrics_finds_the_planted_difference(tmp_path: Path) -> None:
    _write_run(tmp_path / "a", [0.5, 0.6, 0.7])
    _write_run(tmp_path / "b", [0.5, 0.6 + 3e-7, 0.7])
    same = _compare(tmp_path / "a", tmp_path / "a")
    assert same.returncode == 0 and "0 differ" in same.stdout
    strict = _compare(tmp_path / "a", tmp_path / "b")
    assert strict.returncode == 1
    assert "1 differ" in strict.stdout and "s1" in strict.stdout and "s0" not in strict.stdout
    assert _compare(tmp_path / "a", tmp_path / "b", "--tolerance", "1e-6").returncode == 0


BURN_IN_WORKERS = """
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor

def burn(_):
    start = time.process_time()
    while time.process_time() - start < 0.6:
        pass

if __name__ == "__main__":
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(burn, range(2)))
"""


def test_cpu_seconds_counts_fork_server_workers(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURN_IN_WORKERS)
    out = tmp_path / "cpu.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "cpu_seconds.py"), "--interval", "0.05", "--json", str(out),
                    "--", sys.executable, str(script)], check=True, capture_output=True)
    measured = json.loads(out.read_text())
    # two workers × 0.6 CPU-s; a process loses at most its last sampling interval
    assert measured["cpu_s"] >= 1.0, measured
    assert measured["exit_code"] == 0 and measured["processes"] >= 3
