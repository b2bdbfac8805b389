"""Known-answer checks of the generic ViT adapter (DINOv2 / SigLIP / CLIP): raster order through
each model's own processor, the from_pretrained round trip, and extraction invariances — all on
tiny random-weight presets built offline into a throwaway cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import stageprobe as sp
from stageprobe.errors import UserInputError
from stageprobe.models.vit import VitModel

# preset: (side of the square fed to the processor, px a center crop would cut from each edge,
#          patch px, grid side, has vision.final). Inputs are fed at the encoder's native size, so
#          the resize is the identity and no patch is blurred across cells. No preset is cropped:
#          DINOv2's and CLIP's processors would center-crop, stageprobe tells them not to.
GEOMETRY = {
    "dinov2-tiny": (224, 0, 14, 16, True),
    "siglip-tiny": (224, 0, 16, 14, True),
    "clip-tiny": (224, 0, 16, 14, False),  # CLS-only final norm
}
GREY = (120, 130, 140)
ODD = (250, 10, 60)


@pytest.fixture(scope="module", autouse=True)
def preset_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Presets built fresh into a temporary cache, so the build path runs and ~/.cache stays clean."""
    cache = tmp_path_factory.mktemp("stageprobe-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGEPROBE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module", params=list(GEOMETRY))
def model(request: pytest.FixtureRequest, preset_cache: Path) -> VitModel:
    loaded = sp.load_model(request.param, device="cpu")
    assert isinstance(loaded, VitModel)
    return loaded


def noise_images(count: int, side: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def test_stage_list_geometry(model: VitModel) -> None:
    side, _, patch, grid, has_final = GEOMETRY[model.name]
    blocks = [f"vision.block.{i}" for i in range(model.hf_model.config.num_hidden_layers)]
    assert model.stage_names == ["vision.embed", *blocks] + (["vision.final"] if has_final else [])
    assert model.default_image_size == (224, 224)
    for info in model.stages_for(side, side):
        assert (info.stride_px, info.grid, info.dim) == (patch, (1, grid, grid), 32)
    # Every input is resized whole to 224², never cropped.
    assert model.processed_size(200, 300) == (224, 224)
    features = model.extract(noise_images(2, side))
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        name: (2, 1, grid, grid, 32) for name in model.stage_names
    }
    assert not any(f.is_inference() for f in features.values())


def test_prefix_tokens_are_cls_and_registers(model: VitModel) -> None:
    assert model.prefix_tokens == {"dinov2-tiny": 1 + 2, "siglip-tiny": 0, "clip-tiny": 1}[model.name]


def test_odd_patch_lands_at_its_grid_cell(model: VitModel) -> None:
    side, crop, patch, grid, _ = GEOMETRY[model.name]
    last = grid - 1
    cells = [(0, 0), (0, last), (last, 0), (last, last), (3, 5)]
    images = [Image.new("RGB", (side, side), GREY)]
    for row, col in cells:
        image = Image.new("RGB", (side, side), GREY)
        top, left = crop + row * patch, crop + col * patch
        image.paste(ODD, (left, top, left + patch, top + patch))
        images.append(image)
    features = model.extract(images)
    for stage, grids in features.items():
        for k, (row, col) in enumerate(cells, start=1):
            change = (grids[k, 0] - grids[0, 0]).norm(dim=-1)  # (H, W)
            if stage == "vision.embed":
                # Patch embedding is per patch: the odd token changes, no other token does.
                others = change.clone()
                others[row, col] = 0
                assert change[row, col] > 1e-2, (stage, row, col)
                assert others.max() <= 1e-5 * change[row, col], (stage, row, col)
            else:
                # Attention mixes tokens, but the residual keeps the odd token the most changed one.
                assert divmod(int(change.argmax()), grid) == (row, col), (stage, row, col)


def test_all_stages_at_once_equal_each_stage_alone(model: VitModel) -> None:
    images = noise_images(2, GEOMETRY[model.name][0])
    together = model.extract(images)
    for stage in model.stage_names:
        alone = model.extract(images, stages=[stage])
        assert list(alone) == [stage]
        torch.testing.assert_close(alone[stage], together[stage], rtol=0, atol=0)


def test_batch_of_four_equals_four_batches_of_one(model: VitModel) -> None:
    images = noise_images(4, GEOMETRY[model.name][0], seed=1)
    batched = model.extract(images)
    for i, image in enumerate(images):
        single = model.extract([image])
        for stage in model.stage_names:
            torch.testing.assert_close(single[stage][0], batched[stage][i], rtol=1e-4, atol=1e-5)


def test_stage_patterns_select_in_pipeline_order(model: VitModel) -> None:
    images = noise_images(1, GEOMETRY[model.name][0])
    assert list(model.extract(images, stages=["vision.block.*", "vision.embed"])) == [
        name for name in model.stage_names if name != "vision.final"
    ]
    assert model.extract(images, stages=[]) == {}
    with pytest.raises(UserInputError, match="matches no stage"):
        model.extract(images, stages=["language.*"])


def test_videos_are_refused(model: VitModel) -> None:
    with pytest.raises(UserInputError, match="image encoder"):
        model.extract(videos=[noise_images(2, 224)])


def save(model: VitModel, directory: Path) -> Path:
    model.hf_model.save_pretrained(directory)
    model.processor.save_pretrained(directory)
    return directory


def test_saved_checkpoint_loads_by_path_with_the_same_features(model: VitModel, tmp_path: Path) -> None:
    reloaded = sp.load_model(str(save(model, tmp_path / "checkpoint")), device="cpu")
    assert isinstance(reloaded, VitModel)
    assert reloaded.stages == model.stages
    images = noise_images(2, GEOMETRY[model.name][0])
    expected, actual = model.extract(images), reloaded.extract(images)
    assert list(actual) == list(expected)
    for stage in expected:
        torch.testing.assert_close(actual[stage], expected[stage], rtol=0, atol=0)
    summary = reloaded.config_summary()
    assert summary["config_sha256"] == model.config_summary()["config_sha256"]
    assert summary["revision"].startswith("sha256:")


def test_preset_directory_loads_through_the_hub_path(model: VitModel, preset_cache: Path) -> None:
    """The cached preset is a full checkpoint (two towers for SigLIP / CLIP), read via config.json."""
    directory = preset_cache / "presets" / model.name
    reloaded = sp.load_model(str(directory), device="cpu")
    assert reloaded.config_summary()["architecture"] == model.config_summary()["architecture"]
    images = noise_images(1, GEOMETRY[model.name][0])
    torch.testing.assert_close(reloaded.extract(images), model.extract(images), rtol=0, atol=0)


def test_dinov2_without_registers_drops_only_cls(tmp_path: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=56)
    Dinov2Model(config).save_pretrained(tmp_path)
    BitImageProcessor(size={"height": 56, "width": 56}, do_center_crop=False).save_pretrained(tmp_path)
    model = sp.load_model(str(tmp_path), device="cpu")
    assert isinstance(model, VitModel)
    assert model.prefix_tokens == 1
    features = model.extract(noise_images(1, 56))
    assert features["vision.final"].shape == (1, 1, 4, 4, 32)


def test_preset_is_a_cached_checkpoint_rebuilt_identically(preset_cache: Path, tmp_path: Path) -> None:
    first = sp.load_model("clip-tiny", device="cpu")
    assert (preset_cache / "presets" / "clip-tiny" / "config.json").is_file()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAGEPROBE_CACHE", str(tmp_path))  # an empty cache: built again from the seed
        second = sp.load_model("clip-tiny", device="cpu")
    images = noise_images(1, 224)
    torch.testing.assert_close(second.extract(images), first.extract(images), rtol=0, atol=0)


def test_presets_say_they_are_random() -> None:
    for name in GEOMETRY:
        assert "random weights" in sp.models.PRESETS[name].description


def test_unknown_name_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown model 'no-such-vit'"):
        sp.load_model("no-such-vit", device="cpu")


def test_directory_without_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"no config\.json"):
        sp.load_model(str(tmp_path), device="cpu")


def test_unsupported_architecture_is_a_user_error(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path)
    with pytest.raises(UserInputError, match=r"'bert' model.*not support.*dinov2"):
        sp.load_model(str(tmp_path), device="cpu")


def test_config_without_weights_is_a_user_error(tmp_path: Path) -> None:
    from transformers import Dinov2Config

    Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UserInputError, match="cannot load the dinov2 weights"):
        sp.load_model(str(tmp_path), device="cpu")


def test_checkpoint_missing_vision_weights_is_a_user_error(model: VitModel, tmp_path: Path) -> None:
    directory = save(model, tmp_path / "checkpoint")
    weights = load_file(directory / "model.safetensors")
    dropped = next(key for key in weights if "layer" in key and key.endswith("weight"))
    del weights[dropped]
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserInputError, match="lacks 1 weights"):
        sp.load_model(str(directory), device="cpu")


def test_random_init_twin_has_same_geometry_other_weights(model: VitModel) -> None:
    twin = model.random_init_twin(seed=3)
    assert isinstance(twin, VitModel) and twin.weights_id == "random-init seed 3"
    images = noise_images(1, GEOMETRY[model.name][0])
    ours, theirs = model.extract(images), twin.extract(images)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert not torch.allclose(ours["vision.block.0"], theirs["vision.block.0"])
    assert torch.equal(model.random_init_twin(seed=3).extract(images)["vision.block.0"], theirs["vision.block.0"])
