"""Qwen4-Exp through `transformers`: Qwen3.5's vision tower and 2×2 merger, and an LLM with
hyper-connections.

* Vision: 16-px patches, a learned absolute position table interpolated to each grid
  (`vision.pos_embed`), full attention, a 2×2 merger (`vision.pre_merge` / `vision.post_merge`);
  a native video path (temporal patches of 2 frames, per-frame timestamps in the prompt).
* LLM: the residual is **`hc_count` parallel streams** (`hc_count × hidden_size` wide). Each layer
  mixes the streams into one input for its token mixer — GatedDeltaNet linear attention, or
  indexed (QSA) full attention — and its MoE, and writes the result back into every stream with
  learned weights. `language.layer.{i}` is the layer's whole output: all streams, concatenated as
  the model holds them, equal to the model's own `output_hidden_states` there. `language.norm` is
  the final hyper-connection mixer (RMSNorm + mix of the streams, `hidden_size` wide): what the LM
  head reads.
"""

from __future__ import annotations

from typing import Any

import torch

from stageprobe.models._presets import random_in_place
from stageprobe.models._stages import StageSpec
from stageprobe.models.qwen3_vl import REQUIRED_FIELDS, Qwen3VLModel, build_qwen3_processor, check_config_fields
from stageprobe.models.qwen_vl import QWEN_FAMILIES, TINY_SEED, QwenVLModel, load_qwen_vl, qwen_skeleton, tiny_preset
from stageprobe.models.registry import register_architecture, register_preset, register_skeleton

MODEL_TYPE = "qwen4_exp"


class Qwen4ExpModel(Qwen3VLModel):
    """Adapter over `Qwen4ExpForConditionalGeneration`."""

    @property
    def streams(self) -> int:
        """Parallel residual streams of the LLM (`hc_count`)."""
        return int(self.text_config.hc_count)

    def language_stage_table(self) -> list[StageSpec]:
        hidden = int(self.text_config.hidden_size)
        root = "model.language_model"
        table = []
        for i, kind in enumerate(self.text_config.layer_types):
            table.append(StageSpec(
                f"language.layer.{i}", f"{root}.layers.{i}", "output", "merged", "text", hidden * self.streams,
                f"LLM decoder layer {i} output at the visual-token positions: all {self.streams} hyper-connection "
                f"streams ({self.streams}×{hidden}) ({kind.replace('_', ' ')}, MoE)",
            ))
        table.append(StageSpec("language.norm", f"{root}.hyper_connection_mixer", "output", "merged", "text", hidden,
                               "final hyper-connection mixer (RMSNorm + mix of the streams) at the visual-token "
                               "positions: what the LM head reads"))
        return table


QWEN_FAMILIES[MODEL_TYPE] = ("Qwen4ExpForConditionalGeneration", Qwen4ExpModel)
REQUIRED_FIELDS[MODEL_TYPE] = [*REQUIRED_FIELDS["qwen3_5"], ("text_config", "hc_count")]


@register_architecture(MODEL_TYPE)
def load_qwen4_exp(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
    weights_id: str | None = None, device_map: str | dict[str, Any] | None = None,
) -> QwenVLModel:
    check_config_fields(name, config)
    return load_qwen_vl(name, config, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        weights_id=weights_id, device_map=device_map)


@register_skeleton(MODEL_TYPE)
def qwen4_exp_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> QwenVLModel:
    check_config_fields(name, config)
    return qwen_skeleton(name, config, trust_remote_code=trust_remote_code)


# -- presets ----------------------------------------------------------------------------------


def _special_ids(processor: Any) -> dict[str, int]:
    token = processor.tokenizer.convert_tokens_to_ids
    return {"image_token_id": token("<|image_pad|>"), "video_token_id": token("<|video_pad|>"),
            "vision_start_token_id": token("<|vision_start|>"), "vision_end_token_id": token("<|vision_end|>")}


_TINY_VISION = {
    "depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
    "num_position_embeddings": 64, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
}


def qwen4_exp_tiny_config(processor: Any) -> Any:
    from transformers import Qwen4ExpConfig

    text = {
        "vocab_size": len(processor.tokenizer), "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
        "eos_token_id": processor.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        # 3 linear-attention layers, then 1 indexed full-attention layer, as in every 4 of the real model
        "layer_types": ["linear_attention"] * 3 + ["indexed_attention"],
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
        "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
        # 4 residual streams (4 × 64 wide), a small MoE; no per-layer n-gram embeddings
        "hc_count": 4, "hc_lowrank": 16, "ple_layer_ids": [],
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4,
        "num_experts_per_tok": 2,
        # the QSA indexer of the full-attention layers; its budget exceeds a tiny prompt, as the real one does
        "indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 256,
        "indexer_compress_ratio": 4,
        # head_dim 16 × partial rotary 0.5 → 4 frequencies over (time, height, width)
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                            "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.5},
    }
    return Qwen4ExpConfig(text_config=text, vision_config=dict(_TINY_VISION),
                          architectures=["Qwen4ExpForConditionalGeneration"], **_special_ids(processor))


@register_preset("qwen4-exp-tiny")
def qwen4_exp_tiny(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    processor = build_qwen3_processor()
    return tiny_preset("qwen4-exp-tiny", qwen4_exp_tiny_config(processor), processor, device, dtype)


#: transformers leaves the QSA indexer unset and no official config.json was found; these are the values two
#: independent public Qwen4-Exp / Qwen3.8-Flash-Next fixtures quote, and NVIDIA TensorRT-Edge-LLM's QSA indexer
#: kernel documents (query [B, S, 4, 128]; 2051 = 2048 + 4 − 1 indices per query) — see docs/models.md
PUBLISHED_INDEXER = {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 128, "indexer_budget": 2048,
                     "indexer_compress_ratio": 4}
#: transformers' default rotates all 256 dims of a head, which the QSA index head (128) cannot hold; the public
#: fixtures (and Qwen3.5, whose attention Qwen4-Exp keeps) rotate a quarter: 64 dims, M-RoPE sections 11/11/10
PUBLISHED_ROPE = {"rope_parameters": {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                                      "mrope_section": [11, 11, 10], "mrope_interleaved": True}}


def qwen4_exp_published_config(processor: Any) -> Any:
    """transformers' own defaults for Qwen4-Exp (documented as the `Qwen/Qwen4-Exp` architecture), the
    merger's output width set to the LLM's, the indexer and the partial RoPE from public sources;
    special-token ids are our small tokenizer's, which changes no FLOP."""
    from transformers import Qwen4ExpConfig, Qwen4ExpTextConfig

    text = {**Qwen4ExpTextConfig().to_dict(), **PUBLISHED_INDEXER, **PUBLISHED_ROPE}
    return Qwen4ExpConfig(text_config=text, vision_config={"out_hidden_size": text["hidden_size"]},
                          architectures=["Qwen4ExpForConditionalGeneration"], **_special_ids(processor))


@register_preset("qwen4-exp-random")
def qwen4_exp_random(device: torch.device, dtype: torch.dtype) -> QwenVLModel:

    processor = build_qwen3_processor()
    hf_model = random_in_place(qwen4_exp_published_config(processor), device)
    return Qwen4ExpModel(hf_model, processor, "qwen4-exp-random", f"random-init (seed {TINY_SEED})")
