"""The Q2 study as data: which data, stages, probes and controls each sub-experiment uses.

Stage patterns name the stages of every model family; a pattern a model does not have is simply
not part of its study (a ViT has no LLM layers; the pixel baseline has only `pixels.*`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Size = Literal["quick", "default", "full"]
ProtocolName = Literal["stageprobe", "seed"]

SPATIAL_CONTROLS = ("control-task", "token-shuffle")


@dataclass(frozen=True)
class ProbeSpec:
    probe: str
    task: str
    controls: tuple[str, ...] = ()
    #: kept under `--protocol seed` (the original harness's pooled probes)
    seed_protocol: bool = False


@dataclass(frozen=True)
class ExperimentSpec:
    id: str
    title: str
    dataset: Literal["shapes", "textures", "motion"]
    stages: tuple[str, ...]
    probes: tuple[ProbeSpec, ...]
    #: at most this many LLM layers, evenly spaced (the seed read "some LLM layers" here)
    max_language_layers: int | None = None
    #: metric-name prefixes not reported here (box probes also score mAP, which E-Q2.4 owns)
    skip_metrics: tuple[str, ...] = ()


POOLED_BOXES = ProbeSpec("pooled-linear", "boxes", seed_protocol=True)
DENSE_BOXES = ProbeSpec("dense-linear", "boxes", controls=SPATIAL_CONTROLS)
RELATION = ProbeSpec("relation", "relation", controls=("control-task",))
POOLED_RELATION = ProbeSpec("relation-pooled", "relation", seed_protocol=True)

PATCH_STAGES = ("vision.patch_embed", "vision.embed", "vision.block.*", "vision.pre_merge", "vision.final",
                "pixels.patch")
MERGE_STAGES = ("vision.pre_merge", "vision.post_merge", "pixels.patch", "pixels.merged")
LANGUAGE_STAGES = ("language.layer.*",)
MOTION_TASKS = ("direction", "speed", "order")

Q2: tuple[ExperimentSpec, ...] = (
    ExperimentSpec("e_q2_1", "Pre-merge ViT analysis", "shapes", PATCH_STAGES,
                   (POOLED_BOXES, DENSE_BOXES, RELATION, POOLED_RELATION), skip_metrics=("map",)),
    ExperimentSpec("e_q2_2", "Post-merge analysis", "shapes", MERGE_STAGES,
                   (POOLED_BOXES, DENSE_BOXES, RELATION, POOLED_RELATION), skip_metrics=("map",)),
    ExperimentSpec("e_q2_3", "LLM layer-wise decay", "shapes", LANGUAGE_STAGES, (POOLED_BOXES, DENSE_BOXES),
                   skip_metrics=("map",)),
    ExperimentSpec("e_q2_4", "Detection probe (mAP)", "shapes",
                   ("vision.pre_merge", "vision.post_merge", "vision.final", "pixels.merged", *LANGUAGE_STAGES),
                   (ProbeSpec("attention", "boxes"),), max_language_layers=4),
    ExperimentSpec("e_q2_5", "Fine-grained detail probe", "textures",
                   ("vision.*", "pixels.*", *LANGUAGE_STAGES),
                   (ProbeSpec("decoder", "reconstruction", controls=("control-task",)),
                    ProbeSpec("decoder-pooled", "reconstruction", seed_protocol=True)),
                   max_language_layers=3),
    ExperimentSpec("e_q2_6", "Temporal information probe", "motion",
                   ("vision.post_merge", "pixels.merged", *LANGUAGE_STAGES),
                   tuple(ProbeSpec("temporal-dense", task, controls=("control-task",)) for task in MOTION_TASKS)
                   + tuple(ProbeSpec("temporal", task, seed_protocol=True) for task in MOTION_TASKS)),
)

#: samples per dataset; `quick` is a CPU smoke test, `default` the study, `full` tighter CIs
SIZES: dict[Size, dict[str, int]] = {
    "quick": {"shapes": 160, "textures": 48, "motion": 96},
    "default": {"shapes": 600, "textures": 240, "motion": 400},
    "full": {"shapes": 2000, "textures": 600, "motion": 1200},
}

def probes_for(spec: ExperimentSpec, protocol: ProtocolName) -> tuple[ProbeSpec, ...]:
    """`seed` keeps only the original pooled probes, so users see how the protocol changes the answer."""
    if protocol == "seed":
        return tuple(p for p in spec.probes if p.seed_protocol)
    return spec.probes


#: `--quick` reads a few evenly spaced blocks and layers: a smoke test of every code path
QUICK_STAGE_LIMITS = {"vision.block.": 3, "language.layer.": 2}
#: ... and trains the gradient-trained probes for fewer epochs (their numbers are then a floor)
QUICK_PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "decoder": {"epochs": 5},
    "decoder-pooled": {"epochs": 5},
    "attention": {"epochs": 10},
}


def thin_stages(stages: list[str], prefix: str, limit: int | None) -> list[str]:
    """Keep at most `limit` stages starting with `prefix`, evenly spaced, first and last included."""
    family = [s for s in stages if s.startswith(prefix)]
    if limit is None or len(family) <= limit:
        return stages
    picks = {family[round(i * (len(family) - 1) / (limit - 1))] for i in range(limit)} if limit > 1 else {family[0]}
    return [s for s in stages if not s.startswith(prefix) or s in picks]
