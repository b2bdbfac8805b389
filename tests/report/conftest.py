"""A realistic synthetic run: every stage kind, every control, an unavailable LPIPS."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from stageprobe.report import MetricRow, RunContext, write_run_report
from stageprobe.report.plots import save_box_overlay
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import MOTION_PROBE as MOTION
from stageprobe.suites.q2 import RECONSTRUCTION_PROBE as RECON

MODEL = "qwen2.5-vl-tiny"
VISION = [
    "vision.patch_embed",
    "vision.block.0",
    "vision.block.1",
    "vision.block.2",
    "vision.block.3",
    "vision.pre_merge",
]
LANGUAGE = [f"language.layer.{i}" for i in range(4)]
LPIPS_REASON = "LPIPS AlexNet weights are not available offline"
#: what `Calibration.to_dict()` gives for one plant the spatial probe finds one stage late
CALIBRATION = {
    "model": "qwen2.5-vl-tiny", "size": "quick", "verdict": "FAIL",
    "plants": [{"plant": "erase-position@vision.block.2", "type": "erase-position", "stage": "vision.block.2",
                "information": "location", "dataset": "shapes", "verdict": "FAIL",
                "checks": [{"probe": BOX, "task": "boxes", "metric": "iou", "role": "deciding",
                            "found_at": "vision.block.3", "earlier_stages_unchanged": True, "stays_down": True,
                            "verdict": "FAIL",
                            "drop_at_plant": {"estimate": 0.012, "ci_low": -0.004, "ci_high": 0.028, "n": 40}}]}],
    # the stage the synthetic rows' best validation score picks has its own half-width
    "detectable_drop": {"location": {f"{BOX}/iou": {"n_test": 40, "drop": 0.037, "family": "spatial",
                                                    "dataset": "shapes",
                                                    "stages": {s: 0.031 for s in (*VISION, "vision.post_merge")}}}},
}


def _ci(rng: np.random.Generator, value: float, width: float = 0.04) -> tuple[float, float]:
    half = width * (0.5 + rng.random())
    return value - half, value + half


def row(
    experiment: str,
    stage: str,
    probe: str,
    metric: str,
    value: float | None,
    *,
    control: str = "none",
    ci: tuple[float, float] | None = None,
    n: int = 200,
    model: str = MODEL,
    reason: str | None = None,
) -> MetricRow:
    return MetricRow(
        experiment=experiment,
        stage=stage,
        probe=probe,
        metric=metric,
        value=value,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        n=n,
        control=control,
        model=model,
        unavailable_reason=reason,
    )


def synthetic_rows(pre: float = 0.853, post: float = 0.781, seed: int = 0) -> list[MetricRow]:
    rng = np.random.default_rng(seed)
    jitter = lambda: float(rng.normal(0, 0.004))  # noqa: E731 — many-decimal values exercise formatting
    rows: list[MetricRow] = []

    def add(experiment: str, stage: str, probe: str, metric: str, value: float | None, **kw) -> None:  # type: ignore[no-untyped-def]
        if value is not None and "ci" not in kw:
            value = value + jitter()
            kw["ci"] = _ci(rng, value)
        rows.append(row(experiment, stage, probe, metric, value, **kw))

    for k, stage in enumerate(VISION):
        dense = pre - 0.05 * (len(VISION) - 1 - k)
        add("e_q2_1", stage, BOX, "iou", dense)
        add("e_q2_1", stage, "attention", "iou", dense - 0.03)
        add("e_q2_1", stage, "pooled-linear", "iou", 0.104)
        add("e_q2_1", stage, BOX, "iou_gt_0.5", min(dense + 0.1, 0.99))
        add("e_q2_1", stage, "relation", "relation_acc", 0.88 + 0.01 * k)
        add("e_q2_1", stage, "patch-class", "patch_class_acc", 0.7 + 0.03 * k)
        add(
            "e_q2_1",
            stage,
            BOX,
            "iou",
            0.41,
            control="random-init",
            model=f"{MODEL} (random-init)",
        )
        add("e_q2_1", stage, BOX, "iou", 0.05, control="control-task")
        add("e_q2_1", stage, BOX, "iou", dense - 0.05, control="selectivity")
    add("e_q2_1", "vision.pre_merge", BOX, "iou", 0.121, control="token-shuffle")
    add("e_q2_1", "pixels.patch", BOX, "iou", 0.934, control="pixels", model="pixels")
    add("e_q2_1", "pixels.patch", "pooled-linear", "iou", 0.112, control="pixels", model="pixels")
    # e_q2_2: merger
    add("e_q2_2", "vision.post_merge", BOX, "iou", post)
    add("e_q2_2", "vision.post_merge", "pooled-linear", "iou", 0.101)
    add("e_q2_2", "vision.pre_merge", BOX, "iou", pre)
    add("e_q2_2", "vision.post_merge", BOX, "iou_drop", pre - post)
    rows.append(row("e_q2_2", "vision.post_merge", BOX, "compression_ratio", 4.0))
    add("e_q2_2", "vision.post_merge", "relation", "relation_acc", 0.934)
    add("e_q2_2", "vision.post_merge", BOX, "iou", 0.119, control="token-shuffle")
    add("e_q2_2", "pixels.merged", BOX, "iou", 0.902, control="pixels", model="pixels")
    # validation-split scores: pick the best stage, never a verdict
    for k, stage in enumerate(VISION):
        rows.append(row("e_q2_1", stage, BOX, "iou", pre - 0.05 * (len(VISION) - 1 - k),
                        control="validation"))
    rows.append(row("e_q2_2", "vision.post_merge", BOX, "iou", post, control="validation"))
    # e_q2_3: LLM layers
    for k, stage in enumerate(LANGUAGE):
        add("e_q2_3", stage, BOX, "iou", post - 0.06 * (k + 1))
        add("e_q2_3", stage, "pooled-linear", "iou", 0.08)
        add(
            "e_q2_3", stage, BOX, "iou", 0.3, control="random-init", model=f"{MODEL} (random-init)"
        )
    # e_q2_4: detection
    for stage, value in (
        ("vision.pre_merge", 0.462),
        ("vision.post_merge", 0.391),
        ("language.layer.0", 0.204),
    ):
        add("e_q2_4", stage, "attention", "map_50", value)
        add("e_q2_4", stage, "attention", "map_75", value / 2)
        add("e_q2_4", stage, "attention", "map", value / 2.5)
    # e_q2_5: reconstruction, LPIPS unavailable
    for k, stage in enumerate(
        ["vision.patch_embed", "vision.pre_merge", "vision.post_merge", "language.layer.0"]
    ):
        rows.append(row("e_q2_5", stage, RECON, "lpips", None, reason=LPIPS_REASON))
        add("e_q2_5", stage, RECON, "ssim", 0.82 - 0.05 * k)
        add("e_q2_5", stage, RECON, "psnr", 24.5 - 1.5 * k)
        add("e_q2_5", stage, RECON, "edge_f1", 0.45 - 0.05 * k)
        rows.append(row("e_q2_5", stage, RECON, "irs", None, reason="LPIPS unavailable"))
    # reference degradations of the input, scored like stages: what an edge F1 or SSIM value means
    for stage, ssim, edge in (("reference.identity", 1.0, 1.0), ("reference.blur_4px", 0.71, 0.31)):
        add("e_q2_5", stage, RECON, "ssim", ssim, control="reference", model="reference")
        add("e_q2_5", stage, RECON, "edge_f1", edge, control="reference", model="reference")
        rows.append(row("e_q2_5", stage, RECON, "lpips", None, control="reference", model="reference",
                        reason=LPIPS_REASON))
    for k, stage in enumerate(["vision.patch_embed", "vision.pre_merge", "vision.post_merge"]):
        rows.append(row("e_q2_5", stage, RECON, "edge_f1", 0.44 - 0.05 * k, control="validation"))
    add("e_q2_5", "pixels.patch", RECON, "edge_f1", 0.71, control="pixels", model="pixels")
    # e_q2_6: temporal
    for k, stage in enumerate(["vision.post_merge", *LANGUAGE[:2]]):
        rows.append(row("e_q2_6", stage, MOTION, "direction_acc", 0.93 - 0.15 * k, control="validation"))
        add("e_q2_6", stage, MOTION, "direction_acc", 0.95 - 0.15 * k)
        add("e_q2_6", stage, MOTION, "speed_acc", 0.8 - 0.1 * k)
        add("e_q2_6", stage, MOTION, "order_acc", 0.76 - 0.2 * k)
    return rows


def synthetic_context(weights_random: bool = True, protocol: str = "stageprobe") -> RunContext:
    return RunContext(
        model=MODEL,
        weights_random=weights_random,
        suite="q2",
        protocol=protocol,  # type: ignore[arg-type]
        stages=[*VISION, "vision.post_merge", *LANGUAGE],
        config={"model": MODEL, "suite": "q2", "seed": 0, "image_size": 224},
        env={"python": "3.11", "torch": "2.x", "device": "cpu"},
        started_at=datetime(2026, 1, 18, 18, 17, tzinfo=timezone.utc),
        completed_at=datetime(2026, 1, 18, 21, 0, tzinfo=timezone.utc),
        artifacts={"e_q2_1": ["artifacts/premerge_boxes.png"]},
    )


def make_run(run_dir: Path, rows: list[MetricRow] | None = None, context: RunContext | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = [rng.random((56, 56, 3)) for _ in range(2)]
    boxes = [np.array([[5, 5, 30, 30]]), np.array([[20, 10, 50, 40]])]
    save_box_overlay(images, boxes, [b + 3 for b in boxes], run_dir / "artifacts" / "premerge_boxes.png")
    write_run_report(run_dir, rows if rows is not None else synthetic_rows(), context or synthetic_context())
    return run_dir


@pytest.fixture(scope="session")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run directory; tests must not modify it (copy it first)."""
    return make_run(tmp_path_factory.mktemp("runs") / "good")
