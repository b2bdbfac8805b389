"""PNG plots for a run's `artifacts/`.

Figures are built with `matplotlib.figure.Figure` and saved through the Agg canvas directly, so
no pyplot state or global backend is touched (safe inside notebooks, threads and CI).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from stageprobe.report.fmt import fmt
from stageprobe.report.schema import POOLED_PROBE, SPATIAL_PROBES, MetricRow, pixel_stage_for, sort_stages
from stageprobe.report.targets import best_row
from stageprobe.suites import get_suite

ImageLike = np.ndarray | Image.Image

INK = "#1f2933"
PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2")
CONTROL_STYLE: dict[str, tuple[str, str]] = {
    "pixels": ("#6b7280", "pixel baseline"),
    "random-init": ("#b91c1c", "random-init twin"),
    "control-task": ("#7c3aed", "control task"),
}

# One panel per information type: (title, [(metric, label, probes, higher_is_better, target key)]).
INFO_TYPES: tuple[tuple[str, tuple[tuple[str, str, tuple[str, ...] | None, bool, str | None], ...]], ...] = (
    ("Spatial", (("iou", "bbox IoU (spatial probes)", SPATIAL_PROBES, True, "bbox_iou"),
                 ("iou", "bbox IoU (pooled, seed protocol)", (POOLED_PROBE,), True, None),
                 ("map_50", "mAP@0.5", None, True, "map_50"))),
    ("Perceptual", (("lpips", "LPIPS (lower is better)", None, False, "lpips"),
                    ("edge_f1", "edge F1", None, True, "edge_f1"),
                    ("ssim", "SSIM", None, True, None))),
    ("Temporal", (("direction_acc", "direction acc", None, True, "direction_acc"),
                  ("speed_acc", "speed acc", None, True, "speed_acc"),
                  ("order_acc", "order acc", None, True, "order_acc"))),
)

# Heatmap columns: (label, metric, probes, higher_is_better).
HEATMAP_COLUMNS: tuple[tuple[str, str, tuple[str, ...] | None, bool], ...] = (
    ("bbox IoU", "iou", SPATIAL_PROBES, True),
    ("IoU pooled", "iou", (POOLED_PROBE,), True),
    ("mAP@0.5", "map_50", None, True),
    ("1 − LPIPS", "lpips", None, False),
    ("edge F1", "edge_f1", None, True),
    ("direction", "direction_acc", None, True),
    ("speed", "speed_acc", None, True),
    ("order", "order_acc", None, True),
)


def _threshold(target_key: str, suite: str = "q2") -> float:
    return next(t.threshold for t in get_suite(suite).targets if t.key == target_key)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", facecolor="white")
    return path


def _as_array(image: ImageLike) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float32), 0.0, 1.0)
    return array


def _style(ax, title: str = "") -> None:  # type: ignore[no-untyped-def]
    ax.set_title(title, fontsize=10, color=INK, loc="left", fontweight="bold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8, colors=INK)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)


def _short(stage: str) -> str:
    return (stage.replace("vision.", "v.").replace("language.layer.", "L").replace("language.", "lang.")
            .replace("pixels.", "px."))


def plot_decay_curves(rows: Sequence[MetricRow], path: str | Path, title: str = "") -> Path:
    """Value per stage for each information type, with 95 % CI bands, targets and control lines.

    Pixel baseline: dashed horizontal line (the ceiling of the first probe family of a panel);
    random-init and control-task: dashed lines at the stages where they were measured.
    """
    stages = sort_stages({r.stage for r in rows if r.control == "none"})
    fig = Figure(figsize=(12, 5.6))
    axes = fig.subplots(1, len(INFO_TYPES))
    for ax, (panel, series) in zip(axes, INFO_TYPES, strict=True):
        _style(ax, panel)
        x_of = {s: i for i, s in enumerate(stages)}
        plotted = False
        for colour, (metric, label, probes, higher, target_key) in zip(PALETTE, series, strict=False):
            points = [best_row(rows, metric, higher, stages=[s], probes=probes) for s in stages]
            points_ok = [p for p in points if p is not None]
            if not points_ok:
                continue
            plotted = True
            xs = [x_of[p.stage] for p in points_ok]
            ax.plot(xs, [p.value for p in points_ok], marker="o", ms=3.5, lw=1.8, color=colour, label=label)
            with_ci = [p for p in points_ok if p.has_ci]
            if with_ci:
                ax.fill_between([x_of[p.stage] for p in with_ci], [p.ci_low for p in with_ci],
                                [p.ci_high for p in with_ci], color=colour, alpha=0.15, lw=0)
            if target_key:
                ax.axhline(_threshold(target_key), color=colour, lw=0.9, ls=":", alpha=0.8)
            for control in ("random-init", "control-task"):
                ctrl = [best_row(rows, metric, higher, stages=[s], probes=probes, control=control)
                        for s in stages]
                ctrl_ok = [c for c in ctrl if c is not None]
                if ctrl_ok:
                    ax.plot([x_of[c.stage] for c in ctrl_ok], [c.value for c in ctrl_ok], ls="--", lw=1.1,
                            color=CONTROL_STYLE[control][0], alpha=0.85,
                            label=f"{label}: {CONTROL_STYLE[control][1]}")
            ceiling = best_row(rows, metric, higher, probes=probes, control="pixels")
            if ceiling is not None and ceiling.value is not None:
                ax.axhline(ceiling.value, ls="--", lw=1.1, color=CONTROL_STYLE["pixels"][0],
                           label=f"{label}: pixel baseline ({fmt(ceiling.value)})")
        if not plotted:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes,
                    color="#6b7280")
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels([_short(s) for s in stages], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(-0.02, 1.05)
        if plotted:
            # Below the axes: inside, the legend hides the curves it explains.
            ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.34))
    fig.suptitle(title or "Information retention by stage (bands: 95% CI; dotted: target)", fontsize=11,
                 color=INK, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


#: (label, metric, probes) per line of the retention plot: each information type's primary probe
RETENTION_SERIES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("bbox IoU (spatial probes)", "iou", SPATIAL_PROBES), ("mAP@0.5", "map_50", None),
    ("edge F1", "edge_f1", None), ("SSIM", "ssim", None), ("direction acc", "direction_acc", None),
    ("speed acc", "speed_acc", None), ("order acc", "order_acc", None),
)


def _ceiling_of(rows: Sequence[MetricRow], row: MetricRow) -> MetricRow | None:
    """The same probe and metric on raw pixels at the grid of `row`'s stage."""
    grid = pixel_stage_for(row.stage)
    found = [r for r in rows if r.control == "pixels" and r.stage == grid and r.probe == row.probe
             and r.metric == row.metric and r.value]
    return next((r for r in found if r.experiment == row.experiment), found[0] if found else None)


def plot_retention_vs_pixels(rows: Sequence[MetricRow], path: str | Path, title: str = "") -> Path:
    """Each stage's value ÷ the same probe's value on raw pixels at the same grid (1 = all that the
    pixels give this probe); a stage without a pixel ceiling is left out of its line."""
    stages = sort_stages({r.stage for r in rows if r.control == "none" and not r.stage.startswith("pixels.")})
    fig = Figure(figsize=(9, 4.2))
    ax = fig.subplots()
    _style(ax, title or "Retention relative to the pixel ceiling (same probe, same grid)")
    x_of = {s: i for i, s in enumerate(stages)}
    plotted = False
    for colour, (label, metric, probes) in zip(itertools.cycle(PALETTE), RETENTION_SERIES, strict=False):
        points = []
        for stage in stages:
            row = best_row(rows, metric, stages=[stage], probes=probes)
            ceiling = _ceiling_of(rows, row) if row is not None else None
            if row is not None and ceiling is not None and ceiling.value:
                points.append((x_of[stage], row.value / ceiling.value))  # type: ignore[operator]
        if points:
            plotted = True
            ax.plot(*zip(*points, strict=True), marker="o", ms=3.5, lw=1.6, color=colour, label=label)
    ax.axhline(1.0, color=CONTROL_STYLE["pixels"][0], ls="--", lw=1.0, label="pixel ceiling")
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([_short(s) for s in stages], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("value ÷ pixel ceiling", fontsize=8)
    if not plotted:
        ax.text(0.5, 0.5, "no pixel ceiling measured", ha="center", va="center", transform=ax.transAxes,
                color="#6b7280")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def plot_stage_heatmap(rows: Sequence[MetricRow], path: str | Path, title: str = "") -> Path:
    """Stage × information type; colour = retention on 0–1 (LPIPS shown as 1 − LPIPS)."""
    stages = sort_stages({r.stage for r in rows if r.control == "none"})
    measured = [r for r in rows if r.control == "none" and r.value is not None]
    columns = [c for c in HEATMAP_COLUMNS
               if any(r.metric == c[1] and (c[2] is None or r.probe in c[2]) for r in measured)]
    grid = np.full((len(stages), max(len(columns), 1)), np.nan)
    labels = [["" for _ in range(grid.shape[1])] for _ in stages]
    for i, stage in enumerate(stages):
        for j, (_, metric, probes, higher) in enumerate(columns):
            row = best_row(rows, metric, higher, stages=[stage], probes=probes)
            if row is not None and row.value is not None:
                grid[i, j] = row.value if higher else 1.0 - row.value
                labels[i][j] = fmt(row.value)
    fig = Figure(figsize=(1.1 * max(len(columns), 1) + 2.4, 0.32 * len(stages) + 1.4))
    ax = fig.subplots()
    if not stages or not columns:
        ax.axis("off")
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", color="#6b7280")
        return _save(fig, path)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_facecolor("#f3f4f6")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c[0] for c in columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(stages)))
    ax.set_yticklabels(stages, fontsize=7.5)
    for i in range(len(stages)):
        for j in range(len(columns)):
            if labels[i][j]:
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=6.5,
                        color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="retention (0–1)")
    ax.set_title(title or "Stage × information type (cell text: measured value)", fontsize=10, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def _draw_boxes(ax, boxes: np.ndarray, colour: str, style: str = "-",  # type: ignore[no-untyped-def]
                labels: Sequence[str] | None = None) -> None:
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.8, ec=colour, ls=style))
        if labels is not None and k < len(labels):
            ax.text(x0, y0 - 2, labels[k], color="white", fontsize=6.5,
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 1})


def _box_legend(fig: Figure, entries: Sequence[tuple[str, str, str]]) -> None:
    """One legend for every panel: which box is which."""
    handles = [Line2D([], [], color=colour, ls=style, lw=1.8, label=label) for colour, style, label in entries]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def save_box_overlay(images: Sequence[ImageLike], gt_boxes: Sequence[np.ndarray],
                     pred_boxes: Sequence[np.ndarray], path: str | Path, title: str = "",
                     columns: int = 4) -> Path:
    """Ground-truth (green, solid) vs predicted (orange, dashed) boxes, xyxy in pixels, per image."""
    count = len(images)
    cols = max(1, min(columns, count))
    rows_n = max(1, -(-count // cols))
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows_n + 0.4))
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    for ax, image, gt, pred in zip(axes, images, gt_boxes, pred_boxes, strict=False):
        ax.imshow(_as_array(image))
        _draw_boxes(ax, gt, "#16a34a")
        _draw_boxes(ax, pred, "#ea580c", "--")
    for ax in axes:
        ax.axis("off")
    _box_legend(fig, [("#16a34a", "-", "ground truth"), ("#ea580c", "--", "predicted")])
    fig.suptitle(title or "Boxes: ground truth (green) vs predicted (orange, dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the legend below the panels
    return _save(fig, path)


def save_detection_overlay(images: Sequence[ImageLike], gt_boxes: Sequence[np.ndarray],
                           pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                           path: str | Path, score_threshold: float = 0.3, title: str = "",
                           columns: int = 4) -> Path:
    """Detections above `score_threshold` with their scores, over the ground truth."""
    count = len(images)
    cols = max(1, min(columns, count))
    rows_n = max(1, -(-count // cols))
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows_n + 0.4))
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    for ax, image, gt, pred, scores in zip(axes, images, gt_boxes, pred_boxes, pred_scores, strict=False):
        ax.imshow(_as_array(image))
        _draw_boxes(ax, gt, "#16a34a")
        scores = np.asarray(scores, dtype=float).reshape(-1)
        keep = scores >= score_threshold
        _draw_boxes(ax, np.asarray(pred, dtype=float).reshape(-1, 4)[keep], "#2563eb", "--",
                    [f"{s:.2f}" for s in scores[keep]])
    for ax in axes:
        ax.axis("off")
    _box_legend(fig, [("#16a34a", "-", "ground truth"), ("#2563eb", "--", f"detection (score ≥ {score_threshold:g})")])
    fig.suptitle(title or f"Detections with score ≥ {score_threshold:g} (blue) vs ground truth (green)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the legend below the panels
    return _save(fig, path)


def save_reconstruction_grid(originals: Sequence[ImageLike], reconstructions: Sequence[ImageLike],
                             path: str | Path, title: str = "") -> Path:
    """Two rows: originals on top, the decoder's reconstructions below."""
    count = max(1, len(originals))
    fig = Figure(figsize=(1.9 * count, 4.2))
    axes = np.atleast_2d(fig.subplots(2, count))
    if axes.shape[0] != 2:
        axes = axes.T
    for k in range(count):
        for r, source in enumerate((originals, reconstructions)):
            ax = axes[r, k]
            if k < len(source):
                ax.imshow(_as_array(source[k]))
            ax.axis("off")
    axes[0, 0].set_title("original", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    fig.suptitle(title or "Reconstructions from the token grid", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def motion_class_names(task: str, classes: int) -> list[str]:
    """Axis labels of a motion confusion matrix: the motion dataset's direction names, speed classes
    from slow to fast, natural / reversed order; class numbers where the count does not match."""
    from stageprobe.datasets.motion import DIRECTION_NAMES

    # the dataset's speed classes are its first k speed ranges, slowest first
    known = {"direction": list(DIRECTION_NAMES), "order": ["natural", "reversed"],
             "speed": ["slow", "medium", "fast"]}.get(task, [])
    return known[:classes] if classes <= len(known) else [str(c) for c in range(classes)]


def save_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path,
                          title: str = "") -> Path:
    """Rows = true class, columns = predicted; cells show counts, colour shows row-normalised rate."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    fig = Figure(figsize=(0.55 * len(labels) + 2.2, 0.5 * len(labels) + 1.6))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.55 else INK)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or "Confusion matrix", fontsize=10, loc="left")
    fig.tight_layout()
    return _save(fig, path)


@dataclass(frozen=True)
class Curve:
    """One fit's validation curve: against epochs (gradient probes) or the ridge penalty λ (closed form)."""

    stage: str
    x: Sequence[float]
    y: Sequence[float]
    x_label: str
    y_label: str


def _validation_curve(stage: str, series: Mapping[str, Sequence[float]]) -> Curve | None:
    """The fit's validation loss by epoch, else its first validation score with the setting it sweeps
    (`<head>.val_score` against `<head>.lambda`, `threshold.val_matched_iou` against `threshold`,
    `val_map_50` against `epoch`)."""
    if len(series.get("val_loss") or []):
        values = series["val_loss"]
        return Curve(stage, list(range(1, len(values) + 1)), values, "epoch", "val loss")
    for key, values in series.items():
        if "val_" not in key:
            continue
        head = key.split("val_", 1)[0]
        x_key = next((k for k in (f"{head}lambda", head.rstrip("."), "epoch") if k and k in series), None)
        if x_key is not None and len(series[x_key]) == len(values):
            label = "λ (ridge penalty)" if x_key.endswith("lambda") else x_key
            return Curve(stage, series[x_key], values, label, key.replace("val_", "val "))
    return None


def _curve_groups(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, list[Curve]]:
    """"<experiment>/<stage>/<probe>[/<task>]" curves grouped by experiment, probe and task, stages in
    pipeline order."""
    groups: dict[str, list[Curve]] = {}
    for name, series in curves.items():
        parts = name.split("/")
        group, stage = (f"{parts[0]} · {'/'.join(parts[2:])}", parts[1]) if len(parts) >= 3 else (name, name)
        curve = _validation_curve(stage, series)
        if curve is not None:
            groups.setdefault(group, []).append(curve)
    order = {s: i for i, s in enumerate(sort_stages({c.stage for lines in groups.values() for c in lines}))}
    return {g: sorted(lines, key=lambda c: order[c.stage]) for g, lines in sorted(groups.items())}


def _focus(ax, values: Sequence[float], lower_is_better: bool) -> None:  # type: ignore[no-untyped-def]
    """Show the good three quarters of the values: a badly regularised fit (a loss of 10⁷) would
    otherwise flatten every curve near the optimum into one line."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if finite.size < 2:
        return
    low, high = (finite.min(), np.percentile(finite, 75)) if lower_is_better else (np.percentile(finite, 25),
                                                                                    finite.max())
    pad = 0.08 * (high - low) or 0.05 * abs(high) or 0.05
    ax.set_ylim(low - pad, high + pad)


def save_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
                         title: str = "", columns: int = 4) -> Path:
    """Small multiples: one panel per experiment, probe and task, one validation curve per stage,
    coloured from early (light) to late (dark) stages — a few readable panels, not one per fit."""
    groups = _curve_groups(curves) or {"(no curves)": []}
    cols = max(1, min(columns, len(groups)))
    rows_n = -(-len(groups) // cols)
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows_n + 0.5))
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    cmap = matplotlib.colormaps["viridis_r"]
    for ax, (group, lines) in zip(axes, groups.items(), strict=False):
        _style(ax, group)
        for k, curve in enumerate(lines):
            shade = cmap(0.15 + 0.75 * k / max(len(lines) - 1, 1))
            # only the first and last stage are named: a legend of 20 stages hides the curves
            label = _short(curve.stage) if k in (0, len(lines) - 1) else None
            ax.plot(list(curve.x), list(curve.y), color=shade, lw=1.2, marker=".", ms=3, label=label)
        if lines:
            ax.set_xlabel(lines[0].x_label, fontsize=7)
            ax.set_ylabel(lines[0].y_label, fontsize=7)
            _focus(ax, [v for c in lines for v in c.y], lower_is_better="loss" in lines[0].y_label)
            if lines[0].x_label.startswith("λ"):
                ax.set_xscale("log")
            elif lines[0].x_label == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if lines:
            ax.legend(fontsize=6.5, frameon=False)
    for ax in axes[len(groups):]:
        ax.axis("off")
    fig.suptitle(title or "Probe validation curves (one line per stage; light = early, dark = late)",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)
