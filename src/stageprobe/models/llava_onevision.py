"""LLaVA-OneVision (transformers' `LlavaOnevisionForConditionalGeneration`) read stage by stage.

* **anyres**: the processor picks the grid resolution (`image_grid_pinpoints`) that keeps most of the
  image, fits the image into it (keeping its aspect ratio, padding the rest), cuts it into
  `rows × cols` tiles of the tower's native size, and puts a **base image** (the whole image resized
  to one tile) first. The model runs the tower and an MLP projector per tile, lays the tile grids
  side by side, removes the padding's tokens ("unpadding"), and appends an `image_newline` token
  to every row before the LLM reads them after the base image's tokens.
* This adapter resizes each image to its anyres canvas itself (the grid resolution the processor
  would pick), so nothing is padded or unpadded and every grid covers the whole (resized) image:
  the tiles form one raster mosaic, the base image and the newline tokens are in no grid.
* An image whose mosaic the model would bilinearly shrink (`anyres_max_N`: more than about N tiles)
  is refused: its tokens would no longer be the tiles' cells.
* The connector is the MLP projector: `vision.pre_projector` → `vision.post_projector`.
* Video (native): each frame is one tile resized whole; after the projector the model pools each
  frame's grid 2×2 (bilinear at half size: the mean of each 2×2 block) and puts one newline token
  after the clip. Vision stages are per-frame patch grids (`T` = frames), LLM stages the pooled grid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image

from stageprobe.errors import UserInputError
from stageprobe.models._stages import Layout, StageSpec
from stageprobe.models._tiled import (
    TiledVLModel,
    byte_tokenizer,
    chat_template,
    load_tiled,
    mosaic_cells,
    random_preset,
    tiled_preset,
    tiled_skeleton,
)
from stageprobe.models.registry import register_architecture, register_preset, register_skeleton

MODEL_CLASS = "LlavaOnevisionForConditionalGeneration"
#: pack_image_features shrinks a mosaic whose size ratio to N tiles exceeds this
SHRINK_RATIO = 1.1
#: frames of a clip are pooled to half size per axis before the LLM
VIDEO_POOL = 2


class LlavaOnevisionModel(TiledVLModel):
    """Adapter over `LlavaOnevisionForConditionalGeneration`."""

    connector_stages = ("vision.pre_projector", "vision.post_projector")

    @property
    def vision_config(self) -> Any:
        return self.config.vision_config

    @property
    def tile_px(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def patch_px(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def merge(self) -> int:
        return 1

    @property
    def supports_video(self) -> bool:
        return True

    @property
    def tower(self) -> str:
        # SigLIP in transformers 4.x wraps its encoder in `vision_model`; 5.x does not
        root = "model.vision_tower"
        return f"{root}.vision_model" if hasattr(self.hf_model.get_submodule(root), "vision_model") else root

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        from transformers.image_processing_utils import select_best_resolution

        best_height, best_width = select_best_resolution((height, width), self.config.image_grid_pinpoints)
        return best_height // self.tile_px, best_width // self.tile_px

    def check_tiles(self, height: int, width: int) -> tuple[int, int]:
        rows, cols = super().check_tiles(height, width)
        most = int(str(self.config.vision_aspect_ratio).removeprefix("anyres_max_"))
        if math.sqrt(rows * cols / most) > SHRINK_RATIO:
            raise UserInputError(
                f"a {width}×{height} px image is cut into {rows}×{cols} tiles by {self.name!r}'s processor, more than "
                f"its {self.config.vision_aspect_ratio} lets the model keep cell by cell (it would resample the "
                f"mosaic); resize the images to at most {math.isqrt(most) * self.tile_px} px a side "
                f"({math.isqrt(most)}×{math.isqrt(most)} tiles) or another size of at most {most} tiles"
            )
        return rows, cols

    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        grids = super().stage_grids(height, width, frames)
        if frames > 1:  # the LLM reads each frame pooled 2×2
            t, h, w = grids["patch"]
            grids["merged"] = (t, math.ceil(h / VIDEO_POOL), math.ceil(w / VIDEO_POOL))
            grids["merged_stride"] = self.patch_px * VIDEO_POOL
        return grids

    def vision_stage_table(self) -> list[StageSpec]:
        dim = int(self.vision_config.hidden_size)
        table = [StageSpec("vision.embed", f"{self.tower}.embeddings", "output", "patch", "indexed", dim,
                           "patch + position embeddings", index="patches")]
        table += [StageSpec(f"vision.block.{i}", f"{self.tower}.encoder.layers.{i}", "output", "patch", "indexed",
                            dim, f"output of SigLIP block {i}", index="patches")
                  for i in range(int(self.vision_config.num_hidden_layers))]
        projector = "model.multi_modal_projector"
        table += [
            StageSpec("vision.pre_projector", projector, "input", "patch", "indexed", dim,
                      f"input of the MLP projector (ViT layer {self.config.vision_feature_layer})", index="patches"),
            StageSpec("vision.post_projector", projector, "output", "patch", "indexed", self.text_dim(),
                      "MLP projector output, before the tiles are packed with newline tokens for the LLM",
                      index="patches"),
        ]
        return table

    def processor_inputs(self, images: list[Image.Image] | None, clips: list[list[Image.Image]] | None) -> Any:
        if clips is not None:
            text = self.chat_text("video", self.video_prompt)
            return self.processor(text=[text] * len(clips), videos=clips, return_tensors="pt")
        images = images or []
        canvas = self.processed_size(images[0].height, images[0].width)
        # resized to the anyres canvas here, so the processor pads nothing and the model unpads nothing
        resized = [image.resize((canvas[1], canvas[0]), Image.BICUBIC) if image.size != canvas[::-1] else image
                   for image in images]
        text = self.chat_text("image", self.prompt)
        return self.processor(text=[text] * len(resized), images=resized, return_tensors="pt")

    def build_layout(self, inputs: dict[str, Any], frames: int, rows: int, cols: int) -> Layout:
        batch = inputs["input_ids"].shape[0]
        side = self.tile_px // self.patch_px
        tile, cell = mosaic_cells(frames, rows, cols, side)
        if frames > 1:
            first_tile = (torch.arange(batch) * frames).view(-1, 1, 1, 1)
            pooled = math.ceil(side / VIDEO_POOL)
            frame, pooled_cell = mosaic_cells(frames, 1, 1, pooled)
            visual = inputs["input_ids"] == int(self.config.video_token_id)
            text = self.text_index(visual, frame * pooled**2 + pooled_cell)  # one newline after the clip
        else:
            first_tile = (torch.arange(batch) * (1 + rows * cols)).view(-1, 1, 1, 1) + 1  # the base image first
            r = torch.arange(rows * side).view(1, -1, 1)
            c = torch.arange(cols * side).view(1, 1, -1)
            visual = inputs["input_ids"] == int(self.config.image_token_id)
            # after the base image's tokens, each mosaic row, then its newline token
            text = self.text_index(visual, side**2 + r * (cols * side + 1) + c)
        return Layout(grids=((frames, rows * side, cols * side),) * batch,
                      indices={"patches": (first_tile + tile) * side**2 + cell, "text": text})


@register_architecture("llava_onevision")
def load_llava_onevision(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
) -> TiledVLModel:
    return load_tiled(LlavaOnevisionModel, MODEL_CLASS, name, config, device, dtype, trust_remote_code)


@register_skeleton("llava_onevision")
def llava_onevision_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> TiledVLModel:
    return tiled_skeleton(LlavaOnevisionModel, MODEL_CLASS, name, config, trust_remote_code)


# -- presets ----------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


def pinpoints(tile_px: int, most: int) -> list[list[int]]:
    """Every grid of 1…`most` tiles per side, as the published checkpoints list them (height, width)."""
    return [[tile_px * r, tile_px * c] for r in range(1, most + 1) for c in range(1, most + 1)]


def build_processor(tile_px: int, tokens_per_tile: int, grid_pinpoints: list[list[int]]) -> Any:
    """LLaVA-OneVision's real processors over a small byte-level tokenizer."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    size = {"height": tile_px, "width": tile_px}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=grid_pinpoints),
        tokenizer=byte_tokenizer(SPECIAL_TOKENS, image_token="<image>", video_token="<video>"),
        video_processor=LlavaOnevisionVideoProcessor(size=size), num_image_tokens=tokens_per_tile,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=chat_template("<image>\n", "<video>\n"),
    )


def llava_onevision_config(processor: Any, vision: dict[str, Any], text: dict[str, Any]) -> Any:
    from transformers import LlavaOnevisionConfig

    tokenizer = processor.tokenizer
    text = {"model_type": "qwen2", "vocab_size": len(tokenizer), "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **text}
    return LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "vision_use_head": False, **vision}, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=processor.image_processor.image_grid_pinpoints, vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", architectures=[MODEL_CLASS],
        tie_word_embeddings=True,
    )


#: 224-px tiles of 16×16 patches, grids up to 3 × 3 tiles
TINY_VISION = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": 224, "patch_size": 14}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 8192}


@register_preset("llava-onevision-tiny")
def llava_onevision_tiny(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(224, 256, pinpoints(224, 3))
    config = llava_onevision_config(processor, TINY_VISION, TINY_TEXT)
    return tiled_preset(LlavaOnevisionModel, "llava-onevision-tiny", config, processor, device, dtype)


def llava_onevision_05b_config(processor: Any) -> Any:
    """The architecture of `llava-hf/llava-onevision-qwen2-0.5b-ov-hf`: SigLIP-so400m (384 px, 26 layers
    used) + Qwen2-0.5B (special-token ids are our small tokenizer's; the vocabulary size is the published one)."""
    vision = {"hidden_size": 1152, "num_hidden_layers": 26, "num_attention_heads": 16, "intermediate_size": 4304,
              "image_size": 384, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
    text = {"vocab_size": 152000, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
    return llava_onevision_config(processor, vision, text)


@register_preset("llava-onevision-0.5b-random")
def llava_onevision_05b_random(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(384, 729, pinpoints(384, 6))
    config = llava_onevision_05b_config(processor)
    return random_preset(LlavaOnevisionModel, "llava-onevision-0.5b-random", config, processor, device)
