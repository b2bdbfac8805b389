"""Known-answer tests for `shapes`: targets must agree with the pixels they describe."""

from __future__ import annotations

import numpy as np
import pytest

from stageprobe.datasets import load_dataset
from stageprobe.datasets.shapes import COLORS, ShapesDataset
from stageprobe.errors import UserInputError


@pytest.fixture(scope="module")
def shapes() -> ShapesDataset:
    dataset = load_dataset("shapes", n=24, seed=3)
    assert isinstance(dataset, ShapesDataset)
    return dataset


def colour_mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(pixels == np.array(COLORS[colour], dtype=np.uint8), axis=-1)


def test_same_seed_gives_identical_images_and_targets() -> None:
    first, second = load_dataset("shapes", n=6, seed=11), load_dataset("shapes", n=6, seed=11)
    other = load_dataset("shapes", n=6, seed=12)
    assert first.content_hash() == second.content_hash() != other.content_hash()
    a, b = first[4], second[4]
    assert np.asarray(a.image).tobytes() == np.asarray(b.image).tobytes()
    for name in ("boxes", "boxes_norm", "labels", "masks", "centroids"):
        np.testing.assert_array_equal(a.target[name], b.target[name])
    assert a.target["relations"] == b.target["relations"]
    assert a.key == "shapes-11-000004"


def test_target_types_and_shapes(shapes: ShapesDataset) -> None:
    sample = shapes[0]
    t = sample.target
    k = len(t["colors"])
    assert sample.image is not None and sample.image.size == (448, 448)
    assert t["boxes"].dtype == np.float32 and t["boxes"].shape == (k, 4)
    assert t["boxes_norm"].dtype == np.float32 and t["boxes_norm"].shape == (k, 4)
    assert t["labels"].dtype == np.int64 and t["labels"].shape == (k,)
    assert t["masks"].dtype == bool and t["masks"].shape == (k, 448, 448)
    assert t["image_size"] == (448, 448)
    assert len(t["relations"]) == k * (k - 1)
    assert shapes.class_names == ["circle", "square", "triangle"]


def test_masks_boxes_and_colours_agree_with_pixels(shapes: ShapesDataset) -> None:
    counts = set()
    for sample in shapes:
        pixels = np.asarray(sample.image)
        t = sample.target
        colours = t["colors"]
        assert len(set(colours)) == len(colours), "colours must be distinct within an image"
        counts.add(len(colours))
        for box, box_norm, mask, colour in zip(t["boxes"], t["boxes_norm"], t["masks"], colours, strict=True):
            painted = colour_mask(pixels, colour)
            np.testing.assert_array_equal(mask, painted)
            rows, cols = np.nonzero(painted)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_allclose(box_norm, box / 448, rtol=1e-6)
            x0, y0, x1, y1 = box.astype(int)
            assert 30 <= x1 - x0 <= 80 and 30 <= y1 - y0 <= 80
        others = ~np.any(t["masks"], axis=0)
        assert np.all(pixels[others] == 255), "everything outside the objects is white background"
    assert counts == {1, 2, 3}


def test_labels_match_drawn_shape(shapes: ShapesDataset) -> None:
    # The share of its box a shape fills identifies it: square 1, circle π/4, triangle 1/2.
    expected = {0: np.pi / 4, 1: 1.0, 2: 0.5}
    for sample in shapes:
        for label, mask, box in zip(sample.target["labels"], sample.target["masks"], sample.target["boxes"],
                                    strict=True):
            fill = mask.sum() / ((box[2] - box[0]) * (box[3] - box[1]))
            assert fill == pytest.approx(expected[int(label)], abs=0.06)


def test_relations_match_centroids(shapes: ShapesDataset) -> None:
    seen = set()
    for sample in shapes:
        pixels = np.asarray(sample.image)
        centre = {}
        for colour in sample.target["colors"]:
            rows, cols = np.nonzero(colour_mask(pixels, colour))
            centre[colour] = (cols.mean(), rows.mean())
        for rel in sample.target["relations"]:
            dx = centre[rel["a"]][0] - centre[rel["b"]][0]
            dy = centre[rel["a"]][1] - centre[rel["b"]][1]
            if abs(dx) >= abs(dy):
                expected = "left-of" if dx < 0 else "right-of"
            else:
                expected = "above" if dy < 0 else "below"
            assert rel["relation"] == expected
            seen.add(expected)
    assert seen == {"left-of", "right-of", "above", "below"}


def test_objects_do_not_touch_unless_overlap_allowed() -> None:
    for sample in load_dataset("shapes", n=12, max_objects=4, min_objects=4, max_size=120):
        boxes = sample.target["boxes"]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
    overlapping = load_dataset("shapes", n=12, min_objects=3, max_size=150, allow_overlap=True, seed=1)
    touching = 0
    for sample in overlapping:
        masks = sample.target["masks"]
        assert not np.any(masks.sum(axis=0) > 1), "visible masks are disjoint"
        boxes = sample.target["boxes"]
        touching += any(
            not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])
            for i, a in enumerate(boxes) for b in boxes[i + 1:]
        )
    assert touching > 0


def test_noise_and_clutter_keep_masks_and_change_pixels() -> None:
    clean = load_dataset("shapes", n=2, seed=5)[1]
    noisy = load_dataset("shapes", n=2, seed=5, noise=12.0, clutter=6)[1]
    assert not np.array_equal(np.asarray(clean.image), np.asarray(noisy.image))
    assert noisy.target["masks"].sum() > 0
    assert len(noisy.target["colors"]) == len(noisy.target["masks"])


def test_split_is_stable_and_cheap(shapes: ShapesDataset) -> None:
    splits = {shapes.sample_split(i) for i in range(len(shapes))}
    assert splits <= {"train", "val", "test"}
    assert all(shapes.sample_split(i) == shapes[i].split for i in range(5))
    bigger = load_dataset("shapes", n=48, seed=3)
    assert [bigger.sample_split(i) for i in range(24)] == [shapes.sample_split(i) for i in range(24)]


def test_impossible_placement_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="allow_overlap"):
        load_dataset("shapes", n=1, image_size=64, min_objects=4, max_objects=4, min_size=40, max_size=40)[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_objects": 5}, "max_objects"),
        ({"min_size": 90, "max_size": 30}, "range is empty"),
        ({"n": 0}, "n=0"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_dataset("shapes", **options)
