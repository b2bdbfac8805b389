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


def test_non_square_image_records_each_axis_scale_and_crowds_are_separate(tmp_path: Path) -> None:
    path = make_coco(tmp_path, [ann(1, [10, 5, 20, 10]), ann(2, [50, 0, 50, 50], 18),
                                ann(3, [0, 0, 30, 30], 1, iscrowd=1)])
    coco = load_dataset(f"coco:{path}", image_size=200)
    target = coco[0].target
    assert target["scale"] == (2.0, 4.0) and target["original_size"] == (50, 100)
    np.testing.assert_array_equal(target["boxes"], [[20, 20, 60, 60], [100, 0, 200, 200]])
    np.testing.assert_array_equal(target["category_ids"], [1, 18])
    np.testing.assert_array_equal(target["labels"], [0, 1])
    np.testing.assert_array_equal(target["crowd_boxes"], [[0, 0, 60, 120]])
    assert coco.class_names == ["person", "dog"] and target["image_id"] == 1


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
