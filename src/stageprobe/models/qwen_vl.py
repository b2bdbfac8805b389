"""Qwen2.5-VL and Qwen2-VL through `transformers`, every stage un-permuted to raster order.

Token order inside these models is not raster order, and reading it as such silently scrambles
every spatial probe:

* the processor flattens patches in 2×2-merge-window order `(t, h/2, w/2, 2, 2)`;
* Qwen2.5-VL's vision tower then permutes merge units into attention-window order before the
  first block and only restores merge order *after* the merger (`reverse_indices`);
* the LLM sees visual tokens at the `<|image_pad|>` / `<|video_pad|>` positions of the prompt.

Each stage is declared as a row of `stage_table` (module, hook side, token order); the shared
conversions in `_stages` undo both permutations so `[b, t, r, c]` is the token over pixel rows
r·s…(r+1)·s, cols c·s…(c+1)·s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from stageprobe.errors import UserInputError
from stageprobe.models._presets import preset_checkpoint, random_in_place
from stageprobe.models._stages import Layout, StageSpec
from stageprobe.models.base import Clip, HFStageModel, check_same_size
from stageprobe.models.registry import (
    preset_cache_dir,
    pretrained_source,
    register_architecture,
    register_preset,
    register_skeleton,
)

DEFAULT_PROMPT = "Describe this image."
DEFAULT_VIDEO_PROMPT = "Describe this video."


class QwenVLModel(HFStageModel):
    """Adapter over a Qwen-VL `*ForConditionalGeneration` (Qwen2-VL, Qwen2.5-VL; Qwen3 families subclass it)."""

    def __init__(
        self,
        hf_model: nn.Module,
        processor: Any,
        name: str,
        weights_id: str,
        prompt: str = DEFAULT_PROMPT,
        video_prompt: str = DEFAULT_VIDEO_PROMPT,
    ) -> None:
        self._bind(hf_model, processor, name, weights_id, prompt, video_prompt)
        self.device = _input_device(hf_model)
        config = hf_model.config
        self.vision_config = config.vision_config
        self.text_config = config.text_config
        self.image_token_id = int(config.image_token_id)
        self.video_token_id = int(config.video_token_id)
        self.family = config.model_type
        self._windowed = hasattr(self.vision_config, "fullatt_block_indexes")
        self._grid_cache: dict[tuple[int, int, int], tuple[int, int, int]] = {}

    # -- geometry -------------------------------------------------------------------------

    @property
    def visual(self) -> nn.Module:
        return self.hf_model.model.visual

    @property
    def language_model(self) -> nn.Module:
        return self.hf_model.model.language_model

    @property
    def patch_px(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def merge(self) -> int:
        return int(self.vision_config.spatial_merge_size)

    @property
    def supports_video(self) -> bool:
        return True

    @property
    def temporal_patch_size(self) -> int:
        return int(self.vision_config.temporal_patch_size)

    def check_image_size(self, height: int, width: int) -> None:
        """An input smaller than one merged patch has no token grid: a user error, not a resize."""
        smallest = self.patch_px * self.merge
        if min(height, width) < smallest:
            raise UserInputError(
                f"the image is {width}×{height} px, smaller than one merged patch of {self.name!r}; "
                f"pass images of at least {smallest}×{smallest} px"
            )

    def video_size(self) -> dict[str, int]:
        """Per-frame pixel bounds for video: the image processor's minimum, so a clip's frames get the
        grid its frames get as images (the video processors' own minimum upsamples small frames)."""
        images, videos = self.processor.image_processor.size, self.processor.video_processor.size
        return {"shortest_edge": int(images["shortest_edge"]), "longest_edge": int(videos["longest_edge"])}

    def patch_grid(self, height: int, width: int, frames: int = 1) -> tuple[int, int, int]:
        """(T, H, W) patch grid the processor produces for this input size (video: per clip).

        Asked of the processor itself (on a blank input) rather than re-derived, so a checkpoint's
        own min/max pixel settings are honoured exactly.
        """
        self.check_image_size(height, width)
        key = (height, width, frames)
        if key not in self._grid_cache:
            if frames == 1:
                blank = Image.new("RGB", (width, height))
                grid = self.processor.image_processor(images=[blank], return_tensors="pt")["image_grid_thw"]
            else:
                clip = [Image.new("RGB", (width, height))] * frames
                grid = self.processor.video_processor(
                    videos=[clip], return_tensors="pt", **self._video_options()
                )["video_grid_thw"]
            t, h, w = (int(v) for v in grid[0])
            self._grid_cache[key] = (t, h, w)
        return self._grid_cache[key]

    def video_metadata(self, clips: Sequence[Clip]) -> dict[str, Any]:
        """Extra processor arguments describing the clips' timing (none for Qwen2-VL / Qwen2.5-VL)."""
        return {}

    def _video_options(self) -> dict[str, Any]:
        return {"do_sample_frames": False, "size": self.video_size(), "cap_pixels_per_frame": False}

    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        t, h, w = self.patch_grid(height, width, frames)
        return {"patch": (t, h, w), "merged": (t, h // self.merge, w // self.merge),
                "patch_stride": self.patch_px, "merged_stride": self.patch_px * self.merge}

    def vision_stage_table(self) -> list[StageSpec]:
        """Patch embedding, blocks and merger of the vision tower, in forward order."""
        vision_dim = self.visual.patch_embed.proj.out_channels
        merger_dim = _last_linear(self.visual.merger).out_features
        depth = len(self.visual.blocks)
        full_attention = getattr(self.vision_config, "fullatt_block_indexes", range(depth))
        root = "model.visual"
        table = [StageSpec("vision.patch_embed", f"{root}.patch_embed", "output", "patch", "merge_units", vision_dim,
                           "output of the patch embedding")]
        for i in range(depth):
            attention = "full" if i in full_attention else "window"
            table.append(StageSpec(f"vision.block.{i}", f"{root}.blocks.{i}", "output", "patch", "merge_units",
                                   vision_dim, f"output of ViT block {i} ({attention} attention)", self._windowed))
        table.append(StageSpec("vision.pre_merge", f"{root}.merger", "input", "patch", "merge_units", vision_dim,
                               "input of the 2×2 merger (= last block output)", self._windowed))
        table.append(StageSpec("vision.post_merge", f"{root}.merger", "output", "merged", "merged", merger_dim,
                               "merger output: what the LLM receives", self._windowed))
        return table

    def language_stage_table(self) -> list[StageSpec]:
        """LLM decoder layers and final norm, read at the visual-token positions."""
        text_dim = int(self.text_config.hidden_size)
        root = "model.language_model"
        table = [StageSpec(f"language.layer.{i}", f"{root}.layers.{i}", "output", "merged", "text", text_dim,
                           f"LLM decoder layer {i} output at the visual-token positions")
                 for i in range(len(self.language_model.layers))]
        table.append(StageSpec("language.norm", f"{root}.norm", "output", "merged", "text", text_dim,
                               "final LLM norm at the visual-token positions"))
        return table

    def stage_table(self, height: int, width: int, frames: int = 1) -> list[StageSpec]:
        self.check_image_size(height, width)
        return self.vision_stage_table() + self.language_stage_table()

    # -- inputs ---------------------------------------------------------------------------

    def prepare_inputs(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Processor + chat template exactly as for a Hub checkpoint; returns (inputs, visual token id)."""
        if (images is None) == (videos is None):
            raise UserInputError("pass either images or videos")
        if videos is not None:
            clips = [list(clip) for clip in videos]
            for clip in clips:
                if len(clip) % self.temporal_patch_size:
                    raise UserInputError(
                        f"a clip has {len(clip)} frames; {self.name} groups frames in temporal patches of "
                        f"{self.temporal_patch_size}, so pass a multiple of {self.temporal_patch_size} frames"
                    )
            self.check_image_size(*check_same_size([frame for clip in clips for frame in clip]))
            text = self._chat_text("video", self.video_prompt)
            inputs = self.processor(text=[text] * len(clips), videos=clips, return_tensors="pt",
                                    **self._video_options(), **self.video_metadata(clips))
            token_id = self.video_token_id
        else:
            images = [im.convert("RGB") for im in images or []]
            self.check_image_size(*check_same_size(images))
            text = self._chat_text("image", self.prompt)
            inputs = self.processor(text=[text] * len(images), images=images, return_tensors="pt")
            token_id = self.image_token_id
        tensors = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in tensors:
                tensors[key] = tensors[key].to(self.dtype)
        return tensors, token_id

    def _chat_text(self, kind: str, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prepare_batch(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, Any], Layout]:
        inputs, token_id = self.prepare_inputs(images, videos)
        grid_thw = inputs["video_grid_thw" if videos is not None else "image_grid_thw"]
        layout = Layout(
            grids=tuple((int(t), int(h), int(w)) for t, h, w in grid_thw.tolist()),
            merge=self.merge,
            window_order=self._window_order(grid_thw) if self._windowed else None,
            visual_mask=inputs["input_ids"] == token_id,
        )
        return inputs, layout

    # -- extraction -----------------------------------------------------------------------

    def plain_forward(
        self, images: Sequence[Image.Image] | None = None, videos: Sequence[Clip] | None = None
    ) -> None:
        inputs, _ = self.prepare_inputs(images, videos)
        with torch.inference_mode():
            self.hf_model.model(**inputs)

    def run_forward(self, inputs: dict[str, Any], stages: Sequence[str]) -> None:
        if any(name.startswith("language.") for name in stages):
            self.hf_model.model(**inputs)
            return
        video = "pixel_values_videos" in inputs
        pixels = inputs["pixel_values_videos" if video else "pixel_values"]
        self.visual(pixels, grid_thw=inputs["video_grid_thw" if video else "image_grid_thw"])

    def _window_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """Merge-unit permutation applied before the first block (window_index in transformers)."""
        try:
            from transformers.vision_utils import get_vision_window_index
        except ImportError:  # transformers < 5 keeps it as a method of the vision tower
            return self.visual.get_window_index(grid_thw)[0]
        window_index, _ = get_vision_window_index(
            grid_thw,
            spatial_merge_size=self.merge,
            window_size=int(self.vision_config.window_size),
            patch_size=self.patch_px,
        )
        return window_index

    # -- identity ---------------------------------------------------------------------------

    def config_summary(self) -> dict[str, Any]:
        config_json = self.hf_model.config.to_json_string(use_diff=False)
        return {
            "name": self.name,
            "weights": self.weights_id,
            "class": type(self.hf_model).__name__,
            "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
            "prompt": self.prompt,
            "video_prompt": self.video_prompt,
        }

    def with_weights(self, hf_model: nn.Module, name: str, weights_id: str) -> QwenVLModel:
        return type(self)(hf_model, self.processor, name, weights_id, self.prompt, self.video_prompt)

    def random_init_twin(self, seed: int = 1) -> QwenVLModel:
        """The same architecture and processor with freshly initialised weights, split like the model
        when it is loaded with a device map."""
        device_map = getattr(self.hf_model, "hf_device_map", None)
        if device_map is None or len(set(device_map.values())) <= 1:
            twin = super().random_init_twin(seed)
            assert isinstance(twin, QwenVLModel)
            return twin
        from accelerate import dispatch_model

        # Built on the CPU in the model's dtype, then split like the trained model; modules it keeps
        # on disk are written there.
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            twin = type(self.hf_model)._from_config(copy.deepcopy(self.hf_model.config), dtype=self.dtype)
        config_hash = self.config_summary()["config_sha256"][:16]
        twin = dispatch_model(twin, device_map=device_map,
                              offload_dir=str(_offload_dir(f"twin-{config_hash}-seed{seed}")))
        return self.with_weights(twin, f"{self.name} (random-init twin)", f"random-init seed {seed}")


def _input_device(hf_model: nn.Module) -> torch.device:
    """Where inputs go: the first accelerator of a device map (accelerate's hooks move them on
    from there), else the device of the weights."""
    device_map = getattr(hf_model, "hf_device_map", None)
    if device_map:
        accelerators = [d for d in device_map.values() if d not in ("cpu", "disk")]
        return torch.device(accelerators[0]) if accelerators else torch.device("cpu")
    return next(hf_model.parameters()).device


def _last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


# -- loading ------------------------------------------------------------------------------


#: config `model_type` → (transformers class name, adapter class); each family file adds its own
QWEN_FAMILIES: dict[str, tuple[str, type[QwenVLModel]]] = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", QwenVLModel),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", QwenVLModel),
}


def _model_class(model_type: str) -> type[nn.Module]:
    import transformers

    return getattr(transformers, QWEN_FAMILIES[model_type][0])


def _offload_dir(key: str) -> Path:
    """Where accelerate keeps the modules a device map puts on "disk", one folder per model."""
    return preset_cache_dir().parent / "offload" / hashlib.sha256(key.encode()).hexdigest()[:16]


def _weights_id(name: str, config: Any) -> str:
    """The Hub commit when known, else a hash of the local directory's file names and sizes."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return f"revision {commit}"
    directory = Path(name).expanduser()
    listing = sorted((p.name, p.stat().st_size) for p in directory.iterdir() if p.is_file())
    return "files sha256 " + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


@register_architecture("qwen2_5_vl", "qwen2_vl")
def load_qwen_vl(
    name: str, config: Any, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
    weights_id: str | None = None, device_map: str | dict[str, Any] | None = None,
) -> QwenVLModel:
    """`device_map` (accelerate's) places the modules over several devices instead of all on `device`."""
    from transformers import AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars are the ones users read
    source = pretrained_source(name)
    try:
        # a map may put modules on "disk" (accelerate loads them per forward): they need a folder
        offload = {} if device_map is None else {"offload_folder": str(_offload_dir(os.path.abspath(source)))}
        hf_model = _model_class(config.model_type).from_pretrained(
            source, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code,
            device_map=device_map, **offload,
        )
        if device_map is None:
            hf_model = hf_model.to(device)
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the weights of {name!r} are not found locally ({error}). Download them where there is network, "
            "then pass the local directory as the model"
        ) from error
    adapter = QWEN_FAMILIES[config.model_type][1]
    return adapter(hf_model, processor, name, weights_id or _weights_id(source, config))


def qwen_skeleton(name: str, config: Any, trust_remote_code: bool = False) -> QwenVLModel:
    """The adapter over a meta-device model: stage geometry from config + processor files, no weights."""
    from transformers import AutoProcessor

    source = pretrained_source(name)
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the processor files of {name!r} are not found locally ({error}); "
            "pass a directory that holds its preprocessor_config.json"
        ) from error
    with torch.device("meta"):
        hf_model = _model_class(config.model_type)._from_config(config)
    return QWEN_FAMILIES[config.model_type][1](hf_model, processor, name, "not loaded (meta device)")


register_skeleton("qwen2_5_vl", "qwen2_vl")(qwen_skeleton)


# -- tiny random presets --------------------------------------------------------------------

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen's chat format: a default system turn, then `<|vision_start|><|image_pad|><|vision_end|>`
# where an image goes; the processor expands each pad to one token per merged patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_SEED = 0


def build_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (no merges: 256 byte tokens) carrying Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(QWEN_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_tiny_processor(family: str) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    processor_class = Qwen2_5_VLProcessor if family == "qwen2_5_vl" else Qwen2VLProcessor
    return processor_class(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=build_tiny_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(family: str, vocab_size: int, token_ids: dict[str, int]) -> Any:
    """Small configs that keep the real layout: windowed + full-attention ViT blocks, 2×2 merger, M-RoPE."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = {
        "vocab_size": vocab_size, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        # head_dim 32 → 16 rotary frequencies split over (time, height, width)
        "rope_parameters": {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1_000_000.0},
        "bos_token_id": token_ids["<|endoftext|>"], "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    special = {
        "image_token_id": token_ids["<|image_pad|>"], "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"], "vision_end_token_id": token_ids["<|vision_end|>"],
    }
    if family == "qwen2_5_vl":
        vision = {
            "depth": 8, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 128,
            "fullatt_block_indexes": [3, 7], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        return Qwen2_5_VLConfig(vision_config=vision, text_config=text, **special)
    vision = {
        "depth": 8, "embed_dim": 64, "mlp_ratio": 2, "num_heads": 4, "hidden_size": 128, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(vision_config=vision, text_config=text, **special)


def tiny_preset(preset: str, config: Any, processor: Any, device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    """A tiny random preset through the same from_pretrained path a Hub checkpoint takes."""
    directory = preset_checkpoint(preset, config, processor, seed=TINY_SEED)
    model = load_qwen_vl(str(directory), config, device=device, dtype=dtype,
                         weights_id=f"random-init (seed {TINY_SEED})")
    model.name = preset
    return model


def _tiny_preset(preset: str, family: str, device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    processor = build_tiny_processor(family)
    token_ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = tiny_config(family, len(processor.tokenizer), token_ids)
    config.architectures = [QWEN_FAMILIES[family][0]]
    return tiny_preset(preset, config, processor, device, dtype)


@register_preset("qwen2.5-vl-tiny")
def qwen25_vl_tiny(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    return _tiny_preset("qwen2.5-vl-tiny", "qwen2_5_vl", device, dtype)


@register_preset("qwen2-vl-tiny")
def qwen2_vl_tiny(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    return _tiny_preset("qwen2-vl-tiny", "qwen2_vl", device, dtype)


def qwen25_vl_7b_config(token_ids: dict[str, int]) -> Any:
    """Every architecture value of `Qwen/Qwen2.5-VL-7B-Instruct`'s config.json (special-token ids
    are our small tokenizer's, which changes no FLOP)."""
    from transformers import Qwen2_5_VLConfig

    vision = {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
        "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "tokens_per_second": 2, "hidden_act": "silu",
    }
    text = {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_window_layers": 28, "use_sliding_window": False,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1_000_000.0},
        "bos_token_id": token_ids["<|endoftext|>"], "eos_token_id": token_ids["<|im_end|>"],
    }
    return Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, tie_word_embeddings=False,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"],
    )


@register_preset("qwen2.5-vl-7b-width-random")
def qwen25_vl_7b_width_random(device: torch.device, dtype: torch.dtype) -> QwenVLModel:
    """Qwen2.5-VL-7B's widths, heads, patch, merge and window sizes with 4 ViT blocks (the 4th full attention)
    and 2 LLM layers: each stage costs what one of the 7B's costs, so a few images give per-stage costs."""
    processor = build_tiny_processor("qwen2_5_vl")
    token_ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = qwen25_vl_7b_config(token_ids)
    config.vision_config.depth, config.vision_config.fullatt_block_indexes = 4, [3]
    config.text_config.num_hidden_layers = 2
    # the vocabulary only sizes the embedding table (a lookup): our small tokenizer's keeps 2 GB out of memory
    config.text_config.vocab_size = len(processor.tokenizer)
    hf_model = random_in_place(config, device, dtype)
    return QwenVLModel(hf_model, processor, "qwen2.5-vl-7b-width-random", f"random-init (seed {TINY_SEED})")


@register_preset("qwen2.5-vl-7b-random")
def qwen25_vl_7b_random(device: torch.device, dtype: torch.dtype) -> QwenVLModel:

    processor = build_tiny_processor("qwen2_5_vl")
    token_ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    hf_model = random_in_place(qwen25_vl_7b_config(token_ids), device)
    model = QwenVLModel(hf_model, processor, "qwen2.5-vl-7b-random", f"random-init (seed {TINY_SEED})")
    return model
