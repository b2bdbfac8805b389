"""What every model adapter promises: named stages on a raster token grid, one forward pass."""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from stageprobe.errors import UserInputError
from stageprobe.models._inputs import accept_any_input

Clip = Sequence[Image.Image]


@dataclass(frozen=True)
class StageInfo:
    """One extraction point. `grid` is (T, H, W) for the image size the info was made for."""

    name: str
    stride_px: int
    dim: int
    grid: tuple[int, int, int]
    description: str

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


def select_stages(available: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """Stage names matching any glob pattern, in pipeline order; an unmatched pattern is an error.

    `None` selects every stage; an empty list selects none (a plain forward).
    """
    if patterns is None:
        return list(available)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(available, pattern)
        if not hits:
            raise UserInputError(
                f"stage pattern {pattern!r} matches no stage of this model. "
                f"Available stages: {', '.join(available)}"
            )
        chosen.update(hits)
    return [name for name in available if name in chosen]


def check_same_size(images: Sequence[Image.Image]) -> tuple[int, int]:
    """(height, width) shared by all images; mixed sizes are a user error (batch them separately)."""
    if not images:
        raise UserInputError("no images given: pass at least one PIL image")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise UserInputError(
            f"images in one call must share one size, got {sorted(sizes)}; resize them or call extract per size"
        )
    width, height = images[0].size
    return height, width


class StageModel(ABC):
    """A model whose intermediate representations can be read as (B, T, H, W, D) raster grids."""

    #: preset name, Hub id or path the model was loaded from
    name: str
    #: "random" for random-init weights, else a revision or weights hash
    weights_id: str
    device: torch.device
    dtype: torch.dtype

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "extract" in vars(cls):  # every adapter takes one image, arrays, a pattern string (models/_inputs.py)
            cls.extract = accept_any_input(vars(cls)["extract"])  # type: ignore[method-assign]

    @abstractmethod
    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        """All stages with their grids for an input of this size (after the model's own resize)."""

    @property
    def stages(self) -> list[StageInfo]:
        return self.stages_for(*self.default_image_size)

    @property
    def default_image_size(self) -> tuple[int, int]:
        return (448, 448)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def supports_video(self) -> bool:
        return False

    @property
    def temporal_patch_size(self) -> int:
        return 1

    @abstractmethod
    def extract(
        self,
        images: Sequence[Image.Image] | None = None,
        videos: Sequence[Clip] | None = None,
        stages: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One forward pass; returns {stage: (B, T, H, W, D)} in raster order, on CPU."""

    def plain_forward(
        self, images: Sequence[Image.Image] | None = None, videos: Sequence[Clip] | None = None
    ) -> None:
        """The model's own forward with no hooks: the cost floor extraction is measured against."""
        self.extract(images=images, videos=videos, stages=[])

    def config_summary(self) -> dict:
        """What the feature-store manifest records about this model."""
        return {"name": self.name, "weights": self.weights_id, "class": type(self).__name__}
