"""Smoke tests of `stageprobe bench`: keys and sane values at tiny sizes, never timing targets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageprobe.bench import (
    ROWS,
    TARGETS,
    bench_samples,
    bench_table,
    peak_rss_mb,
    seed_protocol_reads,
    time_seed_protocol,
    verdict,
)
from stageprobe.cli import app
from stageprobe.models import load_model

KEYS = {"device", "model", "images", "torch", "plain_forward_s", "extract_all_s", "overhead_ratio",
        "seed_protocol_s", "ours_s", "speedup_vs_seed_protocol", "probe_fit_stage_images_per_s",
        "peak_gpu_mb", "peak_rss_mb_small", "peak_rss_mb_large", "rss_ratio", "notes"}
# the first 11 shapes samples hold every split (test at 6, val at 10), which the probe needs
PROBE_IMAGES = 11


def test_bench_json_reports_every_key_with_sane_values() -> None:
    result = CliRunner().invoke(app, ["bench", "--model", "pixels", "--images", str(PROBE_IMAGES),
                                      "--repeats", "1", "--rss-images", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == KEYS
    assert (report["model"], report["images"], report["device"]) == ("pixels", PROBE_IMAGES, "cpu")
    for key in ("plain_forward_s", "extract_all_s", "seed_protocol_s", "probe_fit_stage_images_per_s"):
        assert report[key] > 0, key
    assert report["ours_s"] == report["extract_all_s"]
    assert math.isclose(report["overhead_ratio"], report["extract_all_s"] / report["plain_forward_s"])
    assert math.isclose(report["speedup_vs_seed_protocol"], report["seed_protocol_s"] / report["ours_s"])
    assert report["peak_rss_mb_small"] is None and report["rss_ratio"] is None
    assert report["peak_gpu_mb"] is None and report["notes"]["peak_gpu_mb"].startswith("unavailable")
    assert report["notes"]["rss"].startswith("unavailable")
    assert "extrapolated linearly" in report["notes"]["seed_protocol_s"]
    assert f"on 2 stages × {PROBE_IMAGES} images" in report["notes"]["probe_fit_stage_images_per_s"]


def test_seed_protocol_counts_one_forward_per_stage_per_experiment_per_image() -> None:
    pixels = load_model("pixels", device="cpu")
    # E-Q2.1 reads pixels.patch; 2, 5 and 5's real-photo twin read both; 4, 6 and 6's camera-motion twin
    # read pixels.merged; 3 reads neither.
    assert seed_protocol_reads(pixels) == {"pixels.patch": 4, "pixels.merged": 6}
    images = [sample.image for sample in bench_samples(3)]
    seconds, note = time_seed_protocol(pixels, images, seed_images=1)
    assert seconds > 0
    assert note.startswith("30 batch-1 forwards (10 (experiment, stage) reads × 3 images")


def test_peak_rss_of_an_extract_subprocess(tmp_path: Path) -> None:
    assert 20 < peak_rss_mb("pixels", 2, "cpu", tmp_path / "store") < 8000
    assert (tmp_path / "store" / "manifest.json").is_file()


@pytest.mark.parametrize(("metric", "value", "expected"), [
    ("overhead_ratio", 1.1, "PASS"), ("overhead_ratio", 1.2, "FAIL"),
    ("speedup_vs_seed_protocol", 12.0, "PASS"), ("speedup_vs_seed_protocol", 9.0, "FAIL"),
    ("rss_ratio", None, "n/a"), ("plain_forward_s", 1.0, None),
])
def test_verdicts_follow_the_targets(metric: str, value: float | None, expected: str | None) -> None:
    assert set(TARGETS) == {"overhead_ratio", "speedup_vs_seed_protocol", "rss_ratio"}
    assert verdict(metric, value) == expected


def test_table_marks_unavailable_values() -> None:
    row = dict.fromkeys(KEYS, None) | {"model": "m", "device": "cpu", "images": 1, "torch": "x",
                                        "notes": {"rss": "unavailable: skipped"}}
    assert bench_table(row).row_count == len(ROWS)


def test_gpu_check_script_says_it_skipped_without_a_gpu() -> None:
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert "gpu_check: skipped: no CUDA GPU" in done.stdout
