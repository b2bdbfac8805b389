"""The `*-random` presets carry each family's smallest published architecture: key widths and depths
checked against the values of the published config.json (sources in docs/models.md), built on the meta
device (no weights)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from stageprobe.models.registry import PRESETS, load_families

#: preset → {"vision.<field>" / "text.<field>" / "<field>": the published value}
PUBLISHED: dict[str, dict[str, Any]] = {
    # google/gemma-3-4b-it config.json (Gemma 3 1B has no vision tower: 4B is the smallest multimodal size)
    "gemma3-4b-random": {
        "vision.hidden_size": 1152, "vision.intermediate_size": 4304, "vision.num_hidden_layers": 27,
        "vision.num_attention_heads": 16, "vision.image_size": 896, "vision.patch_size": 14,
        "text.hidden_size": 2560, "text.intermediate_size": 10240, "text.num_hidden_layers": 34,
        "text.num_attention_heads": 8, "text.num_key_value_heads": 4, "text.head_dim": 256,
        "text.vocab_size": 262208, "text.sliding_window": 1024, "mm_tokens_per_image": 256,
    },
    # OpenGVLab/InternVL3_5-1B(-HF) config.json: InternViT-300M-448px + Qwen3-0.6B
    "internvl3.5-1b-random": {
        "vision.hidden_size": 1024, "vision.intermediate_size": 4096, "vision.num_hidden_layers": 24,
        "vision.num_attention_heads": 16, "vision.patch_size": (14, 14), "vision.image_size": (448, 448),
        "text.hidden_size": 1024, "text.intermediate_size": 3072, "text.num_hidden_layers": 28,
        "text.num_attention_heads": 16, "text.num_key_value_heads": 8, "text.head_dim": 128,
        "text.vocab_size": 151936, "downsample_ratio": 0.5,
    },
    # HuggingFaceTB/SmolVLM-256M-Instruct config.json: SigLIP-B/16-512 + SmolLM2-135M, scale_factor 4
    "smolvlm-256m-random": {
        "vision.hidden_size": 768, "vision.intermediate_size": 3072, "vision.num_hidden_layers": 12,
        "vision.num_attention_heads": 12, "vision.image_size": 512, "vision.patch_size": 16,
        "text.hidden_size": 576, "text.intermediate_size": 1536, "text.num_hidden_layers": 30,
        "text.num_attention_heads": 9, "text.num_key_value_heads": 3, "text.head_dim": 64,
        "text.vocab_size": 49280, "scale_factor": 4,
    },
    # llava-hf/llava-onevision-qwen2-0.5b-ov-hf config.json: SigLIP-so400m (26 layers kept) + Qwen2-0.5B
    "llava-onevision-0.5b-random": {
        "vision.hidden_size": 1152, "vision.intermediate_size": 4304, "vision.num_hidden_layers": 26,
        "vision.num_attention_heads": 16, "vision.image_size": 384, "vision.patch_size": 14,
        "text.hidden_size": 896, "text.intermediate_size": 4864, "text.num_hidden_layers": 24,
        "text.num_attention_heads": 14, "text.num_key_value_heads": 2, "text.vocab_size": 152000,
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
    },
    # transformers' documented Qwen4-Exp defaults; the QSA indexer and the partial RoPE from public sources
    "qwen4-exp-random": {
        "vision.hidden_size": 1152, "vision.depth": 27, "vision.patch_size": 16, "vision.out_hidden_size": 2048,
        "text.hidden_size": 2048, "text.num_hidden_layers": 40, "text.num_attention_heads": 16,
        "text.num_key_value_heads": 2, "text.head_dim": 256, "text.hc_count": 4, "text.num_experts": 512,
        "text.indexer_n_heads": 4, "text.indexer_kv_heads": 1, "text.indexer_head_dim": 128,
        "text.indexer_budget": 2048, "text.indexer_compress_ratio": 4,
    },
}


def _field(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, {"vision": "vision_config", "text": "text_config"}.get(part, part))
    return tuple(config) if isinstance(config, list) else config


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_random_preset_has_the_published_widths_and_depths(preset: str) -> None:
    load_families()
    config = PRESETS[preset].factory(device=torch.device("meta"), dtype=torch.float32).hf_model.config
    found = {path: _field(config, path) for path in PUBLISHED[preset]}
    assert found == PUBLISHED[preset]


def test_every_random_preset_of_the_new_families_is_checked() -> None:
    load_families()
    new_families = ("gemma3", "internvl", "smolvlm", "llava-onevision", "qwen4-exp")
    random_presets = {name for name in PRESETS if name.endswith("-random") and name.startswith(new_families)}
    assert random_presets == set(PUBLISHED)


def test_qwen4_exp_rotates_a_quarter_of_each_head_so_the_index_head_holds_it() -> None:
    load_families()
    text = PRESETS["qwen4-exp-random"].factory(device=torch.device("meta"), dtype=torch.float32).hf_model.config
    rope = text.text_config.rope_parameters
    rotary = int(text.text_config.head_dim * rope["partial_rotary_factor"])
    assert rotary == 64 == 2 * sum(rope["mrope_section"]) and rotary <= text.text_config.indexer_head_dim
