"""`metrics.csv` (tidy rows) and `results.yaml` (the seed-compatible summary) — write and read."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stageprobe import __version__
from stageprobe._atomic import write_text_atomic
from stageprobe.errors import UserInputError
from stageprobe.report.analysis import Analysis, RunMeta, analyse, model_rows
from stageprobe.report.schema import (
    CONTROL_DESCRIPTIONS,
    CSV_COLUMNS,
    VARIANT_DESCRIPTIONS,
    MetricRow,
    RunContext,
    sort_stages,
)
from stageprobe.report.training_effect import cause_notes, training_results

_REQUIRED_COLUMNS = ("experiment", "stage", "probe", "metric", "value")


# ---------------------------------------------------------------------------------------------
# metrics.csv


def _number(value: float | None) -> str:
    # repr() of a float is the shortest text that reads back to the same float: exact round trip.
    return "" if value is None else repr(float(value))


def write_metrics_csv(rows: Iterable[MetricRow], path: str | Path) -> Path:
    """Write rows in tidy form (one measurement per line), sorted for stable diffs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: (r.experiment, r.variant, r.control, r.model, r.metric, r.probe, r.stage))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in ordered:
        writer.writerow([r.experiment, r.stage, r.probe, r.metric, _number(r.value), _number(r.ci_low),
                         _number(r.ci_high), r.n, r.control, r.model, r.unavailable_reason or "", r.note, r.variant])
    write_text_atomic(path, text.getvalue())  # never leave a half-written metrics.csv behind
    return path


def _parse_float(text: str, column: str, line: int, path: Path) -> float | None:
    if text.strip() == "":
        return None
    try:
        number = float(text)
    except ValueError:
        raise UserInputError(f"{path} line {line}: column {column!r} is not a number: {text!r}") from None
    return number if math.isfinite(number) else None


def read_metrics_csv(path: str | Path) -> list[MetricRow]:
    """Read `metrics.csv`; a damaged file raises UserInputError naming the line and column."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} not found: a run directory must contain metrics.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserInputError(f"{path}: missing column(s) {', '.join(missing)}; "
                                 f"expected header {','.join(CSV_COLUMNS)}")
        rows: list[MetricRow] = []
        for line, record in enumerate(reader, start=2):
            if None in record:
                raise UserInputError(f"{path} line {line}: more fields than the header has")
            n_text = (record.get("n") or "").strip()
            n = _parse_float(n_text, "n", line, path) if n_text else 0.0
            if n is None or n != int(n):
                raise UserInputError(f"{path} line {line}: column 'n' must be a whole number: {n_text!r}")
            try:
                rows.append(MetricRow(
                    experiment=record["experiment"] or "", stage=record["stage"] or "",
                    probe=record["probe"] or "", metric=record["metric"] or "",
                    value=_parse_float(record["value"] or "", "value", line, path),
                    ci_low=_parse_float(record.get("ci_low") or "", "ci_low", line, path),
                    ci_high=_parse_float(record.get("ci_high") or "", "ci_high", line, path),
                    n=int(n),
                    control=(record.get("control") or "none").strip(),  # type: ignore[arg-type]
                    model=record.get("model") or "",
                    unavailable_reason=record.get("unavailable_reason") or None,
                    note=record.get("note") or "",
                    # a metrics.csv without the column: variants sat in `control` (MetricRow moves them)
                    **({"variant": record["variant"].strip() or "model"} if record.get("variant") is not None else {}),
                ))
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(str(part) for part in first["loc"]) or "row"
                raise UserInputError(f"{path} line {line}: {field}: {first['msg']}") from None
    return rows


# ---------------------------------------------------------------------------------------------
# results.yaml


def _iso(moment: datetime | str | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _cell(row: MetricRow) -> dict[str, Any]:
    return {"value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high, "n": row.n,
            **({"unavailable_reason": row.unavailable_reason} if row.value is None else {})}


def stage_tables(rows: Sequence[MetricRow], control: str = "none",
                 variant: str = "model") -> dict[str, dict[str, dict[str, Any]]]:
    """experiment → stage (pipeline order) → "probe/metric" → {value, ci_low, ci_high, n}."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    chosen = [r for r in rows if r.control == control and r.variant == variant]
    for experiment in sorted({r.experiment for r in chosen}):
        own = [r for r in chosen if r.experiment == experiment]
        tables[experiment] = {
            stage: {f"{r.probe}/{r.metric}": _cell(r) for r in own if r.stage == stage}
            for stage in sort_stages({r.stage for r in own})
        }
    return tables


def _run_status(analysis: Analysis) -> str:
    states = set(analysis.experiment_status.values())
    if "in_progress" in states:
        return "in_progress"
    if states <= {"failed", "skipped"}:
        return "failed"
    return "completed"


def _experiment_entries(analysis: Analysis, context: RunContext) -> dict[str, Any]:
    """Each experiment's status, finding, metrics read at its declared stage, artifacts and best stages."""
    experiments: dict[str, Any] = {}
    for experiment, state in analysis.experiment_status.items():
        reads = analysis.best[experiment]
        entry: dict[str, Any] = {
            "status": state,
            "finding": analysis.findings[experiment],
            "metrics": {metric: read.row.value for metric, read in reads.items()},
            "artifacts": list(context.artifacts.get(experiment, [])),
            "best_stages": {metric: read.best_val_stage for metric, read in reads.items() if read.best_val_stage},
            "metric_notes": {metric: read.note for metric, read in reads.items()},
        }
        if experiment in context.experiment_errors:
            entry["error"] = context.experiment_errors[experiment]
        experiments[experiment] = entry
    return experiments


def _assessment(analysis: Analysis) -> dict[str, Any]:
    """The seed's assessment block: criteria counts, confidence, the decision and each target's value."""
    verdicts = analysis.verdicts
    assessment: dict[str, Any] = {
        "success_criteria_met": all(v.status == "PASS" for v in verdicts.values()),
        "confidence": analysis.confidence,
        "confidence_notes": analysis.confidence_notes,
        "criteria_passed": analysis.passed,
        "criteria_failed": analysis.failed,
        "criteria_inconclusive": analysis.inconclusive,
        "criteria_measured": analysis.measured,
        "criteria_total": len(verdicts),
        "decision_matrix": analysis.decision.colour,
    }
    for key, verdict in verdicts.items():
        if verdict.row is not None:
            assessment[f"{key}_achieved"] = verdict.row.value
    return assessment


def _controls_and_variants(rows: Sequence[MetricRow]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per control and per variant present in the rows: what it is, its models and its stage tables."""
    controls = {
        control: {"description": CONTROL_DESCRIPTIONS[control],
                  "models": sorted({r.model for r in rows if r.control == control and r.model}),
                  "stage_metrics": stage_tables(rows, control)}
        for control in CONTROL_DESCRIPTIONS if any(r.control == control and r.variant == "model" for r in rows)
    }
    variants = {
        variant: {"description": VARIANT_DESCRIPTIONS[variant],
                  "models": sorted({r.model for r in rows if r.variant == variant and r.model}),
                  "stage_metrics": stage_tables(rows, variant=variant)}
        for variant in VARIANT_DESCRIPTIONS if any(r.variant == variant for r in rows)
    }
    return controls, variants


def build_results(rows: Sequence[MetricRow], context: RunContext,
                  analysis: Analysis | None = None) -> dict[str, Any]:
    """The content of `results.yaml`: the seed's keys, then stageprobe's own."""
    analysis = analysis or analyse(rows, RunMeta.from_context(context))
    verdicts = analysis.verdicts
    controls, variants = _controls_and_variants(rows)
    listed = [p for paths in context.artifacts.values() for p in paths]
    return {
        "experiment_id": f"{context.suite}-information-preservation",
        "claim": context.claim or analysis.suite.claim,
        "status": _run_status(analysis),
        "executed_by": context.executed_by or f"stageprobe {__version__}",
        "started_at": _iso(context.started_at) or _iso(datetime.now(timezone.utc)),
        "completed_at": _iso(context.completed_at),
        "success_criteria": analysis.suite.success_criteria(),
        "success_criteria_details": {
            t.key: {"metric": t.metric, "target": t.display, "what": t.what, "probe": t.probe,
                    "experiments": list(t.experiments)}
            for t in analysis.suite.targets
        },
        "results": {"experiments": _experiment_entries(analysis, context)},
        "assessment": _assessment(analysis),
        "recommendation": analysis.advice.recommendation,
        "recommendation_headline": analysis.advice.headline,
        "recommendation_notes": " ".join(filter(None, [analysis.advice.notes, cause_notes(rows, analysis)])),
        "blockers": [*context.blockers, *analysis.advice.blockers],
        "issues": [*context.issues, *analysis.issues],
        "model": context.model,
        "weights_random": context.weights_random,
        "protocol": context.protocol,
        "suite": context.suite,
        "stages": sort_stages(context.stages or {r.stage for r in model_rows(rows)}),
        "controls": controls,
        "variants": variants,
        "verdicts": {key: verdict.as_dict() for key, verdict in verdicts.items()},
        "decision_matrix": analysis.decision.as_dict(),
        "training_effect": training_results(rows, analysis, context.weights_random),
        "stage_metrics": stage_tables(rows),
        "artifacts": list(dict.fromkeys(listed)),
        "config": context.config,
        "env": context.env,
        **({"calibration": context.calibration} if context.calibration is not None else {}),
    }


class _Dumper(yaml.SafeDumper):
    """Safe dumper that keeps key order and never writes anchors/aliases for repeated lists."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_results_yaml(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.dump(results, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100))
    return path


def load_results_yaml(path: str | Path) -> dict[str, Any]:
    """Parse `results.yaml` with safe_load; damage raises UserInputError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} not found: a run directory must contain results.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserInputError(f"{path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path} must hold a mapping of keys (experiment_id, results, ...), "
                             f"found {type(data).__name__}")
    return data
