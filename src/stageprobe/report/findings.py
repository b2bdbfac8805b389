"""FINDINGS.md in the seed report's shape, written from the measured rows.

Every measured number is printed through `fmt` (three decimals) straight from a `MetricRow`;
counts are integers and targets keep their short form (0.7), so each printed measurement can
be traced to `metrics.csv`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.probes import mixed_precision_probes
from stageprobe.report.analysis import Analysis, RunMeta, analyse, model_rows
from stageprobe.report.answer import (
    CONNECTOR_KINDS,
    calibration_blocks,
    connector_name,
    detectable_phrase,
    paired_detectable,
    unpaired_detectable,
    verdict_line,
    which_stage_table,
)
from stageprobe.report.document import (
    Bullets,
    Callout,
    Details,
    Document,
    Figure,
    Heading,
    Para,
    Pre,
    Rule,
    Table,
    to_markdown,
)
from stageprobe.report.fmt import MISSING, fmt, fmt_row
from stageprobe.report.schema import (
    CONTROL_DESCRIPTIONS,
    VARIANT_DESCRIPTIONS,
    VARIANTS,
    MetricRow,
    pixel_stage_for,
    stage_sort_key,
)
from stageprobe.report.training_effect import cause_notes, training_blocks
from stageprobe.report.verdicts import Verdict, stage_line

if TYPE_CHECKING:
    from stageprobe.suites._spec import Suite

RANDOM_WEIGHTS_WARNING = (
    "The weights of `{model}` are random (random-init). These numbers describe the architecture and "
    "the probes, not a trained model; do not read them as findings about a released checkpoint."
)
SEED_PROTOCOL_WARNING = (
    "This run used the seed protocol: every probe mean-pools all tokens into one vector before "
    "predicting (defect 1 of the original harness). Averaging discards where each token is, so a "
    "pooled probe cannot localise objects even on raw pixels: low spatial scores here are not "
    "evidence that the model lost location."
)

CONTROL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pixels", "Pixels"), ("random-init", "Random-init"), ("control-task", "Control task"),
    ("selectivity", "Selectivity"), ("chance", "Chance"), ("token-shuffle", "Token shuffle"),
)
BAR_WIDTH = 20
#: figures shown right under the answer table (path → caption), in this order
TOP_FIGURES = {
    "artifacts/decay_curves.png": "Information by stage (bands: 95% CI; dotted: target; dashed: controls)",
    "artifacts/retention_vs_pixels.png": "Retention: each stage's value ÷ the same probe's pixel ceiling at its grid",
}


def weights_phrase(meta: RunMeta) -> str:
    if meta.model == "pixels":
        return "no weights: the raw-pixel baseline"
    return "random weights" if meta.weights_random else "trained weights"


def experiment_heading(experiment: str, suite: Suite) -> str:
    spec = next((e for e in suite.experiments if e.id == experiment), None)
    return f"{spec.label or spec.id}: {spec.title}" if spec is not None else experiment


def table_metrics(experiment: str, suite: Suite) -> tuple[str, ...]:
    spec = next((e for e in suite.experiments if e.id == experiment), None)
    return spec.table_metrics if spec is not None else ()


def _date(results: Mapping[str, Any]) -> str:
    moment = str(results.get("completed_at") or results.get("started_at") or "")
    # Date and minutes only: seconds with fractions would read like a measurement.
    return moment[:16].replace("T", " ") + " UTC" if len(moment) >= 16 else (moment or MISSING)


def control_row(rows: Sequence[MetricRow], main: MetricRow, control: str) -> MetricRow | None:
    """The control (or model variant, e.g. `pixels`) measurement beside `main`: same experiment, probe and
    metric, matching grid."""
    variant, control = (control, "none") if control in VARIANTS else (main.variant, control)
    stages = [main.stage] + ([pixel_stage_for(main.stage)] if variant == "pixels" else [])
    # The pixel baseline is one measurement per grid and probe, shared by the experiments that
    # read the same dataset, so it may come from a sibling experiment.
    same_experiment = (True, False) if variant == "pixels" else (True,)
    for strict in same_experiment:
        for stage in stages:
            for row in rows:
                if (row.control == control and row.variant == variant and row.stage == stage and row.probe == main.probe
                        and row.metric == main.metric and (row.experiment == main.experiment or not strict)):
                    return row
    return None


def _unavailable_notes(rows: Sequence[MetricRow]) -> list[str]:
    """"unavailable: <reason>" once per metric and reason, with the stages it covers counted."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        grouped.setdefault((r.metric, r.unavailable_reason or "not measured"), []).append(r.stage)
    return [f"{metric} unavailable at {len(stages)} stage{'s' if len(stages) > 1 else ''}: {reason}"
            for (metric, reason), stages in grouped.items()]


def experiment_table(rows: Sequence[MetricRow], experiment: str, suite: Suite,
                     metrics: Sequence[str] | None = None) -> Table:
    """Every stage's value with its controls; reference degradations (what a value means) beside the
    stages; metrics that could not be measured said once in the caption, not once per row."""
    own = model_rows(rows, experiment)
    wanted = metrics or table_metrics(experiment, suite) or tuple(dict.fromkeys(r.metric for r in own))
    references = [r for r in rows if r.experiment == experiment and r.variant == "reference"]
    shown = [r for r in [*own, *references] if r.metric in wanted]
    missing = [r for r in shown if r.value is None]
    shown = [r for r in shown if r.value is not None]
    shown.sort(key=lambda r: (wanted.index(r.metric), r.probe, stage_sort_key(r.stage)))
    controls = [(c, label) for c, label in CONTROL_COLUMNS
                if any(c in (r.control, r.variant) and r.experiment == experiment for r in rows)]
    header = ["Stage", "Probe", "Metric", "Value [95% CI]", "n"] + [label for _, label in controls]
    body = []
    for r in shown:
        stage = f"`{r.stage}` (reference)" if r.variant == "reference" else f"`{r.stage}`"
        body.append([stage, r.probe, r.metric, fmt_row(r), str(r.n) if r.n else ""]
                    + ["—" if r.variant == "reference" else
                       _control_cell(control_row(rows, r, c), r, control_row(rows, r, "control-task"))
                       if c == "selectivity" else _control_cell(control_row(rows, r, c)) for c, _ in controls])
    notes = _unavailable_notes(missing)
    if references:
        notes.append("rows marked (reference) score degraded copies of the input itself: what a value means")
    return Table(header, body, caption="; ".join(notes) + ("." if notes else ""))


def _control_cell(row: MetricRow | None, task: MetricRow | None = None,
                  control_task: MetricRow | None = None) -> str:
    """A dash where the control was not run for this row; n/a where it was run but has no value.
    Selectivity shows both sides it is the difference of (measured on the same test images)."""
    if row is None:
        return "—"
    if task is not None and control_task is not None and row.value is not None:
        if not higher_is_better(row.metric):  # selectivity is control − task there: positive is better
            return f"{fmt_row(row)} = {fmt(control_task.value)} − {fmt(task.value)}"
        return f"{fmt_row(row)} = {fmt(task.value)} − {fmt(control_task.value)}"
    return fmt_row(row)


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "█" * filled + " " * (BAR_WIDTH - filled)


def _retention_lines(title: str, per_stage: list[MetricRow], invert: bool = False,
                     reasons: Sequence[str] = ()) -> list[str]:
    detectable = [d for d in (unpaired_detectable(r) for r in per_stage) if d is not None and d >= 0.0005]
    lines = [title + (f" (stage differences ≥ {fmt(max(detectable))} detectable)" if detectable else "")]
    if not per_stage:
        why = f"unavailable: {'; '.join(reasons)}" if reasons else "not measured"
        return [*lines, f"  ({why})", ""]
    for row in per_stage:
        value = row.value or 0.0
        bar = _bar(1.0 - value if invert else value)
        lines.append(f"{fmt(row.value):>7} |{bar}| {row.stage} ({row.probe})")
    return [*lines, ""]


def retention_pattern(rows: Sequence[MetricRow], suite: Suite) -> str:
    """Text bars per information type and stage, like the seed's retention chart: each type's deciding
    probe on the data family its verdicts are judged on, its pixel ceiling, then its secondary probes."""
    lines: list[str] = ["Information retention by stage (bar = value on a 0–1 scale)", ""]
    for info in suite.information:
        experiments = suite.family_experiments(info.family)
        for metric in info.drawn:
            line = stage_line(rows, metric, info.probe, experiments)
            lower = not higher_is_better(metric)
            reasons = sorted({r.unavailable_reason for r in rows if r.metric == metric and r.probe == info.probe
                              and r.of_model and r.unavailable_reason})
            lines += _retention_lines(f"{info.label} ({metric}, {info.probe}"
                                      + ("; lower is better, bar = 1 − value" if lower else "") + "):",
                                      line, invert=lower, reasons=reasons)
            ceiling = stage_line(rows, metric, info.probe, experiments, variant="pixels")
            if ceiling:
                lines += _retention_lines(f"{info.label} ceiling (pixel baseline, {info.probe}, {metric}):",
                                          ceiling, invert=lower)
        for read in info.secondary:
            line = stage_line(rows, read.metric, read.probe, experiments)
            if line:
                lines += _retention_lines(f"{info.label}, secondary ({read.metric}, {read.probe}):", line,
                                          invert=not higher_is_better(read.metric))
    return "\n".join(lines).rstrip()


def _best_val_cell(verdict: Verdict) -> str:
    best = verdict.best_val
    if best is None:
        return "—"
    detectable = unpaired_detectable(best)
    shown = detectable is not None and fmt(detectable) != fmt(0.0)
    return f"`{best.stage}`: {fmt_row(best)}" + (f"; differences ≥ {fmt(detectable)} detectable" if shown else "")


def _short_reason(reason: str | None) -> str:
    """A table cell's reason: its first clause without file paths (the whole reason, with its fix, goes
    into the table's note)."""
    first = re.split(r";|\s\(", reason or "not measured", maxsplit=1)[0]
    return re.sub(r"\s+(?:at|in|under)\s+/\S+", "", first).strip()


def _key_results(analysis: Analysis) -> Table:
    key_rows, notes = [], []
    for verdict in analysis.verdicts.values():
        row = verdict.row
        achieved = (f"{fmt_row(row)} at `{row.stage}` ({row.probe})" if row is not None
                    else f"unavailable: {_short_reason(verdict.reason)}")
        if row is None and verdict.reason and _short_reason(verdict.reason) != verdict.reason:
            notes.append(f"{verdict.target.label} unavailable: {verdict.reason}.")
        key_rows.append([verdict.target.label, verdict.target.what, verdict.target.display, achieved,
                         f"**{verdict.display}**", _best_val_cell(verdict)])
    return Table(["Metric", "What it measures", "Target", "Achieved at the verdict stage", "Verdict",
                  "Best stage on val (its test value)"], key_rows,
                 caption="Achieved = the declared stage's test value with its bootstrap 95% CI; the verdict "
                         "reads only this. The last column names the stage whose validation score is best "
                         "and gives its test value (a guide to where to read features, never a verdict)."
                         + "".join(f" {note}" for note in notes))


def _top(doc: Document, results: Mapping[str, Any], rows: Sequence[MetricRow], analysis: Analysis,
         meta: RunMeta) -> None:
    """The answer first: the verdict line, which stage to read for what, the decay curves."""
    doc.add(Para(verdict_line(analysis)),
            Para(f"**Model:** `{meta.model}` ({weights_phrase(meta)}, protocol `{meta.protocol}`) · "
                 f"**Date:** {_date(results)} · "
                 f"**Status:** {str(results.get('status', MISSING)).replace('_', ' ')}"),
            Heading(2, "Which stage to read for what"),
            which_stage_table(rows, analysis, results.get("calibration")),
            *training_blocks(rows, analysis, meta.weights_random))
    references = sorted({r.stage for r in rows if r.variant == "reference"})
    if references:
        doc.add(Para("For scale, the detail experiment also scores degraded copies of the input ("
                     + ", ".join(f"`{s}`" for s in references) + "): see its table."))
    figures = artifact_paths(results)
    for path in (p for p in TOP_FIGURES if p in figures):
        doc.add(Figure(path, TOP_FIGURES[path]))


def _connector_para(rows: Sequence[MetricRow], analysis: Analysis, meta: RunMeta) -> list[Para]:
    """The question in this model's terms: which connector the decision pair is (the adapter's declared pair)."""
    decision = analysis.decision
    if decision.pre is None or decision.post is None or decision.post.stage not in CONNECTOR_KINDS:
        return []
    return [Para(f"In {meta.model} the connector is {connector_name(rows, decision.post.stage)} "
                 f"(`{decision.pre.stage}` → `{decision.post.stage}`): the decision reads location on both sides "
                 "of it.")]


def build_findings_document(results: Mapping[str, Any], rows: Sequence[MetricRow],
                            analysis: Analysis | None = None) -> Document:
    meta = RunMeta.from_results(results)
    analysis = analysis or analyse(rows, meta)
    suite = analysis.suite
    doc = Document().add(Heading(1, suite.title))
    if meta.weights_random:
        doc.add(Callout("warning", "Random weights.", RANDOM_WEIGHTS_WARNING.format(model=meta.model)))
    if meta.protocol == "seed":
        doc.add(Callout("warning", "Seed protocol (pooled probes).", SEED_PROTOCOL_WARNING))
    _top(doc, results, rows, analysis, meta)
    doc.add(Rule(), Heading(2, "The Question"), Para(suite.question), *_connector_para(rows, analysis, meta),
            Heading(2, "The Answer"), *[Para(p) for p in suite.answer(analysis.decision, rows)],
            *([Para(f"**Architecture or training?** {causes}")] if (causes := cause_notes(rows, analysis))
              else []),
            Heading(2, "Key Results"), _key_results(analysis))
    doc.add(Heading(3, f"Decision matrix: {analysis.decision.colour}"), Para(_decision_text(analysis)))
    matrix = [r for r in (analysis.decision.pre, analysis.decision.post, analysis.decision.drop,
                          analysis.decision.excess) if r is not None]
    if matrix:
        doc.add(Table(["Stage", "Probe", "Metric [95% CI]", "n", "Pixels",
                       "Minimum detectable difference (5 % level, 80 % power)"],
                      [[f"`{r.stage}`", f"{r.probe} · {r.metric}", fmt_row(r), str(r.n),
                        _control_cell(control_row(rows, r, "pixels")),
                        paired_detectable(r) if r is analysis.decision.drop or r is analysis.decision.excess
                        else detectable_phrase(unpaired_detectable(r), r.n)] for r in matrix]))
    _experiments(doc, rows, analysis)
    doc.add(Rule(), Heading(2, "Retention by stage"),
            Details("Text bars: each information type, stage by stage", [Pre(retention_pattern(rows, suite))]))
    _closing(doc, results, rows, analysis)
    return doc


def _experiments(doc: Document, rows: Sequence[MetricRow], analysis: Analysis) -> None:
    doc.add(Rule(), Heading(2, "Sub-experiment Summaries"))
    for experiment, state in analysis.experiment_status.items():
        heading = experiment_heading(experiment, analysis.suite)
        doc.add(Heading(3, heading), Para(f"**Status:** {state}. **Finding:** {analysis.findings[experiment]}"))
        table = experiment_table(rows, experiment, analysis.suite)
        if table.rows:
            doc.add(Details(f"{heading}: every stage ({len(table.rows)} rows)", [table]))
        elif table.caption:
            doc.add(Para(table.caption[0].upper() + table.caption[1:]))


def _precision_note(precision: str | None) -> str | None:
    """One line on what the gradient-trained probes computed in (`--probe-precision`; None: a run from before it)."""
    if precision == "bfloat16":
        return (f"**Probe precision:** {', '.join(mixed_precision_probes())} computed in bfloat16 (autocast: float32 "
                "weights, optimiser and losses), every other probe in float32; `--probe-precision float32` "
                "reproduces full precision.")
    return f"**Probe precision:** every probe computed in {precision} (full precision)." if precision else None


def _closing(doc: Document, results: Mapping[str, Any], rows: Sequence[MetricRow], analysis: Analysis) -> None:
    doc.add(Rule(), Heading(2, "Recommendations"),
            Para(f"**{analysis.advice.headline}** ({analysis.advice.recommendation})"),
            Para(analysis.advice.notes))
    causes = cause_notes(rows, analysis)
    if causes:
        doc.add(Para(f"**Architecture or training** (each cause stated only where its CI supports it): {causes}"))
    if analysis.advice.blockers or results.get("blockers"):
        doc.add(Para("**Blockers:**"), Bullets(list(dict.fromkeys(
            [*(results.get("blockers") or []), *analysis.advice.blockers]))))
    issues = list(dict.fromkeys([*(results.get("issues") or []), *analysis.issues]))
    if issues:
        doc.add(Para("**Issues:**"), Bullets(issues))
    if results.get("calibration"):
        doc.add(*calibration_blocks(results["calibration"]))
    described = {**VARIANT_DESCRIPTIONS, **CONTROL_DESCRIPTIONS}
    present = [c for c in described if any(c in (r.control, r.variant) for r in rows) and c != "none"]
    doc.add(Heading(2, "Controls and model variants"),
            Bullets([f"**{c}**: {described[c]}" for c in present] or ["No controls were run."]),
            *[Para(note) for note in analysis.suite.notes])
    lpips_trunk = (results.get("env") or {}).get("lpips_trunk") or {}
    if lpips_trunk.get("source") and any(r.metric == "lpips" and r.value is not None for r in rows):
        doc.add(Para(f"**LPIPS trunk:** {lpips_trunk['description']}."))
    precision = _precision_note((results.get("config") or {}).get("probe_precision"))
    if precision:
        doc.add(Para(precision))
    figures = artifact_paths(results)
    pngs = [p for p in figures if p.lower().endswith(".png") and p not in TOP_FIGURES]
    doc.add(Rule(), Heading(2, "Artifacts"),
            Bullets(["Detailed metrics: `results.yaml`, `metrics.csv`", "Self-contained page: `report.html`"]
                    + [f"`{p}`" for p in figures if not p.lower().endswith(".png")]))
    if pngs:
        doc.add(Details(f"Figures ({len(pngs)})", [Figure(p, _caption(p)) for p in pngs]))


def _caption(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " ")


def _decision_text(analysis: Analysis) -> str:
    decision = analysis.decision
    text = (f"One probe ({decision.probe}) decides both sides. GREEN: after > target (proceed); YELLOW: only "
            "before > target, the excess drop over the pixel pair's CI above 0 (investigate, take the earlier "
            "features); RED: before "
            "not above target (pivot only when the same probe clears the target on raw pixels at that grid). "
            f"This run: **{decision.colour}** — {decision.reason}.")
    if decision.colour != "UNAVAILABLE" and not decision.conclusive:
        text += " The 95% CIs do not settle the colour."
    if decision.ceiling_problem:
        text += f" {decision.ceiling_problem[0].upper()}{decision.ceiling_problem[1:]}."
    return text


def artifact_paths(results: Mapping[str, Any]) -> list[str]:
    experiments = (results.get("results") or {}).get("experiments") or {}
    paths = [*(results.get("artifacts") or [])]
    for entry in experiments.values():
        if isinstance(entry, dict):
            paths += entry.get("artifacts") or []
    return list(dict.fromkeys(str(p) for p in paths))


def render_findings(results: Mapping[str, Any], rows: Sequence[MetricRow]) -> str:
    """FINDINGS.md text from a results.yaml mapping and the metrics rows."""
    return to_markdown(build_findings_document(results, rows))
