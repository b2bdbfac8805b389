"""The longest stretch a command leaves its terminal unchanged: does the user see a sign of life?

Runs the command in a pseudo-terminal (as a user's shell would), notes when each chunk of output
arrives and prints the longest intervals without any, each with the last line shown before it.

Run: python benchmarks/progress_gaps.py [--top 5] -- stageprobe run --quick --model pixels --out /tmp/r
"""

from __future__ import annotations

import argparse
import itertools
import os
import pty
import re
import select
import subprocess
import time

#: terminal control sequences (cursor moves, colours): stripped to name the line shown before a gap
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def output_times(command: list[str]) -> tuple[list[tuple[float, str]], int, float]:
    """(seconds since start, text) of each chunk the command wrote, its exit code and its wall time."""
    leader, follower = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks: list[tuple[float, str]] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the command closed the terminal
                break
            if not data:
                break
            chunks.append((time.perf_counter() - started, data.decode(errors="replace")))
        elif process.poll() is not None:
            break
    os.close(leader)
    return chunks, process.wait(), time.perf_counter() - started


def longest_gaps(chunks: list[tuple[float, str]], top: int) -> list[tuple[float, float, str]]:
    """The `top` longest (gap seconds, at second, last line shown) stretches without output."""
    gaps, shown = [], ""
    for (before, text), (after, _) in itertools.pairwise(chunks):
        lines = [line.strip() for line in _ESCAPES.sub("\n", text).splitlines() if line.strip()]
        shown = lines[-1] if lines else shown
        gaps.append((after - before, before, shown))
    return sorted(gaps, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("command", nargs="+")
    options = parser.parse_args()
    chunks, code, wall = output_times(options.command)
    print(f"exit {code}, {wall:.0f} s, {len(chunks)} output chunks; longest stretches without output:")
    for gap, at, shown in longest_gaps(chunks, options.top):
        print(f"  {gap:6.1f} s from {at:7.1f} s, after: {shown[:110]}")


if __name__ == "__main__":
    main()
