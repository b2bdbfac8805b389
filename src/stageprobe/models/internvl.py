"""InternVL (2.5 / 3 / 3.5, transformers' `InternVLForConditionalGeneration`) read stage by stage.

* The processor cuts an image into `rows × cols` tiles of the tower's native size (448 px in the
  published models), the tile grid whose aspect ratio is closest to the image's (at most
  `max_patches` tiles), and adds a **thumbnail** (the whole image as one tile) when there is more
  than one tile. Tiles form one raster mosaic; the thumbnail is left out of every grid.
* InternViT prepends a CLS token to each tile's 14-px patches: dropped from every grid.
* The connector is a **pixel shuffle** with ratio 0.5 (space-to-depth: each 2×2 block of patches
  becomes one token of 4× width, a lossless reshape) then an MLP (norm, linear, GELU, linear):
  `vision.pre_shuffle` → `vision.post_shuffle` → `vision.post_projector` (what the LLM receives).
  The connector pair the study decides on is the shuffle's input and output, as every family's is
  its downsampling step (Qwen's merger, Gemma 3's pool); the projector's output is read beside it.
  The shuffle's axis order is the classic bug (the original code's first version transposed the
  grid); transformers' port keeps raster order, which the contract test checks.
* Video: frames, each one tile (no thumbnail), `T` = frames.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

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

MODEL_CLASS = "InternVLForConditionalGeneration"


class InternVLModel(TiledVLModel):
    """Adapter over `InternVLForConditionalGeneration`."""

    @property
    def vision_config(self) -> Any:
        return self.config.vision_config

    @property
    def tile_px(self) -> int:
        return int(self.processor.image_processor.size["height"])

    @property
    def patch_px(self) -> int:
        return int(self.vision_config.patch_size[0])

    @property
    def merge(self) -> int:
        return round(1 / float(self.config.downsample_ratio))

    @property
    def supports_video(self) -> bool:
        return getattr(self.processor, "video_processor", None) is not None

    def tile_options(self) -> dict[str, Any]:
        processor = self.processor.image_processor
        return {"crop_to_patches": True, "min_patches": int(processor.min_patches),
                "max_patches": int(processor.max_patches)}

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

        options = self.tile_options()
        cols, rows = get_optimal_tiled_canvas(
            (height, width), (self.tile_px, self.tile_px), options["min_patches"], options["max_patches"])
        return rows, cols

    def vision_stage_table(self) -> list[StageSpec]:
        tower = "model.vision_tower"
        dim = int(self.vision_config.hidden_size)
        depth = int(self.vision_config.num_hidden_layers)
        feature_layer = int(self.config.vision_feature_layer)
        # the tower's last output passes its final norm (an identity under mean pooling) before the shuffle
        pre_shuffle = f"{tower}.layernorm" if feature_layer == -1 else f"{tower}.encoder.layer.{depth + feature_layer}"
        projector = "model.multi_modal_projector"
        table = [
            StageSpec("vision.patch_embed", f"{tower}.embeddings.patch_embeddings", "output", "patch", "indexed", dim,
                      "output of the patch embedding", index="patches"),
            StageSpec("vision.embed", f"{tower}.embeddings", "output", "patch", "indexed", dim,
                      "patch embedding + CLS + position table (CLS dropped)", index="tower"),
        ]
        table += [StageSpec(f"vision.block.{i}", f"{tower}.encoder.layer.{i}", "output", "patch", "indexed", dim,
                            f"output of InternViT block {i}", index="tower") for i in range(depth)]
        shuffled = dim * self.merge**2
        table += [
            StageSpec("vision.pre_shuffle", pre_shuffle, "output", "patch", "indexed", dim,
                      f"input of the pixel shuffle (ViT layer {feature_layer}, CLS dropped)", index="tower"),
            StageSpec("vision.post_shuffle", projector, "input", "merged", "indexed", shuffled,
                      f"pixel shuffle output: each {self.merge}×{self.merge} block of patches as one token",
                      index="shuffled"),
            StageSpec("vision.post_projector", projector, "output", "merged", "indexed", self.text_dim(),
                      "MLP projector output: what the LLM receives", index="shuffled"),
        ]
        return table

    def processor_inputs(self, images: list[Image.Image] | None, clips: list[list[Image.Image]] | None) -> Any:
        if clips is not None:
            text = self.chat_text("video", self.video_prompt)
            return self.processor(text=[text] * len(clips), videos=clips, return_tensors="pt")
        text = self.chat_text("image", self.prompt)
        return self.processor(text=[text] * len(images or []), images=images, return_tensors="pt",
                              **self.tile_options())

    def build_layout(self, inputs: dict[str, Any], frames: int, rows: int, cols: int) -> Layout:
        batch = inputs["input_ids"].shape[0]
        side = self.tile_px // self.patch_px
        per_item = frames if frames > 1 else rows * cols + (1 if rows * cols > 1 else 0)  # + the thumbnail
        first_tile = (torch.arange(batch) * per_item).view(-1, 1, 1, 1)
        tile, cell = mosaic_cells(frames, rows, cols, side)
        tiles = first_tile + tile
        shuffled_tile, shuffled_cell = mosaic_cells(frames, rows, cols, side // self.merge)
        shuffled_tiles = first_tile + shuffled_tile
        visual = inputs["input_ids"] == int(self.config.image_token_id)
        tokens_per_tile = (side // self.merge) ** 2
        return Layout(grids=((frames, rows * side, cols * side),) * batch, indices={
            "patches": tiles * side**2 + cell,
            "tower": tiles * (1 + side**2) + 1 + cell,  # CLS first in each tile's sequence
            "shuffled": shuffled_tiles * tokens_per_tile + shuffled_cell,
            # the LLM holds each item's tiles in order (the thumbnail's tokens after them)
            "text": self.text_index(visual, shuffled_tile * tokens_per_tile + shuffled_cell),
        })


@register_architecture("internvl")
def load_internvl(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
) -> TiledVLModel:
    return load_tiled(InternVLModel, MODEL_CLASS, name, config, device, dtype, trust_remote_code)


@register_skeleton("internvl")
def internvl_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> TiledVLModel:
    return tiled_skeleton(InternVLModel, MODEL_CLASS, name, config, trust_remote_code)


# -- presets ----------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]


def build_processor(tile_px: int, tokens_per_tile: int) -> Any:
    """InternVL's real processors (GOT-OCR2 tiling, InternVL video) over a small byte-level tokenizer."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    tokenizer = byte_tokenizer(SPECIAL_TOKENS, start_image_token="<img>", end_image_token="</img>",
                               context_image_token="<IMG_CONTEXT>", video_token="<video>")
    size = {"height": tile_px, "width": tile_px}
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=12),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(size=size), image_seq_length=tokens_per_tile,
        chat_template=chat_template("<IMG_CONTEXT>\n", "<video>\n"),
    )


def internvl_config(processor: Any, vision: dict[str, Any], text: dict[str, Any], **extra: Any) -> Any:
    from transformers import InternVLConfig

    tokenizer = processor.tokenizer
    text = {"model_type": "qwen3", "vocab_size": len(tokenizer), "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **text}
    return InternVLConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.context_image_token_id,
                          image_seq_length=processor.image_seq_length, downsample_ratio=0.5,
                          architectures=[MODEL_CLASS], **extra)


#: 224-px tiles of 16×16 patches (8×8 tokens after the shuffle): the published layout, smaller
TINY_VISION = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": 224, "patch_size": 14}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 8192}


@register_preset("internvl3.5-tiny")
def internvl_tiny(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(224, 64)
    config = internvl_config(processor, TINY_VISION, TINY_TEXT)
    return tiled_preset(InternVLModel, "internvl3.5-tiny", config, processor, device, dtype)


def internvl35_1b_config(processor: Any) -> Any:
    """The architecture of `OpenGVLab/InternVL3_5-1B-HF`: InternViT-300M (448-px tiles) + Qwen3-0.6B
    (special-token ids are our small tokenizer's; the vocabulary size is the published one)."""
    vision = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
              "image_size": 448, "patch_size": 14, "norm_type": "layer_norm", "use_mean_pooling": True,
              "layer_scale_init_value": 0.1, "hidden_act": "gelu"}
    text = {"vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
            "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
    return internvl_config(processor, vision, text, tie_word_embeddings=True)


@register_preset("internvl3.5-1b-random")
def internvl35_1b_random(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(448, 256)
    return random_preset(InternVLModel, "internvl3.5-1b-random", internvl35_1b_config(processor), processor, device)
