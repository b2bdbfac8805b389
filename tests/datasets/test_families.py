"""`--data KEY=SPEC`: parsing, errors and the record config.yaml keeps of the resolved data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.datasets import DATA_FAMILIES, dataset_record, load_dataset, parse_data_options
from stageprobe.errors import UserInputError


def test_keys_map_to_specs() -> None:
    data = parse_data_options(["spatial=coco:/d/ann.json:image_dir=/imgs", "motion = pan"])
    assert data == {"spatial": "coco:/d/ann.json:image_dir=/imgs", "motion": "pan"}
    assert set(DATA_FAMILIES) == {"spatial", "detail", "photos", "motion", "camera"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["colour=shapes"], r"--data key 'colour' is unknown; the keys are: spatial, detail, photos, motion, camera"),
        (["spatial"], r"must be KEY=DATASET"),
        (["spatial=shapes", "spatial=coco:/x"], r"--data spatial= is given twice"),
        (["detail=photos:/x"], r"unknown dataset 'photos'"),
    ],
)
def test_bad_values(values: list[str], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_data_options(values)


def test_run_refuses_an_unknown_key_with_exit_code_2(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", "--data", "pixels=shapes", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "the keys are: spatial, detail, photos, motion, camera" in result.output
    assert not (tmp_path / "run").exists()


def test_record_hashes_the_content() -> None:
    first = dataset_record(load_dataset("shapes", n=3, image_size=64, min_size=10, max_size=20))
    again = dataset_record(load_dataset("shapes:image_size=64:min_size=10:max_size=20", n=3))
    other = dataset_record(load_dataset("shapes", n=3, image_size=64, min_size=10, max_size=20, seed=1))
    assert first == again and first["content_hash"] != other["content_hash"]
    assert first["samples"] == 3 and first["spec"]["options"]["image_size"] == 64


def test_procedural_textures_and_real_photos_are_separate_families() -> None:
    from stageprobe.suites.q2 import SUITE

    procedural = load_dataset(DATA_FAMILIES["detail"], n=40, seed=0)
    photos = load_dataset(DATA_FAMILIES["photos"], n=40, seed=0)
    assert not any(s.group.startswith("photo:") for s in procedural)
    assert all(s.group.startswith("photo:") for s in photos)
    by_family = {spec.family: spec.id for spec in SUITE.experiments}
    assert by_family["detail"] == "e_q2_5" and by_family["photos"] == "e_q2_5_photos"
