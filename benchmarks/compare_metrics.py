"""Row-for-row diff of two runs' metrics.csv: which rows differ, and by how much.

Rows are keyed by (experiment, stage, probe, metric, control, variant, model); value, ci_low and
ci_high are compared numerically, every other column as text. Prints the rows only one run has, the
largest differences first, and a one-line verdict; exits 1 when a difference exceeds --tolerance
(absolute), so a speed change can be checked with `compare_metrics.py BEFORE AFTER --tolerance 1e-6`.

Run: python benchmarks/compare_metrics.py RUN_A RUN_B [--tolerance 0] [--top 20]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

KEY = ("experiment", "stage", "probe", "metric", "control", "variant", "model")
NUMBERS = ("value", "ci_low", "ci_high")


def read_rows(run: Path) -> dict[tuple[str, ...], dict[str, str]]:
    path = run / "metrics.csv" if run.is_dir() else run
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keyed = {tuple(row[k] for k in KEY): row for row in rows}
    if len(keyed) != len(rows):
        raise SystemExit(f"{path}: {len(rows) - len(keyed)} rows repeat a key {KEY}; cannot compare row for row")
    return keyed


def _number(text: str) -> float:
    return float(text) if text not in ("", "nan", "NaN") else math.nan


def row_difference(a: dict[str, str], b: dict[str, str]) -> tuple[float, str]:
    """Largest absolute difference of the numeric columns (inf for a text change or a NaN on one side only)."""
    worst, where = 0.0, ""
    for column in NUMBERS:
        x, y = _number(a[column]), _number(b[column])
        if math.isnan(x) and math.isnan(y):
            continue
        gap = math.inf if math.isnan(x) != math.isnan(y) else abs(x - y)
        if gap > worst:
            worst, where = gap, f"{column} {a[column]} → {b[column]}"
    for column in sorted(set(a) - set(KEY) - set(NUMBERS)):
        if a[column] != b.get(column):
            return math.inf, f"{column} {a[column]!r} → {b.get(column)!r}"
    return worst, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest absolute difference allowed")
    parser.add_argument("--top", type=int, default=20, help="differing rows to print")
    args = parser.parse_args()
    a, b = read_rows(args.run_a), read_rows(args.run_b)
    for name, only in (("A", a.keys() - b.keys()), ("B", b.keys() - a.keys())):
        for key in sorted(only)[:args.top]:
            print(f"only in {name}: {' / '.join(key)}")
    diffs = sorted(((row_difference(a[k], b[k]), k) for k in a.keys() & b.keys()), key=lambda d: -d[0][0])
    differing = [(gap, where, key) for (gap, where), key in diffs if gap > 0]
    for gap, where, key in differing[:args.top]:
        print(f"{gap:10.3g}  {' / '.join(k for k in key if k)}: {where}")
    over = [d for d in differing if d[0] > args.tolerance]
    missing = len(a.keys() ^ b.keys())
    print(f"{len(a.keys() & b.keys())} rows in both, {missing} in one only, {len(differing)} differ, "
          f"{len(over)} by more than {args.tolerance:g}; largest {differing[0][0] if differing else 0:.3g}")
    sys.exit(1 if over or missing else 0)


if __name__ == "__main__":
    main()
