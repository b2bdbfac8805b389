"""How long `stageprobe` takes to refuse bad input, as a user meets it: a fresh process per call.

Each invocation runs `repeats` times as `python -m stageprobe …` in an empty folder; the table gives
the median wall seconds, the exit code, whether torch was imported (it must not be on `--help`-weight
paths) and whether anything was written. `--help` is the floor every refusal is compared to.

Run: python benchmarks/bench_refusals.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: name → arguments; `{tmp}` is the empty work folder. All but the first are refused (exit 2) by
#: checks that need no model, no suite and no torch
INVOCATIONS: dict[str, list[str]] = {
    "--help (floor)": ["run", "--help"],
    "out in /proc": ["run", "--model", "pixels", "--quick", "--out", "/proc/x"],
    "cache dir is a file": ["run", "--model", "pixels", "--cache-dir", "{tmp}/file", "--out", "{tmp}/r"],
    "seeds 100000": ["run", "--model", "pixels", "--seeds", "100000", "--out", "{tmp}/r"],
    "calibrate pixels": ["run", "--model", "pixels", "--calibrate", "--out", "{tmp}/r"],
    "no experiments": ["run", "--model", "pixels", "--experiments", "", "--out", "{tmp}/r"],
    "quick and full": ["run", "--quick", "--full", "--out", "{tmp}/r"],
    "device tpu": ["run", "--device", "tpu", "--out", "{tmp}/r"],
    "mistyped model": ["run", "--model", "qwen-typo", "--out", "{tmp}/r"],
    "missing COCO file": ["run", "--model", "pixels", "--data", "spatial=coco:/nonexistent/ann.json",
                          "--out", "{tmp}/r"],
    "extract out in /proc": ["extract", "-m", "pixels", "-d", "shapes", "--out", "/proc/x"],
    "preview to p.txt": ["datasets", "preview", "shapes", "--out", "{tmp}/p.txt"],
    "report of no run": ["report", "{tmp}/nowhere"],
}

#: prints the exit code and whether torch was imported, after running the command line in argv
PROBE = ("import sys\nfrom stageprobe.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    code = e.code or 0\nprint('torch' in sys.modules, code, file=sys.stderr)\n")


def measure(args: list[str], repeats: int) -> dict[str, object]:
    times, torch_loaded, code, written = [], False, 0, False
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "file").write_text("in the way")
            line = [a.replace("{tmp}", folder) for a in args]
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PROBE, *line], cwd=folder, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            torch_text, code_text = done.stderr.strip().splitlines()[-1].split()
            torch_loaded, code = torch_text == "True", int(code_text)
            written = written or sorted(p.name for p in Path(folder).iterdir()) != ["file"]
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "exit": code,
            "torch": torch_loaded, "wrote": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    results = {name: measure(args, options.repeats) for name, args in INVOCATIONS.items()}
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'invocation':<22} {'median s':>9} {'max s':>7} {'exit':>5} {'torch':>6} {'wrote':>6}")
    for name, result in results.items():
        print(f"{name:<22} {result['median_s']:>9} {result['max_s']:>7} {result['exit']:>5} "
              f"{result['torch']!s:>6} {result['wrote']!s:>6}")


if __name__ == "__main__":
    main()
