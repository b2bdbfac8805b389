"""Q2's finding texts, one hook per experiment, written from the measured rows only."""

from __future__ import annotations

from collections.abc import Sequence

from stageprobe.report._paired import rows_beyond
from stageprobe.report.answer import connector_name
from stageprobe.report.fmt import fmt, fmt_row
from stageprobe.report.schema import MetricRow, sort_stages
from stageprobe.report.verdicts import Verdict, best_row, row_at
from stageprobe.suites._spec import FindingInput

POOLED = "pooled-linear"
#: the box probe the decision matrix did not use falls back to this one (the low-capacity floor)
FLOOR = "dense-linear"


def _box_probe(inputs: FindingInput) -> str:
    """The box probe that decides the decision matrix, so every finding speaks of one probe family."""
    return inputs.decision.probe or FLOOR


def _at(row: MetricRow | None, what: str) -> str:
    if row is not None and row.value is None and row.unavailable_reason:
        return f"{what}: unavailable"
    if row is None or row.value is None:
        return f"{what}: not measured"
    return f"{what} {fmt_row(row)} at {row.stage} ({row.probe})"


def _verdict_parts(keys: Sequence[str], inputs: FindingInput) -> list[str]:
    """Each target's value at its verdict stage against its target, or why it is unavailable."""
    parts = []
    for key in keys:
        verdict = inputs.verdicts.get(key)
        if verdict is None:
            continue
        if verdict.row is None:
            parts.append(f"{verdict.target.label} unavailable ({verdict.reason})")
        else:
            parts.append(_at(verdict.row, verdict.target.label)
                         + f", target {verdict.target.display}: {verdict.display}")
    return parts


def _connector(inputs: FindingInput) -> str:
    """The model's own connector in words (its declared pair, the measured token compression)."""
    return connector_name(inputs.all_rows, inputs.decision.post.stage if inputs.decision.post else None)


def pre_merge(inputs: FindingInput) -> str:
    decision = inputs.decision
    pre_stage = decision.pre.stage if decision.pre else "vision.pre_merge"
    pre = best_row(inputs.rows, "iou", stages=[pre_stage], probes=[_box_probe(inputs)])
    parts = [_at(pre, f"Bbox IoU before {_connector(inputs)}")]
    pooled = best_row(inputs.rows, "iou", stages=[pre_stage], probes=[POOLED])
    if pooled is not None:
        parts.append(f"the pooled-linear probe (seed protocol) gets {fmt_row(pooled)} on the same tokens")
    if decision.pre_ceiling is not None:
        parts.append(f"pixel baseline {fmt_row(decision.pre_ceiling)} ({decision.pre_ceiling.probe})")
    relation = best_row(inputs.rows, "relation_acc", stages=[pre_stage], probes=["relation"])
    if relation is not None:
        parts.append(_at(relation, "relative-position accuracy"))
    patch = best_row(inputs.rows, "patch_class_balanced_acc", stages=[pre_stage], probes=[_box_probe(inputs)])
    if patch is not None:
        parts.append(_at(patch, "per-patch class balanced accuracy"))
    return "; ".join(parts) + "."


def post_merge(inputs: FindingInput) -> str:
    decision = inputs.decision
    parts = [_at(decision.post, f"Bbox IoU after {_connector(inputs)}"), _at(decision.pre, "against")]
    if decision.drop is not None:
        parts.append(f"measured drop {fmt_row(decision.drop)} ({decision.drop.probe}, paired over test images)")
    pixel_drop = best_row(inputs.all_rows, "iou_drop", variant="pixels")
    if pixel_drop is not None:
        parts.append(f"the same probe's drop on raw pixels {fmt_row(pixel_drop)}")
    if decision.excess is not None:
        parts.append(f"excess drop beyond the pixel pair's {fmt_row(decision.excess)} (paired over the same images)")
    ratio = best_row(inputs.rows, "compression_ratio")
    width = best_row(inputs.rows, "width_ratio")
    if ratio is not None:
        parts.append(f"token compression {fmt(ratio.value)}× ({ratio.note})"
                     + (f", width ratio {fmt(width.value)} ({width.note})" if width is not None else ""))
    parts += _verdict_parts(("relation_acc",), inputs)
    if decision.post is not None:
        shuffled = row_at(inputs.all_rows, "iou", "relation", decision.post.stage,
                          [decision.post.experiment], control="token-shuffle")
        if shuffled is not None:
            parts.append(f"relation probe with tokens shuffled: {fmt_row(shuffled)}")
    return "; ".join(parts) + "."


def language_decay(inputs: FindingInput) -> str:
    layers = sort_stages({r.stage for r in inputs.rows if r.stage.startswith("language.") and r.metric == "iou"})
    probe = _box_probe(inputs)
    per_layer = [r for r in (best_row(inputs.rows, "iou", stages=[s], probes=[probe]) for s in layers) if r]
    if not per_layer:
        return "No LLM layer reported a bbox IoU."
    # the best layer is chosen on the validation split, like every other best stage; its test value is shown
    chosen = best_row(inputs.all_rows, "iou", stages=layers, probes=[probe], control="validation")
    best = next((r for r in per_layer if chosen is not None and r.stage == chosen.stage), None)
    parts = [_at(per_layer[0], "First LLM layer bbox IoU")]
    if best is not None and best is not per_layer[0]:
        parts.append(_at(best, "best layer on validation (its test value)"))
    if per_layer[-1] is not per_layer[0] and per_layer[-1] is not best:
        parts.append(_at(per_layer[-1], "last layer"))
    if inputs.decision.post is not None:
        parts.append(f"the output of {_connector(inputs)} it starts from has {fmt_row(inputs.decision.post)}")
    parts.append(_survival(per_layer, inputs.decision.target))
    return "; ".join(parts) + "."


def _survival(per_layer: list[MetricRow], threshold: float) -> str:
    """How far location stays above the target, with Holm's family-wise control over the layers scanned."""
    above = rows_beyond(per_layer, null=threshold, above=True)
    kept = next((i for i, is_above in enumerate(above) if not is_above), len(above))
    scanned = f"Holm's family-wise control over the {len(per_layer)} layers scanned"
    if kept == 0:
        return f"no layer from the first on is above the {threshold:g} target ({scanned})"
    return f"location stays above the {threshold:g} target through {per_layer[kept - 1].stage} ({scanned})"


def detection(inputs: FindingInput) -> str:
    parts = _verdict_parts(("map_50",), inputs)
    verdict = inputs.verdicts.get("map_50")
    if verdict is not None and verdict.row is not None:
        for metric, label in (("map_75", "mAP@0.75"), ("map", "mAP@[.5:.95]"), ("map_small", "mAP small")):
            row = row_at(inputs.rows, metric, verdict.row.probe, verdict.row.stage, [verdict.row.experiment])
            if row is not None and row.value is not None:
                parts.append(f"{label} {fmt_row(row)}")
    return "; ".join(parts) + "." if parts else "No stage reported mAP@0.5."


def _first_judged(inputs: FindingInput, keys: Sequence[str]) -> Verdict | None:
    """The first of these targets that was measured at its verdict stage (LPIPS may be unavailable)."""
    return next((v for v in (inputs.verdicts.get(k) for k in keys) if v is not None and v.row is not None), None)


def detail(inputs: FindingInput) -> str:
    parts = _verdict_parts(("lpips", "edge_f1", "irs"), inputs)
    parts.append("IRS combines the box IoU measured on the spatial data (shapes or --data spatial) with LPIPS and "
                 "edge F1 measured on the detail data (textures or --data detail), its CI resampling both test sets")
    verdict = _first_judged(inputs, ("lpips", "edge_f1"))
    if verdict is not None and verdict.row is not None:
        for metric, label in (("ssim", "SSIM"), ("gram_gabor", "Gram distance")):
            row = row_at(inputs.rows, metric, verdict.row.probe, verdict.row.stage, [verdict.row.experiment])
            if row is not None and row.value is not None:
                parts.append(f"{label} {fmt_row(row)}")
    return "; ".join(parts) + "."


def detail_photos(inputs: FindingInput) -> str:
    """Real photos are reported beside the detail targets (judged on E-Q2.5's procedural textures):
    each reconstruction metric at the stage and probe those targets are judged at."""
    verdict = _first_judged(inputs, ("lpips", "edge_f1"))
    if verdict is None or verdict.row is None:
        return "No stage reported reconstruction of real photos."
    experiment = [r.experiment for r in inputs.rows[:1]]
    found = {label: row_at(inputs.rows, metric, verdict.target.probe, verdict.row.stage, experiment)
             for metric, label in (("lpips", "LPIPS"), ("edge_f1", "edge F1"), ("ssim", "SSIM"), ("irs", "IRS"))}
    parts = [_at(row, label) for label, row in found.items() if row is not None]
    if not parts:
        return f"No reconstruction of real photos was measured at {verdict.row.stage}."
    return ("Real photos (test crops come only from photos no train crop comes from; the CI resamples source "
            "photos, not crops, so with few test photos it is wide): " + "; ".join(parts) + ".")


def _sources_caveat(rows: Sequence[MetricRow | None]) -> str:
    """The caveat for rows whose test clips come from a few source photos (their CIs resample them)."""
    clustered = [r for r in rows if r is not None and "independent sources" in r.note]
    if not clustered:
        return ""
    sources = next(part for part in clustered[0].note.split("; ") if part.startswith("n = "))
    return (f" Camera clips come from a few source photos ({sources}): the CIs resample photos, so they are "
            "wide, and a score says little beyond those photos.")


def motion(inputs: FindingInput) -> str:
    keys = ("direction_acc", "speed_acc", "order_acc")
    verdicts = [inputs.verdicts.get(k) for k in keys]
    return ("; ".join(_verdict_parts(keys, inputs)) + "."
            + _sources_caveat([v.row for v in verdicts if v is not None]))


def camera_motion(inputs: FindingInput) -> str:
    """Camera motion over real photos is reported beside the targets (they are judged on E-Q2.6's clips):
    each task's value at the stage the motion targets are judged at."""
    parts, found = [], []
    for key in ("direction_acc", "speed_acc", "order_acc"):
        verdict = inputs.verdicts.get(key)
        if verdict is None or verdict.row is None:
            continue
        row = row_at(inputs.rows, key, verdict.target.probe, verdict.row.stage, [r.experiment for r in inputs.rows[:1]])
        if row is not None:
            parts.append(_at(row, key.replace("_acc", " accuracy")))
            found.append(row)
    return ("Camera motion (a window panning and zooming across real photos): " + "; ".join(parts) + "."
            + _sources_caveat(found) if parts else "No stage reported camera-motion accuracy.")
