"""Datasets: `shapes`, `textures`, `motion`, `coco:PATH`, `images:DIR`.

Importing this package registers every dataset; `load_dataset("shapes", n=100)` builds one.
"""

from stageprobe.datasets import coco, images, motion, shapes, textures  # noqa: F401  (register datasets)
from stageprobe.datasets.base import SPLITS, Dataset, Sample, Split, stable_split
from stageprobe.datasets.coco import write_coco
from stageprobe.datasets.preview import write_preview
from stageprobe.datasets.registry import (
    DATASETS,
    dataset_from_spec,
    dataset_options,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "SPLITS",
    "Dataset",
    "Sample",
    "Split",
    "dataset_from_spec",
    "dataset_options",
    "load_dataset",
    "register_dataset",
    "stable_split",
    "write_coco",
    "write_preview",
]
