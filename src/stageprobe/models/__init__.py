"""Model adapters. Importing this package registers every family's presets and architectures."""

from stageprobe.models import pixels, qwen3_vl, qwen_vl, vit  # noqa: F401  (registers presets)
from stageprobe.models.base import StageInfo, StageModel, select_stages
from stageprobe.models.registry import ARCHITECTURES, PRESETS, load_model

__all__ = ["ARCHITECTURES", "PRESETS", "StageInfo", "StageModel", "load_model", "select_stages"]
