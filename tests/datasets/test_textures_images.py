"""`textures` (procedural + scikit-image photos) and `images:DIR` (any folder, bad files named or skipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stageprobe.datasets import load_dataset
from stageprobe.datasets.images import ImageFolderDataset
from stageprobe.datasets.textures import PHOTOS, TexturesDataset
from stageprobe.errors import UserInputError


def test_textures_mix_photos_and_procedural_deterministically() -> None:
    dataset = load_dataset("textures", n=12, image_size=64)
    assert isinstance(dataset, TexturesDataset)
    sources = [s.target["source"] for s in dataset]
    assert sources == ["procedural", "photo"] * 6
    assert dataset.content_hash() == load_dataset("textures", n=12, image_size=64).content_hash()
    assert all(s.image.size == (64, 64) for s in dataset)
    photos = [s.target for s in dataset if s.target["source"] == "photo"]
    assert [p["texture"] for p in photos] == PHOTOS[:6]
    assert all(p["frequency"] is None and p["orientation"] is None for p in photos)


def test_later_photo_samples_are_crops_of_the_same_photos() -> None:
    dataset = load_dataset("textures", n=4, image_size=64, photo_fraction=1.0, photos="camera,coins")
    targets = [s.target for s in dataset]
    assert [t["texture"] for t in targets] == ["camera", "coins", "camera", "coins"]
    camera_side = 512
    assert targets[0]["crop"] == [0, 0, camera_side, camera_side] and not targets[0]["flipped"]
    x0, y0, x1, y1 = targets[2]["crop"]
    assert x1 - x0 == y1 - y0 and camera_side // 2 <= x1 - x0 <= camera_side
    assert not np.array_equal(np.asarray(dataset[0].image), np.asarray(dataset[2].image))


def test_vertical_stripes_have_the_labelled_frequency() -> None:
    dataset = load_dataset("textures", n=120, image_size=128, photo_fraction=0.0)
    found = 0
    for sample in dataset:
        t = sample.target
        if t["texture"] != "stripes" or t["orientation"] not in (0.0, 90.0):
            continue
        pixels = np.asarray(sample.image.convert("L"), dtype=np.int32)
        line = pixels[64, :] if t["orientation"] == 0.0 else pixels[:, 64]
        changes = np.count_nonzero(np.diff(line))
        # A square wave with f cycles has 2f edges across the image, give or take one at the border.
        assert abs(changes - 2 * t["frequency"]) <= 1
        found += 1
    assert found >= 3


def test_unknown_photo_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown photo lena"):
        load_dataset("textures", photos="lena")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (80, 40), (200, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGB", (30, 60), (0, 200, 0)).save(tmp_path / "sub" / "a.jpg")
    Image.new("L", (50, 50), 128).save(tmp_path / "c.bmp")
    Image.new("RGB", (20, 20), (0, 0, 200)).save(tmp_path / "d.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_is_recursive_sorted_and_resized(folder: Path) -> None:
    dataset = load_dataset(f"images:{folder}", image_size=32)
    assert isinstance(dataset, ImageFolderDataset)
    assert dataset.files == ["b.png", "c.bmp", "d.png", "sub/a.jpg"]
    sample = dataset[0]
    assert sample.image.size == (32, 32) and sample.image.mode == "RGB"
    assert sample.target == {"path": "b.png", "original_size": (40, 80)}
    assert sample.key == "images-b.png"
    assert len(load_dataset(f"images:{folder}", n=3)) == 3
    assert {dataset.sample_split(i) for i in range(len(dataset))} == {"train", "val", "test"}


def test_image_folder_with_fewer_images_than_needed_says_how_many(folder: Path) -> None:
    with pytest.raises(UserInputError, match=r"holds 4 readable images but 10 are needed; add 6 more"):
        load_dataset(f"images:{folder}", n=10)


def test_corrupt_and_truncated_files_are_named_or_skipped(folder: Path) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    jpeg = folder / "sub" / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:-400])
    with pytest.raises(UserInputError, match=r"broken\.png cannot be decoded.*--skip-bad"):
        load_dataset(f"images:{folder}")
    kept = load_dataset(f"images:{folder}", skip_bad=True)
    assert isinstance(kept, ImageFolderDataset)
    assert kept.files == ["b.png", "c.bmp", "d.png"]
    assert [s["record"] for s in kept.skipped] == ["broken.png", "sub/a.jpg"]
    assert kept.spec()["skipped"] == kept.skipped


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="holds 0 readable images; train, val and test need at least 3"):
        load_dataset(f"images:{tmp_path}")
    with pytest.raises(UserInputError, match="is not a folder"):
        load_dataset(f"images:{tmp_path / 'nope'}")
