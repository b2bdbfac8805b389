"""Seeds where the decision is made: the deciding probes at the verdict and decision stages (and their
pixel ceilings) are refitted over several probe seeds by default, so a verdict's CI carries the probe's
own seed-to-seed spread as well as the test images' (issue 21 item 5). `--seeds N` sets N for them and
for every gradient-trained probe elsewhere.
"""

from __future__ import annotations

import fnmatch

from stageprobe.suites._spec import ProbeSpec, Suite


def decides_at(suite: Suite, probe: str, stage: str) -> bool:
    """A deciding probe at a stage a verdict, the decision matrix or a pixel ceiling reads."""
    return probe in suite.deciding_probes and any(fnmatch.fnmatchcase(stage, p) for p in suite.deciding_stages)


def probe_seeds(suite: Suite, probe: ProbeSpec, stage: str, size: str, requested: int | None) -> int:
    """How many probe seeds fit `probe` at `stage`: `--seeds` where given; else the suite's default for
    this run size where the probe decides, and one fit elsewhere."""
    if decides_at(suite, probe.probe, stage):
        return requested if requested is not None else suite.deciding_seeds.get(size, 1)
    return (requested or 1) if probe.seeded else 1
