"""Known-answer checks of the LLaVA-OneVision adapter: every LLM stage holds the mosaic's cells and
nothing else (newline and base-image tokens left out), the mosaic is the model's own packed output,
the native video path, and the tile limits."""

from __future__ import annotations

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models.llava_onevision import LlavaOnevisionModel
from stageprobe.report.compare import stage_kind
from stageprobe.report.schema import sort_stages

BASE_TOKENS = 16 * 16  # the base image: one 224-px tile of 14-px patches


@pytest.fixture(scope="module")
def model() -> LlavaOnevisionModel:
    loaded = sp.load_model("llava-onevision-tiny", device="cpu")
    assert isinstance(loaded, LlavaOnevisionModel)
    return loaded


@pytest.mark.parametrize("size", [(448, 672), (300, 500), (224, 224)])
def test_llm_tokens_minus_newlines_are_the_mosaic_cells(model: LlavaOnevisionModel, size: tuple[int, int]) -> None:
    image = Image.new("RGB", size[::-1], GREY)
    features = model.extract([image], stages=["language.*"])
    inputs, _ = model.prepare_batch([image], None)
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    rows, cols = model.tile_grid(*size)
    newlines = rows * 16
    for name, grid in features.items():
        _, _, height, width, _ = grid.shape
        assert (height, width) == (rows * 16, cols * 16), name
        assert image_tokens - BASE_TOKENS - newlines == height * width, name


def test_the_skipped_positions_hold_the_newline_token(model: LlavaOnevisionModel) -> None:
    inputs, layout = model.prepare_batch([Image.new("RGB", (672, 448), GREY)], None)
    embeds: dict[str, torch.Tensor] = {}
    first_layer = model.hf_model.model.language_model.layers[0]
    handle = first_layer.register_forward_pre_hook(lambda _module, args: embeds.setdefault("llm.input", args[0]))
    try:
        with torch.inference_mode():
            model.run_forward(inputs, ["language.layer.0"])
    finally:
        handle.remove()
    positions = torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id).flatten()
    read = set(layout.indices["text"].flatten().tolist())
    skipped = [int(p) for p in positions[BASE_TOKENS:] if int(p) not in read]
    assert len(skipped) == 2 * 16  # one newline per mosaic row
    newline = model.hf_model.model.image_newline
    torch.testing.assert_close(embeds["llm.input"][0, skipped], newline.expand(len(skipped), -1))


def test_mosaic_is_the_models_own_packed_output(model: LlavaOnevisionModel) -> None:
    image = bright_cell_image((672, 448), 20, 40, 14)
    grid = model.extract([image], stages=["vision.post_projector"])["vision.post_projector"][0, 0]
    inputs, _ = model.prepare_batch([image], None)
    with torch.inference_mode():
        packed = model.hf_model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"],
            batch_num_images=inputs["batch_num_images"]).pooler_output[0]
    rows = packed[BASE_TOKENS:].reshape(32, 48 + 1, -1)  # each mosaic row, then its newline
    torch.testing.assert_close(grid, rows[:, :48])


def test_video_frames_are_pooled_for_the_llm(model: LlavaOnevisionModel) -> None:
    clip = [bright_cell_image((224, 224), 2 + 2 * t, 6, 14) for t in range(4)]
    blank = [Image.new("RGB", (224, 224), GREY)] * 4
    stages = ["vision.post_projector", "language.layer.1"]
    features, base = model.extract(videos=[clip], stages=stages), model.extract(videos=[blank], stages=stages)
    inputs, _ = model.prepare_batch(None, [clip])
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == 4 * 8 * 8 + 1  # + one newline
    for name, pool in (("vision.post_projector", 1), ("language.layer.1", 2)):
        assert features[name].shape[1:4] == (4, 16 // pool, 16 // pool), name
        for t in range(4):
            change = (features[name][0, t] - base[name][0, t]).norm(dim=-1)
            assert divmod(int(change.argmax()), 16 // pool) == ((2 + 2 * t) // pool, 6 // pool), (name, t)


def test_tile_limits_are_refused_before_the_forward(
    model: LlavaOnevisionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = Image.new("RGB", (672, 448), GREY)
    limited = model.with_weights(model.hf_model, model.name, model.weights_id)
    limited.max_tiles = 4
    with pytest.raises(UserInputError, match=r"2×3 = 6 tiles.*more than the 4"):
        limited.extract([image])
    monkeypatch.setattr(model.config, "vision_aspect_ratio", "anyres_max_4")
    with pytest.raises(UserInputError, match="resample the mosaic"):
        model.extract([image])


def test_compare_aligns_its_connector_with_the_other_families() -> None:
    depths = {"vision.block.": 3, "language.layer.": 4}
    assert stage_kind("vision.pre_projector", depths).kind == stage_kind("vision.pre_shuffle", depths).kind \
        == "connector in"
    # its connector is its projector: the output is every family's projector output, what the LLM receives
    assert stage_kind("vision.post_projector", depths).kind == "projector out"
    assert sort_stages(["vision.post_projector", "vision.pre_projector", "vision.block.2"]) == [
        "vision.block.2", "vision.pre_projector", "vision.post_projector"]
