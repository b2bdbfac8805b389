"""Everything after the numbers are measured: metrics.csv, results.yaml, verdicts, FINDINGS.md,
report.html, plots, validation, comparison and optional W&B logging."""

from stageprobe.report.compare import CompareRow, Comparison, compare_runs, comparison_table
from stageprobe.report.findings import render_findings
from stageprobe.report.html import render_html
from stageprobe.report.render import ReportPaths, load_run, render_report, write_run_report
from stageprobe.report.results import (
    build_results,
    load_results_yaml,
    read_metrics_csv,
    write_metrics_csv,
    write_results_yaml,
)
from stageprobe.report.schema import MetricRow, ResultsFile, RunContext
from stageprobe.report.validate import validate_run
from stageprobe.report.verdicts import Decision, DecisionRule, Target, Verdict, compute_verdicts, decide
from stageprobe.report.wandb_log import log_to_wandb

__all__ = [
    "CompareRow", "Comparison", "Decision", "DecisionRule", "MetricRow", "ReportPaths", "ResultsFile",
    "RunContext", "Target", "Verdict", "build_results", "compare_runs", "comparison_table",
    "compute_verdicts", "decide", "load_results_yaml", "load_run", "log_to_wandb", "read_metrics_csv",
    "render_findings", "render_html", "render_report", "validate_run", "write_metrics_csv",
    "write_results_yaml", "write_run_report",
]
