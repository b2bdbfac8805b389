"""SmolVLM / Idefics3 (transformers' `SmolVLMForConditionalGeneration`) read stage by stage.

* The processor first resizes the image so its longest edge is `size.longest_edge` (upscaling small
  images), then to whole tiles of `max_image_size.longest_edge` px (the tower's native 512 px in the
  published models), cuts them row by row and appends a **global image** (the whole image as one
  tile). Tiles form one raster mosaic; the global image is left out of every grid. An image that
  fits one tile is one image, with no global image.
* The SigLIP tower's embeddings (patch + position, `vision.embed`) are its first token stage: the
  patch convolution's output is channels-first, not a token sequence.
* The connector is a **pixel shuffle ×4** (each 4×4 block of patches becomes one token of 16× width,
  a lossless reshape that keeps raster order at the token level) then one linear map:
  `vision.pre_shuffle` → `vision.post_shuffle` → `vision.post_projector` (what the LLM receives);
  the connector pair is the shuffle's input and output.
* No video input here: SmolVLM-1 has none (SmolVLM2's frames-as-images path is not read).
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
    load_tiled,
    mosaic_cells,
    random_preset,
    tiled_preset,
    tiled_skeleton,
)
from stageprobe.models.registry import register_architecture, register_preset, register_skeleton

MODEL_CLASS = "SmolVLMForConditionalGeneration"


class SmolVLMModel(TiledVLModel):
    """Adapter over `SmolVLMForConditionalGeneration` (Idefics3 layout)."""

    language_root = "model.text_model"

    @property
    def tile_px(self) -> int:
        return int(self.processor.image_processor.max_image_size["longest_edge"])

    @property
    def patch_px(self) -> int:
        return int(self.config.vision_config.patch_size)

    @property
    def merge(self) -> int:
        return int(self.config.scale_factor)

    def fewer_tiles(self, most: int) -> str:
        longest = int(self.processor.image_processor.size["longest_edge"])
        return (f"its processor scales every image's longest edge to {longest} px first, so smaller images are cut "
                "the same way: only a squarer aspect ratio or a processor with a smaller size.longest_edge cuts fewer")

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """The processor's own arithmetic: longest edge to `size.longest_edge`, then up to whole tiles."""
        from transformers.models.smolvlm import image_processing_smolvlm as rules

        processor = self.processor.image_processor
        if not processor.do_image_splitting:
            return 1, 1
        height, width = rules._resize_output_size_rescale_to_max_len(
            height, width, max_len=int(processor.size["longest_edge"]))
        height, width = rules._resize_output_size_scale_below_upper_bound(height, width, max_len=rules.MAX_IMAGE_SIZE)
        tile, aspect = self.tile_px, width / height
        if width >= height:
            width = math.ceil(width / tile) * tile
            height = math.ceil(int(width / aspect) / tile) * tile
        else:
            height = math.ceil(height / tile) * tile
            width = math.ceil(int(height * aspect) / tile) * tile
        return height // tile, width // tile

    def vision_stage_table(self) -> list[StageSpec]:
        tower = "model.vision_model"
        dim = int(self.config.vision_config.hidden_size)
        table = [StageSpec("vision.embed", f"{tower}.embeddings", "output", "patch", "indexed", dim,
                           "patch + position embeddings", index="patches")]
        table += [StageSpec(f"vision.block.{i}", f"{tower}.encoder.layers.{i}", "output", "patch", "indexed", dim,
                            f"output of SigLIP block {i}", index="patches")
                  for i in range(int(self.config.vision_config.num_hidden_layers))]
        table += [
            StageSpec("vision.pre_shuffle", "model.connector", "input", "patch", "indexed", dim,
                      "input of the pixel shuffle (the tower's final norm output)", index="patches"),
            StageSpec("vision.post_shuffle", "model.connector.modality_projection", "input", "merged", "indexed",
                      dim * self.merge**2, f"pixel shuffle output: each {self.merge}×{self.merge} block of patches "
                      "as one token", index="shuffled"),
            StageSpec("vision.post_projector", "model.connector", "output", "merged", "indexed", self.text_dim(),
                      "linear projector output: what the LLM receives", index="shuffled"),
        ]
        return table

    def processor_inputs(self, images: list[Image.Image] | None, clips: list[list[Image.Image]] | None) -> Any:
        text = self.chat_text("image", self.prompt)
        return self.processor(text=[text] * len(images or []), images=[[image] for image in images or []],
                              return_tensors="pt")

    def build_layout(self, inputs: dict[str, Any], frames: int, rows: int, cols: int) -> Layout:
        batch = inputs["input_ids"].shape[0]
        per_item = rows * cols + (1 if rows * cols > 1 else 0)  # + the global image
        if inputs["pixel_values"].shape[1] != per_item:
            raise RuntimeError(f"{self.name}: the processor gave {inputs['pixel_values'].shape[1]} images for a "
                               f"{rows}×{cols} tile grid; its tiling rule changed")
        side = self.tile_px // self.patch_px
        first_tile = (torch.arange(batch) * per_item).view(-1, 1, 1, 1)
        tile, cell = mosaic_cells(1, rows, cols, side)
        shuffled_tile, shuffled_cell = mosaic_cells(1, rows, cols, side // self.merge)
        tokens_per_tile = (side // self.merge) ** 2
        visual = inputs["input_ids"] == int(self.config.image_token_id)
        return Layout(grids=((1, rows * side, cols * side),) * batch, indices={
            "patches": (first_tile + tile) * side**2 + cell,
            "shuffled": (first_tile + shuffled_tile) * tokens_per_tile + shuffled_cell,
            # the LLM holds each item's tiles row by row, the global image's tokens after them
            "text": self.text_index(visual, shuffled_tile * tokens_per_tile + shuffled_cell),
        })

    def check_image_size(self, height: int, width: int) -> None:
        if min(height, width) < 2:
            raise UserInputError(f"the image is {width}×{height} px; pass images of at least 2×2 px")


@register_architecture("smolvlm", "idefics3")
def load_smolvlm(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
) -> TiledVLModel:
    return load_tiled(SmolVLMModel, _class_for(config), name, config, device, dtype, trust_remote_code)


@register_skeleton("smolvlm", "idefics3")
def smolvlm_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> TiledVLModel:
    return tiled_skeleton(SmolVLMModel, _class_for(config), name, config, trust_remote_code)


def _class_for(config: Any) -> str:
    # Idefics3 checkpoints (SmolVLM-1) have the same modules under their own class
    return "Idefics3ForConditionalGeneration" if config.model_type == "idefics3" else MODEL_CLASS


# -- presets ----------------------------------------------------------------------------------

IMAGE_TOKENS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
#: the published tokenizer's tile markers, for up to 6 × 6 tiles
ROW_COL_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_processor(tile_px: int, longest_edge: int, tokens_per_tile: int) -> Any:
    """SmolVLM's real processors over a small byte-level tokenizer with its image tokens."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *IMAGE_TOKENS.values(), *ROW_COL_TOKENS]
    tokenizer = byte_tokenizer(specials, **IMAGE_TOKENS)
    sizes = {"size": {"longest_edge": longest_edge}, "max_image_size": {"longest_edge": tile_px}}
    return SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**sizes, do_image_splitting=True),
        tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(**sizes), image_seq_len=tokens_per_tile,
        chat_template=CHAT_TEMPLATE,
    )


def smolvlm_config(processor: Any, vision: dict[str, Any], text: dict[str, Any], scale_factor: int) -> Any:
    from transformers import SmolVLMConfig

    tokenizer = processor.tokenizer
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "bos_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **text}
    return SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=scale_factor,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"), architectures=[MODEL_CLASS],
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


#: 256-px tiles of 16×16 patches (4×4 tokens after the ×4 shuffle); longest edge 512 px = 2 tiles, so the
#: study's 448-px images become 2 × 2 tiles (a 32 × 32 patch grid, as InternVL's tiny preset)
TINY_VISION = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": 256, "patch_size": 16}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 8192}


@register_preset("smolvlm-tiny")
def smolvlm_tiny(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(256, 512, 16)
    config = smolvlm_config(processor, TINY_VISION, TINY_TEXT, scale_factor=4)
    return tiled_preset(SmolVLMModel, "smolvlm-tiny", config, processor, device, dtype)


def smolvlm_256m_config(processor: Any) -> Any:
    """The architecture of `HuggingFaceTB/SmolVLM-256M-Instruct`: a SigLIP-B/16 tower on 512-px tiles,
    pixel shuffle ×4, SmolLM2-135M (special-token ids are our small tokenizer's; the vocabulary size
    is the published one)."""
    vision = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "image_size": 512, "patch_size": 16}
    text = {"vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 100_000.0}}
    return smolvlm_config(processor, vision, text, scale_factor=4)


@register_preset("smolvlm-256m-random")
def smolvlm_256m_random(device: torch.device, dtype: torch.dtype) -> TiledVLModel:
    processor = build_processor(512, 2048, 64)
    return random_preset(SmolVLMModel, "smolvlm-256m-random", smolvlm_256m_config(processor), processor, device)
