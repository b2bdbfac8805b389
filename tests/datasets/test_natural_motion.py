"""`pan` and `cutout`: direction, speed and order labels agree with what the frames show."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from stageprobe.datasets import load_dataset
from stageprobe.errors import UserInputError

RED, BLUE, GREY = (220, 30, 30), (30, 60, 220), (90, 90, 90)


def heading_class(track: np.ndarray) -> int:
    """Direction class of a track's net displacement (k·45° counter-clockwise; image y points down)."""
    dx, dy = track[-1] - track[0]
    return round((math.degrees(math.atan2(-dy, dx)) % 360) / 45) % 8


def test_pan_labels_match_the_measured_image_shift() -> None:
    dataset = load_dataset("pan", n=16, frames=6, image_size=112, max_zoom=0.0)
    directions, speeds = set(), {0: [], 1: []}
    for sample in dataset:
        # The content's shift between frames, measured from the pixels alone (sub-pixel); the Hann
        # window keeps the frame edges, which do not move, from pulling the estimate to zero.
        hann = window("hann", sample.frames[0].size[::-1])
        grey = [np.asarray(f.convert("L"), dtype=np.float64) * hann for f in sample.frames]
        shifts = np.array([phase_cross_correlation(later, earlier, upsample_factor=20)[0]
                           for later, earlier in zip(grey[1:], grey[:-1], strict=True)])
        steps = np.diff(sample.target["centroids"], axis=0)
        np.testing.assert_allclose(shifts[:, ::-1], steps, atol=0.35)
        assert heading_class(sample.target["centroids"]) == sample.target["direction"]
        lengths = np.linalg.norm(steps, axis=1)
        assert lengths.mean() == pytest.approx(sample.target["speed_px_per_frame"])
        # Natural clips decelerate; reversed clips are the same frames backwards, so they accelerate.
        assert (lengths[0] < lengths[-1]) == sample.target["reversed"]
        directions.add(sample.target["direction"])
        speeds[sample.target["speed"]].append(lengths.mean())
    assert len(directions) >= 5 and max(speeds[0]) < min(speeds[1])


def test_pan_zoom_keeps_the_tracked_point_on_its_line() -> None:
    sample = load_dataset("pan", n=1, seed=3, max_zoom=0.25)[0]
    track = sample.target["centroids"]
    offsets = track - track[0]
    direction = offsets[-1] / np.linalg.norm(offsets[-1])
    np.testing.assert_allclose(np.cross(offsets, direction), 0, atol=1e-3)
    assert sample.target["zoom"] != 1.0


@pytest.fixture
def one_object_coco(tmp_path: Path) -> Path:
    """A red square object on grey (polygon mask) and 12 empty blue pictures: every split has some."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    with_object = Image.new("RGB", (200, 100), GREY)
    with_object.paste(RED, (50, 20, 90, 60))
    with_object.save(tmp_path / "val2017" / "1.png")
    Image.new("RGB", (120, 90), BLUE).save(tmp_path / "val2017" / "blue.png")
    square = [50, 20, 90, 20, 90, 60, 50, 60]
    document = {
        "images": [{"id": 1, "file_name": "1.png", "width": 200, "height": 100},
                   *({"id": i, "file_name": "blue.png", "width": 120, "height": 90} for i in range(2, 14))],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [50, 20, 40, 40], "area": 1600,
                         "iscrowd": 0, "segmentation": [square]}],
        "categories": [{"id": 1, "name": "box"}],
    }
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return path


def test_cutout_moves_the_masked_object_over_another_photo(one_object_coco: Path) -> None:
    dataset = load_dataset(f"cutout:{one_object_coco}", n=12, frames=4, image_size=112)
    for sample in dataset:
        track = []
        for frame in sample.frames:
            pixels = np.asarray(frame)
            red = np.all(pixels == RED, axis=-1)
            # Only the object was pasted: nothing of its grey surroundings came along.
            assert not np.all(pixels == GREY, axis=-1).any()
            rows, cols = np.nonzero(red)
            track.append((cols.mean() + 0.5, rows.mean() + 0.5))
        np.testing.assert_allclose(track, sample.target["centroids"], atol=1e-4)
        assert heading_class(np.array(track)) == sample.target["direction"]
        assert sample.group == "coco-1" and sample.target["object"] == "box"
        background = sample.target["background_image_id"]
        assert background != 1 and dataset.source.split_of_image(background) == sample.split


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("pan", {"photos": "coffee,moon"}, "at least 3"),
        ("pan", {"frames": 5}, "frames=5 is odd"),
        ("pan", {"max_zoom": 0.5}, r"max_zoom=0.5 must be ≥ 0.0 and ≤ 0.25"),
    ],
)
def test_bad_pan_options(spec: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_dataset(spec, **options)


def test_cutout_without_big_enough_objects(one_object_coco: Path) -> None:
    with pytest.raises(UserInputError, match=r"no non-crowd object .* area ≥ 5000"):
        load_dataset(f"cutout:{one_object_coco}", min_area=5000)
