"""The model families stageprobe knows, read without importing them (no torch): what
`stageprobe models` lists, and which module to import for a preset or a config.json `model_type`.

A family is one module and one entry here: the presets it offers (name → description) and the
`model_type`s it loads. Its module binds the factories (`register_preset`, `register_architecture`);
one test checks that every module registers exactly what its entry declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyEntry:
    module: str
    presets: Mapping[str, str] = field(default_factory=dict)
    model_types: tuple[str, ...] = ()


_QWEN3_TYPES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
_VIT_TYPES = ("dinov2", "dinov2_with_registers", "siglip", "siglip_vision_model", "clip", "clip_vision_model")

FAMILIES: tuple[FamilyEntry, ...] = (
    FamilyEntry("stageprobe.models.pixels", {
        "pixels": "pixel baseline: raw pixels of each 14 px and 28 px patch (no network)",
        "pixels-16": "pixel baseline at Qwen3-VL / Qwen3.5 strides: raw pixels of each 16 px and 32 px patch",
        "pixels-56": "pixel baseline at Gemma 3's strides: raw pixels of each 14 px patch and 56 px pooled cell",
    }),
    FamilyEntry("stageprobe.models.qwen_vl", {
        "qwen2.5-vl-tiny": "Qwen2.5-VL architecture, small config, RANDOM weights, real processor (default)",
        "qwen2-vl-tiny": "Qwen2-VL architecture, small config, RANDOM weights, real processor",
        "qwen2.5-vl-7b-random": "the published Qwen2.5-VL-7B architecture with RANDOM weights (bf16): "
                                "real-scale cost for benchmarks only",
        "qwen2.5-vl-7b-width-random": "Qwen2.5-VL-7B's widths and heads with 4 ViT blocks and 2 LLM layers, "
                                      "RANDOM weights: per-stage costs at real width for benchmarks only",
    }, ("qwen2_5_vl", "qwen2_vl")),
    FamilyEntry("stageprobe.models.qwen3_vl", {
        "qwen3-vl-tiny": "Qwen3-VL architecture (DeepStack ×3), small config, RANDOM weights, real processor",
        "qwen3.5-tiny": "Qwen3.5 architecture (hybrid linear/full-attention LLM), small config, "
                        "RANDOM weights, real processor",
        "qwen3-vl-8b-random": "the published Qwen3-VL-8B architecture with RANDOM weights (bf16): "
                              "real-scale cost for benchmarks only",
    }, _QWEN3_TYPES),
    FamilyEntry("stageprobe.models.vit", {
        "dinov2-tiny": "DINOv2-with-registers architecture (2 registers, 3 blocks, 14 px patches), "
                       "random weights, built offline",
        "siglip-tiny": "SigLIP architecture (3 blocks, 16 px patches), random weights, built offline",
        "clip-tiny": "CLIP architecture (3 blocks, 16 px patches), random weights, built offline",
    }, _VIT_TYPES),
    FamilyEntry("stageprobe.models.gemma3", {
        "gemma3-tiny": "Gemma 3 architecture (SigLIP tower, 4×4 average pool → RMSNorm → linear; 448 px images, "
                       "14 px patches, 56 px pooled cells), small config, RANDOM weights, real processor",
        "gemma3-4b-random": "the published Gemma-3-4B architecture with RANDOM weights (bf16): "
                            "real-scale cost for benchmarks only",
    }, ("gemma3",)),
    FamilyEntry("stageprobe.models.qwen4_exp", {
        "qwen4-exp-tiny": "Qwen4-Exp architecture (Qwen3.5-style ViT, 2×2 merger; LLM with 4 hyper-connection "
                          "streams, linear + indexed attention, MoE), small config, RANDOM weights, real processor",
        "qwen4-exp-random": "transformers' default Qwen4-Exp architecture (QSA indexer from public sources) "
                            "with RANDOM weights (bf16): real-scale cost for benchmarks only",
    }, ("qwen4_exp",)),
    FamilyEntry("stageprobe.models.internvl", {
        "internvl3.5-tiny": "InternVL3.5 architecture (224-px tiles + thumbnail, CLS, pixel shuffle 0.5 → MLP), "
                            "small config, RANDOM weights, real processor",
        "internvl3.5-1b-random": "the published InternVL3.5-1B architecture with RANDOM weights (bf16): "
                                 "real-scale cost for benchmarks only",
    }, ("internvl",)),
    FamilyEntry("stageprobe.models.smolvlm", {
        "smolvlm-tiny": "SmolVLM architecture (256-px tiles + global image, pixel shuffle ×4 → linear), "
                        "small config, RANDOM weights, real processor",
        "smolvlm-256m-random": "the published SmolVLM-256M architecture with RANDOM weights (bf16): "
                               "real-scale cost for benchmarks only",
    }, ("smolvlm", "idefics3")),
    FamilyEntry("stageprobe.models.llava_onevision", {
        "llava-onevision-tiny": "LLaVA-OneVision architecture (anyres 224-px tiles + base image, MLP projector, "
                                "a newline token per row; native video with 2×2 pooling), small config, "
                                "RANDOM weights, real processor",
        "llava-onevision-0.5b-random": "the published LLaVA-OneVision-0.5B architecture with RANDOM weights "
                                       "(bf16): real-scale cost for benchmarks only",
    }, ("llava_onevision",)),
)


def preset_descriptions() -> dict[str, str]:
    """Every preset's name → what it is, in catalog order."""
    return {name: text for family in FAMILIES for name, text in family.presets.items()}


def model_types() -> list[str]:
    """Every config.json `model_type` some family loads, sorted."""
    return sorted(t for family in FAMILIES for t in family.model_types)


def description_of(preset: str) -> str:
    """The catalog's description of `preset`; a family registering a preset it does not declare is a bug."""
    descriptions = preset_descriptions()
    if preset not in descriptions:
        raise KeyError(f"preset {preset!r} is not declared in stageprobe.models._catalog")
    return descriptions[preset]
