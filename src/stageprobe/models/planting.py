"""Planted losses: forward hooks that *replace* one stage's visual tokens with a damaged copy.

Calibration plants a known loss at a known stage and checks the study finds it there. A plant
works on the raster token grid (B, T, H, W, D) every stage is read in, so each stage needs a
*site*: the module to hook, whether its input or its output is the stage, and the conversion
from the module's token order to raster order and back (Qwen2.5-VL keeps its ViT blocks in
attention-window order, the LLM holds visual tokens among text tokens, a ViT has CLS tokens).
Everything adapter-specific is in the `_QwenSites` / `_VitSites` classes below; the plants and
`planted` see only `PlantSite`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from stageprobe.errors import UserInputError
from stageprobe.models.base import Clip, StageInfo, StageModel

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
    name: str
    #: the information type the plant removes (it picks the probes that should see it)
    information: Literal["position", "detail", "time", "none"]
    fn: PlantFn
    needs_video: bool = False


PLANT_TYPES: dict[str, PlantType] = {p.name: p for p in (
    PlantType("erase-position", "position", erase_position),
    PlantType("scramble-position", "position", scramble_position),
    PlantType("blur-detail", "detail", blur_detail),
    PlantType("erase-time", "time", erase_time, needs_video=True),
    PlantType("none", "none", keep),
)}


@dataclass(frozen=True)
class Plant:
    """One plant: a type at a stage, e.g. `erase-position@vision.block.4`."""

    type: PlantType
    stage: str

    @property
    def label(self) -> str:
        return f"{self.type.name}@{self.stage}"


# -- sites ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantSite:
    """Where a stage lives in the module tree, and how its tokens map to the raster grid.

    `to_raster(value)` gives (B, T, H, W, D) in raster order from the module's input/output
    tensor; `from_raster(grid, value)` writes a (possibly changed) grid back into a copy of that
    tensor in the module's order, leaving every non-visual token as it was.
    """

    module: nn.Module
    kind: Literal["input", "output"]
    to_raster: Callable[[torch.Tensor], torch.Tensor]
    from_raster: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _ForwardState:
    """What the current forward pass was called with, recorded by pre-hooks the plant installs."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self.values:
            raise RuntimeError(f"planting: the forward pass did not record {key!r} before the planted stage")
        return self.values[key]


def _merge_to_raster(flat: torch.Tensor, t: int, h: int, w: int, merge: int) -> torch.Tensor:
    """One item's tokens in 2×2-merge-window order (t, h/m, w/m, m, m) → raster (t, h, w, D)."""
    blocks = flat.reshape(t, h // merge, w // merge, merge, merge, -1)
    return blocks.permute(0, 1, 3, 2, 4, 5).reshape(t, h, w, -1)


def _raster_to_merge(grid: torch.Tensor, merge: int) -> torch.Tensor:
    """Inverse of `_merge_to_raster`: (t, h, w, D) → (t·h·w, D) in merge-window order."""
    t, h, w, d = grid.shape
    blocks = grid.reshape(t, h // merge, merge, w // merge, merge, d)
    return blocks.permute(0, 1, 3, 2, 4, 5).reshape(-1, d)


class _QwenSites:
    """Sites of a Qwen2/2.5-VL adapter. Uses from it: `visual` (patch_embed, blocks, merger),
    `language_model.layers` / `.norm`, `hf_model.model`, `merge`, `image_token_id`,
    `video_token_id`, and `_window_order(grid_thw)` when the tower is windowed (Qwen2.5-VL)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state = _ForwardState()
        self.windowed = bool(getattr(model, "_windowed", False))

    def state_hooks(self) -> list[Any]:
        def record_grid(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
            self.state.values["grid_thw"] = grid_thw
            order = self.model._window_order(grid_thw) if self.windowed else None
            self.state.values["window_order"] = order

        def record_ids(_module: nn.Module, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.state.values["input_ids"] = kwargs.get("input_ids")

        return [self.model.visual.register_forward_pre_hook(record_grid, with_kwargs=True),
                self.model.hf_model.model.register_forward_pre_hook(record_ids, with_kwargs=True)]

    def site(self, stage: str) -> PlantSite:
        visual, merged = self.model.visual, stage == "vision.post_merge"
        if stage.startswith("language."):
            module = (self.model.language_model.norm if stage == "language.norm"
                      else self.model.language_model.layers[int(stage.rsplit(".", 1)[1])])
            return PlantSite(module, "output", self._language_to_raster, self._language_from_raster)
        if stage == "vision.patch_embed":
            # before the window permutation: merge-window order, as the processor made it
            return PlantSite(visual.patch_embed, "output", lambda x: self._vision_to_raster(x, False, False),
                             lambda g, x: self._vision_from_raster(g, x, False, False))
        if stage.startswith("vision.block."):
            module: nn.Module = visual.blocks[int(stage.rsplit(".", 1)[1])]
        elif stage in ("vision.pre_merge", "vision.post_merge"):
            module = visual.merger
        else:
            raise KeyError(stage)
        kind: Literal["input", "output"] = "input" if stage == "vision.pre_merge" else "output"
        return PlantSite(module, kind, lambda x: self._vision_to_raster(x, merged, self.windowed),
                         lambda g, x: self._vision_from_raster(g, x, merged, self.windowed))

    def _vision_to_raster(self, flat: torch.Tensor, merged: bool, windowed: bool) -> torch.Tensor:
        grid_thw, merge = self.state.get("grid_thw"), self.model.merge
        unit = 1 if merged else merge * merge
        if windowed:
            restore = torch.argsort(self.state.get("window_order").to(flat.device))
            flat = flat.reshape(-1, unit, flat.shape[-1])[restore].reshape(flat.shape)
        per_token = merge * merge if merged else 1
        sizes = [t * h * w // per_token for t, h, w in grid_thw.tolist()]
        grids = []
        for chunk, (t, h, w) in zip(torch.split(flat, sizes), grid_thw.tolist(), strict=True):
            grids.append(chunk.reshape(t, h // merge, w // merge, -1) if merged
                         else _merge_to_raster(chunk, t, h, w, merge))
        return torch.stack(grids)

    def _vision_from_raster(self, grid: torch.Tensor, flat: torch.Tensor, merged: bool,
                            windowed: bool) -> torch.Tensor:
        merge = self.model.merge
        unit = 1 if merged else merge * merge
        items = [g.reshape(-1, g.shape[-1]) if merged else _raster_to_merge(g, merge) for g in grid]
        out = torch.cat(items).to(flat.dtype)
        if windowed:
            order = self.state.get("window_order").to(flat.device)
            out = out.reshape(-1, unit, out.shape[-1])[order].reshape(out.shape)
        return out

    def _visual_positions(self, hidden: torch.Tensor) -> torch.Tensor:
        ids = self.state.get("input_ids").to(hidden.device)
        return (ids == self.model.image_token_id) | (ids == self.model.video_token_id)

    def _language_to_raster(self, hidden: torch.Tensor) -> torch.Tensor:
        t, h, w = (int(v) for v in self.state.get("grid_thw")[0])
        merge = self.model.merge
        visual = hidden[self._visual_positions(hidden)]
        return visual.reshape(hidden.shape[0], t, h // merge, w // merge, hidden.shape[-1])

    def _language_from_raster(self, grid: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        out[self._visual_positions(hidden)] = grid.reshape(-1, grid.shape[-1]).to(hidden.dtype)
        return out


class _VitSites:
    """Sites of a generic ViT adapter. Uses from it: `_stage_modules`, `prefix_tokens`,
    `patch_px`, `hf_model`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state = _ForwardState()

    def state_hooks(self) -> list[Any]:
        def record_pixels(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            pixels = kwargs.get("pixel_values", args[0] if args else None)
            self.state.values["grid_hw"] = tuple(s // self.model.patch_px for s in pixels.shape[-2:])

        return [self.model.hf_model.register_forward_pre_hook(record_pixels, with_kwargs=True)]

    def site(self, stage: str) -> PlantSite:
        return PlantSite(self.model._stage_modules[stage], "output", self._to_raster, self._from_raster)

    def _to_raster(self, tokens: torch.Tensor) -> torch.Tensor:
        rows, cols = self.state.get("grid_hw")
        patches = tokens[:, self.model.prefix_tokens:]
        return patches.reshape(len(tokens), 1, rows, cols, -1)

    def _from_raster(self, grid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = tokens.clone()
        out[:, self.model.prefix_tokens:] = grid.reshape(len(tokens), -1, grid.shape[-1]).to(tokens.dtype)
        return out


def _sites_of(model: StageModel) -> _QwenSites | _VitSites:
    from stageprobe.models.qwen_vl import QwenVLModel
    from stageprobe.models.vit import VitModel

    if isinstance(model, QwenVLModel):
        return _QwenSites(model)
    if isinstance(model, VitModel):
        return _VitSites(model)
    raise UserInputError(
        f"{model.name!r} ({type(model).__name__}) has no stages a plant can replace; calibration works on "
        "Qwen2/2.5-VL models and ViT encoders"
    )


# -- plants ---------------------------------------------------------------------------------


def plantable_stages(model: StageModel) -> list[str]:
    """Stages of `model` a plant can be placed at, in pipeline order."""
    if isinstance(_sites_of(model), _QwenSites):
        return model.stage_names
    return [name for name in model.stage_names if name in model._stage_modules]  # type: ignore[attr-defined]


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


def _replacing_hook(site: PlantSite, fn: PlantFn, rng: torch.Generator) -> Callable[..., Any]:
    def replace(value: torch.Tensor) -> torch.Tensor:
        grid = site.to_raster(value)
        changed = fn(grid.float(), rng).to(grid.dtype) if fn is not keep else grid
        return site.from_raster(changed, value)

    def output_hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        return replace(output)

    def input_hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (replace(args[0]), *args[1:])

    return output_hook if site.kind == "output" else input_hook


@contextlib.contextmanager
def planted(model: StageModel, plant: Plant, rng: torch.Generator | None = None) -> Iterator[None]:
    """Inside the block, every forward of `model` has `plant` in place (hooks removed on exit).

    `rng` draws the random plants' permutations; pass one generator to successive blocks so
    successive batches get fresh permutations."""
    sites = _sites_of(model)
    site = sites.site(plant.stage)
    rng = rng if rng is not None else torch.Generator().manual_seed(0)
    handles = sites.state_hooks()
    hook = _replacing_hook(site, plant.type.fn, rng)
    # prepend: the extraction hooks registered later on the same module must read the planted value
    if site.kind == "output":
        handles.append(site.module.register_forward_hook(hook, prepend=True))
    else:
        handles.append(site.module.register_forward_pre_hook(hook, prepend=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
        with planted(self.base, self.plant, self.rng):
            return self.base.extract(images=images, videos=videos, stages=stages)

    def config_summary(self) -> dict[str, Any]:
        return {**self.base.config_summary(), "plant": self.plant.label, "plant_seed": self.seed}
