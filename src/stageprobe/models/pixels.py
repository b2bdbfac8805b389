"""The pixel baseline: each token is the raw pixels of its patch. It holds all spatial information,
so it is the ceiling any probe can reach on a grid of that stride."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from stageprobe.errors import UserInputError
from stageprobe.models._tiled import TiledVLModel
from stageprobe.models.base import Clip, StageInfo, StageModel, check_same_size, select_stages
from stageprobe.models.registry import register_preset

PATCH_PX = 14
MERGE = 2
TEMPORAL_PATCH = 2


class PixelModel(StageModel):
    """Patches of `patch_px` (`pixels.patch`) and `patch_px × merge` (`pixels.merged`): by default
    14 and 28 px, the strides of Qwen2(.5)-VL's grids; 16 and 32 px (`pixels-16`) for Qwen3-VL / Qwen3.5.

    Images are resized to the nearest multiple of the merged stride, as Qwen-VL's processor does for
    sizes that are already close; videos group frames in pairs, like Qwen-VL's temporal patches.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, patch_px: int = PATCH_PX, merge: int = MERGE,
                 name: str = "pixels", native_size: tuple[int, int] | None = None,
                 resize_to: Callable[[int, int, int], tuple[int, int]] | None = None) -> None:
        self.name = name
        #: (height, width) every input is resized to, as the model it is the baseline of does (Gemma 3, a ViT)
        self.native_size = native_size
        self.resizes_to_native_size = native_size is not None
        #: (height, width, frames) → the size the model resizes such an input to (a tiled model's mosaic)
        self.resize_to = resize_to
        self.weights_id = "none"
        self.device = device
        self.dtype = dtype
        self.patch_px = patch_px
        self.merge = merge

    @property
    def supports_video(self) -> bool:
        return True

    @property
    def temporal_patch_size(self) -> int:
        return TEMPORAL_PATCH

    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        h, w = self._size(height, width, frames)
        t = max(1, frames // TEMPORAL_PATCH)
        per_frame = TEMPORAL_PATCH if frames > 1 else 1
        patch, merged = self.patch_px, self.patch_px * self.merge
        return [
            StageInfo("pixels.patch", patch, 3 * patch**2 * per_frame, (t, h // patch, w // patch),
                      f"raw pixels of each {patch} px patch"),
            StageInfo("pixels.merged", merged, 3 * merged**2 * per_frame, (t, h // merged, w // merged),
                      f"raw pixels of each {merged} px patch"),
        ]

    def _size(self, height: int, width: int, frames: int) -> tuple[int, int]:
        if self.resize_to is not None:
            return self.resize_to(height, width, frames)
        return self.native_size or (self._snap(height), self._snap(width))

    def _snap(self, size: int) -> int:
        merged = self.patch_px * self.merge
        return max(merged, round(size / merged) * merged)

    def extract(
        self,
        images: Sequence[Image.Image] | None = None,
        videos: Sequence[Clip] | None = None,
        stages: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        clips = [list(clip) for clip in videos] if videos is not None else [[im] for im in images or []]
        if videos is not None:
            for clip in clips:
                if len(clip) % TEMPORAL_PATCH:
                    raise UserInputError(f"a clip has {len(clip)} frames; video needs an even frame count")
        height, width = check_same_size([frame for clip in clips for frame in clip])
        h, w = self._size(height, width, len(clips[0]) if videos is not None else 1)
        pixels = torch.from_numpy(
            np.stack([[np.asarray(f.convert("RGB").resize((w, h), Image.BICUBIC)) for f in clip] for clip in clips])
        ).to(torch.float32) / 255.0  # (B, F, H, W, 3)
        if videos is not None:
            b, f = pixels.shape[:2]
            pixels = pixels.view(b, f // TEMPORAL_PATCH, TEMPORAL_PATCH, h, w, 3)
        else:
            pixels = pixels.unsqueeze(2)  # (B, T=1, frames-per-token=1, H, W, 3)
        chosen = select_stages([s.name for s in self.stages_for(h, w)], stages)
        out = {}
        for stage in chosen:
            out[stage] = _patchify(pixels, self.patch_px if stage == "pixels.patch" else self.patch_px * self.merge)
        return {k: v.to(self.dtype) for k, v in out.items()}


def _patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, F, H, W, 3) → (B, T, H/p, W/p, F·p·p·3), each token its patch's pixels."""
    b, t, f, h, w, c = pixels.shape
    grid = pixels.view(b, t, f, h // patch, patch, w // patch, patch, c)
    return grid.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t, h // patch, w // patch, f * patch * patch * c)


@register_preset("pixels")
def pixel_model(device: torch.device, dtype: torch.dtype) -> PixelModel:
    return PixelModel(device, torch.float32 if dtype == torch.bfloat16 else dtype)


@register_preset("pixels-16")
def pixel_model_16(device: torch.device, dtype: torch.dtype) -> PixelModel:
    return PixelModel(device, torch.float32 if dtype == torch.bfloat16 else dtype, patch_px=16, name="pixels-16")


@register_preset("pixels-56")
def pixel_model_56(device: torch.device, dtype: torch.dtype) -> PixelModel:
    return PixelModel(device, torch.float32 if dtype == torch.bfloat16 else dtype, merge=4, name="pixels-56")


def pixel_baseline_for(model: StageModel) -> PixelModel:
    """The pixel baseline on `model`'s own grids: its patch size and merge factor (a plain ViT: no merge,
    so `pixels.merged` is 2× its patch), at the size it resizes every input to, if it does."""
    patch_px = int(getattr(model, "patch_px", PATCH_PX))
    merge = int(getattr(model, "merge", MERGE))
    names = {(PATCH_PX, MERGE): "pixels", (PATCH_PX, 4): "pixels-56"}
    name = names.get((patch_px, merge), f"pixels-{patch_px}" if merge == MERGE else f"pixels-{patch_px}x{merge}")
    native = model.default_image_size if model.resizes_to_native_size else None
    # a tiled model's grids cover the image resized to its tile mosaic: the baseline's grids too
    resize_to = model.processed_size if isinstance(model, TiledVLModel) else None
    return PixelModel(torch.device("cpu"), torch.float32, patch_px=patch_px, merge=merge, name=name,
                      native_size=native, resize_to=resize_to)
