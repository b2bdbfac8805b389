"""What every model adapter promises: named stages on a raster token grid, one forward pass."""

from __future__ import annotations

import copy
import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from stageprobe.errors import UserInputError
from stageprobe.models._inputs import accept_any_input
from stageprobe.models._stages import Layout, StagePoint, StageSpec, capture

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
    #: the connector's input and output stages: the study's decision pair (suites read this pair,
    #: never a family name); Qwen's 2×2 merger by default
    connector_stages: tuple[str, str] = ("vision.pre_merge", "vision.post_merge")
    #: every input is resized whole to `default_image_size` (a fixed-size encoder), so no grid
    #: depends on the input size
    resizes_to_native_size: bool = False

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


class HFStageModel(StageModel):
    """A `transformers` model read through a stage table (see `stageprobe.models._stages`).

    Subclasses declare `stage_table` and how a batch is processed (`prepare_batch`) and run
    (`run_forward`); extraction, stage points and the random-init twin are shared.
    """

    hf_model: torch.nn.Module
    processor: Any

    def _bind(self, hf_model: torch.nn.Module, processor: Any, name: str, weights_id: str,
              prompt: str, video_prompt: str | None = None) -> None:
        """What every VLM adapter keeps of its checkpoint (its device is the adapter's to choose)."""
        self.hf_model = hf_model.eval()
        self.processor = processor
        self.name = name
        self.weights_id = weights_id
        self.prompt = prompt
        if video_prompt is not None:
            self.video_prompt = video_prompt
        self.dtype = next(hf_model.parameters()).dtype

    @abstractmethod
    def stage_table(self, height: int, width: int, frames: int = 1) -> list[StageSpec]:
        """Every stage, in the order the forward pass reaches it, for an input of this size."""

    @abstractmethod
    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        """{"patch": (T, H, W), "merged": (T, H, W), "patch_stride": px, "merged_stride": px}."""

    @abstractmethod
    def prepare_batch(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, Any], Layout]:
        """Model inputs on the model's device, and the token layout of this batch."""

    @abstractmethod
    def run_forward(self, inputs: dict[str, Any], stages: Sequence[str]) -> None:
        """The forward pass that reaches every stage in `stages` (hooks do the reading)."""

    @abstractmethod
    def with_weights(self, hf_model: torch.nn.Module, name: str, weights_id: str) -> HFStageModel:
        """The same adapter (processor, prompts) over other weights of the same architecture."""

    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        grids = self.stage_grids(height, width, frames)
        return [
            StageInfo(spec.name, grids[f"{spec.grid}_stride"], spec.dim, grids[spec.grid], spec.description)
            for spec in self.stage_table(height, width, frames)
        ]

    def stage_point(self, name: str, height: int | None = None, width: int | None = None) -> StagePoint:
        """The module a stage is read from, the hook side, and its raster conversions."""
        size = (height, width) if height and width else self.default_image_size
        specs = {spec.name: spec for spec in self.stage_table(*size)}
        if name not in specs:
            raise UserInputError(f"{name!r} is not a stage of {self.name!r}. Available stages: {', '.join(specs)}")
        spec = specs[name]
        return StagePoint(spec, self.hf_model.get_submodule(spec.module))

    def extract(
        self,
        images: Sequence[Image.Image] | None = None,
        videos: Sequence[Clip] | None = None,
        stages: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        inputs, layout = self.prepare_batch(images, videos)
        frames, height, width = layout_input_size(images, videos)
        table = self.stage_table(height, width, frames)
        chosen = select_stages([spec.name for spec in table], stages)
        points = [StagePoint(spec, self.hf_model.get_submodule(spec.module)) for spec in table
                  if spec.name in chosen]
        store: dict[str, torch.Tensor] = {}
        stop_after = chosen[-1] if chosen and chosen[-1] != table[-1].name else None
        with torch.inference_mode(), capture(points, store, stop_after=stop_after):
            self.run_forward(inputs, chosen)
        # copied outside inference mode so callers get ordinary tensors that autograd can use
        return {p.name: p.to_raster(store[p.name].detach(), layout).to("cpu", torch.float32, copy=True)
                for p in points}

    def random_init_twin(self, seed: int = 1) -> HFStageModel:
        """The same architecture and processor with freshly initialised weights (a control)."""
        with torch.random.fork_rng(devices=[]), torch.device(self.device):
            torch.manual_seed(seed)
            twin = type(self.hf_model)._from_config(copy.deepcopy(self.hf_model.config), dtype=self.dtype)
        return self.with_weights(twin.eval(), f"{self.name} (random-init twin)", f"random-init seed {seed}")


def layout_input_size(
    images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
) -> tuple[int, int, int]:
    """(frames, height, width) shared by every image or frame of a batch."""
    if videos is not None:
        frames = [frame for clip in videos for frame in clip]
        return len(videos[0]) if videos else 0, *check_same_size(frames)
    return 1, *check_same_size(list(images or []))
