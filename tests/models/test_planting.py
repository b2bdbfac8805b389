"""Known answers of the planted interventions, through the real (tiny, random-weight) models.

The extraction hooks and `_to_raster` are independent of the plant's own order conversions, so
"the extracted planted stage equals the plant applied to the extracted unplanted stage" fails
if a plant writes its tokens back in the wrong order (window order, merge order, LLM positions).
"""

from __future__ import annotations

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models.planting import (
    PLANT_TYPES,
    PlantedModel,
    blur_detail,
    erase_position,
    erase_time,
    parse_plant,
    planted,
    scramble_position,
)
from stageprobe.models.qwen_vl import QwenVLModel

# 224×168 px: a 16×12 patch grid, more than one 8×8-patch attention window each way (with padding)
SIZE = (224, 168)


@pytest.fixture(scope="module", params=["qwen2.5-vl-tiny", "qwen2-vl-tiny"])
def qwen(request: pytest.FixtureRequest) -> QwenVLModel:
    return sp.load_model(request.param, device="cpu")


def odd_patch_images() -> list[Image.Image]:
    """Two grey images, each with one white 14-px patch at a different, off-centre cell."""
    return [bright_cell_image(SIZE, row, col, 14) for row, col in [(2, 13), (9, 3)]]


@pytest.mark.parametrize("stage", ["vision.block.1", "vision.pre_merge", "vision.post_merge", "language.layer.1"])
def test_blur_plant_lands_on_the_right_cells(qwen: QwenVLModel, stage: str) -> None:
    """Blur is local, so any misplacement of tokens (window order, merge order) breaks equality."""
    images = odd_patch_images()
    reference = qwen.extract(images, stages=[stage])[stage]
    with planted(qwen, parse_plant(f"blur-detail@{stage}", qwen), images):
        got = qwen.extract(images, stages=[stage])[stage]
    expected = blur_detail(reference, torch.Generator())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_erase_at_window_ordered_block_changes_that_block_and_later_not_earlier(qwen: QwenVLModel) -> None:
    images = odd_patch_images()
    stages = ["vision.block.1", "vision.block.2", "vision.block.3"]
    reference = qwen.extract(images, stages=stages)
    with planted(qwen, parse_plant("erase-position@vision.block.2", qwen), images):
        got = qwen.extract(images, stages=stages)
    torch.testing.assert_close(got["vision.block.1"], reference["vision.block.1"])
    torch.testing.assert_close(got["vision.block.2"], erase_position(reference["vision.block.2"], torch.Generator()),
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got["vision.block.3"], reference["vision.block.3"], atol=1e-3)


def test_odd_patch_cell_is_where_the_blur_changes_most(qwen: QwenVLModel) -> None:
    """The white patch's token is the one a blur changes most: the plant acts on raster cell (r, c)."""
    images = odd_patch_images()
    stage = "vision.block.1"
    reference = qwen.extract(images, stages=[stage])[stage]
    with planted(qwen, parse_plant(f"blur-detail@{stage}", qwen), images):
        got = qwen.extract(images, stages=[stage])[stage]
    for index, cell in enumerate([(2, 13), (9, 3)]):
        change = (got[index, 0] - reference[index, 0]).norm(dim=-1)
        flat = int(change.argmax())
        assert (flat // change.shape[1], flat % change.shape[1]) == cell


def test_scramble_permutes_cells_of_each_image_differently(qwen: QwenVLModel) -> None:
    images = odd_patch_images()
    stage = "vision.post_merge"
    reference = qwen.extract(images, stages=[stage])[stage]
    with planted(qwen, parse_plant(f"scramble-position@{stage}", qwen), images, rng=torch.Generator().manual_seed(3)):
        got = qwen.extract(images, stages=[stage])[stage]
    expected = scramble_position(reference, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, reference)


def test_none_plant_is_an_exact_round_trip(qwen: QwenVLModel) -> None:
    images = odd_patch_images()
    stages = ["vision.block.3", "vision.post_merge", "language.layer.2"]
    reference = qwen.extract(images, stages=stages)
    for stage in stages:
        got = PlantedModel(qwen, parse_plant(f"none@{stage}", qwen)).extract(images, stages=stages)
        for name in stages:
            assert torch.equal(got[name], reference[name]), (stage, name)


def test_erase_time_on_video_makes_time_steps_equal() -> None:
    model = sp.load_model("qwen2.5-vl-tiny", device="cpu")
    frames = [Image.new("RGB", (112, 112), (40 * i, 100, 200 - 40 * i)) for i in range(4)]
    stage = "vision.post_merge"
    reference = model.extract(videos=[frames], stages=[stage, "language.layer.0"])
    with planted(model, parse_plant(f"erase-time@{stage}", model), videos=[frames]):
        got = model.extract(videos=[frames], stages=[stage, "language.layer.0"])
    torch.testing.assert_close(got[stage], erase_time(reference[stage], torch.Generator()), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got["language.layer.0"], reference["language.layer.0"])


def test_vit_plant_skips_the_cls_token() -> None:
    model = sp.load_model("dinov2-tiny", device="cpu")
    images = [Image.new("RGB", (112, 112), GREY), odd_patch_images()[0].resize((112, 112))]
    stage = "vision.block.0"
    reference = model.extract(images, stages=[stage])[stage]
    with planted(model, parse_plant(f"blur-detail@{stage}", model), images):
        got = model.extract(images, stages=[stage])[stage]
    torch.testing.assert_close(got, blur_detail(reference, torch.Generator()), atol=1e-4, rtol=1e-4)


def test_bad_plants_name_types_and_stages() -> None:
    model = sp.load_model("qwen2.5-vl-tiny", device="cpu")
    with pytest.raises(UserInputError, match=r"erase-position.*vision\.block\.4"):
        parse_plant("melt@vision.block.4", model)
    with pytest.raises(UserInputError, match=r"language\.layer\.0"):
        parse_plant("erase-position@vision.block.99", model)
    vit = sp.load_model("dinov2-tiny", device="cpu")
    with pytest.raises(UserInputError, match="image-only"):
        parse_plant("erase-time@vision.block.0", vit)
    assert set(PLANT_TYPES) == {"erase-position", "scramble-position", "blur-detail", "erase-time", "none"}
