"""The pixel baseline: each token is the raw pixels of its patch. It holds all spatial information,
so it is the ceiling any probe can reach on a grid of that stride."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from stageprobe.errors import UserInputError
from stageprobe.models.base import Clip, StageInfo, StageModel, check_same_size, select_stages
from stageprobe.models.registry import register_preset

PATCH_PX = 14
MERGE = 2
TEMPORAL_PATCH = 2


class PixelModel(StageModel):
    """Patches of 14 px (`pixels.patch`) and 28 px (`pixels.merged`), the strides of Qwen-VL's grids.

    Images are resized to the nearest multiple of 28 px, as Qwen-VL's processor does for sizes
    that are already close; videos group frames in pairs, like Qwen-VL's temporal patches.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.name = "pixels"
        self.weights_id = "none"
        self.device = device
        self.dtype = dtype

    @property
    def supports_video(self) -> bool:
        return True

    @property
    def temporal_patch_size(self) -> int:
        return TEMPORAL_PATCH

    def stages_for(self, height: int, width: int, frames: int = 1) -> list[StageInfo]:
        h, w = _snap(height), _snap(width)
        t = max(1, frames // TEMPORAL_PATCH)
        per_frame = TEMPORAL_PATCH if frames > 1 else 1
        return [
            StageInfo("pixels.patch", PATCH_PX, 3 * PATCH_PX**2 * per_frame, (t, h // PATCH_PX, w // PATCH_PX),
                      "raw pixels of each 14 px patch"),
            StageInfo("pixels.merged", PATCH_PX * MERGE, 3 * (PATCH_PX * MERGE) ** 2 * per_frame,
                      (t, h // (PATCH_PX * MERGE), w // (PATCH_PX * MERGE)), "raw pixels of each 28 px patch"),
        ]

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
        h, w = _snap(height), _snap(width)
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
            out[stage] = _patchify(pixels, PATCH_PX if stage == "pixels.patch" else PATCH_PX * MERGE)
        return {k: v.to(self.dtype) for k, v in out.items()}


def _snap(size: int) -> int:
    return max(PATCH_PX * MERGE, round(size / (PATCH_PX * MERGE)) * PATCH_PX * MERGE)


def _patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, F, H, W, 3) → (B, T, H/p, W/p, F·p·p·3), each token its patch's pixels."""
    b, t, f, h, w, c = pixels.shape
    grid = pixels.view(b, t, f, h // patch, patch, w // patch, patch, c)
    return grid.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t, h // patch, w // patch, f * patch * patch * c)


@register_preset("pixels", "pixel baseline: raw pixels of each 14 px and 28 px patch (no network)")
def pixel_model(device: torch.device, dtype: torch.dtype) -> PixelModel:
    return PixelModel(device, torch.float32 if dtype == torch.bfloat16 else dtype)
