"""Known-answer checks of the pixel baseline: each token is exactly its patch's pixels, in raster order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError

GREY = (120, 130, 140)
ODD = (250, 10, 60)
# A non-square multiple of 28 px, so pixels' snap-to-28 resize is the identity: rows ≠ columns.
WIDTH, HEIGHT = 420, 280


@pytest.fixture(scope="module")
def model() -> sp.StageModel:
    return sp.load_model("pixels", device="cpu")


def with_odd_patch(row: int, col: int) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), GREY)
    image.paste(ODD, (col * 14, row * 14, (col + 1) * 14, (row + 1) * 14))
    return image


def changed_cells(features: torch.Tensor, baseline: torch.Tensor) -> list[tuple[int, int, int]]:
    """(t, r, c) of every token that differs; inputs are (T, H, W, D)."""
    return [tuple(int(i) for i in cell) for cell in (features != baseline).any(dim=-1).nonzero()]


def test_stage_geometry_on_a_non_square_image(model: sp.StageModel) -> None:
    infos = {info.name: info for info in model.stages_for(HEIGHT, WIDTH)}
    assert (infos["pixels.patch"].grid, infos["pixels.patch"].stride_px) == ((1, 20, 30), 14)
    assert (infos["pixels.merged"].grid, infos["pixels.merged"].stride_px) == ((1, 10, 15), 28)
    features = model.extract([with_odd_patch(0, 0)] * 2)
    assert features["pixels.patch"].shape == (2, 1, 20, 30, 14 * 14 * 3)
    assert features["pixels.merged"].shape == (2, 1, 10, 15, 28 * 28 * 3)


@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 29), (19, 0), (19, 29), (7, 12), (3, 17)])
def test_odd_patch_lands_at_its_grid_cell(model: sp.StageModel, row: int, col: int) -> None:
    features = model.extract([Image.new("RGB", (WIDTH, HEIGHT), GREY), with_odd_patch(row, col)])
    patch, merged = features["pixels.patch"], features["pixels.merged"]
    assert changed_cells(patch[1], patch[0]) == [(0, row, col)]
    assert changed_cells(merged[1], merged[0]) == [(0, row // 2, col // 2)]
    expected = torch.tensor(ODD, dtype=torch.float32).div(255).repeat(14 * 14)
    torch.testing.assert_close(patch[1, 0, row, col], expected)


def test_video_frames_pair_into_temporal_tokens(model: sp.StageModel) -> None:
    plain = Image.new("RGB", (WIDTH, HEIGHT), GREY)
    features = model.extract(videos=[[plain, plain, with_odd_patch(5, 6), plain]])
    patch = features["pixels.patch"]
    assert patch.shape == (1, 2, 20, 30, 2 * 14 * 14 * 3)
    baseline = model.extract(videos=[[plain] * 4])["pixels.patch"]
    assert changed_cells(patch[0], baseline[0]) == [(1, 5, 6)]


def test_odd_frame_count_is_a_user_error(model: sp.StageModel) -> None:
    plain = Image.new("RGB", (WIDTH, HEIGHT), GREY)
    with pytest.raises(UserInputError, match="even frame count"):
        model.extract(videos=[[plain] * 3])


def test_pixel_baseline_for_a_qwen3_model_shares_its_grids() -> None:
    from stageprobe.models.pixels import pixel_baseline_for

    qwen3 = sp.load_model("qwen3.5-tiny", device="cpu")
    baseline = pixel_baseline_for(qwen3)
    assert baseline.name == "pixels-16"
    model_grids = {info.stride_px: info.grid for info in qwen3.stages_for(224, 288)}
    pixel_grids = {info.stride_px: info.grid for info in baseline.stages_for(224, 288)}
    assert pixel_grids == {16: model_grids[16], 32: model_grids[32]} == {16: (1, 14, 18), 32: (1, 7, 9)}
    image = Image.new("RGB", (288, 224), GREY)
    image.paste(ODD, (16 * 17, 16 * 13, 16 * 18, 16 * 14))  # the bottom-right 16 px cell
    features = baseline.extract([image, Image.new("RGB", (288, 224), GREY)])
    assert changed_cells(features["pixels.patch"][0], features["pixels.patch"][1]) == [(0, 13, 17)]
    assert changed_cells(features["pixels.merged"][0], features["pixels.merged"][1]) == [(0, 6, 8)]
    assert pixel_baseline_for(sp.load_model("qwen2-vl-tiny", device="cpu")).stages_for(224, 224)[1].grid == (1, 8, 8)
