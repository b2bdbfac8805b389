"""`coco:PATH` and `write_coco`: round trip from shapes, resizing, crowds and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from stageprobe.datasets import load_dataset, write_coco
from stageprobe.datasets.coco import CocoDataset
from stageprobe.errors import UserInputError


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    shapes = load_dataset("shapes", n=6, seed=4, image_size=224, min_size=20, max_size=50)
    root = tmp_path_factory.mktemp("coco")
    write_coco(shapes, root)
    return shapes, root


def make_coco(tmp_path: Path, annotations: list[dict[str, Any]], images: list[dict[str, Any]] | None = None,
              categories: list[dict[str, Any]] | None = None) -> Path:
    """A tiny val2017-layout folder: one 100×50 image, two categories."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (100, 50), (10, 20, 30)).save(tmp_path / "val2017" / "000000000001.jpg")
    document = {
        "images": images or [{"id": 1, "file_name": "000000000001.jpg", "width": 100, "height": 50}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return path


def ann(
    ann_id: int, bbox: list[float], category_id: int = 1, iscrowd: int = 0, image_id: int = 1
) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": iscrowd, "segmentation": []}


def test_round_trip_keeps_boxes_classes_and_pixels(shapes_coco: tuple[Any, Path]) -> None:
    shapes, root = shapes_coco
    coco = load_dataset(f"coco:{root}", image_size=224)
    assert coco.class_names == shapes.class_names
    assert len(coco) == len(shapes)
    for original, loaded in zip(shapes, coco, strict=True):
        np.testing.assert_array_equal(loaded.target["boxes"], original.target["boxes"])
        np.testing.assert_array_equal(loaded.target["labels"], original.target["labels"])
        np.testing.assert_allclose(loaded.target["boxes_norm"], original.target["boxes_norm"], rtol=1e-6)
        assert loaded.target["scale"] == (1.0, 1.0)
        assert np.asarray(loaded.image).tobytes() == np.asarray(original.image).tobytes()


def test_written_segmentation_is_the_mask(shapes_coco: tuple[Any, Path]) -> None:
    from pycocotools import mask as mask_utils

    shapes, root = shapes_coco
    document = json.loads((root / "annotations" / "instances_shapes.json").read_text())
    first = [a for a in document["annotations"] if a["image_id"] == 1]
    masks = shapes[0].target["masks"]
    assert len(first) == len(masks)
    for record, mask in zip(first, masks, strict=True):
        np.testing.assert_array_equal(mask_utils.decode(record["segmentation"]).astype(bool), mask)
        assert record["area"] == mask.sum()


def test_resize_scales_boxes_onto_the_new_size(shapes_coco: tuple[Any, Path]) -> None:
    shapes, root = shapes_coco
    coco = load_dataset(f"coco:{root / 'annotations' / 'instances_shapes.json'}", image_size=448)
    sample = coco[2]
    assert sample.image.size == (448, 448) and sample.target["scale"] == (2.0, 2.0)
    np.testing.assert_array_equal(sample.target["boxes"], shapes[2].target["boxes"] * 2)
    np.testing.assert_array_equal(sample.target["boxes_original"], shapes[2].target["boxes"])
    resized_masks = np.repeat(np.repeat(shapes[2].target["masks"], 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(sample.target["masks"], resized_masks)


def test_non_square_image_keeps_its_aspect_and_crowds_are_separate(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10]), ann(2, [50, 0, 50, 50], 18),
                                ann(3, [0, 0, 30, 30], 1, iscrowd=1)])
    coco = load_dataset(f"coco:{path}", image_size=224)
    sample = coco[0]
    target = sample.target
    # 100×50 onto 224×224: one scale (2.24) for both axes, grey padding below the image.
    assert target["transform"] == (2.24, 2.24, 0.0, 0.0) and target["original_size"] == (50, 100)
    pixels = np.asarray(sample.image)
    assert tuple(pixels[0, 0]) == (10, 20, 30) and tuple(pixels[200, 100]) == (128, 128, 128)
    np.testing.assert_allclose(target["boxes"], [[22.4, 11.2, 67.2, 33.6], [112, 0, 224, 112]], rtol=1e-6)
    np.testing.assert_array_equal(target["boxes_original"], [[10, 5, 30, 15], [50, 0, 100, 50]])
    np.testing.assert_array_equal(target["areas"], [200, 2500])
    np.testing.assert_array_equal(target["category_ids"], [1, 18])
    np.testing.assert_array_equal(target["labels"], [0, 1])
    np.testing.assert_allclose(target["crowd_boxes"], [[0, 0, 67.2, 67.2]], rtol=1e-6)
    np.testing.assert_array_equal(target["crowd_boxes_original"], [[0, 0, 30, 30]])
    assert coco.class_names == ["person", "dog"] and target["image_id"] == 1
    # No segmentation: the mask is the box, on the canvas.
    assert target["masks"].shape == (2, 224, 224) and target["masks"][1, :112, 112:].all()
    assert not target["masks"][1, 112:].any()
    assert target["relations"] == [{"a": "person", "b": "dog", "relation": "left-of"},
                                   {"a": "dog", "b": "person", "relation": "right-of"}]


def test_stretch_scales_each_axis(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10])])
    target = load_dataset(f"coco:{path}", image_size=224, resize="stretch")[0].target
    assert target["transform"] == (2.24, 4.48, 0.0, 0.0)
    np.testing.assert_allclose(target["boxes"], [[22.4, 22.4, 67.2, 67.2]], rtol=1e-6)


def test_canvas_is_what_the_processor_keeps(tmp_path: Path) -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10])])
    coco = load_dataset(f"coco:{path}", image_size=200)
    height, width = coco[0].target["image_size"]
    assert (height, width) == (196, 196) == coco[0].image.size[::-1]
    assert smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=12845056) == (height, width)
    options = coco.spec()["options"]
    assert (options["min_pixels"], options["max_pixels"], options["factor"]) == (3136, 12845056, 28)
    assert load_dataset(f"coco:{path}", image_size=200, factor=32).canvas == (192, 192)


def test_relations_only_between_objects_their_category_names(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [0, 0, 10, 10]), ann(2, [80, 0, 10, 10]), ann(3, [40, 30, 10, 10], 18)])
    target = load_dataset(f"coco:{path}")[0].target
    assert target["names"] == ["person", "person", "dog"]
    assert target["relations"] == []  # two persons: "the person" names neither


def test_crowd_only_set_is_refused(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [0, 0, 30, 30], iscrowd=1)])
    with pytest.raises(UserInputError, match=r"every annotation .* is a crowd region"):
        load_dataset(f"coco:{path}")


def test_category_subset(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10]), ann(2, [50, 0, 50, 50], 18)])
    dogs = load_dataset(f"coco:{path}", categories="dog")
    assert dogs.class_names == ["dog"]
    np.testing.assert_array_equal(dogs[0].target["category_ids"], [18])
    with pytest.raises(UserInputError, match=r"no category named 'cat'.*dog, person"):
        load_dataset(f"coco:{path}", categories=["cat"])


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ([ann(7, [90, 0, 30, 10])], r"annotation id 7 .*outside its 100×50 image"),
        ([ann(8, [10, 10, 0, 5])], r"annotation id 8 .*zero-area"),
        ([ann(9, [10, 10, 5, 5], category_id=99)], r"annotation id 9 .*category id 99"),
        ([ann(10, [10, 10, 5, 5], image_id=42)], r"annotation id 10 .*image id 42"),
    ],
)
def test_bad_annotations_are_named_or_skipped(tmp_path: Path, annotations: list[dict[str, Any]],
                                              message: str) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10]), *annotations])
    with pytest.raises(UserInputError, match=message) as error:
        load_dataset(f"coco:{path}")
    assert "skip_bad" in str(error.value)
    kept = load_dataset(f"coco:{path}", skip_bad=True)
    assert isinstance(kept, CocoDataset) and len(kept.skipped) == 1
    assert len(kept[0].target["boxes"]) == 1
    assert kept.spec()["skipped"] == kept.skipped


def test_malformed_json(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [])
    path.write_text('{"images": [')
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_dataset(f"coco:{path}")
    path.write_text('{"images": []}')
    with pytest.raises(UserInputError, match="no list 'annotations', 'categories'"):
        load_dataset(f"coco:{path}")


def test_missing_and_corrupt_image_files(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 100, "height": 50},
              {"id": 2, "file_name": "gone.jpg", "width": 100, "height": 50},
              {"id": 3, "file_name": "broken.jpg", "width": 100, "height": 50}]
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10])], images=images)
    (tmp_path / "val2017" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserInputError, match=r"gone\.jpg does not exist"):
        load_dataset(f"coco:{path}")
    kept = load_dataset(f"coco:{path}", skip_bad=True)
    assert isinstance(kept, CocoDataset) and len(kept) == 1
    broken = (tmp_path / "val2017" / "broken.jpg").resolve()
    assert [s["record"] for s in kept.skipped] == ["image id 2", f"image {broken}"]


def test_corrupt_image_without_skip_bad_is_named_when_read(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 100, "height": 50}]
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10])], images=images)
    jpeg = tmp_path / "val2017" / "000000000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    coco = load_dataset(f"coco:{path}")
    with pytest.raises(UserInputError, match=r"000000000001\.jpg cannot be read.*--skip-bad"):
        coco[0]


def test_directory_path_and_image_dir_option(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10])])
    assert len(load_dataset(f"coco:{tmp_path}")) == 1
    moved = tmp_path / "elsewhere"
    (tmp_path / "val2017").rename(moved)
    with pytest.raises(UserInputError, match="pass image_dir"):
        load_dataset(f"coco:{path}")
    assert len(load_dataset(f"coco:{path}", image_dir=str(moved))) == 1
    # The same, written in the spec: one string for a command line.
    from_spec = load_dataset(f"coco:{path}:image_dir={moved}:resize=stretch", n=5)
    assert len(from_spec) == 1 and from_spec.spec()["options"]["resize"] == "stretch"
