"""Gemma 3 through `transformers`: a SigLIP tower, a 4×4 average pool, norm and linear projection.

* Every image is resized whole to the tower's native size (896 px published; pan-and-scan crops are
  always off), so every grid is fixed: 14-px patches (64×64 published), pooled
  4×4 into 56-px cells (16×16) — the pool is the connector, lossy by construction.
* `vision.pre_pool` is the pool's input (the tower's `last_hidden_state`, after its final LayerNorm);
  `vision.post_pool` the pooled grid before the projector's RMSNorm; `vision.post_projector` what
  the LLM receives at its image-token positions.
* The LLM attends bidirectionally over the image tokens (the processor's `token_type_ids`) and
  alternates sliding-window and full attention layers.
* A freshly initialised `Gemma3ForConditionalGeneration` has an all-zero `mm_input_projection_weight`,
  which hands the LLM no image at all: presets and random-init twins draw it (normal, std fan_in^-½).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
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

DEFAULT_PROMPT = "Describe this image."
TINY_SEED = 0


class Gemma3Model(HFStageModel):
    """Adapter over `Gemma3ForConditionalGeneration` (images only: Gemma 3 has no video input)."""

    connector_stages = ("vision.pre_pool", "vision.post_pool")
    resizes_to_native_size = True

    def __init__(self, hf_model: nn.Module, processor: Any, name: str, weights_id: str,
                 prompt: str = DEFAULT_PROMPT) -> None:
        self._bind(hf_model, processor, name, weights_id, prompt)
        self.device = next(hf_model.parameters()).device
        config = hf_model.config
        self.image_token_id = int(config.image_token_id)
        vision = config.vision_config
        self.native_px = int(vision.image_size)
        self.patch_px = int(vision.patch_size)
        patches = self.native_px // self.patch_px
        #: the pool's kernel: patches per side over pooled tokens per side (4 published)
        self.merge = patches // round(int(config.mm_tokens_per_image) ** 0.5)

    @property
    def default_image_size(self) -> tuple[int, int]:
        return (self.native_px, self.native_px)

    # -- geometry -------------------------------------------------------------------------

    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        if frames != 1:
            raise UserInputError(f"{self.name!r} has no video input (Gemma 3 reads images only); pass images")
        side = self.native_px // self.patch_px
        return {"patch": (1, side, side), "merged": (1, side // self.merge, side // self.merge),
                "patch_stride": self.patch_px, "merged_stride": self.patch_px * self.merge}

    def stage_table(self, height: int, width: int, frames: int = 1) -> list[StageSpec]:
        tower = self.hf_model.model.vision_tower
        vision_dim = int(tower.config.hidden_size)
        projector = self.hf_model.model.multi_modal_projector
        text_dim = int(projector.mm_input_projection_weight.shape[1])
        k = self.merge
        table = [StageSpec("vision.embed", "model.vision_tower.embeddings", "output", "patch", "prefixed",
                           vision_dim, "patch embedding + learned position table")]
        table += [StageSpec(f"vision.block.{i}", f"model.vision_tower.encoder.layers.{i}", "output", "patch",
                            "prefixed", vision_dim, f"output of ViT block {i}")
                  for i in range(len(tower.encoder.layers))]
        table += [
            StageSpec("vision.pre_pool", "model.multi_modal_projector", "input", "patch", "prefixed", vision_dim,
                      f"input of the {k}×{k} average pool (last block output after the tower's final LayerNorm)"),
            StageSpec("vision.post_pool", "model.multi_modal_projector.mm_soft_emb_norm", "input", "merged",
                      "prefixed", vision_dim, f"{k}×{k} average-pool output (before the projector's RMSNorm)"),
            StageSpec("vision.post_projector", "model.multi_modal_projector", "output", "merged", "prefixed",
                      text_dim, "RMSNorm + linear projection of the pooled grid: what the LLM receives"),
        ]
        return table + self.language_stage_table(text_dim)

    def language_stage_table(self, text_dim: int) -> list[StageSpec]:
        layer_types = self.hf_model.config.text_config.layer_types
        table = [StageSpec(f"language.layer.{i}", f"model.language_model.layers.{i}", "output", "merged", "text",
                           text_dim, f"LLM decoder layer {i} output at the image-token positions "
                           f"({kind.replace('_', ' ')})")
                 for i, kind in enumerate(layer_types)]
        table.append(StageSpec("language.norm", "model.language_model.norm", "output", "merged", "text", text_dim,
                               "final LLM norm at the image-token positions"))
        return table

    # -- inputs and forward ---------------------------------------------------------------

    def prepare_batch(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, Any], Layout]:
        if videos is not None or images is None:
            raise UserInputError(f"{self.name!r} has no video input (Gemma 3 reads images only); pass images")
        rgb = [im.convert("RGB") for im in images]
        check_same_size(rgb)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # pan-and-scan off whatever the checkpoint's processor says: each image is one whole-image grid
        inputs = self.processor(text=[text] * len(rgb), images=[[im] for im in rgb], return_tensors="pt",
                                do_pan_and_scan=False)
        tensors = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        tensors["pixel_values"] = tensors["pixel_values"].to(self.dtype)
        grid = self.stage_grids(self.native_px, self.native_px)["patch"]
        layout = Layout(grids=(grid,) * len(rgb), merge=self.merge,
                        visual_mask=tensors["input_ids"] == self.image_token_id)
        return tensors, layout

    def run_forward(self, inputs: dict[str, Any], stages: Sequence[str]) -> None:
        if any(name.startswith("language.") for name in stages):
            self.hf_model.model(**inputs)
        else:
            self.hf_model.model.get_image_features(inputs["pixel_values"])

    def plain_forward(
        self, images: Sequence[Image.Image] | None = None, videos: Sequence[Clip] | None = None
    ) -> None:
        inputs, _ = self.prepare_batch(images, videos)
        with torch.inference_mode():
            self.hf_model.model(**inputs)

    # -- identity and controls ------------------------------------------------------------

    def config_summary(self) -> dict[str, Any]:
        config_json = self.hf_model.config.to_json_string(use_diff=False)
        return {"name": self.name, "weights": self.weights_id, "class": type(self.hf_model).__name__,
                "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(), "prompt": self.prompt}

    def with_weights(self, hf_model: nn.Module, name: str, weights_id: str) -> Gemma3Model:
        return type(self)(hf_model, self.processor, name, weights_id, self.prompt)

    def random_init_twin(self, seed: int = 1) -> HFStageModel:
        """Freshly initialised weights, the all-zero projector drawn too (else the twin sees no image)."""
        with torch.random.fork_rng(devices=[]), torch.device(self.device):
            torch.manual_seed(seed)
            twin = type(self.hf_model)._from_config(copy.deepcopy(self.hf_model.config), dtype=self.dtype)
            initialise_projector(twin)
        return self.with_weights(twin.eval(), f"{self.name} (random-init twin)", f"random-init seed {seed}")


def initialise_projector(hf_model: nn.Module) -> None:
    """Draw the projection weight Gemma 3's own init leaves at zero: normal, std = fan_in^-½."""
    weight = hf_model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        nn.init.normal_(weight, std=weight.shape[0] ** -0.5)


# -- loading ------------------------------------------------------------------------------


def _load_processor(name: str, trust_remote_code: bool) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(pretrained_source(name), trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the processor files of {name!r} are not found locally ({error}); "
            "pass a directory that holds its preprocessor_config.json and tokenizer"
        ) from error


def _weights_id(name: str, config: Any) -> str:
    commit = getattr(config, "_commit_hash", None)
    return f"revision {commit}" if commit else "files of " + pretrained_source(name)


@register_architecture("gemma3")
def load_gemma3(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
    weights_id: str | None = None,
) -> Gemma3Model:
    from transformers import Gemma3ForConditionalGeneration

    processor = _load_processor(name, trust_remote_code)
    try:
        with quiet_transformers():
            hf_model = Gemma3ForConditionalGeneration.from_pretrained(
                pretrained_source(name), dtype=dtype, attn_implementation="sdpa",
                trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the weights of {name!r} are not found locally ({error}). Download them where there is network, "
            "then pass the local directory as the model"
        ) from error
    return Gemma3Model(hf_model.to(device), processor, name, weights_id or _weights_id(name, config))


@register_skeleton("gemma3")
def gemma3_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> Gemma3Model:
    """The adapter over a meta-device model: geometry from config + processor files, no weights."""
    from transformers import Gemma3ForConditionalGeneration

    processor = _load_processor(name, trust_remote_code)
    with torch.device("meta"):
        hf_model = Gemma3ForConditionalGeneration._from_config(config)
    return Gemma3Model(hf_model, processor, name, "not loaded (meta device)")


# -- presets ------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>"]

# Gemma's chat format; `<start_of_image>` is where an image goes, which the processor expands to
# `<start_of_image>` + one `<image_soft_token>` per pooled cell + `<end_of_image>`.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_processor(image_px: int, image_tokens: int) -> Any:
    """Gemma 3's real processor and image processor, with a byte-level tokenizer carrying its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    # the published preprocessor_config.json: bilinear resize to the native size, mean = std = 0.5
    image_processor = Gemma3ImageProcessor(size={"height": image_px, "width": image_px},
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                           image_seq_length=image_tokens)


def _token_fields(processor: Any) -> dict[str, int]:
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return {"boi_token_index": ids["<start_of_image>"], "eoi_token_index": ids["<end_of_image>"],
            "image_token_index": ids["<image_soft_token>"]}


def _text_token_ids(processor: Any) -> dict[str, int]:
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return {"pad_token_id": ids["<pad>"], "eos_token_id": ids["<eos>"], "bos_token_id": ids["<bos>"]}


#: 448-px images, 14-px patches (32×32) pooled 4×4 into 8×8 cells: the published geometry at half size
TINY_IMAGE_PX, TINY_IMAGE_TOKENS = 448, 64


def gemma3_tiny_config(processor: Any) -> Any:
    from transformers import Gemma3Config

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
              "image_size": TINY_IMAGE_PX, "patch_size": 14, "vision_use_head": False}
    text = {"vocab_size": len(processor.tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "max_position_embeddings": 4096,
            # sliding-window layers then a full-attention one, as in every 6 of the real model; the
            # window is wider than the image's tokens, as 1024 is wider than 256
            "sliding_window": 128, "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
            **_text_token_ids(processor)}
    return Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=TINY_IMAGE_TOKENS,
                        architectures=["Gemma3ForConditionalGeneration"], **_token_fields(processor))


@register_preset("gemma3-tiny")
def gemma3_tiny(device: torch.device, dtype: torch.dtype) -> Gemma3Model:
    """Random weights through the same from_pretrained path a Hub checkpoint takes."""
    processor = build_processor(TINY_IMAGE_PX, TINY_IMAGE_TOKENS)
    config = gemma3_tiny_config(processor)
    directory = preset_checkpoint("gemma3-tiny", config, processor, seed=TINY_SEED, initialise=initialise_projector)
    model = load_gemma3(str(directory), config, device=device, dtype=dtype,
                        weights_id=f"random-init (seed {TINY_SEED})")
    model.name = "gemma3-tiny"
    return model


def gemma3_4b_config(processor: Any) -> Any:
    """Every architecture value of `google/gemma-3-4b-it`'s config.json (special-token ids are our small
    tokenizer's, which changes no FLOP)."""
    from transformers import Gemma3Config

    vision = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
              "image_size": 896, "patch_size": 14, "vision_use_head": False, "layer_norm_eps": 1e-6}
    text = {"vocab_size": 262208, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
            "sliding_window": 1024, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
            **_text_token_ids(processor)}
    return Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=256,
                        architectures=["Gemma3ForConditionalGeneration"], **_token_fields(processor))


@register_preset("gemma3-4b-random")
def gemma3_4b_random(device: torch.device, dtype: torch.dtype) -> Gemma3Model:
    from transformers import Gemma3ForConditionalGeneration

    processor = build_processor(896, 256)
    config = gemma3_4b_config(processor)
    config._attn_implementation = "sdpa"
    # built in place on the target device: 4.3 B parameters never pass through host memory on a GPU
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(TINY_SEED)
        hf_model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16)
        if device.type != "meta":
            initialise_projector(hf_model)
    return Gemma3Model(hf_model, processor, "gemma3-4b-random", f"random-init (seed {TINY_SEED})")
