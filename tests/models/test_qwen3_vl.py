"""Known-answer checks of the Qwen3-VL and Qwen3.5 adapters against the models' own outputs,
on tiny random-weight presets and on a checkpoint written from a config the project never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models import describe_stages
from stageprobe.models.qwen3_vl import Qwen3VLModel, build_qwen3_processor, qwen3_vl_tiny_config


@pytest.fixture(scope="module", params=["qwen3-vl-tiny", "qwen3.5-tiny"])
def model(request: pytest.FixtureRequest) -> Qwen3VLModel:
    loaded = sp.load_model(request.param, device="cpu")
    assert isinstance(loaded, Qwen3VLModel)
    return loaded


@pytest.fixture(scope="module")
def deepstack_model() -> Qwen3VLModel:
    loaded = sp.load_model("qwen3-vl-tiny", device="cpu")
    assert isinstance(loaded, Qwen3VLModel)
    return loaded


def bright(size: tuple[int, int], row: int, col: int) -> Image.Image:
    """A grey (width, height) image with one white 16-px square at grid cell (row, col)."""
    return bright_cell_image(size, row, col, 16)


def changed_cell(grid: torch.Tensor, base: torch.Tensor) -> tuple[int, int]:
    change = (grid - base)[0].norm(dim=-1)
    return divmod(int(change.argmax()), change.shape[1])


def test_stage_names_and_strides(model: Qwen3VLModel) -> None:
    infos = {info.name: info for info in model.stages_for(224, 288)}
    assert infos["vision.patch_embed"].stride_px == 16 and infos["vision.post_merge"].stride_px == 32
    assert infos["vision.pos_embed"].grid == (1, 14, 18) and infos["vision.post_merge"].grid == (1, 7, 9)
    deepstack = [name for name in infos if name.startswith("vision.deepstack.")]
    before = [name for name in infos if name.endswith(".before_deepstack")]
    if model.name == "qwen3-vl-tiny":
        assert deepstack == ["vision.deepstack.0", "vision.deepstack.1", "vision.deepstack.2"]
        assert before == [f"language.layer.{k}.before_deepstack" for k in range(3)]
    else:
        assert deepstack == before == []
        kinds = {"linear attention" in infos[f"language.layer.{i}"].description for i in range(4)}
        assert kinds == {True, False}  # both layer kinds of the hybrid LLM


def test_patch_embed_is_before_the_position_table(model: Qwen3VLModel) -> None:
    images = [Image.new("RGB", (224, 224), GREY)]
    features = model.extract(images, stages=["vision.patch_embed", "vision.pos_embed"])
    embed, with_positions = features["vision.patch_embed"][0, 0], features["vision.pos_embed"][0, 0]
    # a uniform image embeds every patch alike; the interpolated position table makes them differ
    assert torch.allclose(embed, embed[0, 0].expand_as(embed), atol=1e-5)
    assert (with_positions - with_positions[0, 0]).norm(dim=-1).max() > 1e-3


def test_post_merge_equals_the_models_own_image_features(model: Qwen3VLModel) -> None:
    images = [bright((288, 224), 2, 7), bright((288, 224), 13, 17)]
    ours = model.extract(images, stages=["vision.post_merge"])["vision.post_merge"]
    inputs, _ = model.prepare_inputs(images, None)
    with torch.inference_mode():
        own = model.hf_model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    for b, chunk in enumerate(own.pooler_output):
        torch.testing.assert_close(ours[b].reshape(-1, ours.shape[-1]), chunk.float(), rtol=1e-5, atol=1e-5)


def test_deepstack_stages_equal_the_models_own_deepstack_features(deepstack_model: Qwen3VLModel) -> None:
    images = [bright((224, 224), 0, 13), bright((224, 224), 6, 2)]
    ours = deepstack_model.extract(images, stages=["vision.deepstack.*"])
    inputs, _ = deepstack_model.prepare_inputs(images, None)
    with torch.inference_mode():
        own = deepstack_model.hf_model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    assert len(own.deepstack_features) == 3
    for k, per_image in enumerate(own.deepstack_features):
        grid = ours[f"vision.deepstack.{k}"]
        for b, chunk in enumerate(per_image):
            torch.testing.assert_close(grid[b].reshape(-1, grid.shape[-1]), chunk.float(), rtol=1e-5, atol=1e-5)


def test_language_layers_equal_hidden_states_plus_the_deepstack_addition(deepstack_model: Qwen3VLModel) -> None:
    images = [bright((224, 224), 3, 4), bright((224, 224), 13, 0)]
    ours = deepstack_model.extract(images, stages=["language.*"])
    inputs, token_id = deepstack_model.prepare_inputs(images, None)
    with torch.inference_mode():
        hidden = deepstack_model.hf_model.model(**inputs, output_hidden_states=True).hidden_states
        visual = deepstack_model.hf_model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    positions = inputs["input_ids"] == token_id
    for layer in range(3):  # the layers that receive a DeepStack addition
        for b in range(len(images)):
            recorded = hidden[layer + 1][b][positions[b]].float()  # recorded before the addition
            before = ours[f"language.layer.{layer}.before_deepstack"][b].reshape(recorded.shape)
            after = ours[f"language.layer.{layer}"][b].reshape(recorded.shape)
            torch.testing.assert_close(before, recorded, rtol=1e-4, atol=1e-4)
            added = recorded + visual.deepstack_features[layer][b].float()
            torch.testing.assert_close(after, added, rtol=1e-4, atol=1e-4)


def test_video_grid_equals_the_image_grid_and_prompt_has_timestamps(model: Qwen3VLModel) -> None:
    assert model.patch_grid(224, 224, 4) == (2, 14, 14)
    assert model.patch_grid(224, 224) == (1, 14, 14)
    inputs, token_id = model.prepare_inputs(None, [[Image.new("RGB", (224, 224), GREY)] * 4])
    text = model.processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<0.2 seconds>" in text and "<1.2 seconds>" in text  # one per temporal patch, at 2 fps
    assert int((inputs["input_ids"] == token_id).sum()) == 2 * 7 * 7


def test_image_smaller_than_one_merged_patch_is_a_user_error(model: Qwen3VLModel) -> None:
    with pytest.raises(UserInputError, match=r"at least 32×32 px"):
        model.extract([Image.new("RGB", (31, 64), GREY)])


def test_saved_preset_reloads_offline_with_the_same_features(model: Qwen3VLModel, tmp_path: Path) -> None:
    model.hf_model.save_pretrained(tmp_path)
    model.processor.save_pretrained(tmp_path)
    reloaded = sp.load_model(str(tmp_path), device="cpu")
    assert isinstance(reloaded, Qwen3VLModel) and reloaded.weights_id.startswith("files sha256")
    images = [bright((224, 224), 5, 5)]
    ours, theirs = model.extract(images), reloaded.extract(images)
    assert list(ours) == list(theirs)
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=0, msg=name)


def write_unseen_checkpoint(directory: Path) -> Path:
    """A Qwen3-VL checkpoint written by transformers from a config none of the presets uses."""
    from transformers import Qwen3VLForConditionalGeneration

    processor = build_qwen3_processor()
    config = qwen3_vl_tiny_config(processor)
    config.vision_config.depth = 3
    config.vision_config.deepstack_visual_indexes = [1, 2]
    config.vision_config.num_position_embeddings = 36  # a 6×6 position table
    torch.manual_seed(7)
    Qwen3VLForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_unseen_checkpoint_loads_by_path_and_keeps_every_stage_aligned(tmp_path: Path) -> None:
    directory = write_unseen_checkpoint(tmp_path / "unseen")
    model = sp.load_model(str(directory), device="cpu")
    assert isinstance(model, Qwen3VLModel)
    names = [info.name for info in describe_stages(str(directory), 192, 256)]
    assert names == [info.name for info in model.stages_for(192, 256)]
    assert [n for n in names if "deepstack" in n] == [
        "vision.deepstack.0", "vision.deepstack.1",
        "language.layer.0.before_deepstack", "language.layer.1.before_deepstack",
    ]
    cells = [(0, 0), (11, 15), (0, 15), (6, 9)]
    features = model.extract([Image.new("RGB", (256, 192), GREY)] + [bright((256, 192), r, c) for r, c in cells])
    for name, grid in features.items():
        merged = grid.shape[2] == 6
        for k, (row, col) in enumerate(cells, start=1):
            expected = (row // 2, col // 2) if merged else (row, col)
            assert changed_cell(grid[k], grid[0]) == expected, (name, row, col)


def test_config_lacking_a_needed_field_is_a_user_error_naming_it(tmp_path: Path) -> None:
    directory = write_unseen_checkpoint(tmp_path / "broken")
    raw = json.loads((directory / "config.json").read_text())
    del raw["vision_config"]["deepstack_visual_indexes"]
    (directory / "config.json").write_text(json.dumps(raw))
    for call in (lambda: sp.load_model(str(directory), device="cpu"), lambda: describe_stages(str(directory))):
        with pytest.raises(UserInputError, match=r"lacks 'vision_config\.deepstack_visual_indexes'"):
            call()


def test_8b_random_preset_has_the_published_size() -> None:
    from transformers import Qwen3VLForConditionalGeneration

    from stageprobe.models.qwen3_vl import qwen3_vl_8b_config

    with torch.device("meta"):
        skeleton = Qwen3VLForConditionalGeneration(qwen3_vl_8b_config(build_qwen3_processor()))
    # Qwen3-VL-8B-Instruct has 8.77 B parameters
    assert abs(sum(p.numel() for p in skeleton.parameters()) / 1e9 - 8.767) < 0.001
    assert len(skeleton.model.visual.blocks) == 27 and len(skeleton.model.language_model.layers) == 36
    assert "RANDOM" in sp.models.PRESETS["qwen3-vl-8b-random"].description


def test_moe_checkpoint_loads_by_path_with_aligned_stages(tmp_path: Path) -> None:
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    processor = build_qwen3_processor()
    dense = qwen3_vl_tiny_config(processor).to_dict()
    text = {**dense["text_config"], "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
            "decoder_sparse_step": 1}
    config = Qwen3VLMoeConfig(text_config=text, vision_config=dense["vision_config"],
                              **{k: dense[k] for k in ("image_token_id", "video_token_id",
                                                       "vision_start_token_id", "vision_end_token_id")})
    torch.manual_seed(3)
    Qwen3VLMoeForConditionalGeneration(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model = sp.load_model(str(tmp_path), device="cpu")
    assert isinstance(model, Qwen3VLModel) and model.family == "qwen3_vl_moe"
    features = model.extract([Image.new("RGB", (224, 224), GREY), bright((224, 224), 13, 2)])
    assert "vision.deepstack.2" in features and "language.layer.2.before_deepstack" in features
    for name, grid in features.items():
        expected = (6, 1) if grid.shape[2] == 7 else (13, 2)
        assert changed_cell(grid[1], grid[0]) == expected, name


def test_stages_are_described_from_config_and_processor_files_alone(tmp_path: Path) -> None:
    processor = build_qwen3_processor()
    config = qwen3_vl_tiny_config(processor)
    config.vision_config.deepstack_visual_indexes = [2]
    config.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)  # no weights in the directory
    infos = {info.name: info for info in describe_stages(str(tmp_path), 320, 256)}
    assert [name for name in infos if "deepstack" in name] == [
        "vision.deepstack.0", "language.layer.0.before_deepstack"]
    assert infos["vision.post_merge"].grid == (1, 10, 8) and infos["vision.patch_embed"].grid == (1, 20, 16)
    with pytest.raises(UserInputError):
        sp.load_model(str(tmp_path), device="cpu")
