"""`stageprobe compare` across model families: stages aligned by kind (embedding, ViT depth fraction,
connector in / out, LLM depth fraction), each information type's deciding probe with its retention
against that model's own pixel ceiling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_run, row, synthetic_context
from PIL import Image
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.report.compare import align_run, align_runs, measured_depths, stage_kind
from stageprobe.report.render import load_run
from stageprobe.suites.q2 import DECIDING_BOX_PROBE as BOX
from stageprobe.suites.q2 import RECONSTRUCTION_PROBE


def family_run(run_dir: Path, model: str, stages: dict[str, float], pixels: dict[str, float]) -> Path:
    """A run whose deciding box probe scores `stages` (IoU), its pixel ceilings `pixels`; edge F1 alike."""
    rows = []
    for stage, value in stages.items():
        rows.append(row("e_q2_1", stage, BOX, "iou", value, model=model))
        rows.append(row("e_q2_5", stage, RECONSTRUCTION_PROBE, "edge_f1", value / 2, model=model))
    for stage, value in pixels.items():
        rows.append(row("e_q2_1", stage, BOX, "iou", value, control="pixels", model="pixels"))
        rows.append(row("e_q2_5", stage, RECONSTRUCTION_PROBE, "edge_f1", value / 2, control="pixels",
                        model="pixels"))
    context = replace(synthetic_context(), model=model, stages=sorted(stages),
                      experiment_status={"e_q2_1": "completed", "e_q2_5": "completed", "e_q2_6": "skipped"},
                      experiment_errors={"e_q2_6": "not applicable: no video input"} if "gemma" in model else {})
    return make_run(run_dir, rows=rows, context=context)


@pytest.fixture(scope="module")
def two_families(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("families")
    qwen = family_run(root / "qwen", "qwen2.5-vl-tiny", {
        "vision.patch_embed": 0.9, "vision.block.0": 0.85, "vision.block.7": 0.8, "vision.pre_merge": 0.8,
        "vision.post_merge": 0.72, "language.layer.0": 0.7, "language.layer.3": 0.6,
    }, {"pixels.patch": 0.8, "pixels.merged": 0.8})
    gemma = family_run(root / "gemma", "gemma3-tiny", {
        "vision.embed": 0.9, "vision.block.0": 0.8, "vision.block.2": 0.8, "vision.pre_pool": 0.8,
        "vision.post_pool": 0.3, "vision.post_projector": 0.3, "language.layer.0": 0.3, "language.layer.3": 0.25,
    }, {"pixels.patch": 0.8, "pixels.merged": 0.6})
    return qwen, gemma


def test_stage_kinds_align_by_depth_fraction_and_connector_side() -> None:
    qwen = measured_depths(["vision.block.0", "vision.block.31", "language.layer.27"])
    gemma = measured_depths(["vision.block.26", "language.layer.0", "language.layer.33"])
    assert qwen == {"vision.block.": 32, "language.layer.": 28} and gemma["vision.block."] == 27
    assert stage_kind("vision.block.15", qwen).fraction == stage_kind("vision.block.31", {"vision.block.": 64}).fraction
    assert stage_kind("vision.pre_merge", qwen) == stage_kind("vision.pre_pool", gemma)
    assert stage_kind("vision.post_merge", qwen) == stage_kind("vision.post_pool", gemma)
    assert stage_kind("language.layer.27", qwen).x == stage_kind("language.layer.33", gemma).x
    assert stage_kind("pixels.patch", qwen) is None


def test_retention_is_against_each_models_own_pixel_ceiling(two_families: tuple[Path, Path]) -> None:
    qwen, gemma = (align_run(d) for d in two_families)
    spatial = gemma.information["Location"]
    assert spatial.probe == BOX and spatial.target == "Bbox IoU"
    by_kind = {p.kind.kind: p for p in spatial.points}
    # the pool's output at 0.3 against the 56-px pixel ceiling 0.6: half of what its grid holds
    assert by_kind["connector out"].stage == "vision.post_pool"
    assert by_kind["connector out"].retention == pytest.approx(0.5)
    assert by_kind["connector in"].retention == pytest.approx(1.0)
    qwen_by_kind = {p.kind.kind: p for p in qwen.information["Location"].points}
    assert qwen_by_kind["connector out"].retention == pytest.approx(0.9)
    motion = gemma.information["Motion"]
    assert motion.points == () and motion.not_measured == "not measured: not applicable: no video input"


def test_compare_cli_draws_the_aligned_figure_and_table(two_families: tuple[Path, Path], tmp_path: Path) -> None:
    figure = tmp_path / "aligned.png"
    result = CliRunner().invoke(app, ["compare", *map(str, two_families), "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "connector out" in result.output and "50% of pixels" in result.output
    assert "not applicable: no video input" in result.output
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 600


def test_compare_refuses_a_figure_that_is_not_png(two_families: tuple[Path, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", *map(str, two_families), "--figure", str(tmp_path / "a.pdf")])
    assert result.exit_code == 2 and ".png" in result.output


def test_every_run_is_shown_on_a_metric_all_of_them_measured(tmp_path: Path) -> None:
    stages = {"vision.pre_merge": 0.8, "vision.post_merge": 0.7}
    pixels = {"pixels.patch": 0.8, "pixels.merged": 0.8}
    with_lpips = family_run(tmp_path / "a", "qwen2.5-vl-tiny", stages, pixels)
    rows = [row("e_q2_5", stage, RECONSTRUCTION_PROBE, "lpips", 0.3, model="qwen2.5-vl-tiny") for stage in stages]
    results = load_run(with_lpips)[1] + rows
    make_run(with_lpips, rows=results, context=replace(synthetic_context(), model="qwen2.5-vl-tiny"))
    without = family_run(tmp_path / "b", "gemma3-tiny", {"vision.pre_pool": 0.8, "vision.post_pool": 0.3}, pixels)
    alone = align_runs([with_lpips])[0].information["Detail"]
    assert alone.key == "lpips"  # LPIPS comes first for a run on its own
    assert [run.information["Detail"].key for run in align_runs([with_lpips, without])] == ["edge_f1", "edge_f1"]
