"""What `--probe-precision bfloat16` did to a run's numbers, against the same run in float32.

Compares two runs' metrics.csv row for row (keys as `compare_metrics.py`) and their results.yaml verdicts
and decision: how many rows moved and in which probes, the largest |Δ| of the value, each moved row's
|Δ| against its CI half-width (the float32 row's (ci_high − ci_low) / 2), the rows of the pixel ceilings and of
the verdict stages, and whether every verdict and the decision matrix's colour are the same.

Run: python benchmarks/precision_effect.py RUN_F32 RUN_BF16 [--top 15]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from compare_metrics import KEY, _number, read_rows

PIXEL_CEILINGS = ("pixels.patch", "pixels.merged")


def moved_rows(a: dict[tuple[str, ...], dict[str, str]],
               b: dict[tuple[str, ...], dict[str, str]]) -> list[tuple[float, float, tuple[str, ...]]]:
    """(|Δ value|, |Δ| / CI half-width, key) of every row whose value differs, largest ratio first."""
    out = []
    for key in a.keys() & b.keys():
        x, y = _number(a[key]["value"]), _number(b[key]["value"])
        if (math.isnan(x) and math.isnan(y)) or x == y:
            continue
        gap = abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf
        half = (_number(a[key]["ci_high"]) - _number(a[key]["ci_low"])) / 2
        out.append((gap, gap / half if half > 0 else math.inf, key))
    return sorted(out, key=lambda m: (-m[1], -m[0]))


def verdicts(run: Path) -> tuple[dict[str, Any], Any]:
    results = yaml.safe_load((run / "results.yaml").read_text())
    table = {name: (entry.get("status"), entry.get("stage"), entry.get("value"), entry.get("ci_low"),
                    entry.get("ci_high")) for name, entry in (results.get("verdicts") or {}).items()}
    return table, (results.get("decision_matrix") or {}).get("colour")


def verdict_text(entry: tuple[Any, ...] | None) -> str:
    if entry is None:
        return "absent"
    status, stage, *numbers = entry
    value, low, high = (f"{x:.3f}" if isinstance(x, float) else str(x) for x in numbers)
    return f"{status} {value} [{low}, {high}] at {stage}"


def label(key: tuple[str, ...]) -> str:
    return " / ".join(part for part in key if part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_f32", type=Path)
    parser.add_argument("run_bf16", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    a, b = read_rows(args.run_f32), read_rows(args.run_bf16)
    moved = moved_rows(a, b)
    probe = KEY.index("probe")
    print(f"{len(a.keys() & b.keys())} rows in both, {len(a.keys() ^ b.keys())} in one only; {len(moved)} moved, "
          f"by probe: {dict(Counter(key[probe] for _, _, key in moved))}")
    with_ci = [m for m in moved if math.isfinite(m[0]) and math.isfinite(m[1])]
    if moved:
        largest = max((m for m in moved if math.isfinite(m[0])), key=lambda m: m[0])
        print(f"largest |Δ| {largest[0]:.4g} ({label(largest[2])}); {len(moved) - len(with_ci)} moved rows have no "
              "CI (validation scores) or a NaN on one side")
    if with_ci:
        print(f"|Δ| / CI half-width over the {len(with_ci)} moved rows with a CI: median "
              f"{sorted(m[1] for m in with_ci)[len(with_ci) // 2]:.2f}, max {with_ci[0][1]:.2f}; "
              f"{sum(m[1] > 1 for m in with_ci)} moved by more than their CI half-width")
    print(f"\nlargest |Δ| / CI half-width (top {args.top}):")
    for gap, ratio, key in with_ci[:args.top]:
        print(f"  {ratio:6.2f}  Δ {gap:.4g}  {label(key)}: {a[key]['value']} → {b[key]['value']}")
    stage = KEY.index("stage")
    ceilings = [m for m in moved if m[2][stage] in PIXEL_CEILINGS and m[2][probe] == "dense-context"
                and m[2][KEY.index("control")] in ("", "none")]
    print("\ndense-context at the pixel ceilings:")
    for gap, ratio, key in sorted(ceilings, key=lambda m: m[2]):
        print(f"  {label(key)}: {a[key]['value']} [{a[key]['ci_low']}, {a[key]['ci_high']}] → {b[key]['value']} "
              f"(Δ {gap:.4g}, {ratio:.2f} of the CI half-width)")
    (f32, colour_a), (bf16, colour_b) = verdicts(args.run_f32), verdicts(args.run_bf16)
    print("\nverdicts (status, stage, value [CI]):")
    for name in sorted(f32.keys() | bf16.keys()):
        same = "same" if (f32.get(name) or (None,))[0] == (bf16.get(name) or (None,))[0] else "CHANGED"
        print(f"  {name}: {same}: {verdict_text(f32.get(name))} → {verdict_text(bf16.get(name))}")
    print(f"decision matrix: {colour_a} → {colour_b} ({'same' if colour_a == colour_b else 'CHANGED'})")


if __name__ == "__main__":
    main()
