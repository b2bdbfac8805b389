"""Plot helpers write real PNGs from arrays / PIL images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import synthetic_rows
from PIL import Image

from stageprobe.datasets import Sample
from stageprobe.metrics.detection import Detections
from stageprobe.probes import ProbeResult
from stageprobe.report import plots
from stageprobe.report.verdicts import pixel_ceiling
from stageprobe.suites._artifacts import BestFit, draw_best_fits, draw_training_curves
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import SUITE


def assert_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_summary_plots(tmp_path: Path) -> None:
    rows = synthetic_rows()
    assert assert_png(plots.plot_decay_curves(rows, SUITE, tmp_path / "a" / "decay.png"))[0] > 600
    assert assert_png(plots.plot_stage_heatmap(rows, SUITE, tmp_path / "heat.png"))[1] > 200


def test_summary_plots_with_nothing_measured(tmp_path: Path) -> None:
    assert_png(plots.plot_decay_curves([], SUITE, tmp_path / "decay.png"))
    assert_png(plots.plot_stage_heatmap([], SUITE, tmp_path / "heat.png"))


def test_image_helpers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [
        rng.random((64, 64, 3)),
        Image.new("RGB", (64, 64), "white"),
        (rng.random((64, 64, 3)) * 255).astype(np.uint8),
    ]
    boxes = [np.array([[4, 4, 30, 30]]), np.array([[10, 10, 50, 40], [1, 1, 5, 5]]), np.zeros((0, 4))]
    assert_png(plots.save_box_overlay(images, boxes, [b + 2 for b in boxes], tmp_path / "boxes.png"))
    scores = [np.array([0.9]), np.array([0.2, 0.8]), np.zeros(0)]
    assert_png(plots.save_detection_overlay(images, boxes, boxes, scores, tmp_path / "det.png"))
    assert_png(plots.save_reconstruction_grid(images, images[::-1], tmp_path / "recon.png"))
    assert_png(plots.save_reconstruction_grid(images[:1], images[:1], tmp_path / "recon1.png"))
    labels = ["left", "right", "up", "down"]
    assert_png(plots.save_confusion_matrix(rng.integers(0, 20, (4, 4)), labels, tmp_path / "cm.png"))
    assert_png(
        plots.save_training_curves(
            {"a": {"train_loss": [1, 0.5], "val_loss": [1.2, 0.7]}, "b": {"loss": [3, 2, 1]}},
            tmp_path / "curves.png",
        )
    )


def test_motion_confusion_labels_are_the_datasets_names() -> None:
    from stageprobe.datasets.motion import DIRECTION_NAMES

    assert plots.motion_class_names("direction", 8) == DIRECTION_NAMES
    assert plots.motion_class_names("direction", 8)[2] == "up"
    assert plots.motion_class_names("order", 2) == ["natural", "reversed"]
    assert plots.motion_class_names("speed", 2) == ["slow", "medium"]
    assert plots.motion_class_names("direction", 9) == [str(c) for c in range(9)]


def test_retention_plot_needs_a_pixel_ceiling(tmp_path: Path) -> None:
    from conftest import row

    with_ceiling = [row("e_q2_1", "vision.block.0", BOX, "iou", 0.45),
                    row("e_q2_1", "pixels.patch", BOX, "iou", 0.9, control="pixels")]
    path = plots.plot_retention_vs_pixels(with_ceiling, SUITE, tmp_path / "r.png")
    assert path.is_file() and path.stat().st_size > 5000
    assert pixel_ceiling(with_ceiling, with_ceiling[0]) is with_ceiling[1]
    assert pixel_ceiling(with_ceiling[:1], with_ceiling[0]) is None


def test_training_curves_are_one_panel_per_experiment_probe_and_task() -> None:
    curves = {
        "e_q2_1/vision.block.1/dense-linear/boxes": {"class.lambda": [0.1, 1.0], "class.val_score": [0.8, 0.9]},
        "e_q2_1/vision.block.0/dense-linear/boxes": {"class.lambda": [0.1, 1.0], "class.val_score": [0.7, 0.6]},
        "e_q2_4/vision.post_merge/attention/boxes": {"epoch": [4, 9], "train_loss": [3.6, 2.7],
                                                     "val_map_50": [0.08, 0.12]},
        "e_q2_5/vision.block.0/decoder/reconstruction": {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6]},
    }
    groups = plots._curve_groups(curves)
    assert list(groups) == ["e_q2_1 · dense-linear/boxes", "e_q2_4 · attention/boxes",
                            "e_q2_5 · decoder/reconstruction"]
    blocks = groups["e_q2_1 · dense-linear/boxes"]
    assert [c.stage for c in blocks] == ["vision.block.0", "vision.block.1"]  # pipeline order
    assert blocks[0].x_label.startswith("λ") and list(blocks[0].y) == [0.7, 0.6]
    detection = groups["e_q2_4 · attention/boxes"][0]
    assert (detection.x_label, list(detection.x), list(detection.y)) == ("epoch", [4, 9], [0.08, 0.12])
    decoder = groups["e_q2_5 · decoder/reconstruction"][0]
    assert (decoder.y_label, list(decoder.x)) == ("val loss", [1, 2])


def _png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def test_boxes_land_on_their_objects_in_every_panel(tmp_path: Path) -> None:
    """Known answer: a magenta square per image, its ground-truth box drawn exactly around it. In the PNG
    each panel's green outline must enclose that panel's square within the line width — whatever the
    panels' resize and placement on the shared canvas."""
    squares = [(100, 60, 220, 180), (300, 280, 420, 400)]  # xyxy in a 448-px image
    images = []
    for x0, y0, x1, y1 in squares:
        image = np.full((448, 448, 3), 255, dtype=np.uint8)
        image[y0:y1, x0:x1] = (255, 0, 255)
        images.append(image)
    path = plots.save_box_overlay(images, [np.array([s]) for s in squares], [np.zeros((0, 4))] * 2,
                                  tmp_path / "boxes.png", columns=2)
    pixels = _png_pixels(path)[: -plots.LEGEND_PX]  # the legend's green sample line lies below
    magenta = (abs(pixels - (255, 0, 255)) < 40).all(axis=2)
    green = (abs(pixels - (0x16, 0xA3, 0x4A)) < 40).all(axis=2)
    middle = pixels.shape[1] // 2  # two panels side by side
    for half in (slice(0, middle), slice(middle, None)):
        square, outline = _bounds(magenta[:, half]), _bounds(green[:, half])
        assert all(abs(a - b) <= 3 for a, b in zip(square, outline, strict=True)), (square, outline)


def test_training_curves_figure_has_one_titled_panel_per_group() -> None:
    curves = {f"e_q2_1/vision.block.{k}/dense-linear/boxes": {"class.lambda": [1e-4, 1e-2, 1.0],
                                                              "class.val_score": [0.5, 0.7, 0.6]}
              for k in range(6)}
    curves |= {f"e_q2_1/vision.block.{k}/decoder/reconstruction": {"val_loss": [1.0, 0.7, 0.5]} for k in range(3)}
    fig = plots.training_curves_figure(curves)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["e_q2_1 · decoder/reconstruction", "e_q2_1 · dense-linear/boxes"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 6]  # one line per stage
    assert fig.axes[1].get_xscale() == "log"
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert "10⁻²" in labels, labels


def _fit(probe: str, task: str, predictions: dict) -> BestFit:
    return BestFit(0.5, "vision.block.0", ProbeResult(probe, task, {}, {}, predictions, {}))


def test_every_figure_the_run_lists_is_a_png_of_its_content(tmp_path: Path) -> None:
    """draw_best_fits / draw_training_curves for each kind of figure: every path they return exists, and
    every PNG among them has a sensible size and is not blank."""
    rng = np.random.default_rng(0)
    test = [Sample(key=f"s{k}", split="test", image=Image.fromarray((rng.random((448, 448, 3)) * 255).astype(np.uint8)),
                   target={"boxes": [[10 + k, 20, 200, 240]], "direction": k % 8, "speed": k % 3,
                           "reversed": k % 2}) for k in range(10)]
    detections = [Detections(np.array([[12.0, 18, 190, 230]]), np.array([0.9]), np.array([0])) for _ in test]
    best = {"dense-linear/boxes": _fit("dense-linear", "boxes", {"detections": detections}),
            "attention/boxes": _fit("attention", "boxes", {"detections": detections}),
            "decoder/reconstruction": _fit("decoder", "reconstruction",
                                           {"reconstructions": rng.random((10, 56, 56, 3), dtype=np.float32)}),
            "temporal/direction": _fit("temporal", "direction", {"direction": np.arange(10) % 8})}
    curves = {"e/vision.block.0/dense-linear/boxes": {"class.lambda": [0.1, 1.0], "class.val_score": [0.8, 0.9]}}
    written = (draw_best_fits("e", best, test, tmp_path, tmp_path)
               + draw_training_curves("e", curves, tmp_path, tmp_path))
    pngs = [tmp_path / p for p in written if p.endswith(".png")]
    assert len(pngs) == len(best) + 1 and all((tmp_path / p).is_file() for p in written)
    for png in pngs:
        pixels = _png_pixels(png)
        assert pixels.shape[1] >= 300 and pixels.shape[0] >= 150, (png.name, pixels.shape)
        assert pixels.std() > 10, png.name  # something drawn on the white page


def test_every_image_of_a_grid_is_shown_at_the_same_size() -> None:
    """A decoder's small reconstructions beside 448-px originals: each fills its cell, as its own axes
    panel did, so the two rows compare at the same scale."""
    sizes = [(448, 448), (56, 56), (100, 100), (200, 100)]
    grid = plots.mosaic([np.zeros((*s, 3), dtype=np.uint8) for s in sizes], columns=4, tile=192)
    assert [extent[2:] for extent in grid.extents] == [(192, 192), (192, 192), (192, 192), (96, 192)]
    assert grid.scales[:3] == [192 / 448, 192 / 56, 192 / 100]
