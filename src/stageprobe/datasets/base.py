"""The dataset contract: labelled samples with a stable split, a spec and a content hash."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def stable_split(key: str, val_fraction: float = 0.15, test_fraction: float = 0.2) -> Split:
    """Split from a hash of the sample key, so it never depends on order, size or seed of a run."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass
class Sample:
    """One labelled input: an image, or a clip of frames (video datasets)."""

    key: str
    split: Split
    image: Image.Image | None = None
    frames: list[Image.Image] | None = None
    target: dict[str, Any] = field(default_factory=dict)


class Dataset(ABC):
    """A finite, deterministic, indexable set of samples."""

    name: str
    kind: Literal["image", "video"] = "image"
    # Names of the integer `labels` in targets; empty for unlabelled data.
    class_names: list[str]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description of how to rebuild exactly this dataset."""

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def sample_split(self, index: int) -> Split:
        """The split of sample `index`; datasets override it to avoid rendering the sample."""
        return self[index].split

    def split_indices(self, split: Split) -> list[int]:
        return [i for i in range(len(self)) if self.sample_split(i) == split]

    def content_hash(self) -> str:
        """sha256 over every sample's pixels and targets: two stores of the same data share it."""
        digest = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode())
        for sample in self:
            digest.update(sample.key.encode())
            for frame in sample.frames or [sample.image]:
                if frame is not None:
                    digest.update(np.asarray(frame.convert("RGB")).tobytes())
            digest.update(json.dumps(_jsonable(sample.target), sort_keys=True).encode())
        return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
