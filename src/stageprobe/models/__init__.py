"""Model adapters. Importing this package registers every family's presets and architectures."""

from stageprobe.models import pixels, qwen3_vl, qwen_vl, vit  # noqa: F401  (registers presets)
from stageprobe.models._stages import Layout, StagePoint, StageSpec, replace_stage
from stageprobe.models.base import HFStageModel, StageInfo, StageModel, select_stages
from stageprobe.models.registry import ARCHITECTURES, PRESETS, check_stage_patterns, describe_stages, load_model

__all__ = [
    "ARCHITECTURES", "PRESETS", "HFStageModel", "Layout", "StageInfo", "StageModel", "StagePoint", "StageSpec",
    "check_stage_patterns", "describe_stages", "load_model", "replace_stage", "select_stages",
]
