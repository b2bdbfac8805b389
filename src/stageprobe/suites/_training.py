"""Trained − random-init twin, per stage, paired over the same test images (issue 27): what learning
did to each information type, read with the targets' deciding probes wherever both were measured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stageprobe.report.schema import TRAINING_EFFECT, MetricRow
from stageprobe.report.verdicts import Target
from stageprobe.stats import paired_bootstrap_diff
from stageprobe.suites._spec import Scores


def training_effect_rows(experiment: str, scores: Scores, targets: Sequence[Target], model: str,
                         n_bootstrap: int, seed: int) -> list[MetricRow]:
    """One row per stage where the model and its random-init twin were scored by a target's deciding
    probe on the same test images: trained − twin, in the metric's own direction, with its paired CI."""
    wanted = {(t.probe, t.metric) for t in targets if experiment in t.experiments}
    rows = []
    for (variant, stage, probe, metric), trained in scores.items():
        twin = scores.get(("random-init", stage, probe, metric))
        if variant != "model" or (probe, metric) not in wanted or twin is None or twin.shape != trained.shape:
            continue
        if not (np.isfinite(trained) & np.isfinite(twin)).any():
            continue
        ci = paired_bootstrap_diff(trained, twin, n_bootstrap, seed)
        rows.append(MetricRow(
            experiment=experiment, stage=stage, probe=probe, metric=metric, value=ci.estimate, ci_low=ci.low,
            ci_high=ci.high, n=ci.n, control=TRAINING_EFFECT, model=model,
            note=f"trained {float(np.nanmean(trained)):.4f} − random-init twin {float(np.nanmean(twin)):.4f}, "
                 f"paired over the same {ci.n} test images"))
    return rows
