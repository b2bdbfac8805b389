"""The dataset contract: labelled samples with a group, a stable split, a spec and a content hash.

A sample's *group* is its source (a photo, a COCO image, the photo a clip was cut from). Splits are
decided per group, so train, val and test never hold two views of the same source.
"""

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


def ranked_splits(groups: list[str], val_fraction: float = 0.15, test_fraction: float = 0.2) -> dict[str, Split]:
    """Split of each of a few groups, by rank of their hash, so every split gets its share.

    With a dozen groups, `stable_split` alone can leave test empty; ranking keeps the assignment
    independent of order while giving test round(test_fraction·n) and val round(val_fraction·n)
    groups, at least one each (as long as train keeps at least one).
    """
    unique = sorted(set(groups), key=lambda g: hashlib.sha256(f"group:{g}".encode()).digest())
    n = len(unique)
    # At least one group each for test and val (then train) before the shares are rounded.
    n_test = min(max(1, round(test_fraction * n)), max(0, n - 1))
    n_val = min(max(1, round(val_fraction * n)), max(0, n - 1 - n_test))
    return {g: "test" if r < n_test else "val" if r < n_test + n_val else "train" for r, g in enumerate(unique)}


@dataclass
class Sample:
    """One labelled input: an image, or a clip of frames (video datasets).

    `group` names the sample's source; samples of one group always share a split. Empty means the
    sample is its own source (group = key).
    """

    key: str
    split: Split
    image: Image.Image | None = None
    frames: list[Image.Image] | None = None
    target: dict[str, Any] = field(default_factory=dict)
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            self.group = self.key


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

    def sample_group(self, index: int) -> str:
        """The group (source) of sample `index`; datasets override it to avoid rendering the sample."""
        return self[index].group

    def split_indices(self, split: Split) -> list[int]:
        return [i for i in range(len(self)) if self.sample_split(i) == split]

    def split_samples(self, split: Split) -> list[Sample]:
        """The samples of one split in dataset order, rendering no other sample."""
        return [self[i] for i in self.split_indices(split)]

    def content_hash(self) -> str:
        """sha256 over every sample's pixels and targets: two stores of the same data share it.
        Computed once per dataset object (a dataset is deterministic: its samples never change)."""
        if "_content_hash" not in self.__dict__:
            self.__dict__["_content_hash"] = self._hash_content()
        return self.__dict__["_content_hash"]

    def _hash_content(self) -> str:
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
