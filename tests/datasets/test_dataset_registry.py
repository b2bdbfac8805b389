"""The registry: spec strings, options, errors, and rebuilding from spec()."""

from __future__ import annotations

import json

import pytest

from stageprobe.datasets import DATASETS, dataset_from_spec, dataset_options, load_dataset, parse_spec
from stageprobe.errors import UserInputError


def test_every_dataset_is_registered() -> None:
    assert {"shapes", "textures", "motion", "coco", "images", "pan", "cutout"} <= set(DATASETS)
    assert "n" in dataset_options("shapes") and "skip_bad" in dataset_options("images")


def test_unknown_dataset_names_the_choices() -> None:
    expected = (r"unknown dataset 'shape'; use one of: coco:PATH, cutout:PATH, images:DIR, motion, pan\[:SOURCE\], "
                r"shapes, textures, videos:DIR")
    with pytest.raises(UserInputError, match=expected):
        load_dataset("shape")


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(UserInputError, match=r"no option colour.*options are: n, seed"):
        load_dataset("shapes", colour="red")


def test_argument_rules() -> None:
    with pytest.raises(UserInputError, match="coco:PATH"):
        load_dataset("coco")
    with pytest.raises(UserInputError, match="takes no argument"):
        load_dataset("shapes:/tmp")
    with pytest.raises(UserInputError, match="coco:PATH"):
        load_dataset("coco:image_dir=/tmp")


def test_options_written_in_the_spec_win_over_keywords() -> None:
    assert parse_spec("coco:/a:b/ann.json:image_dir=/imgs:n=5") == (
        "coco", "/a:b/ann.json", {"image_dir": "/imgs", "n": "5"})
    dataset = load_dataset("shapes:n=3:image_size=64:max_size=30", n=50, seed=2)
    assert len(dataset) == 3 and dataset.spec()["options"]["image_size"] == 64
    assert dataset.spec()["options"]["seed"] == 2
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset("coco:/nonexistent/instances_val2017.json")


def test_command_line_strings_are_converted() -> None:
    dataset = load_dataset("shapes", n="5", noise="2.5", allow_overlap="true")
    assert len(dataset) == 5 and dataset.spec()["options"]["noise"] == 2.5
    assert dataset.spec()["options"]["allow_overlap"] is True
    with pytest.raises(UserInputError, match="n='many' must be a whole number"):
        load_dataset("shapes", n="many")
    with pytest.raises(UserInputError, match="must be an integer"):
        load_dataset("shapes", n=2.5)


@pytest.mark.parametrize(
    ("spec", "options"),
    [("shapes", {"n": 3, "seed": 2, "image_size": 128, "max_size": 40}),
     ("textures", {"n": 4, "image_size": 64}),
     ("motion", {"n": 2, "image_size": 112, "frames": 4}),
     ("pan", {"n": 3, "image_size": 56, "frames": 4, "photos": "coffee,chelsea,coins"})],
)
def test_spec_is_json_and_rebuilds_the_same_data(spec: str, options: dict[str, object]) -> None:
    dataset = load_dataset(spec, **options)
    written = json.loads(json.dumps(dataset.spec()))
    assert dataset_from_spec(written).content_hash() == dataset.content_hash()
