"""PNG plots for a run's `artifacts/`.

Figures are built with `matplotlib.figure.Figure` and saved through the Agg canvas directly, so
no pyplot state or global backend is touched (safe inside notebooks, threads and CI).
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from PIL import Image

from stageprobe.metrics._catalog import higher_is_better
from stageprobe.report.fmt import fmt
from stageprobe.report.schema import VARIANTS, MetricRow, sort_stages
from stageprobe.report.verdicts import pixel_ceiling, stage_line

if TYPE_CHECKING:
    from stageprobe.suites._spec import InformationType, Suite

ImageLike = np.ndarray | Image.Image

INK = "#1f2933"
PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2")
CONTROL_STYLE: dict[str, tuple[str, str]] = {
    "pixels": ("#6b7280", "pixel baseline"),
    "random-init": ("#b91c1c", "random-init twin"),
    "control-task": ("#7c3aed", "control task"),
    "chance": ("#a16207", "chance"),
    "token-shuffle": ("#0f766e", "token shuffle"),
}

DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    """Render once through Agg and write an RGB PNG. The figures are laid out before they are saved
    (`tight_layout` or fixed margins), so no `bbox_inches="tight"`: that draws the figure a second
    time to measure it. RGB at zlib level 3: a third less time than matplotlib's RGBA at level 6,
    a few per cent more bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(DPI)
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(path, format="png", compress_level=3)
    return path


def _style(ax, title: str = "") -> None:  # type: ignore[no-untyped-def]
    ax.set_title(title, fontsize=10, color=INK, loc="left", fontweight="bold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8, colors=INK)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)


def _short(stage: str) -> str:
    return (stage.replace("vision.", "v.").replace("language.layer.", "L").replace("language.", "lang.")
            .replace("pixels.", "px."))


def _x_labels(ax, stages: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([_short(s) for s in stages], rotation=60, ha="right", fontsize=7)


def _deciding_lines(rows: Sequence[MetricRow], suite: Suite, info: InformationType
                    ) -> dict[str, list[MetricRow]]:
    """metric → the deciding probe's line on the row's own data family."""
    experiments = suite.family_experiments(info.family)
    return {metric: stage_line(rows, metric, info.probe, experiments) for metric in info.drawn}


def _ceiling_steps(rows: Sequence[MetricRow], line: Sequence[MetricRow], experiments: Sequence[str]
                   ) -> list[MetricRow | None]:
    """The pixel ceiling at each stage's own grid (14 px before the merge, 28 px after)."""
    return [pixel_ceiling(rows, r, experiments) for r in line]


def _draw_info_panel(ax, rows: Sequence[MetricRow], suite: Suite,  # type: ignore[no-untyped-def]
                     info: InformationType) -> bool:
    """The deciding probe's line per metric with its CI band, its pixel ceiling as a step line at each
    stage's grid, its control rows, its targets; secondary probes thin and labelled as such."""
    experiments = suite.family_experiments(info.family)
    lines = _deciding_lines(rows, suite, info)
    controls = {(metric, c): stage_line(rows, metric, info.probe, experiments,
                                        **({"variant": c} if c in VARIANTS else {"control": c}))
                for metric in info.drawn for c in CONTROL_STYLE if c != "pixels"}
    secondary = {read: stage_line(rows, read.metric, read.probe, experiments)
                 for read in info.secondary if read.metric in info.drawn}
    stages = sort_stages({r.stage for group in (lines, controls, secondary) for line in group.values() for r in line})
    x_of = {s: i for i, s in enumerate(stages)}
    for colour, (metric, line) in zip(PALETTE, lines.items(), strict=False):
        if not line:
            continue
        xs = [x_of[r.stage] for r in line]
        ax.plot(xs, [r.value for r in line], marker="o", ms=3.5, lw=1.8, color=colour, label=f"{info.probe} · {metric}")
        with_ci = [r for r in line if r.has_ci]
        if with_ci:
            ax.fill_between([x_of[r.stage] for r in with_ci], [r.ci_low for r in with_ci],
                            [r.ci_high for r in with_ci], color=colour, alpha=0.15, lw=0)
        steps = [(x, c.value) for x, c in zip(xs, _ceiling_steps(rows, line, experiments), strict=True) if c]
        if steps:
            ax.step(*zip(*steps, strict=True), where="mid", ls="--", lw=1.1, color=CONTROL_STYLE["pixels"][0],
                    label=f"{metric}: pixel ceiling at each stage's grid")
        for target in info.targets:
            if target.metric == metric and target.probe in ("", info.probe):
                ax.axhline(target.threshold, color=colour, lw=0.9, ls=":", alpha=0.8)
        for control in CONTROL_STYLE:
            ctrl = controls.get((metric, control)) or []
            if ctrl:
                ax.plot([x_of[c.stage] for c in ctrl], [c.value for c in ctrl], ls="--", lw=1.1, marker=".",
                        color=CONTROL_STYLE[control][0], alpha=0.85, label=f"{metric}: {CONTROL_STYLE[control][1]}")
    for read, line in secondary.items():
        if line:
            ax.plot([x_of[r.stage] for r in line], [r.value for r in line], lw=0.9, ls="-.", alpha=0.7,
                    color="#9ca3af", label=f"secondary: {read.probe} · {read.metric}")
    _x_labels(ax, stages)
    return any(lines.values())


def plot_decay_curves(rows: Sequence[MetricRow], suite: Suite, path: str | Path, title: str = "") -> Path:
    """One panel per information type of the suite: its deciding probe at every stage (95 % CI band),
    its pixel ceiling at each stage's grid, its controls (dashed) and targets (dotted)."""
    fig = Figure(figsize=(4 * max(len(suite.information), 1), 5.6))
    axes = np.atleast_1d(fig.subplots(1, max(len(suite.information), 1)))
    for ax, info in zip(axes, suite.information, strict=False):
        _style(ax, f"{info.label} ({info.probe})")
        if _draw_info_panel(ax, rows, suite, info):
            # Below the axes: inside, the legend hides the curves it explains.
            ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.34))
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="#6b7280")
        ax.set_ylim(-0.02, 1.05)
    fig.suptitle(title or "Deciding probe by stage (bands: 95% CI; dotted: target; dashed: controls)", fontsize=11,
                 color=INK, x=0.01, ha="left")
    fig.tight_layout()
    return _save(fig, path)


def plot_retention_vs_pixels(rows: Sequence[MetricRow], suite: Suite, path: str | Path, title: str = "") -> Path:
    """Each stage's value of the deciding probe ÷ the same probe's value on raw pixels at the same grid
    (1 = all that the pixels give this probe), higher-is-better metrics; a stage without a pixel ceiling
    is left out of its line."""
    series = []
    for info in suite.information:
        experiments = suite.family_experiments(info.family)
        for metric, line in _deciding_lines(rows, suite, info).items():
            if higher_is_better(metric):
                points = [(r.stage, r.value / c.value) for r, c in  # type: ignore[operator]
                          zip(line, _ceiling_steps(rows, line, experiments), strict=True)
                          if c is not None and c.value and not r.stage.startswith("pixels.")]
                series.append((f"{info.label}: {metric} ({info.probe})", points))
    stages = sort_stages({stage for _, points in series for stage, _ in points})
    x_of = {s: i for i, s in enumerate(stages)}
    fig = Figure(figsize=(9, 4.2))
    ax = fig.subplots()
    _style(ax, title or "Retention relative to the pixel ceiling (deciding probe, same grid)")
    for colour, (label, points) in zip(itertools.cycle(PALETTE), series, strict=False):
        if points:
            ax.plot([x_of[s] for s, _ in points], [v for _, v in points], marker="o", ms=3.5, lw=1.6, color=colour,
                    label=label)
    ax.axhline(1.0, color=CONTROL_STYLE["pixels"][0], ls="--", lw=1.0, label="pixel ceiling")
    _x_labels(ax, stages)
    ax.set_ylabel("value ÷ pixel ceiling", fontsize=8)
    if not any(points for _, points in series):
        ax.text(0.5, 0.5, "no pixel ceiling measured", ha="center", va="center", transform=ax.transAxes,
                color="#6b7280")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def plot_stage_heatmap(rows: Sequence[MetricRow], suite: Suite, path: str | Path, title: str = "") -> Path:
    """Stage × (information type, metric) of each deciding probe; colour = value on 0–1 (a
    lower-is-better metric shown as 1 − value)."""
    columns = [(f"{info.label}: {metric}", {r.stage: r for r in line}, higher_is_better(metric))
               for info in suite.information for metric, line in _deciding_lines(rows, suite, info).items() if line]
    stages = sort_stages({stage for _, line, _ in columns for stage in line})
    grid = np.full((len(stages), max(len(columns), 1)), np.nan)
    for i, stage in enumerate(stages):
        for j, (_, line, higher) in enumerate(columns):
            if stage in line:
                value = float(line[stage].value)  # type: ignore[arg-type]
                grid[i, j] = value if higher else 1.0 - value
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
    for i, stage in enumerate(stages):
        for j, (_, line, _) in enumerate(columns):
            if stage in line:
                ax.text(j, i, fmt(line[stage].value), ha="center", va="center", fontsize=6.5,
                        color="white" if grid[i, j] < 0.6 else "black")
    # inset (inside the axes' extent, so tight_layout keeps its labels on the figure), about 0.2 inch wide
    # whatever the column count (the axes are ~1.1 inch a column)
    fig.colorbar(image, cax=ax.inset_axes((1.02, 0.0, 0.2 / max(len(columns), 1), 1.0)),
                 label="value (0–1; distances as 1 − value)")
    ax.set_title(title or "Stage × information type, deciding probes (cell text: measured value)", fontsize=10,
                 loc="left")
    fig.tight_layout()
    return _save(fig, path)


# Image grids: one canvas, not an axes per image. Each image is resized once (PIL) to the size it is
# shown at and pasted into one array drawn pixel for pixel, so matplotlib neither builds an axes nor
# resamples a large image per panel.
TILE_PX = 256  # the longest side an image of a grid is shown at (the old 2.6-inch panels at 110 dpi)
GAP_PX = 10
TITLE_PX, LEGEND_PX, MARGIN_PX = 34, 28, 8
MIN_WIDTH_PX = 560  # room for a one-line legend and a two-line title


def _as_rgb8(image: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8; float arrays are read as 0–1 and clipped, grey arrays repeated to RGB."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return array[..., :3]


def _shown(image: np.ndarray, tile: int) -> np.ndarray:
    """The image at the size it is shown, `tile` px on its longest side (as an axes panel stretched it):
    area-averaged down; up, nearest-pixel from 3× (pixels stay visible) and bilinear below, as
    matplotlib's default interpolation does."""
    side = max(image.shape[:2])
    if side == tile:
        return image
    size = (max(1, round(image.shape[1] * tile / side)), max(1, round(image.shape[0] * tile / side)))
    method = (Image.Resampling.BOX if side > tile else
              Image.Resampling.NEAREST if tile >= 3 * side else Image.Resampling.BILINEAR)
    return np.asarray(Image.fromarray(image).resize(size, method))


@dataclass(frozen=True)
class Mosaic:
    """Images on one canvas: image k covers `extents[k]` = (left, top, width, height) in canvas px, at
    `scales[k]` canvas px per image px."""

    canvas: np.ndarray
    extents: list[tuple[int, int, int, int]]
    scales: list[float]


def mosaic(images: Sequence[ImageLike | None], columns: int, tile: int = TILE_PX,
           row_gap: int = GAP_PX) -> Mosaic:
    """`images` row by row, `columns` to a row, each centred in its cell; None leaves a cell empty."""
    arrays = [None if image is None else _as_rgb8(image) for image in images]
    shown = [None if array is None else _shown(array, tile) for array in arrays]
    cell = max([max(s.shape[:2]) for s in shown if s is not None], default=1)
    rows_n = max(1, -(-len(images) // columns))
    canvas = np.full((rows_n * cell + (rows_n - 1) * row_gap, columns * cell + (columns - 1) * GAP_PX, 3),
                     255, dtype=np.uint8)
    extents, scales = [], []
    for k, (array, small) in enumerate(zip(arrays, shown, strict=True)):
        height, width = small.shape[:2] if small is not None else (cell, cell)
        row, column = divmod(k, columns)
        top = row * (cell + row_gap) + (cell - height) // 2
        left = column * (cell + GAP_PX) + (cell - width) // 2
        if small is not None:
            canvas[top:top + height, left:left + width] = small
        extents.append((left, top, width, height))
        scales.append(width / array.shape[1] if array is not None else 1.0)
    return Mosaic(canvas, extents, scales)


class _Pixels(Artist):
    """An RGB array drawn 1:1 with its bottom-left corner at figure pixel (x, y): no resampling, which
    `imshow` does even at 1:1."""

    def __init__(self, rgb: np.ndarray, x: int, y: int) -> None:
        super().__init__()
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        self.rgba = np.ascontiguousarray(np.concatenate([rgb, alpha], axis=2)[::-1])  # Agg fills bottom-up
        self.x, self.y = x, y

    def draw(self, renderer: RendererBase) -> None:
        gc = renderer.new_gc()
        renderer.draw_image(gc, self.x, self.y, self.rgba)
        gc.restore()


def _mosaic_figure(grid: Mosaic, title: str, top_px: int = TITLE_PX, legend: bool = False) -> tuple[Figure, Axes]:
    """A figure of the canvas's size (at least `MIN_WIDTH_PX` wide, the canvas centred) plus a title band
    (and a legend band below): the canvas drawn pixel for pixel, under an invisible axes whose data
    coordinates are the canvas's pixels (for the boxes)."""
    height, width = grid.canvas.shape[:2]
    below = LEGEND_PX if legend else MARGIN_PX
    fig_w = max(width + 2 * MARGIN_PX, MIN_WIDTH_PX)
    # 10 pt at 110 dpi: about 8.5 px a character and 16 px a line; a narrow grid's title wraps
    title = textwrap.fill(title, width=int(fig_w / 8.5))
    fig_h = height + top_px + 16 * title.count("\n") + below
    left = (fig_w - width) // 2
    # half a pixel more: Agg truncates the figure's size in pixels
    fig = Figure(figsize=((fig_w + 0.5) / DPI, (fig_h + 0.5) / DPI), dpi=DPI)
    fig.add_artist(_Pixels(grid.canvas, left, below))
    ax = fig.add_axes((left / fig.bbox.width, below / fig.bbox.height, width / fig.bbox.width,
                       height / fig.bbox.height))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=1 - 8 / fig_h, va="top")
    return fig, ax


def _draw_boxes(ax: Axes, grid: Mosaic, k: int, boxes: np.ndarray, colour: str, style: str = "-",
                labels: Sequence[str] | None = None) -> None:
    """Image k's xyxy boxes (image px) on the canvas, clipped to the image as its own panel clipped them."""
    left, top, width, height = grid.extents[k]
    image_area = Rectangle((left, top), width, height, transform=ax.transData)
    for j, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4) * grid.scales[k]):
        patch = Rectangle((left + x0, top + y0), x1 - x0, y1 - y0, fill=False, lw=1.8, ec=colour, ls=style)
        ax.add_patch(patch)
        patch.set_clip_path(image_area)
        if labels is not None and j < len(labels):
            ax.text(left + x0, top + y0 - 2, labels[j], color="white", fontsize=6.5,
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 1})


def _box_legend(fig: Figure, entries: Sequence[tuple[str, str, str]]) -> None:
    """One legend for every panel: which box is which."""
    handles = [Line2D([], [], color=colour, ls=style, lw=1.8, label=label) for colour, style, label in entries]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def save_box_overlay(images: Sequence[ImageLike], gt_boxes: Sequence[np.ndarray],
                     pred_boxes: Sequence[np.ndarray], path: str | Path, title: str = "",
                     columns: int = 4) -> Path:
    """Ground-truth (green, solid) vs predicted (orange, dashed) boxes, xyxy in pixels, per image."""
    grid = mosaic(images, max(1, min(columns, len(images))))
    fig, ax = _mosaic_figure(grid, title or "Boxes: ground truth (green) vs predicted (orange, dashed)",
                             legend=True)
    for k, (gt, pred) in enumerate(zip(gt_boxes, pred_boxes, strict=False)):
        _draw_boxes(ax, grid, k, gt, "#16a34a")
        _draw_boxes(ax, grid, k, pred, "#ea580c", "--")
    _box_legend(fig, [("#16a34a", "-", "ground truth"), ("#ea580c", "--", "predicted")])
    return _save(fig, path)


def save_detection_overlay(images: Sequence[ImageLike], gt_boxes: Sequence[np.ndarray],
                           pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                           path: str | Path, score_threshold: float = 0.3, title: str = "",
                           columns: int = 4) -> Path:
    """Detections above `score_threshold` with their scores, over the ground truth."""
    grid = mosaic(images, max(1, min(columns, len(images))))
    fig, ax = _mosaic_figure(grid, title or f"Detections with score ≥ {score_threshold:g} (blue) vs ground truth "
                             "(green)", legend=True)
    for k, (gt, pred, scores) in enumerate(zip(gt_boxes, pred_boxes, pred_scores, strict=False)):
        _draw_boxes(ax, grid, k, gt, "#16a34a")
        scores = np.asarray(scores, dtype=float).reshape(-1)
        keep = scores >= score_threshold
        _draw_boxes(ax, grid, k, np.asarray(pred, dtype=float).reshape(-1, 4)[keep], "#2563eb", "--",
                    [f"{s:.2f}" for s in scores[keep]])
    _box_legend(fig, [("#16a34a", "-", "ground truth"), ("#2563eb", "--", f"detection (score ≥ {score_threshold:g})")])
    return _save(fig, path)


RECONSTRUCTION_TILE_PX = 192  # the old 1.9-inch panels at 110 dpi
ROW_LABEL_PX = 16


def save_reconstruction_grid(originals: Sequence[ImageLike], reconstructions: Sequence[ImageLike],
                             path: str | Path, title: str = "") -> Path:
    """Two rows: originals on top, the decoder's reconstructions below, each row named above it."""
    count = max(1, len(originals))
    cells = [*originals, *[None] * (count - len(originals)),
             *reconstructions[:count], *[None] * (count - len(reconstructions[:count]))]
    grid = mosaic(cells, count, RECONSTRUCTION_TILE_PX, row_gap=GAP_PX + ROW_LABEL_PX)
    fig, ax = _mosaic_figure(grid, title or "Reconstructions from the token grid", top_px=TITLE_PX + ROW_LABEL_PX)
    for row, label in enumerate(("original", "reconstruction")):
        left, top, _, _ = grid.extents[row * count]
        ax.text(left, top - 4, label, fontsize=8, va="bottom", ha="left", color=INK)
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
    # an inset colour bar is part of the axes' extent, so tight_layout keeps its labels on the figure
    bar = fig.colorbar(image, cax=ax.inset_axes((1.04, 0.0, 0.05, 1.0)), ticks=[0.0, 0.5, 1.0])
    bar.set_label("rate in its row", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    # wrapped to the figure's width (10 pt text: at most ~10 characters an inch): a small matrix's
    # figure is narrower than its title, and the figure is saved at its own size
    fig.suptitle(textwrap.fill(title or "Confusion matrix", width=int(10 * fig.get_figwidth())), fontsize=10,
                 x=0.02, ha="left")
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


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _position: int) -> str:
    """10⁻⁶ as plain text: matplotlib's default log labels are mathtext, parsed per label and figure."""
    return "10" + str(round(np.log10(value))).translate(_SUPERSCRIPT) if value > 0 else ""


def _log_x(ax: Axes) -> None:  # the λ path is a grid of powers of ten: major ticks are all it needs
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    ax.xaxis.set_minor_locator(NullLocator())


def save_training_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
                         title: str = "", columns: int = 4) -> Path:
    """Small multiples: one panel per experiment, probe and task, one validation curve per stage,
    coloured from early (light) to late (dark) stages — a few readable panels, not one per fit."""
    return _save(training_curves_figure(curves, title, columns), path)


def training_curves_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "",
                           columns: int = 4) -> Figure:
    """`save_training_curves`'s figure, laid out, not yet drawn."""
    groups = _curve_groups(curves) or {"(no curves)": []}
    cols = max(1, min(columns, len(groups)))
    rows_n = -(-len(groups) // cols)
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows_n + 0.5))
    cmap = matplotlib.colormaps["viridis_r"]
    for index, (group, lines) in enumerate(groups.items(), start=1):
        ax = fig.add_subplot(rows_n, cols, index)  # no axes for the grid's empty cells
        _style(ax, group)
        # five y ticks are plenty on a 2.5-inch panel, and each tick label is laid out twice per figure
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
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
                _log_x(ax)
            elif lines[0].x_label == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.legend(fontsize=6.5, frameon=False)
    fig.suptitle(title or "Probe validation curves (one line per stage; light = early, dark = late)",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig
