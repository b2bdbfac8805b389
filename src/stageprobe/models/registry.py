"""Model lookup: preset names, Hugging Face Hub ids and local directories.

A model family registers itself in its own file: presets with `register_preset`, and the
`config.json` `model_type`s it can load with `register_architecture`. `_catalog` names each
family's module, so the tables fill on first use (`load_families`) and listing the presets
(`stageprobe models`) never imports torch.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from stageprobe.errors import UserInputError
from stageprobe.models import _catalog
from stageprobe.models.base import StageInfo, StageModel, select_stages

ModelFactory = Callable[..., StageModel]

#: seconds a connection to the Hub may take before a Hub id counts as not downloadable here
HUB_PROBE_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    factory: ModelFactory


PRESETS: dict[str, Preset] = {}
ARCHITECTURES: dict[str, ModelFactory] = {}
#: model_type → `skeleton(name_or_path, config, trust_remote_code=)`: the adapter over a model built on
#: the meta device (geometry and widths from the config, no weights read)
SKELETONS: dict[str, ModelFactory] = {}


def pretrained_source(name: str) -> str:
    """What `from_pretrained` gets for a model name: the local directory if one exists, else the Hub id."""
    local = Path(name).expanduser()
    return str(local) if local.exists() else name


def load_families() -> None:
    """Import every family the catalog names, which fills PRESETS, ARCHITECTURES and SKELETONS."""
    for family in _catalog.FAMILIES:
        importlib.import_module(family.module)


def register_preset(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Bind the factory of a preset the catalog declares (its description lives there)."""
    description = _catalog.description_of(name)

    def wrap(factory: ModelFactory) -> ModelFactory:
        PRESETS[name] = Preset(name, description, factory)
        return factory

    return wrap


def _register_for_model_types(
    table: dict[str, ModelFactory], model_types: Sequence[str]
) -> Callable[[ModelFactory], ModelFactory]:
    """A decorator that files its factory in `table` under every one of `model_types`."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        for model_type in model_types:
            table[model_type] = factory
        return factory

    return wrap


def register_architecture(*model_types: str) -> Callable[[ModelFactory], ModelFactory]:
    """`factory(name_or_path, config, device=, dtype=, trust_remote_code=)` loads that architecture."""
    return _register_for_model_types(ARCHITECTURES, model_types)


def register_skeleton(*model_types: str) -> Callable[[ModelFactory], ModelFactory]:
    """`skeleton(name_or_path, config, trust_remote_code=)` builds that architecture on the meta device."""
    return _register_for_model_types(SKELETONS, model_types)


def skeleton(name: str, trust_remote_code: bool = False) -> StageModel:
    """A preset, Hub id or local directory built on the meta device from its config (and its processor
    files): geometry and widths, no weights read."""
    load_families()
    if name in PRESETS:
        return PRESETS[name].factory(device=torch.device("meta"), dtype=torch.float32)
    config, build_skeleton = _config_and_factory(name, trust_remote_code, SKELETONS)
    return build_skeleton(name, config, trust_remote_code=trust_remote_code)


def describe_stages(
    name: str, height: int = 448, width: int = 448, frames: int = 1, trust_remote_code: bool = False
) -> list[StageInfo]:
    """The stages of a preset, Hub id or local directory for an input of this size, without reading
    any weights: the model is built on the meta device from its config (and its processor files)."""
    return skeleton(name, trust_remote_code).stages_for(height, width, frames)


def check_image_tiles(
    name: str, sizes: Sequence[tuple[int, int]], max_tiles: int | None, trust_remote_code: bool = False
) -> None:
    """Refuse (UserInputError) an image size (height, width) the model's processor would cut into more tiles
    than `max_tiles`, or than the processor keeps cell by cell — before any weight is read. A model that
    takes each image whole (no tiles) accepts every size."""
    model = skeleton(name, trust_remote_code)
    check_tiles = getattr(model, "check_tiles", None)
    if check_tiles is None:
        return
    model.max_tiles = max_tiles  # type: ignore[attr-defined]
    for height, width in sizes:
        check_tiles(height, width)


def check_stage_patterns(
    name: str, patterns: Sequence[str] | None, height: int = 448, width: int = 448, frames: int = 1,
    trust_remote_code: bool = False,
) -> list[str]:
    """The stage names `patterns` select, checked before the model loads (UserInputError if one matches none)."""
    infos = describe_stages(name, height, width, frames, trust_remote_code=trust_remote_code)
    return select_stages([info.name for info in infos], patterns)


def preset_cache_dir() -> Path:
    """Where presets built offline are saved (`$STAGEPROBE_CACHE/presets`, default ~/.cache/stageprobe)."""
    return Path(os.environ.get("STAGEPROBE_CACHE") or Path.home() / ".cache" / "stageprobe") / "presets"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA (the checkpoints' own dtype) and fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise UserInputError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(names))}")
    return names[dtype]


def load_model(
    name: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict[str, Any] | None = None,
) -> StageModel:
    """A model by preset name, Hub id or local directory, on `device` in `dtype`.

    `device_map` ("auto", "balanced", … or a module → device dict) splits a checkpoint over
    several GPUs with accelerate, for models one GPU cannot hold; it replaces `device`, which
    then only decides what dtype "auto" means (bf16 when CUDA is there).
    """
    load_families()
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    if name in PRESETS:
        if device_map is not None:
            raise UserInputError(
                f"--device-map applies to checkpoints (a Hub id or a local directory), not to the preset {name!r}; "
                "drop --device-map, or pass the checkpoint directory"
            )
        return PRESETS[name].factory(device=resolved_device, dtype=resolved_dtype)
    config, factory = _config_and_factory(name, trust_remote_code, ARCHITECTURES)
    options: dict[str, Any] = {}
    if device_map is not None:
        if "device_map" not in inspect.signature(factory).parameters:
            raise UserInputError(
                f"--device-map is not supported for {config.model_type!r} models, which fit on one device; "
                "drop --device-map and use --device"
            )
        if importlib.util.find_spec("accelerate") is None:
            raise UserInputError("--device-map needs accelerate: pip install 'stageprobe[multi-gpu]'")
        options["device_map"] = device_map
    return factory(name, config, device=resolved_device, dtype=resolved_dtype, trust_remote_code=trust_remote_code,
                   **options)


def _config_and_factory(
    name: str, trust_remote_code: bool, factories: dict[str, ModelFactory]
) -> tuple[Any, ModelFactory]:
    """The checkpoint's config and the factory `factories` holds for its `model_type`."""
    config = _read_config(name, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    if model_type not in factories:
        raise UserInputError(
            f"{name!r} is a {model_type!r} model, which stageprobe does not support. "
            f"Supported architectures: {', '.join(sorted(ARCHITECTURES))}"
        )
    return config, factories[model_type]


def _read_config(name: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    looks_like_path = Path(name).exists() or name.startswith((".", "/", "~"))
    if "/" not in name and not looks_like_path:
        raise UserInputError(
            f"unknown model {name!r}. Presets: {', '.join(sorted(PRESETS))}; "
            "or pass a Hugging Face Hub id (org/name) or a local directory with config.json"
        )
    if looks_like_path:
        _check_local_config(Path(name).expanduser() / "config.json", name)
    else:
        _check_hub_reachable(name)
    try:
        return AutoConfig.from_pretrained(str(Path(name).expanduser()) if looks_like_path else name,
                                          trust_remote_code=trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise UserInputError(
                f"{name!r} needs custom code from its repository; pass --trust-remote-code if you trust it"
            ) from error
        raise UserInputError(f"cannot read the config of {name!r}: {error}") from error
    except OSError as error:
        raise _not_available(name, error.__class__.__name__) from error


def _not_available(name: str, reason: str) -> UserInputError:
    return UserInputError(
        f"the weights of {name!r} are not found locally and cannot be downloaded here ({reason}). "
        f"Download them where there is network (`hf download {name}`), then pass the local directory as the "
        "model, or set HF_HOME to the cache that holds them; set HF_HUB_OFFLINE=1 to skip the Hub altogether"
    )


def _check_local_config(path: Path, name: str) -> None:
    """A local model directory has a config.json that parses: report a broken one as such."""
    if not path.is_file():
        raise UserInputError(f"{name!r} is not a model directory: it has no config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserInputError(f"{path} is not a readable JSON model config ({error}); repair or replace it") from error
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserInputError(f"{path} has no \"model_type\" field, so the architecture cannot be told; "
                             "repair it or download the model's config.json again")


def _check_hub_reachable(name: str) -> None:
    """Answer at once when a Hub id is neither cached nor downloadable, instead of after ~30 s of retries.

    Skipped when HF_HUB_OFFLINE is set (transformers then only looks in the cache, which is quick) or
    a proxy is configured (a direct connection says nothing about the proxy's reach)."""
    if os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise _not_available(name, f"{host} cannot be reached: {error.__class__.__name__}") from error
