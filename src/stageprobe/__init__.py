"""stageprobe: what a vision-language model still knows at every stage of its pipeline."""

from stageprobe.errors import UserInputError
from stageprobe.models import StageInfo, StageModel, load_model

__version__ = "0.1.0"

__all__ = ["StageInfo", "StageModel", "UserInputError", "__version__", "load_model"]
