"""What `StageModel.extract` accepts, turned into what every adapter reads: lists of PIL images.

Users hold images in many forms — one PIL image, a numpy array from scikit-image, a torch tensor
from a data loader — and a stage pattern is often one string. Every adapter's `extract` is wrapped
with `accept_any_input` (see `StageModel.__init_subclass__`), so each one takes all of them, and
returns its features with the input size the model actually used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from stageprobe.errors import UserInputError

if TYPE_CHECKING:
    from stageprobe.models.base import StageModel

log = logging.getLogger("stageprobe")

ExtractMethod = Callable[..., dict[str, torch.Tensor]]


class StageFeatures(dict[str, torch.Tensor]):
    """{stage: (B, T, H, W, D)} as `extract` returns it, plus `input_size`: the (height, width) the
    model resized the input to, which is what the token grid covers (stride × grid size)."""

    input_size: tuple[int, int]


def accept_any_input(extract: ExtractMethod) -> ExtractMethod:
    """Wrap an adapter's `extract(images=, videos=, stages=)` so it takes any supported input form."""

    @wraps(extract)
    def wrapper(self: StageModel, images: Any = None, videos: Any = None, stages: Any = None) -> StageFeatures:
        image_list = None if images is None else to_images(images)
        clip_list = None if videos is None else to_clips(videos)
        patterns = [stages] if isinstance(stages, str) else stages
        features = StageFeatures(extract(self, images=image_list, videos=clip_list, stages=patterns))
        features.input_size = _resized_size(self, image_list, clip_list)
        log.debug("%s read the input at %d×%d px (height × width)", self.name, *features.input_size)
        return features

    return wrapper


def to_images(images: Any) -> list[Image.Image]:
    """One PIL image, an array (H, W[, C]) / (C, H, W) or a batch (B, ...), or a list of any of them."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = _as_numpy(images)
        if array.ndim == 4:
            return [_to_pil(frame) for frame in array]
        return [_to_pil(array)]
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return [image for item in images for image in to_images(item)] if images else []
    raise UserInputError(
        f"images must be PIL images, numpy arrays or torch tensors (or a list of them), got {type(images).__name__}"
    )


def to_clips(videos: Any) -> list[list[Image.Image]]:
    """A list of clips (each a list of frames or an array (F, H, W, C)), or one array (B, F, H, W, C);
    every clip must have the same number of frames, since one forward pass reads them all."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        array = _as_numpy(videos)
        if array.ndim != 5:
            raise UserInputError(f"a video array must be (clips, frames, H, W, C), got shape {array.shape}")
        clips = [[_to_pil(frame) for frame in clip] for clip in array]
    elif isinstance(videos, Sequence) and not isinstance(videos, (str, bytes)):
        clips = [to_images(clip) for clip in videos]
    else:
        raise UserInputError(
            f"videos must be a list of clips (lists of frames) or an array, got {type(videos).__name__}"
        )
    lengths = sorted({len(clip) for clip in clips})
    if len(lengths) > 1:
        raise UserInputError(
            f"clips in one call must have the same number of frames, got lengths {lengths}; "
            "trim them to one length, or call extract once per length"
        )
    return clips


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _to_pil(array: np.ndarray) -> Image.Image:
    """(H, W), (H, W, 1|3|4) or channels-first (1|3|4, H, W); uint8 0…255, or float / other ints 0…1."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise UserInputError(
            f"an image array must be (H, W), (H, W, 3) or (3, H, W) — a batch adds a first axis — got shape "
            f"{array.shape}"
        )
    if array.dtype != np.uint8:
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
            raise UserInputError(f"image arrays must hold numbers, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise UserInputError(
                f"a {array.dtype} image array must hold values in 0…1 (uint8 arrays hold 0…255), got "
                f"{array.min():.4g}…{array.max():.4g}; divide by 255 or pass uint8"
            )
        array = np.round(array.astype(np.float64) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _resized_size(
    model: StageModel, images: list[Image.Image] | None, clips: list[list[Image.Image]] | None
) -> tuple[int, int]:
    """(height, width) the model's grid covers: the coarsest stage's grid times its stride."""
    first = clips[0][0] if clips else (images[0] if images else None)
    if first is None:
        return (0, 0)
    frames = len(clips[0]) if clips else 1
    infos = model.stages_for(first.size[1], first.size[0], frames)
    coarsest = max(infos, key=lambda info: info.stride_px)
    return coarsest.grid[1] * coarsest.stride_px, coarsest.grid[2] * coarsest.stride_px
