"""On-disk feature store and streaming, resumable extraction of a dataset into it."""

from stageprobe.features.distributed import init_distributed
from stageprobe.features.extract import extract_dataset
from stageprobe.features.store import FeatureShard, FeatureStore, StageLayout, resolve_store_dtype

__all__ = ["FeatureShard", "FeatureStore", "StageLayout", "extract_dataset", "init_distributed",
           "resolve_store_dtype"]
