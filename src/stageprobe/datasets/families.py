"""Data per experiment family: `stageprobe run --data spatial=coco:PATH --data detail=images:DIR …`.

`spatial` feeds E-Q2.1–E-Q2.4, `detail` E-Q2.5 (procedural textures by default), `photos` E-Q2.5's
real-photo experiment (crops of the photos shipped with scikit-image, each photo in one split, by
default), `motion` E-Q2.6 (moving shapes by default) and `camera` E-Q2.6's camera-motion experiment
(a window panning across real photos by default). A family without `--data` keeps its default.
`dataset_record` is what config.yaml and the report say about the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stageprobe.datasets.base import Dataset
from stageprobe.datasets.registry import DATASETS, parse_spec
from stageprobe.errors import UserInputError

#: family → the generated dataset used when `--data` does not name one
DATA_FAMILIES: dict[str, str] = {
    "spatial": "shapes", "detail": "textures:photo_fraction=0", "photos": "textures:photo_fraction=1",
    "motion": "motion", "camera": "pan",
}


def parse_data_options(values: Iterable[str]) -> dict[str, str]:
    """{family: dataset spec} from `--data KEY=SPEC` values; each family at most once."""
    data: dict[str, str] = {}
    keys = ", ".join(DATA_FAMILIES)
    for value in values:
        family, equals, spec = value.partition("=")
        family, spec = family.strip(), spec.strip()
        if not equals or not spec:
            raise UserInputError(f"--data {value!r} must be KEY=DATASET, e.g. spatial=coco:PATH (keys: {keys})")
        if family not in DATA_FAMILIES:
            raise UserInputError(f"--data key {family!r} is unknown; the keys are: {keys}")
        if family in data:
            raise UserInputError(f"--data {family}= is given twice ({data[family]!r} and {spec!r}); give it once")
        name = parse_spec(spec)[0]
        if name not in DATASETS:
            known = ", ".join(sorted(DATASETS))
            raise UserInputError(f"--data {family}={spec}: unknown dataset {name!r}; use one of: {known}")
        data[family] = spec
    return data


def dataset_record(dataset: Dataset) -> dict[str, Any]:
    """The resolved spec and content hash of a dataset (for config.yaml and the report)."""
    return {"spec": dataset.spec(), "content_hash": dataset.content_hash(), "samples": len(dataset)}
