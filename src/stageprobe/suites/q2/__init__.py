"""The Q2 study as one unit: its experiments (data family, stages, probes, controls), its three
information types (location, detail, motion: each with its targets, deciding probe, secondary probes,
plot metrics and calibration plants), the decision matrix, the derived metrics (IoU drop,
compression, IRS), the finding texts and the recommendation's words.

Adding a probe to an experiment is one `ProbeSpec` line; switching the probe that decides an
information type is one edit of its row (`LOCATION`, `DETAIL_INFO`, `MOTION_INFO`): the verdicts,
figures, answer table and calibration all read the row. Stage patterns name the stages of every
model family; a pattern a model does not have is simply not part of its study.
"""

from __future__ import annotations

from dataclasses import replace

from stageprobe.datasets import DATA_FAMILIES
from stageprobe.probes.base import MOTION_TASKS
from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import DecisionRule, Target
from stageprobe.suites._spec import (
    DeriveInput,
    ExperimentSpec,
    InformationType,
    ProbeRead,
    ProbeSpec,
    Suite,
    thin_stages,
)
from stageprobe.suites.q2 import advice, findings
from stageprobe.suites.q2.derived import compression_rows, drop_rows, irs_rows, reference_rows

#: the probe family whose IoU decides the decision matrix and the Bbox IoU target: a token with its
#: 3×3 neighbourhood, which clears the 0.7 target on raw pixels at both the 14 px and the 28 px grid
#: (dense-linear, kept as the low-capacity floor, does not at 28 px: METHODOLOGY #13)
DECIDING_BOX_PROBE = "dense-context"
#: closed-form, full width, each token to its own cell's pixels: exact on pixels at every stride, so no
#: drop at the merge is invented by a bottleneck (METHODOLOGY #14)
RECONSTRUCTION_PROBE = "recon-linear"
#: reads motion between time steps at grid positions; the one temporal probe that reaches the targets
#: on raw pixels for camera motion over real photos as well as for moving shapes
MOTION_PROBE = "token-flow"

#: token shuffle only where the probe carries its own position code; `dense-linear` reads each
#: token's target at that token's raster position, so shuffling tokens and targets alike tells nothing
POSITIONAL_CONTROLS = ("control-task", "token-shuffle")

POOLED_BOXES = ProbeSpec("pooled-linear", "boxes", seed_protocol=True)
DENSE_BOXES = ProbeSpec("dense-linear", "boxes", controls=("control-task", "chance"))
#: the stages each experiment's verdict and decision matrix read (a VLM's merge pair, a ViT's first and last
#: stage): where the costly trained probes also fit their controls, so their capacity shows where it is used
VERDICT_STAGES = ("vision.embed", "vision.final", "vision.pre_merge", "vision.post_merge")
#: the stage a model's last-grid verdicts are judged at (a VLM's merged grid, a ViT's last stage)
JUDGED_STAGES = ("vision.post_merge", "vision.final")
CONTEXT_BOXES = ProbeSpec(DECIDING_BOX_PROBE, "boxes", controls=("control-task", "token-shuffle"),
                          control_stages=VERDICT_STAGES)
#: the deciding box probe; its 3×3 neighbourhood gives it a position code, so token shuffle tells
#: whether it reads position. On a 14 px grid it costs ~30 s a fit, so E-Q2.1 reads it only at the decision
#: pair's first stage (a ViT's first and last, a VLM's pre-merge: the fit E-Q2.2 then reuses) and its pixel
#: ceiling; dense-linear covers every block
EDGE_STAGES = ("vision.embed", "vision.final", "vision.pre_merge", "pixels.patch")
RELATION = ProbeSpec("relation", "relation", controls=POSITIONAL_CONTROLS)
POOLED_RELATION = ProbeSpec("relation-pooled", "relation", seed_protocol=True)

PATCH_STAGES = ("vision.patch_embed", "vision.embed", "vision.block.*", "vision.pre_merge", "vision.final",
                "pixels.patch")
MERGE_STAGES = ("vision.pre_merge", "vision.post_merge", "pixels.patch", "pixels.merged")
LANGUAGE_STAGES = ("language.layer.*",)
MOTION_STAGES = ("vision.post_merge", "pixels.merged", *LANGUAGE_STAGES)
MOTION_TABLE = ("direction_acc", "speed_acc", "order_acc", "path_error_px", "flow_angle_error_deg")
MOTION_PROBES = (
    tuple(ProbeSpec(MOTION_PROBE, task, controls=("control-task",)) for task in MOTION_TASKS)
    # token shuffle permutes tokens within each object's cells: clip targets have no object boxes
    + tuple(ProbeSpec("temporal-dense", task, controls=("control-task",), seeded=True) for task in MOTION_TASKS)
    + tuple(ProbeSpec("temporal", task, seed_protocol=True) for task in MOTION_TASKS))
DETAIL_STAGES = ("vision.*", "pixels.*", *LANGUAGE_STAGES)
DETAIL_PROBES = (
    ProbeSpec(RECONSTRUCTION_PROBE, "reconstruction", controls=("control-task",), control_stages=VERDICT_STAGES),
    # the nonlinear variant, where it adds information: either side of the merge
    ProbeSpec("decoder", "reconstruction", seeded=True, stages=MERGE_STAGES),
    ProbeSpec("decoder-pooled", "reconstruction", seed_protocol=True, seeded=True, stages=MERGE_STAGES),
)
DETAIL_TABLE = ("lpips", "ssim", "psnr", "edge_f1", "gram_gabor", "irs")
BOX_TABLE = ("iou", "iou_gt_0.5", "iou_gt_0.7", "relation_acc", "patch_class_balanced_acc", "patch_class_acc")

PRE_MERGE, POST_MERGE, LANGUAGE, DETECTION, DETAIL, MOTION = (f"e_q2_{i}" for i in range(1, 7))
#: E-Q2.5 on real photos (`--data photos=…`), reported apart from the procedural textures the
#: detail targets are judged on
PHOTOS = "e_q2_5_photos"
#: E-Q2.6 on natural images: a crop window panning and zooming across real photos (`--data camera=…`)
CAMERA = "e_q2_6_camera"
SPATIAL_EXPERIMENTS = (POST_MERGE, PRE_MERGE, LANGUAGE)

LOCATION = InformationType(
    "location", "Location", "where objects are", "spatial", DECIDING_BOX_PROBE, (("boxes", "iou"),),
    targets=(Target("bbox_iou", "iou", "Bbox IoU", "Can we locate objects?", 0.7, "bbox_iou_threshold",
                    experiments=SPATIAL_EXPERIMENTS),
             Target("relation_acc", "relation_acc", "Relative position Acc",
                    "Which object is left of / above the other?", 0.9, "relative_position_acc_threshold",
                    "relation", (POST_MERGE, PRE_MERGE)),
             Target("map_50", "map_50", "mAP@0.5", "Detection accuracy", 0.4, "mAP_threshold", "attention",
                    (DETECTION,))),
    secondary=(ProbeRead("dense-linear", "boxes", "iou"), ProbeRead("relation", "relation", "relation_acc"),
               ProbeRead("attention", "boxes", "map_50", calibrate=False),
               ProbeRead("pooled-linear", "boxes", "iou")),
    # `none` (nothing planted) is read with this row's probes: the cheapest full check
    plants=("erase-position", "scramble-position", "none"))
DETAIL_INFO = InformationType(
    "detail", "Detail", "appearance, edges, texture", "detail", RECONSTRUCTION_PROBE,
    (("reconstruction", "edge_f1"), ("reconstruction", "ssim"), ("reconstruction", "lpips")),
    targets=(Target("lpips", "lpips", "LPIPS", "Reconstruction quality (perceptual distance)", 0.3,
                    "lpips_threshold"),
             Target("edge_f1", "edge_f1", "Edge F1", "Are boundaries preserved?", 0.6, "edge_f1_threshold"),
             Target("irs", "irs", "IRS", "Information Retention Score (IoU, LPIPS, edge F1)", 0.6,
                    "irs_threshold")),
    secondary=(ProbeRead("decoder", "reconstruction", "edge_f1", calibrate=False),),
    plot_metrics=("lpips", "edge_f1", "ssim"),
    plants=("blur-detail",))
MOTION_INFO = InformationType(
    "motion", "Motion", "direction, speed, order", "motion", MOTION_PROBE,
    tuple((task, f"{task}_acc") for task in MOTION_TASKS),
    targets=(Target("direction_acc", "direction_acc", "Direction Acc", "Motion direction", 0.8,
                    "direction_acc_threshold"),
             Target("speed_acc", "speed_acc", "Speed Acc", "Motion speed", 0.75, "speed_acc_threshold"),
             Target("order_acc", "order_acc", "Order Acc", "Temporal ordering", 0.75, "order_acc_threshold")),
    secondary=tuple(ProbeRead("temporal-dense", task, f"{task}_acc", calibrate=False) for task in MOTION_TASKS),
    plants=("erase-time",))
INFORMATION = (LOCATION, DETAIL_INFO, MOTION_INFO)

DECISION = DecisionRule(information=LOCATION.name, metric=LOCATION.metric, probe=LOCATION.probe,
                        experiments=SPATIAL_EXPERIMENTS, threshold=0.7, drop_metric="iou_drop",
                        fallback_probe="pooled-linear", excess_metric="iou_excess_drop")


def _derive_merge(inputs: DeriveInput) -> list[MetricRow]:
    return drop_rows(inputs, DECISION) + compression_rows(inputs)


def _derive_detail(inputs: DeriveInput) -> list[MetricRow]:
    return (irs_rows(inputs, DECIDING_BOX_PROBE, SPATIAL_EXPERIMENTS, RECONSTRUCTION_PROBE)
            + reference_rows(inputs))


EXPERIMENTS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(PRE_MERGE, "Pre-merge ViT analysis", "spatial", PATCH_STAGES,
                   (POOLED_BOXES, DENSE_BOXES, replace(CONTEXT_BOXES, stages=EDGE_STAGES), RELATION,
                    POOLED_RELATION), skip_metrics=("map",),
                   table_metrics=BOX_TABLE, finding=findings.pre_merge, label="E-Q2.1",
                   read_at=("vision.pre_merge", "vision.final", "pixels.patch")),
    ExperimentSpec(POST_MERGE, "Post-merge analysis", "spatial", MERGE_STAGES,
                   (POOLED_BOXES, DENSE_BOXES, CONTEXT_BOXES, RELATION, POOLED_RELATION), skip_metrics=("map",),
                   table_metrics=(*BOX_TABLE, "iou_drop", "iou_excess_drop", "compression_ratio", "width_ratio"),
                   reads=(PRE_MERGE,), derive=_derive_merge, finding=findings.post_merge, label="E-Q2.2"),
    ExperimentSpec(LANGUAGE, "LLM layer-wise decay", "spatial", LANGUAGE_STAGES,
                   (POOLED_BOXES, DENSE_BOXES, CONTEXT_BOXES),
                   skip_metrics=("map",), table_metrics=("iou",), finding=findings.language_decay, label="E-Q2.3",
                   # where the decay ends: the deepest LLM layer read
                   read_at=("language.layer.*",)),
    ExperimentSpec(DETECTION, "Detection probe (mAP)", "spatial",
                   ("vision.pre_merge", "vision.post_merge", "vision.final", "pixels.merged", *LANGUAGE_STAGES),
                   (ProbeSpec("attention", "boxes", controls=POSITIONAL_CONTROLS, seeded=True,
                              control_stages=JUDGED_STAGES),),
                   max_language_layers=4, table_metrics=("map_50", "map_75", "map", "map_small", "best_match_iou"),
                   finding=findings.detection, label="E-Q2.4"),
    ExperimentSpec(DETAIL, "Fine-grained detail probe", "detail", DETAIL_STAGES, DETAIL_PROBES,
                   max_language_layers=3, table_metrics=DETAIL_TABLE, reads=SPATIAL_EXPERIMENTS,
                   derive=_derive_detail, finding=findings.detail, label="E-Q2.5"),
    # the deciding reconstruction probe only: the conv decoders' nonlinear variant is read on E-Q2.5's data
    ExperimentSpec(PHOTOS, "Fine-grained detail on real photos", "photos", DETAIL_STAGES, DETAIL_PROBES[:1],
                   max_language_layers=3, table_metrics=DETAIL_TABLE, reads=SPATIAL_EXPERIMENTS,
                   derive=_derive_detail, finding=findings.detail_photos, label="E-Q2.5 (photos)"),
    ExperimentSpec(MOTION, "Temporal information probe", "motion", MOTION_STAGES, MOTION_PROBES,
                   table_metrics=MOTION_TABLE, finding=findings.motion, label="E-Q2.6"),
    ExperimentSpec(CAMERA, "Temporal probe on camera motion over real photos", "camera", MOTION_STAGES,
                   MOTION_PROBES, table_metrics=MOTION_TABLE, finding=findings.camera_motion,
                   label="E-Q2.6 (camera)"),
)

SUITE = Suite(
    name="q2",
    title="Q2: Information Preservation - Findings",
    question=("How much spatial, perceptual and temporal information survives at each stage of the VLM "
              "pipeline — patch embedding, ViT blocks, the connector (a token merger, pool, pixel shuffle or "
              "projector), LLM layers? Where does it get "
              "lost, and where should features be extracted from?"),
    claim=("Spatial, perceptual and temporal information survive each stage of the VLM pipeline "
           "(patch embedding, ViT blocks, the connector, LLM layers) well enough to extract "
           "features for video generation."),
    experiments=EXPERIMENTS,
    information=INFORMATION,
    decision=DECISION,
    data=DATA_FAMILIES,  # type: ignore[arg-type]
    advise=advice.recommend,
    answer=advice.answer,
    sizes={"quick": {"spatial": 160, "detail": 48, "photos": 32, "motion": 64, "camera": 64},
           "default": {"spatial": 600, "detail": 160, "photos": 120, "motion": 400, "camera": 200},
           "full": {"spatial": 2000, "detail": 600, "photos": 300, "motion": 1200, "camera": 600}},
    #: `--quick` reads a few evenly spaced blocks and layers: a smoke test of every code path
    quick_stage_limits={"vision.block.": 3, "language.layer.": 2},
    #: ... and trains the gradient-trained probes for fewer epochs (their numbers are then a floor)
    #: (the deciding box probe keeps its 30 epochs: with 10 its pixel ceiling fell from 0.82 to 0.57 at 14 px)
    quick_probe_options={"decoder": {"epochs": 5}, "decoder-pooled": {"epochs": 5}, "attention": {"epochs": 10}},
    #: ... and fits the deciding box probe's controls only where the verdict is read (its three fits on the
    #: 14-px grid of 448-px images were a tenth of a quick run's fitting)
    quick_control_stages={DECIDING_BOX_PROBE: JUDGED_STAGES},
    #: the probes whose values decide verdicts and the decision matrix, refitted over probe seeds at the
    #: stages they decide at and their pixel ceilings (recon-linear is closed-form ridge: its seed only picks
    #: the sample of pixel columns its λ is chosen on)
    deciding_probes=(DECIDING_BOX_PROBE, "attention", MOTION_PROBE),
    deciding_stages=(*VERDICT_STAGES, "pixels.patch", "pixels.merged"),
    deciding_seeds={"quick": 1, "default": 3, "full": 3},
    notes=("Token shuffle is not run for dense-linear and recon-linear: each reads a token's target at that "
           "token's own raster position, so shuffling tokens changes nothing it could tell apart; it is run for "
           "the probes that carry their own position code (dense-context's 3×3 neighbourhood, relation, "
           "attention), permuting tokens only within each object's cells (a full permutation with the targets "
           "left in place collapses on raw pixels as on any model, so it could not tell them apart); clips have "
           "no object cells, so temporal-dense has the control task only.",
           "dense-context and recon-linear fit their control task at the stages verdicts are read at (the connector "
           "pair; a ViT's first and last stage), the attention probe at the stage mAP is judged at "
           "(vision.post_merge, a ViT's vision.final), not at every stage. A --verdict-stage elsewhere has no "
           "control rows there. A --quick run fits dense-context's controls at vision.post_merge (a ViT's "
           "vision.final) only.",
           "token-flow reads motion inside and between tokens; token shuffle does not hide motion within a "
           "token, so its control is the control task only.",
           "Reference rows (variant `reference`) score known degradations of the detail test images — identity, "
           "Gaussian blur σ = 1, 2, 4 px, 2× down-up, the constant mean image — with every reconstruction "
           "metric, so each metric's scale is visible (METHODOLOGY #15).",
           "The deciding probes (dense-context, attention, token-flow) are refitted over probe seeds at the stages "
           "their verdicts and the decision matrix read and at the pixel ceilings (3 seeds at the default size, 1 "
           "with --quick, --seeds N to change): their values are the mean over seeds and their CIs resample seeds "
           "and test images together (mAP included). Their controls there are fitted over the same seeds, and "
           "selectivity pairs each seed's task fit with that seed's control-task fit: a single control fit moved "
           "by more than its image-only CI half-width under a float-rounding change (attention, measured; see "
           "benchmarks/README.md)."),
)

#: every target, judged with its row's deciding probe on its row's data unless it names its own
TARGETS = SUITE.targets

__all__ = ["EXPERIMENTS", "INFORMATION", "SUITE", "TARGETS", "ExperimentSpec", "ProbeSpec", "thin_stages"]
