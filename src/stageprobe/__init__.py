"""stageprobe: what a vision-language model still knows at every stage of its pipeline.

Read the stages of a model::

    import stageprobe as sp

    model = sp.load_model("qwen2.5-vl-tiny")        # preset, Hub id or local directory
    [s.name for s in model.stages]                    # vision.patch_embed, vision.block.0, …
    feats = model.extract(image, stages="vision.*")   # a PIL image, a list of them, or arrays
    feats["vision.pre_merge"].shape                   # (B, T, H, W, D), raster order
    feats.input_size                                  # (height, width) the model resized to

`extract` takes one PIL image or a list of them, a numpy array or torch tensor (H, W, 3) or
(B, H, W, 3) (uint8 0…255 or float 0…1), `videos=` a list of clips of equal length, and
`stages=` one glob pattern or a list of them.

Read a feature store written by `stageprobe extract` (or by a run, under RUN_DIR/features)::

    store = sp.FeatureStore.open("stores/shapes")     # refuses an unfinished store
    store.stages                                      # stage names it holds
    grid = store.load("vision.post_merge")            # (N, T, H, W, D) float32, every sample
    test = store.load("vision.post_merge", store.split_indices("test"))
    store.keys, store.splits                          # sample keys and splits, in store order
    for shard in store.iter_shards("vision.pre_merge"):   # a big store, one shard at a time
        ...

Names are imported on first use, so `import stageprobe` (and `stageprobe --help`) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stageprobe.errors import UserInputError

if TYPE_CHECKING:
    from stageprobe.features import FeatureStore
    from stageprobe.models import StageInfo, StageModel, load_model

__version__ = "0.1.0"

# public name → the module that defines it, imported when the name is first used
_LAZY_NAMES = {
    "FeatureStore": "stageprobe.features",
    "StageInfo": "stageprobe.models",
    "StageModel": "stageprobe.models",
    "load_model": "stageprobe.models",
}

__all__ = ["FeatureStore", "StageInfo", "StageModel", "UserInputError", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    try:
        # subpackages (`sp.models.PRESETS`) work without an explicit import, as before
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # the submodule exists but one of its own imports is missing
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
