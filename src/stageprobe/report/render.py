"""Write a run's report files, and re-render them later (`stageprobe report RUN_DIR`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from pydantic import ValidationError

from stageprobe._atomic import write_text_atomic
from stageprobe.errors import UserInputError
from stageprobe.report.findings import artifact_paths, render_findings
from stageprobe.report.html import render_html
from stageprobe.report.plots import (
    plot_decay_curves,
    plot_retention_vs_pixels,
    plot_stage_heatmap,
)
from stageprobe.report.results import (
    build_results,
    load_results_yaml,
    read_metrics_csv,
    write_metrics_csv,
    write_results_yaml,
)
from stageprobe.report.schema import MetricRow, ResultsFile, RunContext
from stageprobe.suites import get_suite

DECAY_PLOT = "artifacts/decay_curves.png"
HEATMAP_PLOT = "artifacts/stage_heatmap.png"
RETENTION_PLOT = "artifacts/retention_vs_pixels.png"
# Plots derived from metrics.csv alone: `render_report` redraws them so they never go stale.
DERIVED_PLOTS = {DECAY_PLOT: plot_decay_curves, RETENTION_PLOT: plot_retention_vs_pixels,
                 HEATMAP_PLOT: plot_stage_heatmap}


@dataclass(frozen=True)
class ReportPaths:
    run_dir: Path
    results: Path
    metrics: Path
    findings: Path
    html: Path


def _paths(run_dir: Path) -> ReportPaths:
    return ReportPaths(run_dir, run_dir / "results.yaml", run_dir / "metrics.csv", run_dir / "FINDINGS.md",
                       run_dir / "report.html")


def write_run_report(run_dir: str | Path, rows: Sequence[MetricRow], context: RunContext) -> ReportPaths:
    """Everything after the numbers: metrics.csv, summary plots, results.yaml, FINDINGS.md, report.html.

    Also writes config.yaml and env.json from the context when the runner has not written them.
    """
    run_dir = Path(run_dir)
    paths = _paths(run_dir)
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    write_metrics_csv(rows, paths.metrics)
    suite = get_suite(context.suite)
    summary = [relative for relative, plot in DERIVED_PLOTS.items() if plot(rows, suite, run_dir / relative)]
    artifacts = {key: list(value) for key, value in context.artifacts.items()}
    artifacts["summary"] = list(dict.fromkeys([*artifacts.get("summary", []), *summary]))
    results = build_results(rows, replace(context, artifacts=artifacts))
    write_results_yaml(results, paths.results)
    if not (run_dir / "config.yaml").exists():
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(context.config, sort_keys=False))
    if not (run_dir / "env.json").exists():
        write_text_atomic(run_dir / "env.json", json.dumps(context.env, indent=2, default=str) + "\n")
    write_text_atomic(paths.findings, render_findings(results, rows))
    write_text_atomic(paths.html, render_html(results, rows, run_dir / "artifacts"))
    return paths


def load_run(run_dir: str | Path) -> tuple[dict, list[MetricRow]]:
    """results.yaml (schema-checked) and metrics.csv of a run; damage → UserInputError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir} is not a directory: pass a run directory made by `stageprobe run`")
    results = load_results_yaml(run_dir / "results.yaml")
    try:
        ResultsFile.model_validate(results)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserInputError(
            f"{run_dir / 'results.yaml'} does not match the results schema: {where}: {first['msg']} "
            f"(run `stageprobe validate {run_dir}` for every problem)") from None
    return results, read_metrics_csv(run_dir / "metrics.csv")


def render_report(run_dir: str | Path) -> ReportPaths:
    """Re-render FINDINGS.md and report.html from results.yaml + metrics.csv (+ artifacts present)."""
    run_dir = Path(run_dir)
    results, rows = load_run(run_dir)
    listed = set(artifact_paths(results))
    suite = get_suite(str(results.get("suite")))
    for relative, plot in DERIVED_PLOTS.items():
        if relative in listed:
            plot(rows, suite, run_dir / relative)
    paths = _paths(run_dir)
    write_text_atomic(paths.findings, render_findings(results, rows))
    write_text_atomic(paths.html, render_html(results, rows, run_dir / "artifacts"))
    return paths
