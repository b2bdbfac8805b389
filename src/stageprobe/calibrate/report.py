"""The calibration's outputs: a `calibration` dict for results.yaml and a markdown section."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from stageprobe._atomic import write_text_atomic
from stageprobe.metrics._catalog import label as metric_label
from stageprobe.stats import MDE_ALPHA, MDE_POWER, BootstrapCI

if TYPE_CHECKING:
    from stageprobe.calibrate.engine import Calibration, CheckOutcome, PlantOutcome



def _ci(ci: BootstrapCI) -> dict[str, float]:
    return {"estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}


def _check_dict(outcome: CheckOutcome, plant_stage: str) -> dict[str, Any]:
    check = outcome.check
    return {
        "probe": check.probe, "task": check.task, "metric": check.metric,
        "role": "deciding" if check.primary else "secondary (shown beside)",
        "found_at": outcome.found_at,
        "drop_at_plant": _ci(outcome.stage_drop[plant_stage]) if plant_stage in outcome.stage_drop else None,
        "loss_vs_reference_at_plant": _ci(outcome.loss_vs_reference[plant_stage]),
        "earlier_stages_unchanged": outcome.earlier_unchanged,
        "stays_down": outcome.stays_down,
        "verdict": outcome.verdict,
        "stages": [{"stage": s, "reference": outcome.reference[s], "planted": _ci(outcome.planted_ci[s]),
                    "loss_vs_reference": _ci(outcome.loss_vs_reference[s]),
                    "drop_from_previous": _ci(outcome.stage_drop[s]) if s in outcome.stage_drop else None}
                   for s in outcome.stages],
    }


def calibration_dict(calibration: Calibration) -> dict[str, Any]:
    """Plain data (str, float, bool, lists, dicts) for the `calibration` key of results.yaml."""
    return {
        "model": calibration.model,
        "size": calibration.size,
        "verdict": "PASS" if all(p.verdict == "PASS" for p in calibration.plants) else "FAIL",
        "plants": [{"plant": p.plant.label, "type": p.plant.type.name, "stage": p.plant.stage,
                    "information": p.information, "dataset": p.dataset, "verdict": p.verdict,
                    "checks": [_check_dict(c, p.plant.stage) for c in p.checks],
                    **({"unavailable": dict(p.unavailable)} if p.unavailable else {})} for p in calibration.plants],
        "detectable_drop": {info: {key: {"n_test": d.n_test, "drop": d.drop, "family": d.family, "dataset": d.dataset,
                                         "stages": dict(d.stages), "alpha": MDE_ALPHA, "power": MDE_POWER}
                                   for key, d in table.items()}
                            for info, table in calibration.detectable.items()},
    }


def _fmt(ci: BootstrapCI) -> str:
    return f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def _words(metric: str) -> str:
    return metric_label(metric)


def _rows(plant: PlantOutcome) -> list[str]:
    rows = []
    for c in plant.checks:
        drop = c.stage_drop.get(plant.plant.stage)
        reference_plant = plant.plant.type.name == "none"
        verdict = c.verdict if c.check.primary else (
            "—" if reference_plant else "sees it" if c.found_at == plant.plant.stage else "blind")
        stays_down = "—" if reference_plant else "yes" if c.stays_down else "no"
        rows.append(
            f"| `{plant.plant.label}` | {c.check.probe} · {_words(c.check.metric)} | {c.found_at or '—'} | "
            f"{_fmt(drop) if drop else '—'} | {_fmt(c.loss_vs_reference[plant.plant.stage])} | "
            f"{'yes' if c.earlier_unchanged else '**no**'} | {stays_down} | {verdict} |")
    return rows


def _failure_reason(plant: PlantOutcome, c: CheckOutcome) -> str:
    """Why one primary check failed, and what that means for reading the study."""
    stage, metric, info = plant.plant.stage, _words(c.check.metric), plant.information
    if plant.plant.type.name == "none":
        return ("the identity plant changed the scores, so the token-order conversion at this stage is wrong; "
                "no plant result at this stage can be trusted.")
    if not c.earlier_unchanged:
        return (f"stages before {stage} changed, so the plant reached upstream of where it was placed — a hook "
                "bug, not a property of the model; no calibration result of this model can be trusted.")
    if c.found_at != stage:
        where = f"first found at {c.found_at}" if c.found_at else "not found at any stage"
        return (f"the {info} loss planted at {stage} was {where}. On this model this probe is blind to that loss "
                f"there: do not read a flat {metric} curve at or after {stage} as \"{info} kept\".")
    return (f"the loss was found at {stage} but a later stage climbs back: the probe recovers it downstream, so a "
            f"later rise of {metric} does not show that earlier stages kept {info}.")


def _failures(calibration: Calibration) -> list[str]:
    lines = []
    for plant in calibration.plants:
        for c in plant.checks:
            label = f"`{plant.plant.label}` · {c.check.probe} {_words(c.check.metric)}"
            if c.check.primary and c.verdict == "FAIL":
                lines.append(f"- **FAIL** {label}: {_failure_reason(plant, c)}")
            elif not c.check.primary and c.found_at != plant.plant.stage and plant.plant.type.name != "none":
                lines.append(f"- {label} (secondary, does not decide) does not see this loss at its stage.")
        lines += [f"- `{plant.plant.label}` · {key}: not read ({why})" for key, why in plant.unavailable.items()]
    return lines


def calibration_markdown(calibration: Calibration) -> str:
    """The report section: the plant table, what failed and why, and the detectable drops."""
    overall = "PASS" if all(p.verdict == "PASS" for p in calibration.plants) else "FAIL"
    lines = [
        "## Calibration", "",
        f"Known losses planted in `{calibration.model}` ({calibration.size} size), one stage at a time. Each must be "
        "found at its stage (planted curve drops against the stage before it, paired 95 % bootstrap CI above 0, by "
        "more than the unplanted curve drops there), leave earlier stages unchanged, and stay down after. "
        f"Overall: **{overall}**.", "",
        "| plant | probe · metric | first drop found at | drop at plant (k−1 − k) | loss vs unplanted at plant "
        "| earlier unchanged | stays down | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for plant in calibration.plants:
        lines += _rows(plant)
    failures = _failures(calibration)
    if failures:
        lines += ["", *failures]
    lines += ["", "**Minimum detectable effect** (α = 0.05, 80 % power: 2.8 × the standard error of the paired "
              "difference, largest over neighbouring stages of the unplanted model):", ""]
    for info, table in calibration.detectable.items():
        for key, d in table.items():
            probe, metric = key.split("/", 1)
            lines.append(f"- {info} ({d.dataset}): with {d.n_test} test items, {_words(metric)} drops ≥ {d.drop:.3f} "
                         f"are detectable with 80 % power ({probe}).")
    return "\n".join(lines) + "\n"


def write_calibration(calibration: Calibration, out: Path) -> tuple[Path, Path]:
    """`out/calibration.yaml` ({"calibration": …}, the results.yaml key) and `out/CALIBRATION.md`."""
    out.mkdir(parents=True, exist_ok=True)
    data, markdown = out / "calibration.yaml", out / "CALIBRATION.md"
    write_text_atomic(data, yaml.safe_dump({"calibration": calibration_dict(calibration)}, sort_keys=False))
    write_text_atomic(markdown, calibration_markdown(calibration))
    return data, markdown
