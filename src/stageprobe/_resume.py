"""Finding the run `stageprobe run --resume` continues, and the command line that resumes a run."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

#: where `stageprobe run` puts runs without --out (`runs/<model>-<UTC time>`)
DEFAULT_RUNS_ROOT = Path("runs")


def find_resumable_run(runs_root: Path, identity: str) -> Path | None:
    """The newest unfinished run directly under `runs_root` whose config.yaml has this `identity`.

    Unfinished: config.yaml written, results.yaml not yet. Newest: the latest config.yaml, which
    a run writes once, when it starts.
    """
    if not runs_root.is_dir():
        return None
    candidates = []
    for config_path in runs_root.glob("*/config.yaml"):
        run_dir = config_path.parent
        if (run_dir / "results.yaml").exists() or _identity_of(config_path) != identity:
            continue
        candidates.append((config_path.stat().st_mtime, run_dir.name, run_dir))
    return max(candidates)[2] if candidates else None


def _identity_of(config_path: Path) -> str | None:
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # a damaged run is never the one resumed
    return config.get("identity") if isinstance(config, dict) else None


def command_line(program: str, options: Iterable[tuple[str, Any]]) -> str:
    """A shell command line: `program` then each (flag, value); True → the bare flag, a list → the
    flag repeated, None / False → left out."""
    words = shlex.split(program)
    for flag, value in options:
        if value is None or value is False:
            continue
        if value is True:
            words.append(flag)
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            words += [flag, str(item)]
    return shlex.join(words)
