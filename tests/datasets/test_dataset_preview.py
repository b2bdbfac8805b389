"""`write_preview` draws a contact sheet for every kind of dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stageprobe.datasets import load_dataset, write_photo_coco, write_preview
from stageprobe.datasets.preview import BOX_COLOR, CROWD_COLOR, THUMB_PX, TRACK_COLOR


@pytest.mark.parametrize(
    ("spec", "options"),
    [("shapes", {"n": 5}), ("motion", {"n": 4, "frames": 4}), ("textures", {"n": 4, "image_size": 64})],
)
def test_preview_writes_a_grid_png(tmp_path: Path, spec: str, options: dict[str, object]) -> None:
    out = write_preview(load_dataset(spec, **options), tmp_path / "deep" / "preview.png", n=4)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.size[0] == 2 * THUMB_PX


def test_preview_draws_the_boxes(tmp_path: Path) -> None:
    out = write_preview(load_dataset("shapes", n=1), tmp_path / "one.png", n=1)
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.any(np.all(pixels == BOX_COLOR, axis=-1))


def test_preview_of_an_unlabelled_folder(tmp_path: Path) -> None:
    for name in "xyz":
        Image.new("RGB", (40, 30), (0, 0, 255)).save(tmp_path / f"{name}.png")
    out = write_preview(load_dataset(f"images:{tmp_path}"), tmp_path / "sheet.png", n=1)
    assert Image.open(out).size == (THUMB_PX, THUMB_PX + 14)


@pytest.fixture(scope="module")
def photo_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_coco(tmp_path_factory.mktemp("photo_coco"), n_images=6, crowd_every=1)


def test_preview_of_coco_draws_objects_and_crowds(tmp_path: Path, photo_coco: Path) -> None:
    out = write_preview(load_dataset(f"coco:{photo_coco}", image_size=224), tmp_path / "coco.png", n=4)
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert np.any(np.all(pixels == BOX_COLOR, axis=-1)) and np.any(np.all(pixels == CROWD_COLOR, axis=-1))


@pytest.mark.parametrize("spec", ["pan", "cutout"])
def test_preview_of_natural_motion_draws_the_track(tmp_path: Path, photo_coco: Path, spec: str) -> None:
    full = spec if spec == "pan" else f"{spec}:{photo_coco}"
    out = write_preview(load_dataset(full, n=2, frames=4), tmp_path / "clips.png", n=2)
    pixels = np.asarray(Image.open(out).convert("RGB"))
    # The track is drawn in black at the tracked points.
    sample = load_dataset(full, n=1, frames=4)[0]
    x, y = (sample.target["centroids"][-1] * THUMB_PX / sample.frames[0].width).astype(int)
    assert np.all(pixels[y - 1:y + 2, x - 1:x + 2] == TRACK_COLOR)
