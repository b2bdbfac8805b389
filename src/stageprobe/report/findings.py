"""FINDINGS.md in the seed report's shape, written from the measured rows.

Every measured number is printed through `fmt` (three decimals) straight from a `MetricRow`;
counts are integers and targets keep their short form (0.7), so each printed measurement can
be traced to `metrics.csv`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stageprobe.report.analysis import Analysis, RunMeta, analyse, model_rows
from stageprobe.report.document import (
    Bullets,
    Callout,
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
    EXPERIMENT_TITLES,
    POOLED_PROBE,
    SPATIAL_PROBES,
    MetricRow,
    pixel_stage_for,
    sort_stages,
    stage_sort_key,
)
from stageprobe.report.targets import best_row

TITLE = "Q2: Information Preservation - Findings"
QUESTION = (
    "How much spatial, perceptual and temporal information survives at each stage of the VLM "
    "pipeline — patch embedding, ViT blocks, the 2x2 token merger, LLM layers? Where does it get "
    "lost, and where should features be extracted from?"
)
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

# The metrics each experiment's table shows; everything else is in metrics.csv.
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "e_q2_1": ("iou", "iou_gt_0.5", "iou_gt_0.7", "relation_acc", "patch_class_acc"),
    "e_q2_2": ("iou", "iou_gt_0.5", "iou_gt_0.7", "iou_drop", "compression_ratio", "relation_acc",
               "patch_class_acc"),
    "e_q2_3": ("iou",),
    "e_q2_4": ("map_50", "map_75", "map", "map_small", "best_match_iou"),
    "e_q2_5": ("lpips", "ssim", "psnr", "edge_f1", "gram_distance", "irs"),
    "e_q2_6": ("direction_acc", "speed_acc", "order_acc"),
}
CONTROL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pixels", "Pixels"), ("random-init", "Random-init"), ("control-task", "Control task"),
    ("selectivity", "Selectivity"), ("token-shuffle", "Token shuffle"),
)
BAR_WIDTH = 20


def weights_phrase(meta: RunMeta) -> str:
    if meta.model == "pixels":
        return "no weights: the raw-pixel baseline"
    return "random weights" if meta.weights_random else "trained weights"


def experiment_heading(experiment: str) -> str:
    number = experiment.rsplit("_", 1)[-1]
    return f"E-Q2.{number}: {EXPERIMENT_TITLES.get(experiment, experiment)}"


def _date(results: Mapping[str, Any]) -> str:
    moment = str(results.get("completed_at") or results.get("started_at") or "")
    # Date and minutes only: seconds with fractions would read like a measurement.
    return moment[:16].replace("T", " ") + " UTC" if len(moment) >= 16 else (moment or MISSING)


def control_row(rows: Sequence[MetricRow], main: MetricRow, control: str) -> MetricRow | None:
    """The control measurement beside `main`: same experiment, probe and metric, matching grid."""
    stages = [main.stage] + ([pixel_stage_for(main.stage)] if control == "pixels" else [])
    # The pixel baseline is one measurement per grid and probe, shared by the experiments that
    # read the same dataset, so it may come from a sibling experiment.
    same_experiment = (True, False) if control == "pixels" else (True,)
    for strict in same_experiment:
        for stage in stages:
            for row in rows:
                if (row.control == control and row.stage == stage and row.probe == main.probe
                        and row.metric == main.metric and (row.experiment == main.experiment or not strict)):
                    return row
    return None


def experiment_table(rows: Sequence[MetricRow], experiment: str,
                     metrics: Sequence[str] | None = None) -> Table:
    own = model_rows(rows, experiment)
    wanted = metrics or TABLE_METRICS.get(experiment) or tuple(dict.fromkeys(r.metric for r in own))
    shown = [r for r in own if r.metric in wanted]
    shown.sort(key=lambda r: (wanted.index(r.metric), r.probe, stage_sort_key(r.stage)))
    controls = [(c, label) for c, label in CONTROL_COLUMNS
                if any(r.control == c and r.experiment == experiment for r in rows)]
    header = ["Stage", "Probe", "Metric", "Value [95% CI]", "n"] + [label for _, label in controls]
    body = []
    for r in shown:
        value = fmt_row(r) if r.value is not None else f"unavailable: {r.unavailable_reason}"
        body.append([f"`{r.stage}`", r.probe, r.metric, value, str(r.n) if r.n else ""]
                    + [_control_cell(control_row(rows, r, c)) for c, _ in controls])
    return Table(header, body)


def _control_cell(row: MetricRow | None) -> str:
    """A dash where the control was not run for this row; n/a where it was run but has no value."""
    return "—" if row is None else fmt_row(row)


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "█" * filled + " " * (BAR_WIDTH - filled)


def _retention_lines(title: str, per_stage: list[MetricRow], invert: bool = False,
                     reasons: Sequence[str] = ()) -> list[str]:
    lines = [title]
    if not per_stage:
        why = f"unavailable: {'; '.join(reasons)}" if reasons else "not measured"
        return [*lines, f"  ({why})", ""]
    for row in per_stage:
        value = row.value or 0.0
        bar = _bar(1.0 - value if invert else value)
        lines.append(f"{fmt(row.value):>7} |{bar}| {row.stage} ({row.probe})")
    return [*lines, ""]


def _per_stage(rows: Sequence[MetricRow], metric: str, probes: Sequence[str] | None = None,
               higher_is_better: bool = True, control: str = "none") -> list[MetricRow]:
    stages = sort_stages({r.stage for r in rows if r.metric == metric and r.control == control})
    found = [best_row(rows, metric, higher_is_better, stages=[s], probes=probes, control=control)
             for s in stages]
    return [r for r in found if r is not None]


def retention_pattern(rows: Sequence[MetricRow]) -> str:
    """Text bars per information type and stage, like the seed's retention chart."""
    spatial_probes = list(SPATIAL_PROBES) if any(
        r.metric == "iou" and r.probe in SPATIAL_PROBES for r in rows) else [POOLED_PROBE]
    lines: list[str] = ["Information retention by stage (bar = value on a 0–1 scale)", ""]
    lines += _retention_lines(f"Spatial (bbox IoU, {' / '.join(spatial_probes)}):",
                              _per_stage(rows, "iou", spatial_probes))
    if spatial_probes != [POOLED_PROBE] and any(r.probe == POOLED_PROBE and r.metric == "iou" for r in rows):
        lines += _retention_lines("Spatial, seed protocol (bbox IoU, pooled-linear):",
                                  _per_stage(rows, "iou", [POOLED_PROBE]))
    pixels = _per_stage(rows, "iou", spatial_probes, control="pixels")
    if pixels:
        lines += _retention_lines("Spatial ceiling (pixel baseline, same probes):", pixels)
    lines += _retention_lines("Detection (mAP@0.5):", _per_stage(rows, "map_50"))
    lpips_reasons = sorted({r.unavailable_reason for r in rows
                            if r.metric == "lpips" and r.control == "none" and r.unavailable_reason})
    lines += _retention_lines("Perceptual (LPIPS, lower is better; bar = 1 − LPIPS):",
                              _per_stage(rows, "lpips", higher_is_better=False), invert=True,
                              reasons=lpips_reasons)
    lines += _retention_lines("Boundaries (edge F1):", _per_stage(rows, "edge_f1"))
    for metric, label in (("direction_acc", "direction"), ("speed_acc", "speed"), ("order_acc", "order")):
        lines += _retention_lines(f"Temporal ({label} accuracy):", _per_stage(rows, metric))
    return "\n".join(lines).rstrip()


def _answer(analysis: Analysis, rows: Sequence[MetricRow]) -> list[str]:
    decision, verdicts = analysis.decision, analysis.verdicts
    spatial = {"GREEN": "**Object location survives the 2x2 merger.**",
               "YELLOW": "**Object location is present before the merger but lost in it.**",
               "RED": "**Object location is already weak before the merger.**",
               "UNAVAILABLE": "**Where object location is lost could not be decided.**"}[decision.colour]
    if decision.grid_limited:
        spatial = ("**Object location is present before the merger; after it the probe falls below the "
                   "target — as it does on raw pixels at the same grid.**")
    paragraphs = [f"{spatial} {decision.reason[0].upper()}{decision.reason[1:]}."]
    if decision.pooled_only:
        paragraphs.append("These are pooled-probe numbers (seed protocol): they cannot show location.")
    perceptual = verdicts["lpips"]
    edge = verdicts["edge_f1"]
    paragraphs.append(
        "**Perceptual detail:** "
        + (f"best LPIPS {fmt_row(perceptual.row)} at `{perceptual.row.stage}` ({perceptual.display})"
           if perceptual.row else f"LPIPS unavailable ({perceptual.reason})")
        + "; "
        + (f"best edge F1 {fmt_row(edge.row)} at `{edge.row.stage}` ({edge.display})."
           if edge.row else f"edge F1 unavailable ({edge.reason}).")
    )
    temporal = [verdicts[k] for k in ("direction_acc", "speed_acc", "order_acc")]
    parts = [f"{v.target.label} {fmt_row(v.row)} at `{v.row.stage}` ({v.display})" if v.row
             else f"{v.target.label} unavailable" for v in temporal]
    paragraphs.append("**Motion:** " + "; ".join(parts) + ".")
    return paragraphs


def build_findings_document(results: Mapping[str, Any], rows: Sequence[MetricRow],
                            analysis: Analysis | None = None) -> Document:
    meta = RunMeta.from_results(results)
    analysis = analysis or analyse(rows, meta)
    doc = Document().add(Heading(1, TITLE))
    if meta.weights_random:
        doc.add(Callout("warning", "Random weights.", RANDOM_WEIGHTS_WARNING.format(model=meta.model)))
    if meta.protocol == "seed":
        doc.add(Callout("warning", "Seed protocol (pooled probes).", SEED_PROTOCOL_WARNING))
    doc.add(
        Para(f"**Status:** {str(results.get('status', MISSING)).replace('_', ' ').capitalize()}"),
        Para(f"**Date:** {_date(results)}"),
        Para(f"**Model:** `{meta.model}` ({weights_phrase(meta)}, protocol `{meta.protocol}`)"),
        Para(f"**Recommendation:** {analysis.advice.headline}"),
        Rule(), Heading(2, "The Question"), Para(QUESTION),
        Heading(2, "The Answer"), *[Para(p) for p in _answer(analysis, rows)],
        Rule(), Heading(2, "Key Results"),
    )
    key_rows = []
    for verdict in analysis.verdicts.values():
        row = verdict.row
        achieved = (f"{fmt_row(row)} at `{row.stage}` ({row.probe})" if row is not None
                    else f"unavailable: {verdict.reason}")
        key_rows.append([verdict.target.label, verdict.target.what, verdict.target.display, achieved,
                         f"**{verdict.display}**"])
    doc.add(Table(["Metric", "What it measures", "Target", "Achieved", "Verdict"], key_rows,
                  caption="Achieved = the best stage's value with its bootstrap 95% CI."))
    unavailable = len(analysis.verdicts) - analysis.measured
    doc.add(Para(f"**Overall: {analysis.passed}/{analysis.measured} measured criteria passed"
                 + (f", {unavailable} unavailable" if unavailable else "") + ".**"))
    doc.add(Heading(3, f"Decision matrix: {analysis.decision.colour}"), Para(_decision_text(analysis)))
    matrix = [r for r in (analysis.decision.pre, analysis.decision.post) if r is not None]
    if matrix:
        doc.add(Table(["Stage", "Probe", "Bbox IoU [95% CI]", "n", "Pixels"],
                      [[f"`{r.stage}`", r.probe, fmt_row(r), str(r.n),
                        _control_cell(control_row(rows, r, "pixels"))] for r in matrix]))
    doc.add(Rule(), Heading(2, "Sub-experiment Summaries"))
    for experiment, state in analysis.experiment_status.items():
        doc.add(Heading(3, experiment_heading(experiment)),
                Para(f"**Status:** {state}. **Finding:** {analysis.findings[experiment]}"))
        table = experiment_table(rows, experiment)
        if table.rows:
            doc.add(table)
    doc.add(Rule(), Heading(2, "Retention by stage"), Pre(retention_pattern(rows)))
    doc.add(Rule(), Heading(2, "Recommendations"),
            Para(f"**{analysis.advice.headline}** ({analysis.advice.recommendation})"),
            Para(analysis.advice.notes))
    if analysis.advice.blockers or results.get("blockers"):
        doc.add(Para("**Blockers:**"), Bullets(list(dict.fromkeys(
            [*(results.get("blockers") or []), *analysis.advice.blockers]))))
    issues = list(dict.fromkeys([*(results.get("issues") or []), *analysis.issues]))
    if issues:
        doc.add(Para("**Issues:**"), Bullets(issues))
    present = [c for c in CONTROL_DESCRIPTIONS if any(r.control == c for r in rows)]
    doc.add(Heading(2, "Controls"),
            Bullets([f"**{c}**: {CONTROL_DESCRIPTIONS[c]}" for c in present] or ["No controls were run."]))
    doc.add(Para(f"**Confidence:** {analysis.confidence}. {analysis.confidence_notes}"))
    figures = artifact_paths(results)
    pngs = [p for p in figures if p.lower().endswith(".png")]
    doc.add(Rule(), Heading(2, "Artifacts"),
            Bullets(["Detailed metrics: `results.yaml`, `metrics.csv`", "Self-contained page: `report.html`"]
                    + [f"`{p}`" for p in figures if p not in pngs]))
    for path in pngs:
        doc.add(Figure(path, path.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " ")))
    return doc


def _decision_text(analysis: Analysis) -> str:
    decision = analysis.decision
    text = (f"GREEN: post-merge IoU ≥ target (proceed); YELLOW: only pre-merge ≥ target (investigate, "
            f"take pre-merge features); RED: pre-merge below target (pivot). This run: "
            f"**{decision.colour}** — {decision.reason}.")
    if decision.colour != "UNAVAILABLE" and not decision.conclusive:
        text += " The 95% CI crosses the target, so the colour is not settled."
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
