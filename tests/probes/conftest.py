"""Pixel-baseline features of the synthetic datasets, extracted once per session; every probe test runs in
the probe precision a run resolves `auto` to on this machine (bfloat16 where the CPU does it natively), so
the known answers hold for what a default run computes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.probes import ProbeData, split_probe_data
from stageprobe.probes.training import probe_precision, resolve_precision

FeatureGetter = Callable[..., tuple[list[Any], dict[str, ProbeData]]]


@pytest.fixture(autouse=True)
def run_precision() -> Iterator[str]:
    """The precision `--probe-precision auto` resolves to here, set around each test."""
    precision = resolve_precision("auto")
    with probe_precision(precision):
        yield precision


@pytest.fixture(scope="session")
def pixel_features() -> FeatureGetter:
    """`get(dataset, stage, n, with_images, images_px, **options)` → (samples, {split: ProbeData}),
    cached for the session; images are resized to `images_px` square (None: input resolution).
    Features are stored as float16 to halve memory (pixel values need no more precision)."""
    model = sp.load_model("pixels")
    cache: dict[tuple, tuple[list[Any], dict[str, ProbeData]]] = {}

    def get(dataset: str, stage: str, n: int, with_images: bool = False, images_px: int | None = 112,
            **options: Any):
        key = (dataset, stage, n, with_images, images_px, tuple(sorted(options.items())))
        if key not in cache:
            ds = load_dataset(dataset, n=n, seed=0, **options)
            samples = [ds[i] for i in range(len(ds))]
            chunks = []
            for s in range(0, n, 50):
                batch = samples[s:s + 50]
                if batch[0].frames is not None:
                    out = model.extract(videos=[b.frames for b in batch], stages=[stage])
                else:
                    out = model.extract([b.image for b in batch], stages=[stage])
                chunks.append(out[stage].to(torch.float16))
            images = None
            if with_images:
                # images_px=None keeps the input resolution (the per-cell reconstruction targets).
                size = None if images_px is None else (images_px, images_px)
                images = np.stack([np.asarray(b.image.convert("RGB").resize(size or b.image.size), dtype=np.float32)
                                   / 255 for b in samples])
            cache[key] = (samples, split_probe_data(torch.cat(chunks), samples, images))
        return cache[key]

    return get
