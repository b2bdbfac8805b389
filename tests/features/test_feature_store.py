"""Round trip through the feature store: what is loaded back is what the model produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from feature_fakes import IMAGE_HEIGHT, IMAGE_WIDTH, GeneratedClips, GeneratedImages, InstrumentedPixels

import stageprobe
from stageprobe.errors import UserInputError
from stageprobe.features import FeatureStore, extract_dataset


def reference_features(model: InstrumentedPixels, dataset: GeneratedImages) -> dict[str, torch.Tensor]:
    return model.inner.extract(images=[dataset[i].image for i in range(len(dataset))])


@pytest.mark.parametrize(("store_dtype", "tolerance"), [("fp32", 0.0), ("float16", 1e-3), ("bf16", 8e-3)])
def test_round_trip_matches_model_extract(tmp_path: Path, store_dtype: str, tolerance: float) -> None:
    dataset = GeneratedImages(11)
    model = InstrumentedPixels()
    store = extract_dataset(model, dataset, tmp_path / "store", batch_size=3, shard_size=4,
                            store_dtype=store_dtype, progress=False)
    expected = reference_features(model, dataset)
    reopened = FeatureStore.open(tmp_path / "store")
    assert reopened.stages == ["pixels.patch", "pixels.merged"]
    for stage, grid in expected.items():
        loaded = reopened.load(stage)
        assert loaded.dtype == torch.float32
        assert loaded.shape == grid.shape
        if tolerance == 0.0:
            assert torch.equal(loaded, grid)
        else:
            torch.testing.assert_close(loaded, grid, atol=tolerance, rtol=0)
    assert store.keys == [dataset[i].key for i in range(len(dataset))]
    assert store.splits == [dataset[i].split for i in range(len(dataset))]


def test_one_forward_per_batch_captures_every_stage(tmp_path: Path) -> None:
    model = InstrumentedPixels()
    extract_dataset(model, GeneratedImages(10), tmp_path / "store", batch_size=4, shard_size=8,
                    progress=False)
    # Batches never cross a shard boundary: shard 0 is 4+4, shard 1 is 2.
    assert model.batch_sizes == [4, 4, 2]


def test_manifest_records_provenance(tmp_path: Path) -> None:
    dataset = GeneratedImages(5)
    store = extract_dataset(InstrumentedPixels(), dataset, tmp_path / "store", stages=["pixels.merged"],
                            shard_size=2, store_dtype="bf16", limit=3, progress=False)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["model_name"] == "pixels"
    assert manifest["weights_id"] == "none"
    assert manifest["model_config"] == InstrumentedPixels().config_summary()
    assert len(manifest["model_config_hash"]) == 64
    assert manifest["dataset_spec"] == dataset.spec()
    assert manifest["dataset_content_hash"] == dataset.content_hash()
    assert manifest["stageprobe_version"] == stageprobe.__version__
    assert manifest["store_dtype"] == "bfloat16"
    assert manifest["shard_size"] == 2
    assert manifest["num_samples"] == 3
    assert manifest["limit"] == 3
    assert manifest["frames_as_images"] is False
    assert manifest["complete"] is True
    assert manifest["stages"] == [{
        "name": "pixels.merged", "shape": [1, IMAGE_HEIGHT // 28, IMAGE_WIDTH // 28, 3 * 28 * 28],
        "stride_px": 28, "source_dtype": "float32", "description": "raw pixels of each 28 px patch",
    }]
    assert manifest["samples"]["keys"] == [dataset[i].key for i in range(3)]
    assert store.stages == ["pixels.merged"]
    assert store.shape("pixels.merged") == (1, 2, 3, 2352)
    assert sorted(p.name for p in (tmp_path / "store" / "pixels.merged").iterdir()) == [
        "shard-00000.safetensors", "shard-00001.safetensors"]


def test_load_by_indices_and_iterate_shards(tmp_path: Path) -> None:
    store = extract_dataset(InstrumentedPixels(), GeneratedImages(10), tmp_path / "store", shard_size=3,
                            store_dtype="fp32", progress=False)
    everything = store.load("pixels.patch")
    picked = [9, 0, 4, 4, 3]
    assert torch.equal(store.load("pixels.patch", picked), everything[picked])
    shards = list(store.iter_shards("pixels.patch"))
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert torch.equal(torch.cat([s.features for s in shards]), everything)
    for split in ("train", "val", "test"):
        assert store.split_indices(split) == [i for i, name in enumerate(store.splits) if name == split]
    assert store.verify() == []
    with pytest.raises(UserInputError, match="not in the feature store"):
        store.load("vision.pre_merge")


def test_video_goes_through_native_video_path(tmp_path: Path) -> None:
    clips = GeneratedClips(3, frames=4)
    model = InstrumentedPixels()
    store = extract_dataset(model, clips, tmp_path / "video", store_dtype="fp32", progress=False)
    expected = model.inner.extract(videos=[clips[i].frames or [] for i in range(3)])
    assert store.manifest["input_mode"] == "video"
    assert store.manifest["frames_as_images"] is False
    assert store.shape("pixels.patch")[0] == 2  # 4 frames / temporal patch of 2
    assert torch.equal(store.load("pixels.patch"), expected["pixels.patch"])


def test_frames_as_images_stacks_per_frame_features_on_time(tmp_path: Path) -> None:
    clips = GeneratedClips(3, frames=4)
    model = InstrumentedPixels(video=False)
    store = extract_dataset(model, clips, tmp_path / "frames", store_dtype="fp32", frames_as_images=True,
                            progress=False)
    assert store.manifest["input_mode"] == "frames_as_images"
    assert store.manifest["frames_as_images"] is True
    loaded = store.load("pixels.patch")
    assert loaded.shape[1] == 4
    frame = model.inner.extract(images=[(clips[2].frames or [])[3]])["pixels.patch"]
    assert torch.equal(loaded[2, 3], frame[0, 0])


def test_video_without_video_path_and_frames_mode_on_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no video path"):
        extract_dataset(InstrumentedPixels(video=False), GeneratedClips(2), tmp_path / "a", progress=False)
    with pytest.raises(UserInputError, match="video datasets only"):
        extract_dataset(InstrumentedPixels(), GeneratedImages(2), tmp_path / "b", frames_as_images=True,
                        progress=False)


def test_mixed_image_sizes_name_the_sample(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="noise-0-0003"):
        extract_dataset(InstrumentedPixels(), GeneratedImages(6, odd_size_at=3), tmp_path / "store",
                        progress=False)


def test_float16_overflow_is_refused_and_bfloat16_holds_it(tmp_path: Path) -> None:
    loud = InstrumentedPixels(scale=1e6)
    with pytest.raises(UserInputError, match="beyond float16"):
        extract_dataset(loud, GeneratedImages(2), tmp_path / "fp16", progress=False)
    store = extract_dataset(loud, GeneratedImages(2), tmp_path / "bf16", store_dtype="bf16", progress=False)
    assert torch.isfinite(store.load("pixels.patch")).all()


def test_bad_arguments_and_missing_store(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="store dtype"):
        extract_dataset(InstrumentedPixels(), GeneratedImages(2), tmp_path / "a", store_dtype="int8",
                        progress=False)
    with pytest.raises(UserInputError, match="matches no stage"):
        extract_dataset(InstrumentedPixels(), GeneratedImages(2), tmp_path / "b", stages=["vision.*"],
                        progress=False)
    with pytest.raises(UserInputError, match="batch size"):
        extract_dataset(InstrumentedPixels(), GeneratedImages(2), tmp_path / "c", batch_size=0,
                        progress=False)
    with pytest.raises(UserInputError, match="not a feature store"):
        FeatureStore.open(tmp_path / "nowhere")
