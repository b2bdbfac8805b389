"""Generated datasets and instrumented pixel models for the feature-store tests.

Also imported by the subprocess the kill-and-resume test starts, so it must not import pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stageprobe.datasets.base import Dataset, Sample, stable_split
from stageprobe.models.base import Clip, StageInfo, StageModel
from stageprobe.models.pixels import PixelModel

IMAGE_HEIGHT, IMAGE_WIDTH = 56, 84  # a 4×6 grid of 14 px patches, 2×3 merged


def noise_image(seed: int, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class GeneratedImages(Dataset):
    """`count` random-noise images; `odd_size_at` makes one sample a different size."""

    name = "generated"
    kind = "image"

    def __init__(self, count: int, seed: int = 0, odd_size_at: int | None = None) -> None:
        self.count = count
        self.seed = seed
        self.odd_size_at = odd_size_at

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        key = f"noise-{self.seed}-{index:04d}"
        size = (IMAGE_HEIGHT + 28, IMAGE_WIDTH) if index == self.odd_size_at else (IMAGE_HEIGHT, IMAGE_WIDTH)
        return Sample(key, stable_split(key), image=noise_image(self.seed * 100_000 + index, *size),
                      target={"index": index})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "seed": self.seed, "odd_size_at": self.odd_size_at}


class GeneratedClips(Dataset):
    """`count` clips of `frames` random-noise frames each."""

    name = "generated-clips"
    kind = "video"

    def __init__(self, count: int, frames: int = 4) -> None:
        self.count = count
        self.frames = frames

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        key = f"clip-{index:04d}"
        frames = [noise_image(1000 * index + f) for f in range(self.frames)]
        return Sample(key, stable_split(key), frames=frames, target={"index": index})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "frames": self.frames}


class InstrumentedPixels(StageModel):
    """The pixel baseline with knobs: a per-call delay, a crash after N calls, CUDA OOM above a batch
    size, a scale factor, a spy on each call, and overridable identity (name, weights)."""

    def __init__(
        self,
        name: str = "pixels",
        weights_id: str = "none",
        delay_s: float = 0.0,
        fail_after_calls: int | None = None,
        oom_above_batch: int | None = None,
        scale: float = 1.0,
        video: bool = True,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = PixelModel(torch.device("cpu"), torch.float32)
        self.name = name
        self.weights_id = weights_id
        self.device = self.inner.device
        self.dtype = self.inner.dtype
        self.delay_s = delay_s
        self.fail_after_calls = fail_after_calls
        self.oom_above_batch = oom_above_batch
        self.scale = scale
        self.video = video
        self.on_call = on_call
        self.batch_sizes: list[int] = []

    @property
    def supports_video(self) -> bool:
        return self.video

    @property
    def temporal_patch_size(self) -> int:
        return self.inner.temporal_patch_size

    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        return self.inner.stages_for(height, width, frames)

    def extract(
        self,
        images: Sequence[Image.Image] | None = None,
        videos: Sequence[Clip] | None = None,
        stages: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        batch = len(videos) if videos is not None else len(images or [])
        if self.oom_above_batch is not None and batch > self.oom_above_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        if self.fail_after_calls is not None and len(self.batch_sizes) >= self.fail_after_calls:
            raise RuntimeError("simulated crash")
        if self.on_call is not None:
            self.on_call(len(self.batch_sizes))
        self.batch_sizes.append(batch)
        time.sleep(self.delay_s)
        features = self.inner.extract(images=images, videos=videos, stages=stages)
        return {stage: grid * self.scale for stage, grid in features.items()}


def run_slow_extraction(out_dir: str, delay_s: float) -> None:
    """What the kill test's subprocess runs: a deliberately slow extraction of 24 images."""
    from stageprobe.features import extract_dataset

    extract_dataset(InstrumentedPixels(delay_s=delay_s), GeneratedImages(24), Path(out_dir),
                    batch_size=2, shard_size=4, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, for byte-for-byte store comparisons."""
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): path.read_bytes() for path in files}
