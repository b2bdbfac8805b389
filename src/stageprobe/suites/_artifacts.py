"""Each probe's test predictions drawn at the stage its validation score picked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stageprobe.datasets import Sample
from stageprobe.probes import ProbeResult
from stageprobe.probes.base import MOTION_TASKS
from stageprobe.probes.temporal import labels_for
from stageprobe.report import plots


@dataclass(frozen=True)
class BestFit:
    """A probe's fit at the stage whose validation headline is best (`goodness`: larger is better)."""

    goodness: float
    stage: str
    result: ProbeResult


def _draw(result: ProbeResult, test: list[Sample], path: Path, title: str) -> bool:
    """`test`: the test split in dataset order, the order every probe's predictions are in."""
    by_key = {sample.key: sample for sample in test}
    test_keys = [s.key for s in test]
    test_targets = [s.target for s in test]
    predictions, shown = result.predictions, min(8, len(test_keys))
    if "detections" in predictions:
        images = [by_key[key].image for key in test_keys[:shown]]
        truth = [np.asarray(t["boxes"]) for t in test_targets[:shown]]
        detections = predictions["detections"][:shown]
        if result.probe == "attention":
            plots.save_detection_overlay(images, truth, [d.boxes for d in detections],
                                         [d.scores for d in detections], path, title=title)
        else:
            plots.save_box_overlay(images, truth, [d.boxes for d in detections], path, title=title)
    elif "reconstructions" in predictions:
        originals = [by_key[key].image for key in test_keys[:shown]]
        plots.save_reconstruction_grid(originals, list(predictions["reconstructions"][:shown]), path, title=title)
    elif result.task in MOTION_TASKS:
        truth, predicted = labels_for(result.task, test_targets), np.asarray(predictions[result.task])
        classes = int(max(truth.max(), predicted.max())) + 1
        matrix = np.zeros((classes, classes), dtype=int)
        np.add.at(matrix, (truth, predicted), 1)
        names = plots.motion_class_names(result.task, classes)
        plots.save_confusion_matrix(matrix, names, path, title=title)
    else:
        return False
    return True


def draw_training_curves(experiment: str, curves: dict[str, dict[str, list[float]]], artifacts_dir: Path,
                         run_dir: Path) -> list[str]:
    """The experiment's probe validation curves: a panel per probe and task, a line per stage. Drawn
    as the experiment finishes, while the workers fit the next ones, not all at the end of the run."""
    if not curves:
        return []
    path = artifacts_dir / f"{experiment}_training_curves.png"
    plots.save_training_curves(curves, path, title=f"{experiment}: probe validation curves (one line per stage; "
                                                   "light = early, dark = late)")
    return [str(path.relative_to(run_dir))]


def draw_best_fits(experiment: str, best: dict[str, BestFit], test: list[Sample], artifacts_dir: Path,
                   run_dir: Path) -> list[str]:
    """One figure per probe at its best-on-validation stage, and `<experiment>_analysis.json`."""
    written: list[str] = []
    for key, fit in best.items():
        path = artifacts_dir / f"{experiment}_{key.replace('/', '_')}_{fit.stage}.png"
        title = f"{experiment} {fit.result.probe} ({fit.result.task}) at {fit.stage} (best on validation)"
        if _draw(fit.result, test, path, title):
            written.append(str(path.relative_to(run_dir)))
    analysis = {key: {"best_stage_on_validation": fit.stage} for key, fit in best.items()}
    (artifacts_dir / f"{experiment}_analysis.json").write_text(json.dumps(analysis, indent=2))
    written.append(str((artifacts_dir / f"{experiment}_analysis.json").relative_to(run_dir)))
    return written
