"""Known-answer checks of the InternVL adapter: the mosaic against the model's own per-tile output,
the thumbnail left out, a transposed pixel-shuffle inverse caught, the tile limit, video frames."""

from __future__ import annotations

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image
from test_contract import assert_bright_cells_land

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models import describe_stages
from stageprobe.models._stages import Layout
from stageprobe.models.internvl import InternVLModel
from stageprobe.models.registry import preset_cache_dir
from stageprobe.report.schema import sort_stages


@pytest.fixture(scope="module")
def model() -> InternVLModel:
    loaded = sp.load_model("internvl3.5-tiny", device="cpu")
    assert isinstance(loaded, InternVLModel)
    return loaded


def test_stages_and_connector(model: InternVLModel) -> None:
    infos = {info.name: info for info in model.stages_for(448, 672)}  # 2 × 3 tiles of 224 px
    assert infos["vision.pre_shuffle"].grid == (1, 32, 48) and infos["vision.pre_shuffle"].stride_px == 14
    assert infos["vision.post_shuffle"].grid == (1, 16, 24) and infos["vision.post_shuffle"].stride_px == 28
    assert infos["vision.post_shuffle"].dim == 4 * infos["vision.pre_shuffle"].dim
    assert model.connector_stages == ("vision.pre_shuffle", "vision.post_shuffle")
    assert all(name in infos for name in model.connector_stages)


def test_mosaic_is_the_models_own_tile_output_laid_side_by_side(model: InternVLModel) -> None:
    image = bright_cell_image((672, 448), 5, 30, 14)
    grid = model.extract([image], stages=["vision.post_projector"])["vision.post_projector"][0, 0]
    inputs, _ = model.prepare_batch([image], None)
    with torch.inference_mode():
        own = model.hf_model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert own.shape[0] == 2 * 3 + 1  # six tiles, then the thumbnail
    tiles = own[:6].reshape(2, 3, 8, 8, -1).permute(0, 2, 1, 3, 4).reshape(16, 24, -1)
    torch.testing.assert_close(grid, tiles)


def test_the_thumbnail_is_in_no_grid(model: InternVLModel) -> None:
    inputs, layout = model.prepare_batch([Image.new("RGB", (672, 448), GREY)], None)
    visual = torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id).flatten()
    assert len(visual) == (6 + 1) * 64
    read = layout.indices["text"].flatten().sort().values
    torch.testing.assert_close(read, visual[: 6 * 64])  # every tile token once, no thumbnail token
    tower = layout.indices["tower"].flatten()
    assert tower.max() < 6 * (1 + 16 * 16) and len(set(tower.tolist())) == tower.numel()


class TransposedShuffle(InternVLModel):
    """The classic pixel-shuffle bug, planted in the inverse: each tile's post-shuffle grid read transposed."""

    def build_layout(self, inputs: dict, frames: int, rows: int, cols: int) -> Layout:
        layout = super().build_layout(inputs, frames, rows, cols)
        side = self.tile_px // self.patch_px // self.merge
        index = layout.indices["shuffled"]
        first = index - index % (side * side)
        cell = index % (side * side)
        transposed = first + (cell % side) * side + cell // side
        return Layout(grids=layout.grids, indices={**layout.indices, "shuffled": transposed})


def test_the_contract_fails_on_a_transposed_pixel_shuffle(model: InternVLModel) -> None:
    assert_bright_cells_land(model, [(224, 224)])
    broken = TransposedShuffle(model.hf_model, model.processor, "transposed", model.weights_id)
    with pytest.raises(AssertionError, match=r"vision\.post_shuffle"):
        assert_bright_cells_land(broken, [(224, 224)])


def test_more_tiles_than_allowed_is_refused_before_the_forward(model: InternVLModel) -> None:
    limited = model.with_weights(model.hf_model, model.name, model.weights_id)
    limited.max_tiles = 4
    with pytest.raises(UserInputError, match=r"2×3 = 6 tiles.*more than the 4"):
        limited.extract([Image.new("RGB", (672, 448), GREY)])


def test_video_frames_are_the_time_axis(model: InternVLModel) -> None:
    clip = [bright_cell_image((224, 224), 2 + t, 3, 28) for t in range(3)]
    grid = model.extract(videos=[clip], stages=["vision.post_projector", "language.layer.1"])
    for name, features in grid.items():
        assert features.shape[:4] == (1, 3, 8, 8), name
        base = model.extract(videos=[[Image.new("RGB", (224, 224), GREY)] * 3], stages=[name])[name]
        for t in range(3):
            change = (features[0, t] - base[0, t]).norm(dim=-1)
            assert divmod(int(change.argmax()), 8) == (2 + t, 3), (name, t)


def test_a_saved_checkpoint_describes_its_stages_without_weights(model: InternVLModel) -> None:
    infos = describe_stages(str(preset_cache_dir() / "internvl3.5-tiny"), 448, 448)
    assert [info.name for info in infos] == model.stage_names
    assert {info.name: info.grid for info in infos}["vision.post_projector"] == (1, 16, 16)


@pytest.mark.parametrize("preset", ["internvl3.5-tiny", "smolvlm-tiny", "llava-onevision-tiny"])
def test_tiled_stages_sort_in_pipeline_order(preset: str) -> None:
    names = [info.name for info in describe_stages(preset, 448, 448)]
    assert sort_stages(list(reversed(names))) == names
