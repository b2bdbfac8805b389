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


def run_never_started(run_dir: Path) -> bool:
    """Whether the run in `run_dir` measured nothing yet: no finished experiment, no calibration and no
    feature shard, so starting it afresh with other settings loses no work."""
    if (run_dir / "results.yaml").exists() or (run_dir / "calibration").exists():
        return False
    if any(path.name != "run.json" for path in (run_dir / "experiments").glob("*.json")):
        return False
    features = run_dir / "features"
    return not features.is_dir() or not any(path.is_file() for path in features.rglob("*"))


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


#: config.yaml field → (`stageprobe run` flag, the value that needs no flag)
_RUN_FLAGS: dict[str, tuple[str, Any]] = {
    "model": ("--model", None), "stages": ("--stages", None), "protocol": ("--protocol", "stageprobe"),
    "seed": ("--seed", 0), "batch_size": ("--batch-size", 8), "probe_workers": ("--probe-workers", None),
    "device": ("--device", "auto"), "device_map": ("--device-map", None), "dtype": ("--dtype", "auto"),
    "store_dtype": ("--store-dtype", "float16"), "limit": ("--limit", None), "seeds": ("--seeds", None),
    "verdict_stage": ("--verdict-stage", None), "probe_precision": ("--probe-precision", None),
}


def unfinished_run(run_dir: Path) -> dict[str, Any] | None:
    """The config of the run in `run_dir` when it started (config.yaml) and did not finish (no
    results.yaml); None otherwise."""
    config_path = run_dir / "config.yaml"
    if (run_dir / "results.yaml").exists() or not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def resume_command(run_dir: Path, config: dict[str, Any]) -> str:
    """The `stageprobe run` command line that continues the run `config` (its config.yaml) describes."""
    options: list[tuple[str, Any]] = [(flag, config.get(field)) for field, (flag, default) in _RUN_FLAGS.items()
                                      if config.get(field) != default]
    size = config.get("size")
    options += [("--quick", size == "quick"), ("--full", size == "full"),
                ("--no-controls", config.get("controls") is False), ("--no-twin", config.get("twin") is False),
                ("--trust-remote-code", bool(config.get("trust_remote_code"))),
                ("--calibrate", bool(config.get("calibrate"))),
                ("--experiments", ",".join(config["experiments"]) if config.get("experiments") else None),
                ("--data", [f"{key}={spec}" for key, spec in (config.get("data") or {}).items()] or None),
                ("--out", run_dir)]
    return command_line("stageprobe run", options)
