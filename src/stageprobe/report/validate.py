"""`stageprobe validate RUN_DIR`: is this run's report internally consistent?

Returns a list of problems (empty = valid), each one sentence naming the file, the key and what
is wrong. Verdicts, per-experiment metrics and the recommendation are recomputed from
metrics.csv, so a hand-edited or stale results.yaml is caught.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stageprobe.errors import UserInputError
from stageprobe.metrics._catalog import METRICS, report_name
from stageprobe.report.analysis import RunMeta, SeedRead, analyse
from stageprobe.report.findings import artifact_paths
from stageprobe.report.fmt import fmt
from stageprobe.report.results import load_results_yaml, read_metrics_csv
from stageprobe.report.schema import MetricRow, ResultsFile

_TOLERANCE = 1e-9


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)


def _schema_problems(results: dict[str, Any]) -> list[str]:
    try:
        ResultsFile.model_validate(results)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            got = f" (got {item['input']!r})" if item["type"] != "missing" and not isinstance(
                item["input"], dict | list) else ""
            problems.append(f"results.yaml: `{where}`: {item['msg']}{got}")
        return problems
    return []


def _artifact_problems(run_dir: Path, results: dict[str, Any]) -> list[str]:
    problems = []
    root = run_dir.resolve()
    for listed in artifact_paths(results):
        file = (run_dir / listed).resolve()
        if not file.is_relative_to(root):
            problems.append(f"artifact `{listed}` points outside the run directory")
        elif not file.is_file():
            problems.append(f"artifact `{listed}` is listed in results.yaml but does not exist")
    return problems


def _verdict_problems(results: dict[str, Any], rows: list[MetricRow]) -> list[str]:
    problems = []
    criteria = results.get("success_criteria") or {}
    analysis = analyse(rows, RunMeta.from_results(results))
    for target in analysis.suite.targets:
        listed = criteria.get(target.criterion_key)
        if listed is not None and not _same(float(listed), target.threshold):
            problems.append(f"success_criteria.{target.criterion_key} is {listed} but the seed target is "
                            f"{target.display}")
    stored = results.get("verdicts") or {}
    for key in stored:
        if key not in analysis.verdicts:
            problems.append(f"verdicts.{key}: not a known target")
    for key, verdict in analysis.verdicts.items():
        entry = stored.get(key)
        if not isinstance(entry, dict):
            problems.append(f"verdicts.{key} is missing")
            continue
        target = verdict.target
        status = entry.get("status")
        value = float(entry["value"]) if isinstance(entry.get("value"), int | float) else None
        if value is not None and status in ("PASS", "FAIL", "INCONCLUSIVE"):
            implied = "PASS" if target.passes(value) else "FAIL or INCONCLUSIVE"
            if status not in implied.split(" or "):
                problems.append(f"verdicts.{key} says {status} but its value {fmt(value)} "
                                f"{'meets' if implied == 'PASS' else 'misses'} the target {target.display}")
        row = verdict.row
        recomputed = row.value if row else None
        if status != verdict.status or not _same(value, recomputed):
            problems.append(
                f"verdicts.{key}: results.yaml says {status} ({fmt(value)} at {entry.get('stage')}) "
                f"but metrics.csv gives {verdict.status} ({fmt(recomputed)} at {row.stage if row else None})")
    assessment = results.get("assessment") or {}
    met = all(v.status == "PASS" for v in analysis.verdicts.values())
    if "success_criteria_met" in assessment and assessment["success_criteria_met"] != met:
        problems.append(f"assessment.success_criteria_met is {assessment['success_criteria_met']} but the "
                        f"verdicts recomputed from metrics.csv give {met}")
    experiments = (results.get("results") or {}).get("experiments") or {}
    for experiment, entry in experiments.items():
        problems += _seed_block_problems(experiment, entry or {}, analysis.best.get(experiment, {}))
    decision = results.get("decision_matrix") or {}
    if decision.get("colour") != analysis.decision.colour:
        problems.append(f"decision_matrix.colour is {decision.get('colour')} but metrics.csv gives "
                        f"{analysis.decision.colour} ({analysis.decision.reason})")
    if results.get("recommendation") != analysis.advice.recommendation:
        problems.append(f"recommendation is {results.get('recommendation')!r} but the decision matrix "
                        f"({analysis.decision.colour}) gives {analysis.advice.recommendation!r}: "
                        f"{analysis.advice.headline}")
    return problems


def _seed_block_problems(experiment: str, entry: dict[str, Any], reads: dict[str, SeedRead]) -> list[str]:
    """The seed block must give each metric at its declared stage with the deciding probe, and name the
    stage chosen on validation — not the best test value over every stage and probe."""
    problems = []
    where = f"results.experiments.{experiment}"
    for metric, value in (entry.get("metrics") or {}).items():
        read = reads.get(metric)
        if read is None or not isinstance(value, int | float):
            continue
        if not _same(float(value), read.row.value):
            problems.append(f"{where}.metrics.{metric} is {fmt(float(value))} but metrics.csv gives "
                            f"{fmt(read.row.value)} ({read.note})")
    for metric, stage in (entry.get("best_stages") or {}).items():
        read = reads.get(metric)
        if read is not None and stage != read.best_val_stage:
            problems.append(f"{where}.best_stages.{metric} is {stage} but the stage whose validation score of "
                            f"{read.row.probe} is best is {read.best_val_stage}")
    return problems


def validate_run(run_dir: str | Path) -> list[str]:
    """Every problem found in a run directory; an empty list means the run is valid."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [f"{run_dir} is not a directory"]
    problems: list[str] = []
    try:
        results: dict[str, Any] | None = load_results_yaml(run_dir / "results.yaml")
    except UserInputError as error:
        problems.append(str(error))
        results = None
    try:
        rows: list[MetricRow] | None = read_metrics_csv(run_dir / "metrics.csv")
    except UserInputError as error:
        problems.append(str(error))
        rows = None
    for name in ("FINDINGS.md", "report.html"):
        if not (run_dir / name).is_file():
            problems.append(f"{name} is missing: run `stageprobe report {run_dir}`")
    if results is None:
        return problems
    schema = _schema_problems(results)
    problems += schema
    problems += _artifact_problems(run_dir, results)
    if rows is not None and not schema:
        problems += _verdict_problems(results, rows)
    if rows is not None:
        undeclared = sorted({r.metric for r in rows if report_name(r.metric) not in METRICS})
        if undeclared:
            problems.append(f"metrics.csv has metrics without metadata ({', '.join(undeclared)}): declare them "
                            "in stageprobe/metrics/_catalog.py")
    return problems
