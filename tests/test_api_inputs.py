"""`model.extract` takes one PIL image, numpy / torch arrays and a stage pattern string, refuses clips of
unequal length, and returns the size the model resized the input to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import stageprobe as sp
from stageprobe.errors import UserInputError


@pytest.fixture(scope="module")
def pixels() -> sp.StageModel:
    return sp.load_model("pixels", device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(56, 84, 3), dtype=np.uint8)


def test_every_input_form_gives_the_features_of_a_list_of_pil_images(pixels: sp.StageModel, photo: np.ndarray) -> None:
    expected = pixels.extract(images=[Image.fromarray(photo)], stages=["pixels.patch"])["pixels.patch"]
    forms = {
        "one PIL image": Image.fromarray(photo),
        "uint8 HWC array": photo,
        "float 0…1 array": photo / 255.0,
        "batch array": photo[None],
        "CHW tensor": torch.from_numpy(photo).permute(2, 0, 1),
        "list of arrays": [photo],
    }
    for name, images in forms.items():
        got = pixels.extract(images, stages="pixels.patch")
        assert list(got) == ["pixels.patch"], name
        assert torch.equal(got["pixels.patch"], expected), name


def test_input_size_is_the_size_the_model_resized_to(pixels: sp.StageModel) -> None:
    image = Image.new("RGB", (100, 100), (10, 200, 30))
    assert pixels.extract(image).input_size == (112, 112)  # snapped to the nearest 28 px multiple
    qwen = sp.load_model("qwen2.5-vl-tiny", device="cpu")
    features = qwen.extract(image, stages="vision.post_merge")
    assert features.input_size == (112, 112)
    assert features["vision.post_merge"].shape[2:4] == (112 // 28, 112 // 28)


def test_clips_of_unequal_length_are_refused(pixels: sp.StageModel) -> None:
    frame = Image.new("RGB", (56, 56))
    with pytest.raises(UserInputError, match=r"same number of frames, got lengths \[2, 4\]"):
        pixels.extract(videos=[[frame] * 2, [frame] * 4])


def test_video_array_is_read_as_clips(pixels: sp.StageModel) -> None:
    clips = np.zeros((2, 4, 56, 56, 3), dtype=np.uint8)
    assert pixels.extract(videos=clips, stages="pixels.merged")["pixels.merged"].shape == (2, 2, 2, 2, 2 * 3 * 28 * 28)


def test_out_of_range_float_images_are_refused(pixels: sp.StageModel, photo: np.ndarray) -> None:
    with pytest.raises(UserInputError, match="values in 0…1"):
        pixels.extract(photo.astype(np.float32))
