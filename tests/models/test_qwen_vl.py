"""Known-answer checks of the Qwen-VL adapters: stage geometry, raster order, equality with the
model's own outputs, and the Hub loading path — all on tiny random-weight presets, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models.qwen_vl import QwenVLModel
from stageprobe.models.registry import preset_cache_dir

PRESETS = ["qwen2.5-vl-tiny", "qwen2-vl-tiny"]


@pytest.fixture(scope="module", params=PRESETS)
def model(request: pytest.FixtureRequest) -> QwenVLModel:
    loaded = sp.load_model(request.param, device="cpu")
    assert isinstance(loaded, QwenVLModel)
    return loaded


def with_bright_patch(size: tuple[int, int], row: int, col: int) -> Image.Image:
    """A grey image (width, height) with one white 14-px patch at grid cell (row, col)."""
    return bright_cell_image(size, row, col, 14)


def most_changed_cell(features: torch.Tensor, baseline: torch.Tensor) -> tuple[int, int, int]:
    """(t, r, c) of the token whose features moved most; inputs are (T, H, W, D)."""
    change = (features - baseline).norm(dim=-1)
    _, h, w = change.shape
    index = int(change.argmax())
    return index // (h * w), (index // w) % h, index % w


# (width, height) and cells: corners, interior, and a non-square image whose rows ≠ columns
CASES = [
    ((448, 448), [(0, 0), (31, 31), (0, 31), (31, 0), (13, 6)]),
    ((448, 336), [(0, 0), (23, 31), (3, 5), (22, 1)]),
]


@pytest.mark.parametrize(("size", "cells"), CASES)
def test_bright_patch_lands_at_its_grid_cell_in_every_stage(
    model: QwenVLModel, size: tuple[int, int], cells: list[tuple[int, int]]
) -> None:
    images = [Image.new("RGB", size, GREY)] + [with_bright_patch(size, r, c) for r, c in cells]
    features = model.extract(images)
    assert set(features) == set(model.stage_names)
    for index, (row, col) in enumerate(cells, start=1):
        embed = features["vision.patch_embed"]
        moved = (embed[index] - embed[0]).norm(dim=-1)[0]
        # patch embedding is per patch with no position embedding: exactly one token moves
        assert torch.nonzero(moved > 1e-5).tolist() == [[row, col]]
        for stage, tensor in features.items():
            merged = tensor.shape[2] == embed.shape[2] // 2
            expected = (0, row // 2, col // 2) if merged else (0, row, col)
            assert most_changed_cell(tensor[index], tensor[0]) == expected, stage


def test_grid_shapes_match_stage_info(model: QwenVLModel) -> None:
    features = model.extract([Image.new("RGB", (448, 336), GREY)])
    for info in model.stages_for(336, 448):
        assert tuple(features[info.name].shape) == (1, *info.grid, info.dim), info.name
    pre, post = features["vision.pre_merge"], features["vision.post_merge"]
    assert pre[0, ..., 0].numel() == 4 * post[0, ..., 0].numel()
    assert {info.stride_px for info in model.stages_for(448, 448)} == {14, 28}


def test_post_merge_equals_the_models_own_image_features(model: QwenVLModel) -> None:
    images = [with_bright_patch((448, 336), 2, 7), with_bright_patch((448, 336), 20, 30)]
    features = model.extract(images, stages=["vision.post_merge"])["vision.post_merge"]
    inputs, _ = model.prepare_inputs(images, None)
    with torch.inference_mode():
        own = model.hf_model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    chunks = own.pooler_output if hasattr(own, "pooler_output") else own
    for b, chunk in enumerate(chunks):
        assert torch.allclose(features[b].reshape(-1, features.shape[-1]), chunk.float(), atol=1e-5)


def test_language_layers_equal_hidden_states_at_image_tokens(model: QwenVLModel) -> None:
    images = [with_bright_patch((448, 448), 5, 9), with_bright_patch((448, 448), 30, 1)]
    features = model.extract(images, stages=["language.*"])
    inputs, token_id = model.prepare_inputs(images, None)
    with torch.inference_mode():
        hidden = model.hf_model.model(**inputs, output_hidden_states=True).hidden_states
    positions = inputs["input_ids"] == token_id
    n_layers = len(model.language_model.layers)
    # transformers replaces the last entry of hidden_states by the final norm's output, so the
    # last decoder layer's raw output is only visible through its hook; it maps to language.norm
    names = [f"language.layer.{i}" for i in range(n_layers - 1)] + ["language.norm"]
    for i, name in enumerate(names):
        ours = features[name]
        for b in range(len(images)):
            theirs = hidden[i + 1][b][positions[b]]
            assert torch.allclose(ours[b].reshape(-1, ours.shape[-1]), theirs.float(), atol=1e-4), i


def test_all_stages_at_once_equal_each_stage_alone(model: QwenVLModel) -> None:
    images = [with_bright_patch((448, 448), 4, 4)]
    together = model.extract(images)
    for stage in ["vision.patch_embed", "vision.block.2", "vision.pre_merge", "vision.post_merge",
                  "language.layer.1", "language.norm"]:
        alone = model.extract(images, stages=[stage])
        assert list(alone) == [stage]
        assert torch.allclose(alone[stage], together[stage], atol=1e-5), stage


def test_batch_of_four_equals_four_batches_of_one(model: QwenVLModel) -> None:
    images = [with_bright_patch((448, 448), r, c) for r, c in [(0, 0), (9, 17), (31, 2), (16, 16)]]
    batched = model.extract(images, stages=["vision.block.0", "vision.post_merge", "language.layer.3"])
    for b, image in enumerate(images):
        single = model.extract([image], stages=["vision.block.0", "vision.post_merge", "language.layer.3"])
        for stage, tensor in single.items():
            assert torch.allclose(batched[stage][b], tensor[0], atol=1e-4), stage


def test_video_path_groups_frames_in_temporal_patches(model: QwenVLModel) -> None:
    still = [Image.new("RGB", (448, 448), GREY) for _ in range(4)]
    flashed = [frame.copy() for frame in still]
    for frame in flashed[2:]:  # second temporal patch only
        frame.paste((255, 255, 255), (14 * 6, 14 * 10, 14 * 7, 14 * 11))
    features = model.extract(videos=[still, flashed])
    embed = features["vision.patch_embed"]
    assert embed.shape[:4] == (2, 2, 32, 32)
    moved = (embed[1] - embed[0]).norm(dim=-1)
    assert torch.nonzero(moved > 1e-5).tolist() == [[1, 10, 6]]
    for stage, tensor in features.items():
        merged = tensor.shape[2] == 16
        expected = (1, 5, 3) if merged else (1, 10, 6)
        assert most_changed_cell(tensor[1], tensor[0]) == expected, stage


def test_odd_frame_count_is_a_user_error(model: QwenVLModel) -> None:
    with pytest.raises(UserInputError, match="multiple of 2"):
        model.extract(videos=[[Image.new("RGB", (224, 224))] * 3])


def test_unknown_stage_pattern_lists_the_stages(model: QwenVLModel) -> None:
    with pytest.raises(UserInputError, match=r"vision\.post_merge"):
        model.extract([Image.new("RGB", (224, 224))], stages=["vision.merger"])


def test_saved_preset_loads_through_the_hub_code_path(model: QwenVLModel, tmp_path: Path) -> None:
    model.hf_model.save_pretrained(tmp_path)
    model.processor.save_pretrained(tmp_path)
    reloaded = sp.load_model(str(tmp_path), device="cpu")
    assert isinstance(reloaded, QwenVLModel)
    assert reloaded.weights_id.startswith("files sha256")
    images = [with_bright_patch((448, 448), 3, 3)]
    ours, theirs = model.extract(images), reloaded.extract(images)
    for stage in ours:
        assert torch.allclose(ours[stage], theirs[stage], atol=1e-5), stage


def test_random_init_twin_has_same_geometry_other_weights(model: QwenVLModel) -> None:
    twin = model.random_init_twin(seed=3)
    image = [with_bright_patch((448, 448), 1, 1)]
    ours, theirs = model.extract(image, stages=["vision.post_merge"]), twin.extract(image, stages=["vision.post_merge"])
    assert ours["vision.post_merge"].shape == theirs["vision.post_merge"].shape
    assert not torch.allclose(ours["vision.post_merge"], theirs["vision.post_merge"])
    assert (twin.device, twin.dtype) == (model.device, model.dtype)


def test_random_init_twin_is_built_in_the_models_dtype() -> None:
    bf16 = sp.load_model("qwen2.5-vl-tiny", device="cpu", dtype="bf16")
    twin = bf16.random_init_twin(seed=3)
    assert {p.dtype for p in twin.hf_model.parameters()} == {torch.bfloat16}
    assert twin.hf_model.config._attn_implementation == bf16.hf_model.config._attn_implementation


def test_7b_random_preset_has_the_published_size() -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from stageprobe.models.qwen_vl import QWEN_SPECIAL_TOKENS, build_tiny_processor, qwen25_vl_7b_config

    tokenizer = build_tiny_processor("qwen2_5_vl").tokenizer
    config = qwen25_vl_7b_config({t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS})
    with torch.device("meta"):
        skeleton = Qwen2_5_VLForConditionalGeneration(config)
    # Qwen2.5-VL-7B-Instruct has 8.29 B parameters (vision tower 0.68 B + LLM and head)
    assert abs(sum(p.numel() for p in skeleton.parameters()) / 1e9 - 8.292) < 0.001
    assert len(skeleton.model.visual.blocks) == 32 and len(skeleton.model.language_model.layers) == 28


# the LLM offloaded to disk: accelerate's hooks load its weights at each forward
BY_MODULE = {"model.visual": "cpu", "model.language_model": "disk", "lm_head": "cpu"}


@pytest.mark.parametrize("device_map", ["auto", BY_MODULE])
def test_checkpoint_loaded_with_a_device_map_extracts_the_same_features(
    model: QwenVLModel, tmp_path: Path, device_map: str | dict[str, str]
) -> None:
    # No GPU here: "auto" puts every module on the CPU, the explicit map splits CPU and disk. Both
    # go through accelerate's loading, the second through its per-module hooks; not a GPU split.
    model.hf_model.save_pretrained(tmp_path)
    model.processor.save_pretrained(tmp_path)
    mapped = sp.load_model(str(tmp_path), device="cpu", device_map=device_map)
    assert isinstance(mapped, QwenVLModel)
    assert mapped.device == torch.device("cpu")
    if device_map == BY_MODULE:
        assert mapped.hf_model.hf_device_map == BY_MODULE
        assert {p.device.type for p in mapped.language_model.parameters()} == {"meta"}  # on disk
    images = [with_bright_patch((224, 224), 2, 3), Image.new("RGB", (224, 224), GREY)]
    expected, got = model.extract(images), mapped.extract(images)
    assert set(got) == set(expected)
    for stage, grid in expected.items():
        torch.testing.assert_close(got[stage], grid, msg=stage)
    twin = mapped.random_init_twin(seed=3)
    twin_grid = twin.extract(images, stages=["vision.post_merge"])["vision.post_merge"]
    assert twin_grid.shape == expected["vision.post_merge"].shape


def test_device_map_is_refused_for_presets_and_single_device_families() -> None:
    with pytest.raises(UserInputError, match="checkpoints"):
        sp.load_model("qwen2.5-vl-tiny", device="cpu", device_map="auto")
    sp.load_model("dinov2-tiny", device="cpu")  # writes its checkpoint to the preset cache
    with pytest.raises(UserInputError, match="not supported"):
        sp.load_model(str(preset_cache_dir() / "dinov2-tiny"), device="cpu", device_map="auto")


def test_video_frames_get_the_grid_of_images_and_of_the_pixel_baseline(model: QwenVLModel) -> None:
    # the video processors' own minimum would upsample 224-px frames to 336 px (12×12 merged)
    pixels = sp.load_model("pixels").stages_for(224, 224, 4)
    assert model.patch_grid(224, 224, 4) == (2, 16, 16)
    assert model.patch_grid(224, 224, 4)[1:] == model.patch_grid(224, 224)[1:]
    features = model.extract(videos=[[Image.new("RGB", (224, 224), GREY)] * 4], stages=["vision.post_merge"])
    merged = next(info for info in pixels if info.name == "pixels.merged")
    assert features["vision.post_merge"].shape[1:4] == merged.grid == (2, 8, 8)


def test_image_smaller_than_one_merged_patch_is_a_user_error(model: QwenVLModel) -> None:
    with pytest.raises(UserInputError, match=r"at least 28×28 px"):
        model.stages_for(20, 224)
