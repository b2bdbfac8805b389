"""`pan:images:DIR`: camera pans over a folder of the user's photos, split by photo, with the same
labels as the bundled pans; too few photos is refused with the number needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from stageprobe.datasets import SPLITS, load_dataset
from stageprobe.datasets.natural_motion import PAN_PHOTOS
from stageprobe.errors import UserInputError


def _write_photos(folder: Path, count: int) -> list[str]:
    """Scikit-image pictures that are not among the bundled pan photos."""
    pictures = {"hubble.jpg": skimage.data.hubble_deep_field(), "cell.png": skimage.data.cell(),
                "street/motorcycle.png": skimage.data.stereo_motorcycle()[0]}
    names = sorted(pictures)[:count]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(pictures[name])).convert("RGB").save(folder / name)
    return names


def test_pans_over_three_new_photos(tmp_path: Path) -> None:
    names = _write_photos(tmp_path, 3)
    assert not {Path(n).stem for n in names} & set(PAN_PHOTOS)
    dataset = load_dataset(f"pan:images:{tmp_path}:image_size=112", n=12)
    bundled = load_dataset("pan:image_size=112", n=1)
    assert dataset.photos == names and dataset.spec()["options"]["photo_dir"] == str(tmp_path.resolve())
    splits = {}
    for sample in dataset:
        assert sample.target["source"] in names and sample.group == f"photo:{sample.target['source']}"
        splits.setdefault(sample.group, set()).add(sample.split)
        assert len(sample.frames) == 8 and sample.frames[0].size == (112, 112)
    assert all(len(s) == 1 for s in splits.values()) and {s for v in splits.values() for s in v} == set(SPLITS)
    mine, theirs = dataset[0].target, bundled[0].target
    assert set(mine) == set(theirs) and (mine["direction"], mine["speed"]) == (theirs["direction"], theirs["speed"])
    # rebuilt from its spec (as probe workers do) it is the same data
    assert load_dataset(dataset.spec()["source"], **dataset.spec()["options"]).content_hash() == dataset.content_hash()


def test_too_few_photos_says_how_many_are_needed(tmp_path: Path) -> None:
    _write_photos(tmp_path, 2)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(UserInputError, match=r"holds 2 readable photo.*3 are needed: add 1 more"):
        load_dataset(f"pan:images:{tmp_path}")


@pytest.mark.parametrize(("spec", "message"), [("pan:{tmp}/nowhere", "not a photo source"),
                                               ("pan:images:{tmp}/nowhere", "is not a folder")])
def test_bad_photo_sources_are_refused(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_dataset(spec.format(tmp=tmp_path))


def _one_object_coco(folder: Path) -> Path:
    """A red square on grey and a dozen plain pictures, so every split holds a COCO image."""
    (folder / "annotations").mkdir(parents=True)
    (folder / "val2017").mkdir()
    with_object = Image.new("RGB", (200, 100), (90, 90, 90))
    with_object.paste((220, 30, 30), (50, 20, 90, 60))
    with_object.save(folder / "val2017" / "1.png")
    Image.new("RGB", (120, 90), (30, 60, 220)).save(folder / "val2017" / "blue.png")
    document = {
        "images": [{"id": 1, "file_name": "1.png", "width": 200, "height": 100},
                   *({"id": i, "file_name": "blue.png", "width": 120, "height": 90} for i in range(2, 14))],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [50, 20, 40, 40], "area": 1600,
                         "iscrowd": 0, "segmentation": [[50, 20, 90, 20, 90, 60, 50, 60]]}],
        "categories": [{"id": 1, "name": "box"}],
    }
    path = folder / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return path


def test_cutout_backgrounds_from_a_photo_folder(tmp_path: Path) -> None:
    """The object moves over photos of the folder, all of them from the object's split."""
    names = _write_photos(tmp_path / "photos", 3)
    annotations = _one_object_coco(tmp_path / "coco")
    dataset = load_dataset(f"cutout:{annotations}:backgrounds={tmp_path / 'photos'}:image_size=112", n=4)
    used = {sample.target["background"] for sample in dataset}
    assert len(used) == 1 and used <= set(names), used
    photo = np.asarray(ImageOps.fit(Image.open(tmp_path / "photos" / used.pop()).convert("RGB"), (112, 112),
                                    Image.Resampling.BICUBIC))
    frame = np.asarray(dataset[0].frames[0])
    outside = np.ones(frame.shape[:2], dtype=bool)
    x, y = np.rint(dataset[0].target["centroids"][0]).astype(int)
    outside[max(0, y - 30):y + 30, max(0, x - 30):x + 30] = False
    np.testing.assert_array_equal(frame[outside], photo[outside])
    with pytest.raises(UserInputError, match="3 are needed: add 2 more"):
        load_dataset(f"cutout:{annotations}:backgrounds={tmp_path / 'photos' / 'street'}")
