"""What the adapters of tiled-input VLMs share (InternVL, SmolVLM, LLaVA-OneVision).

Their processors cut an image into square tiles of the vision tower's native size, laid out as a
`rows × cols` grid over the image resized to that grid, and add an overview image (InternVL's
thumbnail, SmolVLM's global image, LLaVA-OneVision's base image). Every stage here is one raster
grid of the **mosaic**: the tiles' token grids side by side, so `[b, t, r, c]` is the token over
rows r·s…(r+1)·s, columns c·s…(c+1)·s of the image resized to the mosaic (`mosaic_size`), tile
seams included. The overview image is the whole image again at a coarser scale, so it is never
part of a grid: its tokens (and CLS tokens, row newlines) are left out of every stage, and kept
as they are when a planted grid is written back. Each stage is `indexed` (see `_stages`): the
adapter maps every mosaic cell to the row of the module's tensor that holds its token.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from stageprobe.errors import UserInputError
from stageprobe.models._presets import PRESET_SEED, preset_checkpoint, quiet_transformers, random_in_place
from stageprobe.models._stages import Layout, StageSpec
from stageprobe.models.base import Clip, HFStageModel, check_same_size
from stageprobe.models.registry import pretrained_source

DEFAULT_PROMPT = "Describe this image."
DEFAULT_VIDEO_PROMPT = "Describe this video."


def mosaic_cells(frames: int, rows: int, cols: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tile, cell) of every raster cell of a `frames × rows·side × cols·side` mosaic.

    `tile` counts the item's mosaic tiles frame by frame, row-major (the processors' order);
    `cell` is the token's index inside its tile's own raster grid (`side × side`)."""
    r = torch.arange(rows * side).view(1, -1, 1)
    c = torch.arange(cols * side).view(1, 1, -1)
    t = torch.arange(frames).view(-1, 1, 1)
    tile = t * rows * cols + (r // side) * cols + c // side
    cell = (r % side) * side + c % side
    return tile, cell.expand_as(tile)


def text_positions(visual_mask: torch.Tensor) -> list[torch.Tensor]:
    """Per item, the sequence positions of its visual tokens, in order."""
    return [torch.nonzero(row).flatten() for row in visual_mask]


class TiledVLModel(HFStageModel):
    """Adapter over a `*ForConditionalGeneration` whose processor tiles images.

    A family declares its geometry (`tile_px`, `patch_px`, `merge`, `tile_grid`), its stage table
    and the index of every token set its stages read (`build_layout`).
    """

    #: the pixel shuffle's input and output (a projector follows it)
    connector_stages = ("vision.pre_shuffle", "vision.post_shuffle")
    #: LLM module path from the root
    language_root = "model.language_model"

    def __init__(
        self,
        hf_model: nn.Module,
        processor: Any,
        name: str,
        weights_id: str,
        prompt: str = DEFAULT_PROMPT,
        video_prompt: str = DEFAULT_VIDEO_PROMPT,
        max_tiles: int | None = None,
    ) -> None:
        self._bind(hf_model, processor, name, weights_id, prompt, video_prompt)
        self.device = next(hf_model.parameters()).device
        self.config = hf_model.config
        #: tiles one image may be cut into; None keeps the processor's own limit
        self.max_tiles = max_tiles

    # -- geometry the family declares -----------------------------------------------------------

    @property
    @abstractmethod
    def tile_px(self) -> int:
        """Side of one tile in pixels (the tower's native input size)."""

    @property
    @abstractmethod
    def patch_px(self) -> int:
        """Side of one ViT patch in pixels."""

    @property
    @abstractmethod
    def merge(self) -> int:
        """Connector's downsampling factor per axis (pixel shuffle); 1 where there is none."""

    @abstractmethod
    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the tiles the processor cuts an input of this size into."""

    @abstractmethod
    def vision_stage_table(self) -> list[StageSpec]:
        """The vision tower's and connector's stages, in forward order."""

    @abstractmethod
    def processor_inputs(self, images: list[Image.Image] | None, clips: list[list[Image.Image]] | None) -> Any:
        """The processor's output for this batch (prompt text included)."""

    @abstractmethod
    def build_layout(self, inputs: dict[str, Any], frames: int, rows: int, cols: int) -> Layout:
        """Which module row holds each mosaic cell's token, for every token set the stages read."""

    # -- shared ------------------------------------------------------------------------------

    @property
    def default_image_size(self) -> tuple[int, int]:
        return (self.tile_px, self.tile_px)

    def processed_size(self, height: int, width: int, frames: int = 1) -> tuple[int, int]:
        """(height, width) of the image the mosaic covers: the input resized to the tile grid (a video
        frame: to one tile)."""
        rows, cols = (1, 1) if frames > 1 else self.tile_grid(height, width)
        return rows * self.tile_px, cols * self.tile_px

    def check_image_size(self, height: int, width: int) -> None:
        if min(height, width) < 1:
            raise UserInputError(f"the image is {width}×{height} px; pass images of at least 1×1 px")

    def check_tiles(self, height: int, width: int) -> tuple[int, int]:
        """The tile grid of an input, refused before any forward when it exceeds `max_tiles`."""
        self.check_image_size(height, width)
        rows, cols = self.tile_grid(height, width)
        if self.max_tiles is not None and rows * cols > self.max_tiles:
            raise UserInputError(
                f"a {width}×{height} px image is cut into {rows}×{cols} = {rows * cols} tiles of {self.tile_px} px "
                f"by the {self.name} processor, more than the {self.max_tiles} this run allows (--max-tiles); "
                f"{self.fewer_tiles(self.max_tiles)}, or pass --max-tiles {rows * cols}"
            )
        return rows, cols

    def fewer_tiles(self, most: int) -> str:
        """How to get images cut into at most `most` tiles (said when an image is cut into more)."""
        side = math.isqrt(most) * self.tile_px
        return (f"pass smaller images (at most {side}×{side} px is cut into at most {most} tiles; e.g. image_size= "
                "in --data)")

    def stage_grids(self, height: int, width: int, frames: int = 1) -> dict[str, Any]:
        rows, cols = (1, 1) if frames > 1 else self.check_tiles(height, width)
        side = self.tile_px // self.patch_px
        patch = (frames, rows * side, cols * side)
        merged = (frames, rows * side // self.merge, cols * side // self.merge)
        return {"patch": patch, "merged": merged, "patch_stride": self.patch_px,
                "merged_stride": self.patch_px * self.merge}

    def text_dim(self) -> int:
        return int(self.config.text_config.hidden_size)

    def language_stage_table(self) -> list[StageSpec]:
        """LLM decoder layers and final norm, read at the mosaic's visual-token positions."""
        layers = len(self.hf_model.get_submodule(f"{self.language_root}.layers"))
        dim = self.text_dim()
        table = [StageSpec(f"language.layer.{i}", f"{self.language_root}.layers.{i}", "output", "merged", "indexed",
                           dim, f"LLM decoder layer {i} output at the mosaic's visual-token positions", index="text")
                 for i in range(layers)]
        table.append(StageSpec("language.norm", f"{self.language_root}.norm", "output", "merged", "indexed", dim,
                               "final LLM norm at the mosaic's visual-token positions", index="text"))
        return table

    def stage_table(self, height: int, width: int, frames: int = 1) -> list[StageSpec]:
        self.check_image_size(height, width)
        return self.vision_stage_table() + self.language_stage_table()

    def chat_text(self, kind: str, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prepare_batch(
        self, images: Sequence[Image.Image] | None, videos: Sequence[Clip] | None
    ) -> tuple[dict[str, Any], Layout]:
        if (images is None) == (videos is None):
            raise UserInputError("pass either images or videos")
        if videos is not None:
            if not self.supports_video:
                raise UserInputError(f"{self.name!r} has no video input; pass images")
            clips = [[frame.convert("RGB") for frame in clip] for clip in videos]
            if clips and len(clips[0]) < 2:  # one frame would be read as an image, tiled
                raise UserInputError(f"a clip has {len(clips[0])} frame; pass clips of at least 2 frames, "
                                     "or the frame as an image")
            height, width = check_same_size([frame for clip in clips for frame in clip])
            self.check_image_size(height, width)
            frames, rows, cols = len(clips[0]), 1, 1
            processed = self.processor_inputs(None, clips)
        else:
            image_list = [image.convert("RGB") for image in images or []]
            height, width = check_same_size(image_list)
            frames, (rows, cols) = 1, self.check_tiles(height, width)
            processed = self.processor_inputs(image_list, None)
        inputs = {k: v.to(self.device) for k, v in processed.items() if isinstance(v, torch.Tensor)}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return inputs, self.build_layout(inputs, frames, rows, cols)

    def run_forward(self, inputs: dict[str, Any], stages: Sequence[str]) -> None:
        # the capture stops the forward after the last stage asked for, so vision-only reads end there
        self.hf_model.model(**inputs)

    def text_index(self, visual_mask: torch.Tensor, token_of_cell: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) row of the flattened (B·L, D) LLM tensor at each mosaic cell; `token_of_cell`
        is each cell's index among one item's visual tokens."""
        length = visual_mask.shape[1]
        rows = [positions[token_of_cell.to(positions.device)] + b * length
                for b, positions in enumerate(text_positions(visual_mask.cpu()))]
        return torch.stack(rows)

    def config_summary(self) -> dict[str, Any]:
        config_json = self.config.to_json_string(use_diff=False)
        return {"name": self.name, "weights": self.weights_id, "class": type(self.hf_model).__name__,
                "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(), "prompt": self.prompt,
                "video_prompt": self.video_prompt, "tile_px": self.tile_px, "max_tiles": self.max_tiles,
                "grid": "one raster mosaic of the tiles; overview image, CLS and newline tokens left out"}

    def with_weights(self, hf_model: nn.Module, name: str, weights_id: str) -> TiledVLModel:
        return type(self)(hf_model, self.processor, name, weights_id, self.prompt, self.video_prompt, self.max_tiles)


# -- loading --------------------------------------------------------------------------------------


def weights_id_of(source: str, config: Any) -> str:
    """The Hub commit when known, else a hash of the local directory's file names and sizes."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return f"revision {commit}"
    directory = Path(source).expanduser()
    listing = sorted((p.name, p.stat().st_size) for p in directory.iterdir() if p.is_file())
    return "files sha256 " + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def load_tiled(
    adapter: type[TiledVLModel], class_name: str, name: str, config: Any, device: torch.device, dtype: torch.dtype,
    trust_remote_code: bool = False, weights_id: str | None = None,
) -> TiledVLModel:
    """A checkpoint (Hub id or local directory) and its processor through `from_pretrained`."""
    import transformers

    source = pretrained_source(name)
    try:
        with quiet_transformers():
            hf_model = getattr(transformers, class_name).from_pretrained(
                source, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code)
            processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the weights or processor of {name!r} are not found locally ({error}). Download them where there is "
            "network, then pass the local directory as the model"
        ) from error
    return adapter(hf_model.to(device), processor, name, weights_id or weights_id_of(source, config))


def tiled_skeleton(
    adapter: type[TiledVLModel], class_name: str, name: str, config: Any, trust_remote_code: bool = False
) -> TiledVLModel:
    """The adapter over a meta-device model: stage geometry from config + processor files, no weights."""
    import transformers

    source = pretrained_source(name)
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise UserInputError(
            f"the processor files of {name!r} are not found locally ({error}); "
            "pass a directory that holds its processor and tokenizer files"
        ) from error
    with torch.device("meta"):
        hf_model = getattr(transformers, class_name)._from_config(config)
    return adapter(hf_model, processor, name, "not loaded (meta device)")


def tiled_preset(
    adapter: type[TiledVLModel], preset: str, config: Any, processor: Any, device: torch.device, dtype: torch.dtype
) -> TiledVLModel:
    """A tiny random preset, saved and reloaded through the path a Hub checkpoint takes."""
    directory = preset_checkpoint(preset, config, processor, seed=PRESET_SEED)
    model = load_tiled(adapter, config.architectures[0], str(directory), config, device, dtype,
                       weights_id=f"random-init (seed {PRESET_SEED})")
    model.name = preset
    return model


def random_preset(
    adapter: type[TiledVLModel], preset: str, config: Any, processor: Any, device: torch.device,
) -> TiledVLModel:
    """A published architecture with random weights, built in place on `device` in bf16 (benchmarks only)."""
    hf_model = random_in_place(config, device)
    return adapter(hf_model, processor, preset, f"random-init (seed {PRESET_SEED})")


def byte_tokenizer(special_tokens: Sequence[str], **named: str) -> Any:
    """A byte-level BPE tokenizer (256 byte tokens, no merges) carrying a family's special tokens;
    `named` become tokenizer attributes (e.g. `image_token="<image>"`) as in the family's own tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(special_tokens))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   extra_special_tokens=named)


#: Qwen / SmolLM-style chat turns; `{image}` / `{video}` are each family's placeholder text
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE{% elif part['type'] == 'video' %}VIDEO"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(image: str, video: str = "") -> str:
    return CHAT_TEMPLATE.replace("IMAGE", image).replace("VIDEO", video)
