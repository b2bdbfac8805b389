"""Datasets: `shapes`, `textures`, `motion`, `coco:PATH`, `images:DIR`, `pan`, `cutout:PATH`, `videos:DIR`.

Importing this package registers every dataset; `load_dataset("shapes", n=100)` builds one.
"""

from stageprobe.datasets import coco, images, motion, natural_motion, shapes, textures, videos  # noqa: F401  (register)
from stageprobe.datasets.base import SPLITS, Dataset, Sample, Split, ranked_splits, stable_split
from stageprobe.datasets.coco import write_coco
from stageprobe.datasets.families import DATA_FAMILIES, dataset_record, parse_data_options
from stageprobe.datasets.fixtures import write_photo_coco
from stageprobe.datasets.preview import write_preview
from stageprobe.datasets.registry import (
    DATASETS,
    dataset_from_spec,
    dataset_options,
    load_dataset,
    parse_spec,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DATA_FAMILIES",
    "SPLITS",
    "Dataset",
    "Sample",
    "Split",
    "dataset_from_spec",
    "dataset_options",
    "dataset_record",
    "load_dataset",
    "parse_data_options",
    "parse_spec",
    "ranked_splits",
    "register_dataset",
    "stable_split",
    "write_coco",
    "write_photo_coco",
    "write_preview",
]
