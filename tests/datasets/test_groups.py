"""Group-aware splits: no source (photo, COCO image, clip source) is in two splits, on any dataset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_files import pan_clips, write_videos

from stageprobe.datasets import (
    DATASETS,
    SPLITS,
    Dataset,
    dataset_from_spec,
    load_dataset,
    ranked_splits,
    write_photo_coco,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("groups")
    annotation_file = write_photo_coco(root / "coco", n_images=16)
    images = root / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (40 + i, 30), (i * 20, 0, 0)).save(images / f"{i}.png")
    videos = root / "videos"
    write_videos(videos, pan_clips(12, 56), "mp4")  # one subfolder (source) per photo
    return {"coco": annotation_file, "images": images, "videos": videos}


# One small instance of every registered dataset; a new dataset must be added here.
CASES: dict[str, Callable[[dict[str, Path]], Dataset]] = {
    "shapes": lambda f: load_dataset("shapes", n=40, image_size=64, min_size=8, max_size=16),
    "textures": lambda f: load_dataset("textures", n=60, image_size=32),
    "motion": lambda f: load_dataset("motion", n=30, frames=4, image_size=64, min_size=8, max_size=12),
    "coco": lambda f: load_dataset(f"coco:{f['coco']}", image_size=56),
    "images": lambda f: load_dataset(f"images:{f['images']}", image_size=32),
    "pan": lambda f: load_dataset("pan", n=30, frames=4, image_size=56),
    "cutout": lambda f: load_dataset(f"cutout:{f['coco']}", n=30, frames=4, image_size=112),
    "videos": lambda f: load_dataset(f"videos:{f['videos']}", frames=4, image_size=56),
}


def test_every_dataset_has_a_case() -> None:
    assert set(CASES) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_group_crosses_splits(name: str, folders: dict[str, Path]) -> None:
    dataset = CASES[name](folders)
    split_of_group: dict[str, set[str]] = {}
    for i in range(len(dataset)):
        sample = dataset[i]
        # The cheap per-index answers agree with the rendered sample.
        assert (sample.group, sample.split) == (dataset.sample_group(i), dataset.sample_split(i))
        split_of_group.setdefault(sample.group, set()).add(sample.split)
    crossing = {g: s for g, s in split_of_group.items() if len(s) > 1}
    assert not crossing, f"{name}: groups in several splits: {crossing}"
    assert {s for splits in split_of_group.values() for s in splits} == set(SPLITS)


def test_default_textures_test_photos_never_come_from_train_photos() -> None:
    textures = load_dataset("textures")
    photo_sources = {split: {textures[i].target["texture"] for i in textures.split_indices(split)
                             if textures[i].target["source"] == "photo"} for split in SPLITS}
    assert photo_sources["test"] and photo_sources["val"] and photo_sources["train"]
    assert not photo_sources["test"] & photo_sources["train"]
    assert not photo_sources["val"] & (photo_sources["train"] | photo_sources["test"])


def test_ranked_splits_give_every_split_its_share_in_any_order() -> None:
    groups = [f"photo:{i}" for i in range(14)]
    splits = ranked_splits(groups)
    assert splits == ranked_splits(groups[::-1])
    counts = {s: list(splits.values()).count(s) for s in SPLITS}
    assert counts == {"train": 9, "val": 2, "test": 3}
    assert set(ranked_splits(["a", "b", "c"]).values()) == set(SPLITS)
    assert np.all([ranked_splits(["only"])["only"] == "train"])


@pytest.mark.parametrize("name", ["coco", "cutout", "images"])
def test_datasets_read_from_disk_rebuild_from_their_spec(name: str, folders: dict[str, Path]) -> None:
    dataset = CASES[name](folders)
    rebuilt = dataset_from_spec(json.loads(json.dumps(dataset.spec())))
    assert rebuilt.content_hash() == dataset.content_hash()
