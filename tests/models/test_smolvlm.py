"""Known-answer checks of the SmolVLM adapter: the tile grid is the processor's, the mosaic is the
model's own per-tile output, the global image is in no grid, a transposed ×4 shuffle is caught."""

from __future__ import annotations

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image
from test_contract import assert_bright_cells_land

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models._stages import Layout
from stageprobe.models.pixels import pixel_baseline_for
from stageprobe.models.smolvlm import SmolVLMModel


@pytest.fixture(scope="module")
def model() -> SmolVLMModel:
    loaded = sp.load_model("smolvlm-tiny", device="cpu")
    assert isinstance(loaded, SmolVLMModel)
    return loaded


@pytest.mark.parametrize("size", [(512, 512), (256, 512), (300, 500), (900, 200), (100, 90)])
def test_the_tile_grid_is_the_processors(model: SmolVLMModel, size: tuple[int, int]) -> None:
    height, width = size
    out = model.processor.image_processor([[Image.new("RGB", (width, height))]], return_row_col_info=True)
    rows, cols = out["rows"][0][0], out["cols"][0][0]
    assert model.tile_grid(height, width) == ((rows, cols) if rows else (1, 1))
    assert tuple(out["pixel_values"].shape[-2:]) == (model.tile_px, model.tile_px)


def test_stages_and_connector(model: SmolVLMModel) -> None:
    infos = {info.name: info for info in model.stages_for(256, 512)}  # 1 × 2 tiles of 256 px
    assert infos["vision.pre_shuffle"].grid == (1, 16, 32) and infos["vision.pre_shuffle"].stride_px == 16
    assert infos["vision.post_shuffle"].grid == (1, 4, 8) and infos["vision.post_shuffle"].stride_px == 64
    assert infos["vision.post_shuffle"].dim == 16 * infos["vision.pre_shuffle"].dim
    assert model.connector_stages == ("vision.pre_shuffle", "vision.post_shuffle")


def test_mosaic_is_the_models_own_tile_output_laid_side_by_side(model: SmolVLMModel) -> None:
    image = bright_cell_image((512, 512), 20, 25, 16)
    grid = model.extract([image], stages=["vision.post_projector"])["vision.post_projector"][0, 0]
    inputs, _ = model.prepare_batch([image], None)
    with torch.inference_mode():
        own = model.hf_model.model.get_image_features(
            pixel_values=inputs["pixel_values"], pixel_attention_mask=inputs["pixel_attention_mask"]).pooler_output[0]
    assert own.shape[0] == (2 * 2 + 1) * 16  # four tiles of 4×4 tokens, then the global image
    tiles = own[: 4 * 16].reshape(2, 2, 4, 4, -1).permute(0, 2, 1, 3, 4).reshape(8, 8, -1)
    torch.testing.assert_close(grid, tiles)


def test_the_global_image_is_in_no_grid(model: SmolVLMModel) -> None:
    inputs, layout = model.prepare_batch([Image.new("RGB", (512, 512), GREY)], None)
    visual = torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id).flatten()
    assert len(visual) == (4 + 1) * 16
    torch.testing.assert_close(layout.indices["text"].flatten().sort().values, visual[: 4 * 16])
    patches = layout.indices["patches"].flatten()
    assert patches.max() < 4 * 16 * 16 and len(set(patches.tolist())) == patches.numel()


class TransposedShuffle(SmolVLMModel):
    """A pixel shuffle that swapped the axes, planted in the inverse: each tile's token grid read transposed."""

    def build_layout(self, inputs: dict, frames: int, rows: int, cols: int) -> Layout:
        layout = super().build_layout(inputs, frames, rows, cols)
        side = self.tile_px // self.patch_px // self.merge
        index = layout.indices["shuffled"]
        cell = index % (side * side)
        transposed = index - cell + (cell % side) * side + cell // side
        return Layout(grids=layout.grids, indices={**layout.indices, "shuffled": transposed})


def test_the_contract_fails_on_a_transposed_pixel_shuffle(model: SmolVLMModel) -> None:
    assert_bright_cells_land(model, [(512, 512)])
    broken = TransposedShuffle(model.hf_model, model.processor, "transposed", model.weights_id)
    with pytest.raises(AssertionError, match=r"vision\.post_shuffle"):
        assert_bright_cells_land(broken, [(512, 512)])


def test_the_pixel_baseline_has_the_models_grids(model: SmolVLMModel) -> None:
    # a 448-px image is upscaled to the 512-px longest edge: 2 × 2 tiles, not 448 / 16 patches
    pixels = {info.name: info.grid for info in pixel_baseline_for(model).stages_for(448, 448)}
    infos = {info.name: info.grid for info in model.stages_for(448, 448)}
    assert pixels["pixels.patch"] == infos["vision.pre_shuffle"] == (1, 32, 32)
    assert pixels["pixels.merged"] == infos["vision.post_shuffle"] == (1, 8, 8)
    features = pixel_baseline_for(model).extract([Image.new("RGB", (448, 448), GREY)])
    assert features["pixels.merged"].shape == (1, 1, 8, 8, 3 * 64 * 64)


def test_video_is_refused_with_a_clear_message(model: SmolVLMModel) -> None:
    assert not model.supports_video
    with pytest.raises(UserInputError, match="no video input"):
        model.extract(videos=[[Image.new("RGB", (256, 256), GREY)] * 2])
