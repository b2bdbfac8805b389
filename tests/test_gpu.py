"""On a CUDA GPU the study must reach the verdicts it reaches on the CPU (issue #11). Skipped on a
machine without one — never run on the CPU under a GPU test's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def quick_run(out: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "stageprobe", "run", "--quick", "--out", str(out), *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return yaml.safe_load((out / "results.yaml").read_text())


def test_quick_study_in_bf16_on_cuda_gives_the_cpu_verdicts(tmp_path: Path) -> None:
    cpu = quick_run(tmp_path / "cpu", {"CUDA_VISIBLE_DEVICES": ""})
    gpu = quick_run(tmp_path / "gpu", {}, "--device", "cuda", "--dtype", "bf16")
    env = json.loads((tmp_path / "gpu" / "env.json").read_text())
    assert env["cuda"] and env["dtype"] == "torch.bfloat16" and env["device"].startswith("cuda")
    assert json.loads((tmp_path / "cpu" / "env.json").read_text())["cuda"] is None
    for key, on_cpu in cpu["verdicts"].items():
        on_gpu = gpu["verdicts"][key]
        if on_cpu["value"] is None:
            assert on_gpu["value"] is None, key
            continue
        assert on_gpu["stage"] == on_cpu["stage"], key
        # the same verdict within the CIs: each run's value inside the other's interval
        overlap = (on_cpu["ci_low"] <= on_gpu["value"] <= on_cpu["ci_high"]
                   or on_gpu["ci_low"] <= on_cpu["value"] <= on_gpu["ci_high"])
        assert overlap, (key, on_cpu["value"], on_cpu["ci_low"], on_cpu["ci_high"], on_gpu["value"])
