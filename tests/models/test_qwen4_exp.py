"""Known-answer checks of the Qwen4-Exp adapter: the LLM's hyper-connection residual read whole,
equal to the model's own hidden states, and the native video path."""

from __future__ import annotations

import pytest
import torch
from bright_cells import GREY, bright_cell_image
from PIL import Image

import stageprobe as sp
from stageprobe.models import describe_stages
from stageprobe.models.qwen4_exp import Qwen4ExpModel


@pytest.fixture(scope="module")
def model() -> Qwen4ExpModel:
    loaded = sp.load_model("qwen4-exp-tiny", device="cpu")
    assert isinstance(loaded, Qwen4ExpModel)
    return loaded


def test_layer_stages_equal_the_models_own_hidden_states(model: Qwen4ExpModel) -> None:
    images = [bright_cell_image((224, 224), 2, 7, 16), bright_cell_image((224, 224), 11, 0, 16)]
    ours = model.extract(images, stages=["language.*"])
    inputs, layout = model.prepare_batch(images, None)
    with torch.inference_mode():
        hidden = model.hf_model.model(**inputs, output_hidden_states=True).hidden_states
    layers = model.text_config.num_hidden_layers
    width = model.text_config.hc_count * model.text_config.hidden_size
    assert len(hidden) == layers + 1
    # hidden_states[i + 1] is layer i's output; the last entry is the final mixer's (transformers
    # ties it to last_hidden_state), which is what `language.norm` reads
    expected = {f"language.layer.{i}": hidden[i + 1] for i in range(layers - 1)}
    expected["language.norm"] = hidden[-1]
    for name, own in expected.items():
        grid = ours[name]
        assert grid.shape[-1] == own.shape[-1], name
        mask = layout.visual_mask
        for b in range(len(images)):
            torch.testing.assert_close(grid[b].reshape(-1, grid.shape[-1]), own[b][mask[b]].float(),
                                       rtol=1e-5, atol=1e-5, msg=name)
    assert ours["language.layer.0"].shape[-1] == width == 4 * 64
    assert ours["language.layer.3"].shape[-1] == width and ours["language.norm"].shape[-1] == 64


def test_video_runs_through_the_native_video_path(model: Qwen4ExpModel) -> None:
    still = [Image.new("RGB", (224, 224), GREY)] * 4
    moving = [bright_cell_image((224, 224), 3, c, 32) for c in (1, 2, 3, 4)]
    features = model.extract(videos=[still, moving], stages=["vision.post_merge", "language.layer.1"])
    assert features["vision.post_merge"].shape[:4] == (2, 2, 7, 7)  # 4 frames → 2 temporal patches
    assert features["language.layer.1"].shape == (2, 2, 7, 7, 256)
    assert (features["vision.post_merge"][1] - features["vision.post_merge"][0]).abs().max() > 1e-3


def test_the_published_size_describes_without_weights() -> None:
    infos = {info.name: info for info in describe_stages("qwen4-exp-random", 448, 448)}
    hidden, streams = 2048, 4
    assert infos["language.layer.0"].dim == streams * hidden and infos["language.norm"].dim == hidden
    assert infos["vision.post_merge"].stride_px == 32 and infos["vision.post_merge"].grid == (1, 14, 14)
    assert "indexed attention" in infos["language.layer.3"].description
