"""Model adapters. Names are imported on first use, and the first use of any of them imports every
family the catalog (`_catalog`) names, which registers their presets and architectures; listing the
presets from the catalog alone (`stageprobe models`) does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stageprobe.models._stages import Layout, StagePoint, StageSpec, replace_stage
    from stageprobe.models.base import HFStageModel, StageInfo, StageModel, select_stages
    from stageprobe.models.registry import (
        ARCHITECTURES,
        PRESETS,
        check_stage_patterns,
        describe_stages,
        load_model,
    )

#: public name → the submodule that defines it
_PUBLIC = {
    "Layout": "_stages", "StagePoint": "_stages", "StageSpec": "_stages", "replace_stage": "_stages",
    "HFStageModel": "base", "StageInfo": "base", "StageModel": "base", "select_stages": "base",
    "ARCHITECTURES": "registry", "PRESETS": "registry", "check_stage_patterns": "registry",
    "describe_stages": "registry", "load_model": "registry",
}

__all__ = [
    "ARCHITECTURES", "PRESETS", "HFStageModel", "Layout", "StageInfo", "StageModel", "StagePoint", "StageSpec",
    "check_stage_patterns", "describe_stages", "load_model", "replace_stage", "select_stages",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    registry = importlib.import_module(f"{__name__}.registry")
    registry.load_families()
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
