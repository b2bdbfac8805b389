"""The report's inputs (`MetricRow`, `RunContext`) and the schema of `results.yaml`.

The suite runner measures; everything in `stageprobe.report` only reads these types, so the
same rows always give the same verdicts, findings and pages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: what was measured: the model studied, a model variant beside it (the raw-pixel baseline, the same
#: architecture with random weights), or a reference degradation of the input itself
Variant = Literal["model", "pixels", "random-init", "reference"]
VARIANTS: tuple[Variant, ...] = ("model", "pixels", "random-init", "reference")
#: how the probe was controlled: not at all, a control task, chance labels, shuffled tokens; the
#: selectivity row (task − control task), the validation split's scores (they choose a stage only) and
#: the training effect (trained model − its random-init twin, paired)
Control = Literal["none", "control-task", "chance", "token-shuffle", "selectivity", "validation", "training-effect"]
CONTROLS: tuple[Control, ...] = ("none", "control-task", "chance", "token-shuffle", "selectivity", "validation",
                                 "training-effect")
#: the control of a trained − random-init twin row
TRAINING_EFFECT: Control = "training-effect"

ExperimentStatus = Literal["completed", "in_progress", "skipped", "failed"]
RunStatus = Literal["not_started", "in_progress", "completed", "blocked", "failed", "pivoted"]
Recommendation = Literal["proceed", "pivot", "investigate", "block"]
Protocol = Literal["stageprobe", "seed"]

CSV_COLUMNS: tuple[str, ...] = (
    "experiment", "stage", "probe", "metric", "value", "ci_low", "ci_high", "n", "control", "model",
    "unavailable_reason", "note", "variant",
)


class MetricRow(BaseModel):
    """One measured number: a metric of one probe at one stage, for the model or a control.

    `value` is None when the metric could not be measured; `unavailable_reason` then says why
    (never a substitute number under the metric's name). Non-finite values are stored as
    unavailable, because a NaN in a table reads like a measurement.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str
    stage: str
    probe: str
    metric: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = Field(default=0, ge=0)
    control: Control = "none"
    model: str = ""
    variant: Variant = "model"
    unavailable_reason: str | None = None
    note: str = ""

    @field_validator("experiment", "stage", "probe", "metric")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be empty")
        return text.strip()

    @model_validator(mode="before")
    @classmethod
    def _finite_or_unavailable(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("control") in VARIANTS and "variant" not in data:
            # metrics.csv written before the variant column named variants in the control column
            data["variant"], data["control"] = data["control"], "none"
        for key in ("value", "ci_low", "ci_high"):
            number = data.get(key)
            if isinstance(number, float) and not math.isfinite(number):
                data[key] = None
                if key == "value" and not data.get("unavailable_reason"):
                    data["unavailable_reason"] = f"non-finite value ({number})"
        if data.get("value") is None:
            # A CI without a point estimate is meaningless; keep the row honest.
            data["ci_low"] = data["ci_high"] = None
            if not data.get("unavailable_reason"):
                data["unavailable_reason"] = "not measured (no reason given)"
        return data

    @model_validator(mode="after")
    def _ci_ordered(self) -> MetricRow:
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError("ci_low and ci_high must both be given or both be missing")
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low} > ci_high {self.ci_high}")
        return self

    @property
    def available(self) -> bool:
        return self.value is not None

    @property
    def of_model(self) -> bool:
        """The studied model's own measurement: no control, no variant beside it."""
        return self.control == "none" and self.variant == "model"

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunContext:
    """What the report needs to know about a run besides its numbers.

    `artifacts` maps an experiment id (or "summary") to paths relative to the run directory.
    """

    model: str
    weights_random: bool
    #: the suite that measured the run (its rows, targets and words read it)
    suite: str
    protocol: Protocol = "stageprobe"
    stages: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    experiment_status: dict[str, ExperimentStatus] = field(default_factory=dict)
    experiment_errors: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    #: `Calibration.to_dict()` when the run was made with `--calibrate`
    calibration: dict[str, Any] | None = None
    executed_by: str = ""
    claim: str = ""
    issues: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.protocol not in ("stageprobe", "seed"):
            raise ValueError(f"protocol must be 'stageprobe' or 'seed', not {self.protocol!r}")
        unknown = [key for key in self.experiment_status if not re.fullmatch(r"e_q\d+_\d+(_[a-z]+)?", key)]
        if unknown:
            raise ValueError(f"unknown experiment ids in experiment_status: {unknown}")


# ---------------------------------------------------------------------------------------------
# results.yaml schema. Seed-compatible keys first (the original harness's result schema:
# flat numeric success_criteria and per-experiment metrics), then stageprobe's own keys.


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExperimentResult(_Loose):
    status: ExperimentStatus
    finding: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=list)
    best_stages: dict[str, str] = Field(default_factory=dict)


class ResultsSection(_Loose):
    experiments: dict[str, ExperimentResult]


class Assessment(_Loose):
    success_criteria_met: bool
    confidence: Literal["high", "medium", "low"]
    confidence_notes: str = ""


class VerdictEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    label: str
    status: Literal["PASS", "FAIL", "INCONCLUSIVE", "UNAVAILABLE"]
    display: str
    target: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_crosses_target: bool = False
    stage: str | None = None
    probe: str | None = None
    experiment: str | None = None
    reason: str | None = None
    best_val_stage: str | None = None
    best_val_test_value: float | None = None
    #: the same probe on raw pixels at the verdict stage's grid: FAIL needs its CI past the target
    pixel_ceiling: float | None = None
    pixel_ceiling_stage: str | None = None
    pixel_ceiling_ci: list[float] | None = None


class DecisionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    colour: Literal["GREEN", "YELLOW", "RED", "UNAVAILABLE"]
    probe: str | None = None
    target: float
    pre_stage: str | None = None
    post_stage: str | None = None
    drop: float | None = None
    drop_ci: list[float] | None = None
    ceiling_problem: str | None = None
    pre_merge_iou: float | None = None
    pre_merge_ci: list[float] | None = None
    post_merge_iou: float | None = None
    post_merge_ci: list[float] | None = None
    conclusive: bool
    pixel_ceiling: float | None = None
    #: the same probe on raw pixels at the merged (28 px) grid: what the coarser grid alone allows
    post_merge_pixel_ceiling: float | None = None
    reason: str
    #: the model's drop beyond the pixel pair's, paired over the same test images
    excess_drop: float | None = None
    excess_drop_ci: list[float] | None = None


class CalibrationEntry(_Loose):
    """The `calibration` key: one verdict, the plants with their checks, the detectable drops."""

    model: str
    size: str
    verdict: Literal["PASS", "FAIL"]
    plants: list[dict[str, Any]]
    #: information type → "probe/metric" → {n_test, drop, family, dataset, stages: {stage: drop}}
    detectable_drop: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class ResultsFile(_Loose):
    experiment_id: str
    claim: str
    status: RunStatus
    executed_by: str
    started_at: str
    completed_at: str | None = None
    success_criteria: dict[str, float]
    results: ResultsSection
    assessment: Assessment
    recommendation: Recommendation
    recommendation_notes: str = ""
    blockers: list[str] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    # stageprobe keys
    model: str
    weights_random: bool
    protocol: Protocol
    suite: str
    stages: list[str]
    controls: dict[str, Any]
    #: the model variants (pixel baseline, random-init) and reference degradations measured beside it
    variants: dict[str, Any] = Field(default_factory=dict)
    verdicts: dict[str, VerdictEntry]
    decision_matrix: DecisionEntry
    stage_metrics: dict[str, Any]
    artifacts: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, Any] = Field(default_factory=dict)
    #: planted-loss calibration (`run --calibrate`): `Calibration.to_dict()`
    calibration: CalibrationEntry | None = None

    @model_validator(mode="after")
    def _completed_has_end(self) -> ResultsFile:
        if self.status == "completed" and not self.completed_at:
            raise ValueError("status is 'completed' but completed_at is missing")
        return self


# ---------------------------------------------------------------------------------------------
# Stage order and grids, shared by tables, plots and the pixel-baseline lookup.

#: every connector's (input, output) stage pair — Qwen's 2×2 merger, Gemma 3's 4×4 average pool, a pixel
#: shuffle: the input on the patch grid, the output on the merged grid (a model declares its own pair)
CONNECTOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("vision.pre_merge", "vision.post_merge"), ("vision.pre_pool", "vision.post_pool"),
    ("vision.pre_shuffle", "vision.post_shuffle"), ("vision.pre_projector", "vision.post_projector"),
)
#: merged-grid stages after a connector's output (its projector)
AFTER_CONNECTOR = ("vision.post_projector",)

_STAGE_ORDER: tuple[tuple[str, int], ...] = (
    ("pixels.patch", 0), ("pixels.merged", 1), ("vision.patch_embed", 2), ("vision.embed", 2),
    ("vision.block.", 3), ("vision.pre_merge", 4), ("vision.final", 4), ("vision.post_merge", 5),
    ("language.layer.", 6), ("language.norm", 7),
    *((pre, 4) for pre, _ in CONNECTOR_PAIRS[1:]), *((post, 5) for _, post in CONNECTOR_PAIRS[1:]),
    *((stage, 5) for stage in AFTER_CONNECTOR),
)


def stage_sort_key(stage: str) -> tuple[int, int, str]:
    """Pipeline order: pixels, patch embedding, ViT blocks, pre-merge, post-merge, LLM layers."""
    for position, (prefix, rank) in enumerate(_STAGE_ORDER):
        if prefix.endswith("."):
            if stage.startswith(prefix) and stage[len(prefix):].isdigit():
                return rank, int(stage[len(prefix):]), stage
        elif stage == prefix:  # stages of one rank in the table's order (a shuffle before its projector)
            return rank, position, stage
    return 99, 0, stage


def sort_stages(stages: list[str] | set[str] | tuple[str, ...]) -> list[str]:
    return sorted(set(stages), key=stage_sort_key)


def pixel_stage_for(stage: str) -> str:
    """The pixel-baseline stage on the same token grid: the merged grid after the model's connector, the patch
    grid before. Qwen3-VL's DeepStack mergers (`vision.deepstack.{k}`) output the merged grid too."""
    if (stage in {post for _, post in CONNECTOR_PAIRS} or stage in AFTER_CONNECTOR
            or stage.startswith(("language.", "vision.deepstack."))):
        return "pixels.merged"
    return "pixels.patch"


VARIANT_DESCRIPTIONS: dict[str, str] = {
    "pixels": "pixel baseline: raw pixels of each 14 px / 28 px patch on the same grid (the ceiling)",
    "random-init": "same architecture with random weights (what architecture + probe give without learning)",
    "reference": ("reference degradations of the input itself (identity, blurs, down-up, constant), scored like a "
                  "stage: what a value of the metric means"),
}
CONTROL_DESCRIPTIONS: dict[str, str] = {
    "control-task": ("same probe trained on control targets: a fixed random function of a recurring input type "
                     "(each object's shape and colour, each clip's object or photo, each texture), identical in "
                     "train, val and test and independent of the real target, with its statistics (a box drawn "
                     "from the dataset's boxes, one clip's whole motion target and path, a random-phase texture "
                     "with the type's spectrum), so only a probe that memorises types scores (Hewitt & Liang, "
                     "2019)"),
    "chance": "same probe trained on labels permuted across the images of each split: what chance gives",
    "selectivity": ("task score minus control-task score, on the same test images (paired bootstrap); control "
                    "minus task for lower-is-better metrics, so positive always means better than the control"),
    "validation": "the model's own probe scored on the validation split: used only to choose the best stage",
    "token-shuffle": ("tokens of each image permuted within each object's cells before probing (background "
                      "stays): a probe reading each object's extent from where inside it a token sits drops"),
    "training-effect": ("trained model − its random-init twin, the same deciding probe on the same test images "
                        "(paired bootstrap): what learning kept, added or removed at each stage"),
}
