"""Planted losses: forward hooks that *replace* one stage's visual tokens with a damaged copy.

Calibration plants a known loss at a known stage and checks the study finds it there. A plant
works on the raster token grid (B, T, H, W, D) every stage is read in; the adapter's stage table
(`models/_stages.py`: module, hook side, token order) maps it there and back, so Qwen2.5-VL's
window order, the merge order, the visual positions among the LLM's text tokens and a ViT's
CLS / register tokens are all handled in one place, the same as for extraction.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2.functional import gaussian_blur

from stageprobe.errors import UserInputError
from stageprobe.models._stages import replace_stage
from stageprobe.models.base import Clip, HFStageModel, StageInfo, StageModel, layout_input_size

PlantFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

#: Gaussian σ of `blur-detail`, in tokens: one token's neighbours blend in, coarse layout stays.
BLUR_SIGMA_TOKENS = 1.0


def erase_position(grid: torch.Tensor, _rng: torch.Generator) -> torch.Tensor:
    """Every token of an image (per time step) → that image's mean token: content kept, location gone."""
    return grid.mean(dim=(2, 3), keepdim=True).expand_as(grid)


def scramble_position(grid: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Tokens permuted over the (H, W) cells, one random permutation per image (the same at every t)."""
    b, t, h, w, d = grid.shape
    flat = grid.reshape(b, t, h * w, d)
    perms = torch.stack([torch.randperm(h * w, generator=rng) for _ in range(b)]).to(grid.device)
    index = perms[:, None, :, None].expand(b, t, h * w, d)
    return flat.gather(2, index).reshape(grid.shape)


def blur_detail(grid: torch.Tensor, _rng: torch.Generator) -> torch.Tensor:
    """The token grid low-passed with a Gaussian of σ = 1 token across neighbouring cells."""
    b, t, h, w, d = grid.shape
    # reflect padding needs the kernel radius below the grid size; 2σ is the kernel's useful reach
    radius = max(0, min(math.ceil(2 * BLUR_SIGMA_TOKENS), h - 1, w - 1))
    if radius == 0:
        return grid
    channels = grid.permute(0, 1, 4, 2, 3).reshape(b * t, d, h, w)
    blurred = gaussian_blur(channels, [2 * radius + 1] * 2, [BLUR_SIGMA_TOKENS] * 2)
    return blurred.reshape(b, t, d, h, w).permute(0, 1, 3, 4, 2)


def erase_time(grid: torch.Tensor, _rng: torch.Generator) -> torch.Tensor:
    """Video tokens averaged over time at each grid cell: where things are is kept, when is gone."""
    return grid.mean(dim=1, keepdim=True).expand_as(grid)


def keep(grid: torch.Tensor, _rng: torch.Generator) -> torch.Tensor:
    """`none`: the reference. Still goes to raster and back, so a wrong conversion would show."""
    return grid


@dataclass(frozen=True)
class PlantType:
    """A planted loss; which information type it removes (and so which probes must see it) is the
    suite's to say: each information row names its plants."""

    name: str
    fn: PlantFn
    needs_video: bool = False


PLANT_TYPES: dict[str, PlantType] = {p.name: p for p in (
    PlantType("erase-position", erase_position),
    PlantType("scramble-position", scramble_position),
    PlantType("blur-detail", blur_detail),
    PlantType("erase-time", erase_time, needs_video=True),
    PlantType("none", keep),
)}


@dataclass(frozen=True)
class Plant:
    """One plant: a type at a stage, e.g. `erase-position@vision.block.4`."""

    type: PlantType
    stage: str

    @property
    def label(self) -> str:
        return f"{self.type.name}@{self.stage}"


# -- plants ---------------------------------------------------------------------------------


def _hf_model(model: StageModel) -> HFStageModel:
    if not isinstance(model, HFStageModel):
        raise UserInputError(
            f"{model.name!r} ({type(model).__name__}) has no stage table, so no stage a plant can replace; "
            "calibration works on the transformers models (Qwen-VL families, ViT encoders)"
        )
    return model


def plantable_stages(model: StageModel) -> list[str]:
    """Stages of `model` a plant can be placed at, in pipeline order."""
    return _hf_model(model).stage_names


def parse_plant(text: str, model: StageModel) -> Plant:
    """`TYPE@STAGE` → Plant; an unknown type or stage, or a type the model cannot take, is a user error."""
    kind, _, stage = text.partition("@")
    stages = plantable_stages(model)
    if kind not in PLANT_TYPES or stage not in stages:
        raise UserInputError(
            f"bad plant {text!r}: write TYPE@STAGE with TYPE one of {', '.join(PLANT_TYPES)} and STAGE one of "
            f"{model.name}'s stages: {', '.join(stages)}"
        )
    plant_type = PLANT_TYPES[kind]
    if plant_type.needs_video and not model.supports_video:
        raise UserInputError(
            f"{kind} averages video tokens over time, but {model.name!r} is an image-only model with no time "
            "axis; use erase-position, scramble-position or blur-detail"
        )
    return Plant(plant_type, stage)


@contextlib.contextmanager
def planted(
    model: StageModel, plant: Plant, images: Sequence[Image.Image] | None = None,
    videos: Sequence[Clip] | None = None, rng: torch.Generator | None = None,
) -> Iterator[None]:
    """Inside the block, a forward of `model` on this batch (`images` or `videos`) has `plant` in
    place. The stage table's conversions put the plant on the raster grid and write it back in
    the module's token order (window order, merge order, visual positions among text tokens).

    `rng` draws the random plants' permutations; pass one generator to successive batches so
    they get fresh permutations."""
    adapter = _hf_model(model)
    _, layout = adapter.prepare_batch(images, videos)
    _, height, width = layout_input_size(images, videos)
    point = adapter.stage_point(plant.stage, height, width)
    draws = rng if rng is not None else torch.Generator().manual_seed(0)

    def edit(grid: torch.Tensor) -> torch.Tensor:
        return grid if plant.type.fn is keep else plant.type.fn(grid.float(), draws)

    with replace_stage(point, layout, edit):
        yield


class PlantedModel(StageModel):
    """`model` with `plant` in place during every `extract`: a StageModel of its own, so feature
    stores, probes and the study treat it like any model (its name and config say it is planted)."""

    def __init__(self, model: StageModel, plant: Plant, seed: int = 0) -> None:
        self.base = model
        self.plant = plant
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)
        self.name = f"{model.name}+{plant.label}"
        self.weights_id = model.weights_id
        self.device = model.device
        self.dtype = model.dtype

    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        return self.base.stages_for(height, width, frames)

    @property
    def default_image_size(self) -> tuple[int, int]:
        return self.base.default_image_size

    @property
    def supports_video(self) -> bool:
        return self.base.supports_video

    @property
    def temporal_patch_size(self) -> int:
        return self.base.temporal_patch_size

    def extract(
        self,
        images: Sequence[Image.Image] | None = None,
        videos: Sequence[Clip] | None = None,
        stages: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        with planted(self.base, self.plant, images, videos, self.rng):
            return self.base.extract(images=images, videos=videos, stages=stages)

    def config_summary(self) -> dict[str, Any]:
        return {**self.base.config_summary(), "plant": self.plant.label, "plant_seed": self.seed}
