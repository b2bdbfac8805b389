"""Qwen3-VL (dense and MoE) and Qwen3.5 through `transformers`: the Qwen-VL adapter plus what is new.

* Patch 16 px (merged 32 px); a learned absolute position table, interpolated to each image's grid,
  is *added* after the patch embedding: `vision.patch_embed` is before it, `vision.pos_embed`
  after it (read as the input of the first block).
* Full attention in the vision tower: tokens stay in the processor's 2×2 merge order.
* Qwen3-VL's **DeepStack**: blocks `deepstack_visual_indexes` each feed their own merger
  (`vision.deepstack.{k}`), whose output is added to the visual positions after LLM layer k.
  `language.layer.{k}.before_deepstack` is layer k's own output; `language.layer.{k}` is the
  residual the next layer reads (the input of layer k+1, or of the final norm).
* Qwen3.5: no DeepStack; a hybrid LLM whose layers are linear or full attention (`layer_types`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stageprobe.errors import UserInputError
from stageprobe.models._presets import random_in_place
from stageprobe.models._stages import StageSpec
from stageprobe.models.base import Clip
from stageprobe.models.qwen_vl import (
    CHAT_TEMPLATE,
    QWEN_FAMILIES,
    QWEN_SPECIAL_TOKENS,
    TINY_SEED,
    QwenVLModel,
    build_tiny_tokenizer,
    load_qwen_vl,
    qwen_skeleton,
    tiny_preset,
)
from stageprobe.models.registry import register_architecture, register_preset, register_skeleton

#: fields each family's adapter reads from config.json, as (section, key); section "" is the top level
REQUIRED_FIELDS: dict[str, list[tuple[str, str]]] = {
    "qwen3_5": [("", "image_token_id"), ("", "video_token_id"), ("vision_config", "patch_size"),
                ("vision_config", "spatial_merge_size"), ("vision_config", "temporal_patch_size"),
                ("vision_config", "num_position_embeddings"), ("vision_config", "depth"),
                ("text_config", "hidden_size"), ("text_config", "num_hidden_layers")],
}
REQUIRED_FIELDS["qwen3_5_moe"] = REQUIRED_FIELDS["qwen3_5"]
REQUIRED_FIELDS["qwen3_vl"] = [*REQUIRED_FIELDS["qwen3_5"], ("vision_config", "deepstack_visual_indexes")]
REQUIRED_FIELDS["qwen3_vl_moe"] = REQUIRED_FIELDS["qwen3_vl"]


#: clips are taken as sampled at the video processor's own default rate, which the prompt's
#: per-frame `<t seconds>` timestamps are computed from
VIDEO_FPS = 2.0


class Qwen3VLModel(QwenVLModel):
    """Adapter over `Qwen3VL[Moe]ForConditionalGeneration` and `Qwen3_5[Moe]ForConditionalGeneration`."""

    def video_metadata(self, clips: Sequence[Clip]) -> dict[str, Any]:
        return {"video_metadata": [
            {"fps": VIDEO_FPS, "total_num_frames": len(clip), "frames_indices": list(range(len(clip)))}
            for clip in clips
        ]}

    @property
    def deepstack_indexes(self) -> list[int]:
        """ViT blocks whose output feeds a DeepStack merger (empty for Qwen3.5)."""
        if not hasattr(self.visual, "deepstack_merger_list"):
            return []
        return [int(i) for i in self.vision_config.deepstack_visual_indexes]

    def vision_stage_table(self) -> list[StageSpec]:
        base = super().vision_stage_table()
        vision_dim = base[0].dim
        root = "model.visual"
        pos_embed = StageSpec("vision.pos_embed", f"{root}.blocks.0", "input", "patch", "merge_units", vision_dim,
                              "patch embedding + interpolated absolute position table (input of block 0)")
        table = [base[0], pos_embed]
        deepstack = {block: k for k, block in enumerate(self.deepstack_indexes)}
        for spec in base[1:]:
            table.append(spec)
            block = int(spec.name.rsplit(".", 1)[1]) if spec.name.startswith("vision.block.") else None
            if block in deepstack:
                k = deepstack[block]
                merger = self.visual.deepstack_merger_list[k]
                table.append(StageSpec(
                    f"vision.deepstack.{k}", f"{root}.deepstack_merger_list.{k}", "output", "merged", "merged",
                    merger.linear_fc2.out_features,
                    f"DeepStack merger {k} (reads block {block}; added to the visual positions after LLM layer {k})",
                ))
        return table

    def language_stage_table(self) -> list[StageSpec]:
        base = super().language_stage_table()
        layer_types = getattr(self.text_config, "layer_types", None)
        if layer_types is not None:
            base = [
                _described(spec, f"{spec.description} ({layer_types[i].replace('_', ' ')})")
                if i < len(layer_types) else spec
                for i, spec in enumerate(base)
            ]
        receivers = len(self.deepstack_indexes)
        layers = len(self.language_model.layers)
        table: list[StageSpec] = []
        for i, spec in enumerate(base):
            if i >= receivers or not spec.name.startswith("language.layer."):
                table.append(spec)
                continue
            table.append(_described(spec, f"LLM layer {i} output before its DeepStack addition",
                                    name=f"{spec.name}.before_deepstack"))
            reader = f"model.language_model.layers.{i + 1}" if i + 1 < layers else "model.language_model.norm"
            table.append(StageSpec(spec.name, reader, "input", "merged", "text", spec.dim,
                                   f"LLM layer {i} output + DeepStack merger {i}: the residual the next layer "
                                   "reads, at the visual-token positions"))
        return table


def _described(spec: StageSpec, description: str, name: str | None = None) -> StageSpec:
    return StageSpec(name or spec.name, spec.module, spec.hook, spec.grid, spec.order, spec.dim, description,
                     spec.windowed)


for _model_type, _class_name in [
    ("qwen3_vl", "Qwen3VLForConditionalGeneration"),
    ("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration"),
    ("qwen3_5", "Qwen3_5ForConditionalGeneration"),
    ("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration"),
]:
    QWEN_FAMILIES[_model_type] = (_class_name, Qwen3VLModel)


def check_config_fields(name: str, config: Any) -> None:
    """A checkpoint whose config.json lacks a field the adapter reads is refused, naming the field.

    transformers fills absent fields with the defaults of the *published* model, which would silently
    describe another architecture (e.g. DeepStack blocks 8, 16, 24), so the file itself is read.
    """
    config_file = Path(name).expanduser() / "config.json"
    raw = json.loads(config_file.read_text()) if config_file.is_file() else config.to_dict()
    for section, key in REQUIRED_FIELDS[config.model_type]:
        holder = raw.get(section) if section else raw
        if not isinstance(holder, dict) or holder.get(key) is None:
            field = f"{section}.{key}" if section else key
            raise UserInputError(
                f"{name!r} is a {config.model_type} checkpoint whose config.json lacks {field!r}, which stageprobe "
                "needs to read its stages; use the config.json published with the checkpoint"
            )


@register_architecture(*REQUIRED_FIELDS)
def load_qwen3(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
    weights_id: str | None = None, device_map: str | dict[str, Any] | None = None,
) -> QwenVLModel:
    check_config_fields(name, config)
    return load_qwen_vl(name, config, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        weights_id=weights_id, device_map=device_map)


@register_skeleton(*REQUIRED_FIELDS)
def qwen3_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> QwenVLModel:
    check_config_fields(name, config)
    return qwen_skeleton(name, config, trust_remote_code=trust_remote_code)


# -- presets ----------------------------------------------------------------------------------

# Qwen3-VL's chat format is Qwen2-VL's; the processor expands each video pad into per-frame
# `<t seconds>` timestamps, each frame's tokens between vision start / end.
QWEN3_CHAT_TEMPLATE = CHAT_TEMPLATE


def build_qwen3_processor() -> Any:
    """The family's real processors: Qwen2-VL image processor at 16 px patches, Qwen3-VL video processor."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=build_tiny_tokenizer(),
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=QWEN3_CHAT_TEMPLATE,
    )


def _special_ids(processor: Any) -> dict[str, int]:
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}


_TINY_VISION = {
    # 8×8 learned positions, interpolated to every grid; ≥ 3 DeepStack blocks, none of them the last
    "depth": 5, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
    "num_position_embeddings": 64, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
}
_TINY_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
}


def qwen3_vl_tiny_config(processor: Any) -> Any:
    from transformers import Qwen3VLConfig

    text = {**_TINY_TEXT, "vocab_size": len(processor.tokenizer),
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                                "rope_theta": 5_000_000.0}}
    vision = {**_TINY_VISION, "deepstack_visual_indexes": [0, 1, 3]}
    return Qwen3VLConfig(text_config=text, vision_config=vision, architectures=["Qwen3VLForConditionalGeneration"],
                         **_special_ids(processor))


def qwen35_tiny_config(processor: Any) -> Any:
    from transformers import Qwen3_5Config

    text = {**_TINY_TEXT, "vocab_size": len(processor.tokenizer),
            # 3 linear-attention layers, then 1 full-attention layer, as in every 4 of the real model
            "layer_types": ["linear_attention"] * 3 + ["full_attention"],
            "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
            "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
            # head_dim 16 × partial rotary 0.5 → 4 frequencies over (time, height, width)
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.5}}
    return Qwen3_5Config(text_config=text, vision_config=dict(_TINY_VISION),
                         architectures=["Qwen3_5ForConditionalGeneration"], **_special_ids(processor))


@register_preset("qwen3-vl-tiny")
def qwen3_vl_tiny(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    processor = build_qwen3_processor()
    return tiny_preset("qwen3-vl-tiny", qwen3_vl_tiny_config(processor), processor, device, dtype)


@register_preset("qwen3.5-tiny")
def qwen35_tiny(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    processor = build_qwen3_processor()
    return tiny_preset("qwen3.5-tiny", qwen35_tiny_config(processor), processor, device, dtype)


def qwen3_vl_8b_config(processor: Any) -> Any:
    """Every architecture value of `Qwen/Qwen3-VL-8B-Instruct`'s config.json (special-token ids are
    our small tokenizer's, which changes no FLOP)."""
    from transformers import Qwen3VLConfig

    vision = {
        "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 4096,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24], "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "hidden_act": "gelu_pytorch_tanh",
    }
    text = {
        "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
        "rope_parameters": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True,
                            "rope_theta": 5_000_000.0},
    }
    return Qwen3VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False,
                         architectures=["Qwen3VLForConditionalGeneration"], **_special_ids(processor))


@register_preset("qwen3-vl-8b-random")
def qwen3_vl_8b_random(device: torch.device, dtype: torch.dtype) -> QwenVLModel:

    processor = build_qwen3_processor()
    hf_model = random_in_place(qwen3_vl_8b_config(processor), device)
    return Qwen3VLModel(hf_model, processor, "qwen3-vl-8b-random", f"random-init (seed {TINY_SEED})")
