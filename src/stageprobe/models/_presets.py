"""The one preset builder: a random-weight checkpoint written with `save_pretrained`, like a Hub
snapshot, rebuilt whenever its recipe (config + processor + seed) changes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from stageprobe.models.registry import preset_cache_dir

PRESET_SEED = 0
PRESET_MARKER = "stageprobe_preset.json"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Errors only and no progress bars while loading: tiny checkpoints load in milliseconds."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def random_in_place(config: Any, device: torch.device, dtype: torch.dtype = torch.bfloat16,
                    seed: int = PRESET_SEED) -> torch.nn.Module:
    """A published architecture (`config.architectures[0]`) with random weights and SDPA attention, built in
    place on `device`: on a GPU billions of parameters never pass through host memory (benchmarks, planning)."""
    import transformers

    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return getattr(transformers, config.architectures[0])(config).to(dtype)


def preset_checkpoint(
    name: str, model_config: Any, processor: Any, seed: int = PRESET_SEED,
    initialise: Callable[[torch.nn.Module], None] | None = None,
) -> Path:
    """The saved checkpoint of a preset, built once (weights from `seed`) and rebuilt when its recipe changes.

    `model_config.architectures[0]` names the transformers class to build; `initialise` sets weights
    the class's own init leaves unusable (Gemma 3's all-zero projector). The recipe hash sits next
    to the weights, so a cache left by an older recipe is never mistaken for the current one.
    """
    extra = f"{initialise.__module__}.{initialise.__qualname__}" if initialise is not None else ""
    recipe = hashlib.sha256(
        (model_config.to_json_string(use_diff=False) + processor.to_json_string() + str(seed) + extra).encode()
    ).hexdigest()
    target = preset_cache_dir() / name
    if _recipe_of(target) == recipe:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and renamed into place, so an interrupted or concurrent build never
    # leaves a half-written checkpoint under the preset's name.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        import transformers

        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(seed)
            model = getattr(transformers, model_config.architectures[0])(model_config)
            if initialise is not None:
                initialise(model)
            model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / PRESET_MARKER).write_text(json.dumps({"preset": name, "recipe": recipe}))
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if _recipe_of(target) != recipe:  # another process won the race with the same recipe
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _recipe_of(directory: Path) -> str | None:
    try:
        return json.loads((directory / PRESET_MARKER).read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        return None
