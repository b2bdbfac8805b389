"""Generic ViT vision encoders (DINOv2, SigLIP, CLIP): the "dedicated spatial model" comparison.

Each model runs with its own image processor, told to resize the *whole* image to the encoder's native
size and never to center-crop, so every stage's grid covers the whole input (targets are laid over
the whole image). Prefix tokens (CLS, registers) are dropped so
every stage is a pure raster grid of patch tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from stageprobe.errors import UserInputError
from stageprobe.models._presets import preset_checkpoint, quiet_transformers
from stageprobe.models._stages import Layout, StageSpec
from stageprobe.models.base import Clip, HFStageModel, check_same_size
from stageprobe.models.registry import (
    pretrained_source,
    register_architecture,
    register_preset,
    register_skeleton,
)


@dataclass(frozen=True)
class _Family:
    """Where one architecture keeps the parts stageprobe reads."""

    model_class: str
    #: CLS tokens ahead of the patches; register tokens (config.num_register_tokens) follow them
    cls_tokens: int
    #: path from the model root to the list of encoder layers
    layers: str
    #: the norm the model applies to every token after the last block; None where there is none
    final_norm: str | None
    #: whether forward() takes `interpolate_pos_encoding` (DINOv2 always interpolates)
    has_interpolate_flag: bool


_DINOV2 = _Family("Dinov2Model", 1, "encoder.layer", "layernorm", False)
_SIGLIP = _Family("SiglipVisionModel", 0, "encoder.layers", "post_layernorm", True)
# CLIP's post_layernorm only ever sees the CLS token, so patch tokens have no final-norm stage.
_CLIP = _Family("CLIPVisionModel", 1, "encoder.layers", None, True)

FAMILIES: dict[str, _Family] = {
    "dinov2": _DINOV2,
    "dinov2_with_registers": _Family("Dinov2WithRegistersModel", 1, "encoder.layer", "layernorm", False),
    # Full SigLIP / CLIP checkpoints also hold a text tower; the *VisionModel classes load the
    # vision tower alone from them.
    "siglip": _SIGLIP,
    "siglip_vision_model": _SIGLIP,
    "clip": _CLIP,
    "clip_vision_model": _CLIP,
}


class VitModel(HFStageModel):
    """A ViT encoder read at its embeddings, every block, and its final norm."""

    resizes_to_native_size = True

    def __init__(
        self,
        name: str,
        hf_model: nn.Module,
        processor: Any,
        family: _Family,
        device: torch.device,
        dtype: torch.dtype,
        weights_id: str,
    ) -> None:
        self.name = name
        self.weights_id = weights_id
        self.device = device
        self.dtype = dtype
        self.hf_model = hf_model.eval().to(device=device, dtype=dtype)
        self.processor = processor
        self.family = family
        config = hf_model.config
        patch_h, patch_w = _pair(config.patch_size)
        if patch_h != patch_w:
            raise UserInputError(
                f"{name!r} has non-square {patch_h}×{patch_w} patches, which stageprobe does not support"
            )
        self.patch_px = patch_h
        self.prefix_tokens = family.cls_tokens + getattr(config, "num_register_tokens", 0)
        self._native_size = _pair(config.image_size)
        # SigLIP / CLIP in transformers 4.x wrap the encoder in `vision_model`; 5.x does not.
        self._root = "vision_model." if hasattr(hf_model, "vision_model") else ""
        self._depth = len(hf_model.get_submodule(self._root + family.layers))

    def processor_options(self) -> dict[str, Any]:
        """Resize the whole image to the encoder's native size, never center-crop: a crop would hide
        the image's border from the encoder while every target is laid over the whole image."""
        height, width = self._native_size
        return {"do_center_crop": False, "size": {"height": height, "width": width}}

    def processed_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the image the encoder sees for an input of this size (the whole input)."""
        return self._native_size

    @property
    def default_image_size(self) -> tuple[int, int]:
        return self._native_size

    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        if frames != 1:
            raise UserInputError(f"{self.name!r} is an image encoder; it has no video path")
        seen_h, seen_w = self.processed_size(height, width)
        grid = (1, seen_h // self.patch_px, seen_w // self.patch_px)
        return {"patch": grid, "patch_stride": self.patch_px, "merged": grid, "merged_stride": self.patch_px}

    def stage_table(self, height: int, width: int, frames: int = 1) -> list[StageSpec]:
        seen_h, seen_w = self.processed_size(height, width)
        dim = int(self.hf_model.config.hidden_size)
        # Only the first stage names the processed size: it tells a user their image was resized.
        embed = f"patch + position embeddings of the whole image resized to {seen_h}×{seen_w}"
        table = [StageSpec("vision.embed", f"{self._root}embeddings", "output", "patch", "prefixed", dim, embed)]
        table += [StageSpec(f"vision.block.{i}", f"{self._root}{self.family.layers}.{i}", "output", "patch",
                            "prefixed", dim, f"output of encoder block {i}") for i in range(self._depth)]
        if self.family.final_norm is not None:
            table.append(StageSpec("vision.final", f"{self._root}{self.family.final_norm}", "output", "patch",
                                   "prefixed", dim, "final layer norm output"))
        return table

    def prepare_batch(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, Any], Layout]:
        if videos is not None:
            raise UserInputError(f"{self.name!r} is an image encoder; pass images, not videos")
        images = [image.convert("RGB") for image in images or []]
        height, width = check_same_size(images)
        pixels = self.processor(images=images, return_tensors="pt", **self.processor_options())["pixel_values"]
        inputs: dict[str, Any] = {"pixel_values": pixels.to(device=self.device, dtype=self.dtype)}
        if self.family.has_interpolate_flag:
            # CLIP refuses any other size unless asked to interpolate its position embeddings.
            inputs["interpolate_pos_encoding"] = tuple(pixels.shape[-2:]) != self._native_size
        grid = self.stage_grids(height, width)["patch"]
        return inputs, Layout(grids=(grid,) * len(images), prefix=self.prefix_tokens)

    def run_forward(self, inputs: dict[str, Any], stages: Sequence[str]) -> None:
        self.hf_model(**inputs)

    def with_weights(self, hf_model: nn.Module, name: str, weights_id: str) -> VitModel:
        return VitModel(name, hf_model, self.processor, self.family, self.device, self.dtype, weights_id)

    def config_summary(self) -> dict:
        config = self.hf_model.config
        return {
            **super().config_summary(),
            "architecture": config.model_type,
            "config_sha256": config_hash(config),
            "revision": self.weights_id,
            "patch_px": self.patch_px,
            "prefix_tokens": self.prefix_tokens,
            "input_size": list(self.default_image_size),
            "processor": type(self.processor).__name__,
            "resize": "whole image to the native size, no crop",
        }


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def config_hash(config: Any) -> str:
    """Hash of the encoder's config, blind to where it was loaded from, by which version, and which
    head class (`architectures`) it was saved under."""
    skip = ("_name_or_path", "transformers_version", "architectures")
    fields = {k: v for k, v in config.to_dict().items() if k not in skip}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


@register_architecture(*FAMILIES)
def load_vit(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False
) -> VitModel:
    """Any DINOv2 / SigLIP / CLIP checkpoint, by Hub id or local directory."""
    source = pretrained_source(name)
    hf_model, processor = _load_pretrained(source, config.model_type, trust_remote_code)
    return VitModel(
        name, hf_model, processor, FAMILIES[config.model_type], device, dtype, _weights_id(source)
    )


@register_skeleton(*FAMILIES)
def vit_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> VitModel:
    """The adapter over a meta-device encoder: geometry from config + processor files, no weights."""
    import transformers

    source = pretrained_source(name)
    family = FAMILIES[config.model_type]
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the image processor of {source!r} is not found locally ({error}); "
            "pass a directory that holds its preprocessor_config.json"
        ) from error
    with torch.device("meta"):
        hf_model = getattr(transformers, family.model_class)._from_config(getattr(config, "vision_config", config))
    meta = torch.device("meta")
    return VitModel(name, hf_model, processor, family, meta, torch.float32, "not loaded (meta device)")


def _load_pretrained(source: str, model_type: str, trust_remote_code: bool) -> tuple[nn.Module, Any]:
    import transformers

    family = FAMILIES[model_type]
    try:
        with quiet_transformers():
            # The load report would list a full checkpoint's text tower as "unexpected"; that is
            # intended here, and the keys that matter (missing vision weights) are checked below.
            hf_model, info = getattr(transformers, family.model_class).from_pretrained(
                source, output_loading_info=True, trust_remote_code=trust_remote_code
            )
        processor = transformers.AutoImageProcessor.from_pretrained(
            source, trust_remote_code=trust_remote_code
        )
    except OSError as error:
        raise UserInputError(
            f"cannot load the {model_type} weights or image processor of {source!r}: {error}. "
            "A model directory needs config.json, the weights (*.safetensors) and preprocessor_config.json; "
            "for a Hub id, download it where there is network and pass the local directory"
        ) from error
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserInputError(
            f"{source!r} lacks {len(missing)} weights of its vision encoder (e.g. {missing[0]}); "
            "its features would be random. Point stageprobe at a complete checkpoint"
        )
    return hf_model, processor


def _weights_id(source: str) -> str:
    """The Hub commit of a cached checkpoint, or a content hash of a local directory's weights."""
    local = Path(source)
    if not local.is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        # Cached files live in .../snapshots/<commit sha>/
        return f"revision:{Path(cached).parent.name}" if isinstance(cached, str) else "revision:unknown"
    digest = hashlib.sha256()
    for path in sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


# --- tiny random presets --------------------------------------------------------------------------


def _load_preset(
    name: str, build: Callable[[], tuple[Any, Any]], device: torch.device, dtype: torch.dtype
) -> VitModel:
    """The preset through the same from_pretrained path a Hub checkpoint takes."""
    model_config, processor = build()
    directory = preset_checkpoint(name, model_config, processor)
    hf_model, processor = _load_pretrained(str(directory), model_config.model_type, trust_remote_code=False)
    return VitModel(name, hf_model, processor, FAMILIES[model_config.model_type], device, dtype, "random")


_TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
# Token ids inside the tiny vocabulary, or transformers warns that the defaults fall outside it.
_TINY_TEXT = {
    **_TINY,
    "num_hidden_layers": 1,
    "vocab_size": 128,
    "max_position_embeddings": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _dinov2_tiny() -> tuple[Any, Any]:
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig

    config = Dinov2WithRegistersConfig(
        **_TINY,
        patch_size=14,
        image_size=224,
        num_register_tokens=2,
        architectures=["Dinov2WithRegistersModel"],
    )
    # The processor of facebook/dinov2-*: shortest edge to 256, then a 224 center crop.
    processor = BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return config, processor


def _siglip_tiny() -> tuple[Any, Any]:
    from transformers import SiglipConfig, SiglipImageProcessor

    # A full two-tower checkpoint, like google/siglip-*, so loading exercises the vision-tower split.
    config = SiglipConfig(
        text_config=_TINY_TEXT,
        vision_config={**_TINY, "patch_size": 16, "image_size": 224},
        architectures=["SiglipModel"],
    )
    return config, SiglipImageProcessor(size={"height": 224, "width": 224})


def _clip_tiny() -> tuple[Any, Any]:
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=_TINY_TEXT,
        vision_config={**_TINY, "patch_size": 16, "image_size": 224},
        projection_dim=32,
        architectures=["CLIPModel"],
    )
    return config, CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


@register_preset("dinov2-tiny")
def dinov2_tiny(device: torch.device, dtype: torch.dtype) -> VitModel:
    return _load_preset("dinov2-tiny", _dinov2_tiny, device, dtype)


@register_preset("siglip-tiny")
def siglip_tiny(device: torch.device, dtype: torch.dtype) -> VitModel:
    return _load_preset("siglip-tiny", _siglip_tiny, device, dtype)


@register_preset("clip-tiny")
def clip_tiny(device: torch.device, dtype: torch.dtype) -> VitModel:
    return _load_preset("clip-tiny", _clip_tiny, device, dtype)
