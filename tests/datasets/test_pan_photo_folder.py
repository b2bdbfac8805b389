"""`pan:images:DIR`: camera pans over a folder of the user's photos, split by photo, with the same
labels as the bundled pans; too few photos is refused with the number needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

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
    dataset = load_dataset(f"pan:images:{tmp_path}:image_size=112", n=24)
    bundled = load_dataset("pan:image_size=112", n=24)
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
