"""Known-answer checks of the Gemma 3 adapter: its connector is a 4×4 *average* pool, read through the
stage table's own raster conversions, and the random-weight preset hands the LLM the image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models import describe_stages
from stageprobe.models._stages import replace_stage
from stageprobe.models.gemma3 import Gemma3Model


@pytest.fixture(scope="module")
def model() -> Gemma3Model:
    loaded = sp.load_model("gemma3-tiny", device="cpu")
    assert isinstance(loaded, Gemma3Model)
    return loaded


def pooled_after_planting(model: Gemma3Model, rows: slice, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """`vision.post_pool` when `vision.pre_pool` is zero except a unit vector on patches [rows, cols];
    returns (post-pool grid, the planted vector)."""
    image = [Image.new("RGB", model.default_image_size, GREY)]
    _, layout = model.prepare_batch(image, None)
    width = model.stages_for(*model.default_image_size)[0].dim
    vector = torch.randn(width, generator=torch.Generator().manual_seed(0))

    def plant(grid: torch.Tensor) -> torch.Tensor:
        planted = torch.zeros_like(grid)
        planted[:, :, rows, cols] = vector.to(grid.dtype)
        return planted

    with replace_stage(model.stage_point("vision.pre_pool"), layout, plant):
        pooled = model.extract(image, stages=["vision.post_pool"])["vision.post_pool"]
    return pooled[0, 0], vector


def test_a_pooling_block_survives_into_exactly_one_cell(model: Gemma3Model) -> None:
    assert model.merge == 4
    pooled, vector = pooled_after_planting(model, slice(8, 12), slice(4, 8))  # patches of pooled cell (2, 1)
    nonzero = torch.nonzero(pooled.norm(dim=-1) > 1e-6).tolist()
    assert nonzero == [[2, 1]]
    torch.testing.assert_close(pooled[2, 1], vector, rtol=1e-5, atol=1e-6)


def test_a_single_patch_is_diluted_by_one_sixteenth(model: Gemma3Model) -> None:
    pooled, vector = pooled_after_planting(model, slice(9, 10), slice(6, 7))  # patch (9, 6) → cell (2, 1)
    assert torch.nonzero(pooled.norm(dim=-1) > 1e-6).tolist() == [[2, 1]]
    # an average pool: 1/16 of the patch; a max pool would keep the positive part of it whole
    torch.testing.assert_close(pooled[2, 1], vector / 16, rtol=1e-5, atol=1e-6)


def test_post_projector_equals_the_models_own_image_features(model: Gemma3Model) -> None:
    images = [bright_cell_image((448, 448), 3, 5, 14), bright_cell_image((448, 448), 30, 1, 14)]
    ours = model.extract(images, stages=["vision.post_projector"])["vision.post_projector"]
    inputs, _ = model.prepare_batch(images, None)
    with torch.inference_mode():
        own = model.hf_model.model.get_image_features(inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(ours.reshape(own.shape), own.float(), rtol=1e-5, atol=1e-5)


def test_the_preset_and_its_twin_hand_the_llm_the_image(model: Gemma3Model) -> None:
    images = [Image.new("RGB", (448, 448), GREY), bright_cell_image((448, 448), 3, 5, 56)]
    for candidate in (model, model.random_init_twin(seed=3)):
        projection = candidate.hf_model.model.multi_modal_projector.mm_input_projection_weight
        assert projection.abs().min() > 0  # Gemma 3's own init leaves it all zero
        layer = candidate.extract(images, stages=["language.layer.0"])["language.layer.0"]
        assert (layer[1] - layer[0]).abs().max() > 1e-3


def test_video_is_refused_with_a_clear_message(model: Gemma3Model) -> None:
    clip = [Image.new("RGB", (448, 448), GREY)] * 2
    with pytest.raises(UserInputError, match="no video input"):
        model.extract(videos=[clip])
    assert not model.supports_video


def test_the_published_size_geometry_without_weights() -> None:
    infos = {info.name: info for info in describe_stages("gemma3-4b-random", 448, 448)}
    assert infos["vision.pre_pool"].grid == (1, 64, 64) and infos["vision.pre_pool"].stride_px == 14
    assert infos["vision.post_pool"].grid == (1, 16, 16) and infos["vision.post_pool"].stride_px == 56
    assert infos["vision.post_projector"].dim == infos["language.layer.33"].dim == 2560
    assert len([name for name in infos if name.startswith("vision.block.")]) == 27


def test_the_pixel_baseline_sits_on_the_models_own_grids(model: Gemma3Model) -> None:
    from stageprobe.models.pixels import pixel_baseline_for

    baseline = pixel_baseline_for(model)
    assert baseline.name == "pixels-56"
    for size in ((224, 224), (448, 448), (300, 500)):  # resized whole to 448 px, as the model does
        ours = {info.name: info for info in model.stages_for(*size)}
        pixels = {info.name: info for info in baseline.stages_for(*size)}
        assert (pixels["pixels.patch"].grid, pixels["pixels.patch"].stride_px) == (
            ours["vision.pre_pool"].grid, ours["vision.pre_pool"].stride_px)
        assert (pixels["pixels.merged"].grid, pixels["pixels.merged"].stride_px) == (
            ours["vision.post_pool"].grid, ours["vision.post_pool"].stride_px)
    grid = baseline.extract([Image.new("RGB", (224, 224), GREY)])["pixels.merged"]
    assert grid.shape == (1, 1, 8, 8, 3 * 56 * 56)


def test_another_familys_stage_is_refused_naming_this_models_stages() -> None:
    from stageprobe.models import check_stage_patterns

    with pytest.raises(UserInputError, match="matches no stage") as refused:
        check_stage_patterns("gemma3-tiny", ["vision.pre_merge"])
    assert "vision.pre_pool" in str(refused.value) and "vision.post_pool" in str(refused.value)


def test_an_unsupported_architecture_exits_2_naming_the_supported_ones(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stageprobe.cli import app

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    result = CliRunner().invoke(app, ["stages", str(tmp_path)])
    assert result.exit_code == 2
    assert "does not support" in result.output and "gemma3" in result.output and "qwen4_exp" in result.output


def test_calibration_plants_at_the_pool_output(model: Gemma3Model) -> None:
    from stageprobe.calibrate.engine import calibration_stages, default_plants
    from stageprobe.suites.q2 import SUITE

    plants = default_plants(model, SUITE)
    assert {plant.stage for plant in plants} == {"vision.block.1", "vision.post_pool", "language.layer.2"}
    assert all(not plant.type.needs_video for plant in plants)  # no video input: no erase-time
    at_block = next(plant for plant in plants if plant.stage == "vision.block.1")
    read = calibration_stages(model, at_block, "quick")
    assert "vision.post_pool" in read and "vision.pre_pool" not in read

