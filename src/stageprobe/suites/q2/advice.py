"""Q2's words for the decision: the recommendation (the seed's PIVOT wording included) and the
answer's paragraphs about where object location is lost."""

from __future__ import annotations

from collections.abc import Sequence

from stageprobe.report.answer import connector_compression, connector_name, paired_detectable
from stageprobe.report.fmt import fmt_row, fmt_target
from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import Advice, Decision

SEED_PIVOT_WORDING = "PIVOT - Use hybrid approach with dedicated spatial models"


def recommend(decision: Decision, weights_random: bool, protocol: str) -> Advice:
    """Turn the decision matrix into proceed / pivot / investigate / block, with the reason.

    The seed's PIVOT only when the deciding probe clears the target on pixels at the same grid,
    the model's stage does not, and its CI lies below the target.
    """
    caveat = (" The model's weights are random, so this describes the architecture and the probes, "
              "not a trained model.") if weights_random else ""
    if decision.colour == "UNAVAILABLE":
        return Advice("block", "BLOCK - decision matrix cannot be computed",
                      f"Decision matrix unavailable: {decision.reason}.{caveat}", (decision.reason,))
    base = f"Decision matrix {decision.colour}: {decision.reason}."
    if decision.pooled_only or protocol == "seed":
        return Advice("investigate", "INVESTIGATE - pooled probes cannot measure location",
                      base + " These values come from mean-pooled probes (seed protocol, defect 1), which "
                      "cannot localise even on raw pixels; rerun with the stageprobe protocol before deciding."
                      + caveat)
    if decision.ceiling_problem is not None:
        return Advice("investigate", "INVESTIGATE - the deciding probe has no pixel ceiling that clears the target",
                      base + f" {decision.ceiling_problem[0].upper()}{decision.ceiling_problem[1:]}; a low score "
                      "would be a limit of the probe, not evidence about the model." + caveat)
    if not decision.conclusive:
        return Advice("investigate", "INVESTIGATE - confidence interval does not settle the colour",
                      base + " The 95 % CI (or the paired drop's CI) does not settle it; evaluate on more test "
                      "items." + caveat)
    assert decision.pre is not None and decision.post is not None
    if decision.colour == "GREEN":
        return Advice("proceed", f"PROCEED - location is kept at {decision.post.stage}",
                      base + f" Spatial features can be taken from {decision.post.stage}." + caveat)
    if decision.colour == "YELLOW":
        return Advice("investigate", f"INVESTIGATE - take {decision.pre.stage} features for spatial needs",
                      base + f" Use {decision.pre.stage} features for spatial needs; location is lost between "
                      f"{decision.pre.stage} and {decision.post.stage}." + caveat)
    return Advice("pivot", SEED_PIVOT_WORDING,
                  base + " The same probe clears the target on raw pixels at this grid, so location is not "
                  "recoverable from these features; add a dedicated spatial model (detector or grounding "
                  "model)." + caveat)


def answer(decision: Decision, rows: Sequence[MetricRow]) -> list[str]:
    """The answer's paragraphs: where object location is lost, the paired drop and its excess over the pixel
    pair's, what the probe cannot judge."""
    post_stage = decision.post.stage if decision.post is not None else None
    across = connector_name(rows, post_stage)
    # a projector keeps the grid (one token in, one out): there is no coarser grid to compare with
    grid = "the same grid" if connector_compression(rows, post_stage) == 1 else "its coarser grid"
    spatial = {"GREEN": "**Object location survives to the stage the decision reads.**",
               "YELLOW": _yellow_words(decision, across, grid),
               "RED": "**Object location is already weak at the first stage the decision reads.**",
               "UNAVAILABLE": "**Where object location is lost could not be decided.**"}[decision.colour]
    paragraphs = [f"{spatial} {decision.reason[0].upper()}{decision.reason[1:]}."]
    if decision.drop is not None:
        paragraphs.append(f"Drop across {across}: {fmt_row(decision.drop)} "
                          f"({paired_detectable(decision.drop)}: the minimum detectable effect at a two-sided "
                          "5 % level, from the paired drop's standard error).")
    if decision.excess is not None:
        paragraphs.append(f"Excess drop beyond the pixel pair's (what {across} loses that raw pixels on {grid} "
                          f"do not; difference in differences over the same test images): "
                          f"{fmt_row(decision.excess)}: {_excess_words(decision.excess, across, grid)}.")
    kept = _kept_against_ceiling(decision, across)
    if kept:
        paragraphs.append(kept)
    if decision.ceiling_problem:
        paragraphs.append(f"**The deciding probe cannot judge this:** {decision.ceiling_problem}.")
    if decision.pooled_only:
        paragraphs.append("These are pooled-probe numbers (seed protocol): they cannot show location.")
    return paragraphs


def _yellow_words(decision: Decision, across: str, grid: str) -> str:
    """Above the target before the connector, below it after: lost in the connector only where the excess
    drop over the pixel pair says so; otherwise the drop is the output grid's own cost."""
    excess = decision.excess
    if excess is None or (excess.ci_low is not None and excess.ci_low > 0):
        return f"**Object location is present before {across} but lost across it.**"
    return (f"**Object location is above the target before {across} and below it after, but raw pixels on {grid} "
            f"drop at least as much: the drop is not shown to be a loss of {across} itself.**")


def _excess_words(excess: MetricRow, across: str, grid: str) -> str:
    """What the excess drop's CI says about the connector itself, beside what its output `grid` costs pixels."""
    if excess.ci_low is not None and excess.ci_low > 0:
        return f"{across} loses location beyond what {grid} costs raw pixels"
    if excess.ci_high is not None and excess.ci_high < 0:
        return f"{across} loses less location than raw pixels lose on {grid}, so it is not where location is lost"
    return f"{across} loses no more location than raw pixels lose on {grid}, within the CI"


def _kept_against_ceiling(decision: Decision, across: str) -> str:
    """Where the target is out of reach on the connector's output grid even for raw pixels (a pool's coarser
    cells): how much of that grid's pixel ceiling the output keeps, the number the absolute target cannot give."""
    post, ceiling = decision.post, decision.post_ceiling
    if (post is None or ceiling is None or post.value is None or ceiling.value is None or ceiling.value <= 0
            or ceiling.value > decision.target):
        return ""
    return (f"On the output grid of {across} the {fmt_target(decision.target)} target is out of reach even for raw "
            f"pixels ({fmt_row(ceiling)} at {ceiling.stage}); {post.stage} keeps {fmt_row(post)}, "
            f"{post.value / ceiling.value:.0%} of that ceiling.")
