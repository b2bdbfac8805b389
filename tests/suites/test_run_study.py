"""`stageprobe run` end to end: the study on the default model and on the pixel baseline,
validation of what it wrote, and resume after a kill."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stageprobe.suites.q2 import DECIDING_BOX_PROBE

CLI = [sys.executable, "-m", "stageprobe"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    done = run_cli("run", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def pixels_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pixels"
    done = run_cli("run", "--quick", "--model", "pixels", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_quick_run_writes_a_valid_run_directory(tiny_run: Path) -> None:
    for name in ("results.yaml", "metrics.csv", "FINDINGS.md", "report.html", "config.yaml", "env.json"):
        assert (tiny_run / name).is_file(), name
    checked = run_cli("validate", str(tiny_run))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    results = yaml.safe_load((tiny_run / "results.yaml").read_text())
    experiments = results["results"]["experiments"]
    assert sorted(experiments) == sorted([*(f"e_q2_{i}" for i in range(1, 7)), "e_q2_5_photos", "e_q2_6_camera"])
    assert all(e["status"] == "completed" for e in experiments.values())
    assert results["recommendation"] in ("proceed", "pivot", "investigate", "block")
    findings = (tiny_run / "FINDINGS.md").read_text()
    assert "random" in findings.lower()


def test_every_stage_is_read_with_its_controls(tiny_run: Path) -> None:
    rows = metric_rows(tiny_run)
    stages = {r["stage"] for r in rows if r["control"] == "none" and r["variant"] == "model"}
    assert {"vision.patch_embed", "vision.pre_merge", "vision.post_merge", "language.layer.0"} <= stages
    dense = [r for r in rows if r["probe"] == "dense-linear" and r["metric"] == "iou" and r["experiment"] == "e_q2_1"]
    controls = {r["control"] for r in dense}
    assert {"none", "control-task", "chance", "selectivity", "validation"} <= controls
    assert {"model", "pixels"} <= {r["variant"] for r in dense}
    # token shuffle where the probe carries its own position code, not for dense-linear
    assert "token-shuffle" not in controls
    relation = {r["control"] for r in rows if r["probe"] == "relation" and r["experiment"] == "e_q2_1"}
    assert {"control-task", "token-shuffle", "selectivity"} <= relation
    measured = [r for r in rows if r["value"] and r["control"] == "none" and r["metric"] == "iou"
                and r["variant"] == "model"]
    assert measured and all(r["ci_low"] and r["ci_high"] for r in measured)
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in measured)


def test_random_weights_are_judged_at_post_merge_not_at_the_patch_embedding(tiny_run: Path) -> None:
    results = yaml.safe_load((tiny_run / "results.yaml").read_text())
    judged = {key: v["stage"] for key, v in results["verdicts"].items() if v["stage"] is not None}
    assert judged and set(judged.values()) == {"vision.post_merge"}
    assert not results["assessment"]["success_criteria_met"]
    bbox = results["verdicts"]["bbox_iou"]
    assert bbox["probe"] == DECIDING_BOX_PROBE and bbox["best_val_stage"] is not None


def test_reference_rows_show_each_metrics_scale(tiny_run: Path) -> None:
    """METHODOLOGY #15: identity passes edge F1, a σ = 4 px blur and the constant image fail it."""
    edge = {r["stage"]: float(r["value"]) for r in metric_rows(tiny_run)
            if r["variant"] == "reference" and r["metric"] == "edge_f1" and r["value"]}
    assert edge["reference.identity"] > 0.99
    assert edge["reference.blur-4px"] < 0.6 and edge["reference.constant-mean"] < 0.6


def test_the_deciding_box_probe_is_read_with_token_shuffle(tiny_run: Path) -> None:
    rows = [r for r in metric_rows(tiny_run) if r["probe"] == DECIDING_BOX_PROBE and r["metric"] == "iou"]
    controls = {r["control"] for r in rows}
    assert {"none", "control-task", "token-shuffle", "selectivity"} <= controls
    assert any(r["variant"] == "pixels" for r in rows)


def test_a_finished_run_rerun_keeps_its_times_and_environment(pixels_run: Path) -> None:
    before = yaml.safe_load((pixels_run / "results.yaml").read_text())
    env = (pixels_run / "env.json").read_text()
    again = run_cli("run", "--quick", "--model", "pixels", "--out", str(pixels_run))
    assert again.returncode == 0, again.stderr[-3000:]
    after = yaml.safe_load((pixels_run / "results.yaml").read_text())
    assert (after["started_at"], after["completed_at"]) == (before["started_at"], before["completed_at"])
    assert (pixels_run / "env.json").read_text() == env


def test_every_number_in_findings_is_a_measured_number(tiny_run: Path) -> None:
    measured = set()
    for row in metric_rows(tiny_run):
        for key in ("value", "ci_low", "ci_high"):
            if row[key]:
                measured.add(f"{float(row[key]):.3f}")
                measured.add(f"{-float(row[key]):.3f}")
    # smallest detectable drops ("≥ 0.042") are derived from CI widths, not measured numbers
    findings = re.sub(r"≥ -?\d+\.\d+", "", (tiny_run / "FINDINGS.md").read_text())
    printed = re.findall(r"(?<![\w.])-?\d+\.\d{3}(?![\d])", findings)
    assert printed, "FINDINGS.md prints no measured number"
    assert [p for p in printed if p not in measured] == []


def test_pixel_baseline_localises_with_dense_probe_not_pooled(pixels_run: Path) -> None:
    rows = [r for r in metric_rows(pixels_run) if r["experiment"] == "e_q2_1" and r["metric"] == "iou"
            and r["control"] == "none" and r["stage"] == "pixels.patch"]
    dense = next(float(r["value"]) for r in rows if r["probe"] == "dense-linear")
    pooled = next(float(r["value"]) for r in rows if r["probe"] == "pooled-linear")
    assert dense > 0.7 > pooled
    findings = (pixels_run / "FINDINGS.md").read_text()
    assert "pooled-linear probe (seed protocol) gets" in findings


def test_damaged_results_fail_validation_with_a_clear_message(pixels_run: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for item in pixels_run.iterdir():
        if item.is_file():
            (damaged / item.name).write_bytes(item.read_bytes())
    (damaged / "artifacts").symlink_to(pixels_run / "artifacts")
    text = (damaged / "results.yaml").read_text().replace("recommendation:", "recommendation_broken:", 1)
    (damaged / "results.yaml").write_text(text)
    checked = run_cli("validate", str(damaged))
    assert checked.returncode == 2
    assert "recommendation" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_killed_run_resumes_to_the_same_metrics(pixels_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = subprocess.Popen([*CLI, "run", "--quick", "--model", "pixels", "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (out / "experiments" / "e_q2_2.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "results.yaml").exists(), "the run finished before it could be killed"
    resumed = run_cli("run", "--quick", "--model", "pixels", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished earlier, kept" in resumed.stderr

    def numbers(run_dir: Path) -> list[tuple[str, ...]]:
        return sorted((r["experiment"], r["stage"], r["probe"], r["metric"], r["control"], r["value"], r["ci_low"],
                       r["ci_high"]) for r in metric_rows(run_dir))

    assert numbers(out) == numbers(pixels_run)


def test_ctrl_c_stops_workers_and_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    # As in a terminal's foreground: SIGINT not ignored, even when this test runs as a background job
    process = subprocess.Popen([*CLI, "run", "--quick", "--model", "pixels", "--probe-workers", "2", "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not (out / "experiments" / "e_q2_1.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # into E-Q2.2's probe fits
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    assert (out / "experiments" / "e_q2_1.json").exists()


def test_the_seed_block_and_the_spatial_panel_read_the_deciding_probe(tiny_run: Path) -> None:
    """A random-weight quick run: no seed-block metric is read at the patch embedding or a pixel stage,
    and the spatial panel's main line is the deciding probe's row at every stage it drew."""
    from matplotlib.figure import Figure

    from stageprobe.report.plots import _draw_info_panel, _short
    from stageprobe.report.results import read_metrics_csv
    from stageprobe.suites.q2 import SUITE

    results = yaml.safe_load((tiny_run / "results.yaml").read_text())
    for experiment, entry in results["results"]["experiments"].items():
        for metric, note in entry["metric_notes"].items():
            stage = note.split(" at ", 1)[1].split(" ", 1)[0]
            assert stage != "vision.patch_embed" and not stage.startswith("pixels."), (experiment, metric, note)
    rows = read_metrics_csv(tiny_run / "metrics.csv")
    location = SUITE.row("location")
    ax = Figure().subplots()
    _draw_info_panel(ax, rows, SUITE, location)
    stages = [label.get_text() for label in ax.get_xticklabels()]
    drawn = dict(zip(ax.lines[0].get_xdata(), ax.lines[0].get_ydata(), strict=True))
    family = SUITE.family_experiments(location.family)
    for x, value in drawn.items():
        deciding = [r.value for r in rows if r.probe == location.probe and r.metric == location.metric
                    and r.control == "none" and r.variant == "model" and r.experiment in family
                    and _short(r.stage) == stages[int(x)]]
        # experiments that share a stage share its fit: one value, never a maximum over probes or experiments
        assert set(deciding) == {value}, (stages[int(x)], value, deciding)
