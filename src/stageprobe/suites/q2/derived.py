"""Q2's derived metrics, each from measured values with its own CI: the IoU drop across the merge
(paired bootstrap), the compression of the merge (tokens and width), and the IRS (METHODOLOGY #7)."""

from __future__ import annotations

import numpy as np

from stageprobe.metrics.base import MetricValue
from stageprobe.metrics.degradations import reference_scores
from stageprobe.metrics.irs import irs
from stageprobe.report._paired import excess_drop
from stageprobe.report.schema import CONNECTOR_PAIRS, MetricRow, sort_stages
from stageprobe.report.verdicts import DecisionRule
from stageprobe.stats import bootstrap_ci, paired_bootstrap_diff
from stageprobe.suites._spec import DeriveInput, Scores
from stageprobe.suites.workers import image_array


def _pooled_scores(inputs: DeriveInput, experiments: tuple[str, ...]) -> Scores:
    """Per-image scores of the given experiments, the first experiment winning a shared key."""
    found: Scores = {}
    for experiment in experiments:
        for key, values in inputs.scores.get(experiment, {}).items():
            found.setdefault(key, values)
    return found


def _pair_of(stages: list[str], rule: DecisionRule) -> tuple[str, str] | None:
    for pre, post in rule.pairs:
        if pre in stages and post in stages:
            return pre, post
    return (stages[0], stages[-1]) if len(stages) >= 2 else None


def drop_rows(inputs: DeriveInput, rule: DecisionRule) -> list[MetricRow]:
    """The deciding probe's metric before − after, paired over the same test images, on the model
    and on the pixel baseline (whose drop is what the coarser grid alone costs)."""
    scores = _pooled_scores(inputs, rule.experiments)
    rows = []
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for variant in ("model", "pixels"):
        stages = sort_stages({stage for (v, stage, probe, metric) in scores
                              if v == variant and probe == rule.probe and metric == rule.metric})
        if variant == "pixels":
            stages = [s for s in ("pixels.patch", "pixels.merged") if s in stages]
        pair = _pair_of(stages, rule)
        if pair is None:
            continue
        pre, post = (scores[(variant, s, rule.probe, rule.metric)] for s in pair)
        pairs[variant] = pre, post
        ci = paired_bootstrap_diff(pre, post, inputs.n_bootstrap, inputs.seed)
        rows.append(MetricRow(
            experiment=inputs.experiment, stage=pair[1], probe=rule.probe, metric=rule.drop_metric,
            value=ci.estimate, ci_low=ci.low, ci_high=ci.high, n=ci.n, variant=variant,  # type: ignore[arg-type]
            model=inputs.model if variant == "model" else "pixels",
            note=f"{rule.metric}({pair[0]}) − {rule.metric}({pair[1]}), paired bootstrap over test images"))
    return rows + _excess_rows(inputs, rule, pairs, rows)


def _excess_rows(inputs: DeriveInput, rule: DecisionRule, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                 drops: list[MetricRow]) -> list[MetricRow]:
    """The model's drop minus the pixel pair's, paired over the same test images (METHODOLOGY #20)."""
    if rule.excess_metric is None or set(pairs) != {"model", "pixels"}:
        return []
    if pairs["model"][0].shape != pairs["pixels"][0].shape:
        return []  # not the same test images: no pairing
    ci = excess_drop(*pairs["model"], *pairs["pixels"], inputs.n_bootstrap, inputs.seed)
    model_drop = next(r for r in drops if r.variant == "model")
    return [MetricRow(experiment=inputs.experiment, stage=model_drop.stage, probe=rule.probe,
                      metric=rule.excess_metric, value=ci.estimate, ci_low=ci.low, ci_high=ci.high, n=ci.n,
                      model=inputs.model, note="model drop − pixel-pair drop, difference in differences paired "
                                               "over the same test images")]


def compression_rows(inputs: DeriveInput) -> list[MetricRow]:
    """Tokens before ÷ after the merge (the model's connector), and the width after ÷ before (e.g. 4×1280 → 3584)."""
    pair = next(((a, b) for a, b in CONNECTOR_PAIRS if a in inputs.stages and b in inputs.stages), None)
    if pair is None:
        return []
    pre, post = pair
    a, b = inputs.stages[pre], inputs.stages[post]
    common = {"experiment": inputs.experiment, "stage": post, "probe": "geometry", "n": 1, "model": inputs.model}
    return [
        MetricRow(metric="compression_ratio", value=a.tokens / b.tokens,
                  note=f"tokens: {a.tokens} before ÷ {b.tokens} after the connector", **common),
        MetricRow(metric="width_ratio", value=b.dim / a.dim,
                  note=f"width: {a.tokens // b.tokens}×{a.dim} → {b.dim} per merged token", **common),
    ]


def _mean(values: np.ndarray | None) -> float | None:
    if values is None or not np.isfinite(values).any():
        return None
    return float(np.nanmean(values))


def _row_means(values: np.ndarray) -> np.ndarray:
    """Each row's mean over its finite values; NaN for a row with none, which `nanquantile` then drops (a
    bootstrap draw of only edgeless references has no edge F1), without numpy's empty-slice warning."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(values), np.nan), where=counts > 0)


def _resampled_means(values: np.ndarray, rng: np.random.Generator, draws: int) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(draws, len(values)))
    return _row_means(values[picks])


def irs_rows(inputs: DeriveInput, box_probe: str, box_experiments: tuple[str, ...],
             recon_probe: str) -> list[MetricRow]:
    """IRS per stage from that stage's own IoU (box probe, shapes data), LPIPS and edge F1
    (reconstruction probe, detail data). Its CI resamples both test sets in every draw."""
    boxes = _pooled_scores(inputs, box_experiments)
    recon = inputs.scores.get(inputs.experiment, {})
    out = []
    for variant, stage in sorted({(v, s) for (v, s, p, _) in recon if p == recon_probe and v in ("model", "pixels")}):
        iou = boxes.get((variant, stage, box_probe, "iou"))
        lpips = recon.get((variant, stage, recon_probe, "lpips"))
        edge = recon.get((variant, stage, recon_probe, "edge_f1"))
        parts = [MetricValue("iou", v) if (v := _mean(iou)) is not None
                 else MetricValue.unavailable("iou", f"no {box_probe} IoU measured at this stage"),
                 MetricValue("lpips", v) if (v := _mean(lpips)) is not None
                 else MetricValue.unavailable("lpips", "not measured at this stage"),
                 MetricValue("edge_f1", v) if (v := _mean(edge)) is not None
                 else MetricValue.unavailable("edge_f1", "not measured at this stage")]
        score = irs(*parts)
        low = high = None
        n_images = int(np.isfinite(edge).sum()) if score.value is not None and edge is not None else 0
        if score.value is not None:
            assert iou is not None and lpips is not None and edge is not None
            rng = np.random.default_rng(inputs.seed)
            draws = inputs.n_bootstrap
            picks = rng.integers(0, len(lpips), size=(draws, len(lpips)))
            stats = (0.4 * _resampled_means(iou, rng, draws) / 0.85
                     + 0.3 * (1 - _row_means(lpips[picks])) / 0.7
                     + 0.3 * _row_means(edge[picks]) / 0.8)
            low, high = (float(q) for q in np.nanquantile(stats, [0.025, 0.975]))
        out.append(MetricRow(
            experiment=inputs.experiment, stage=stage, probe=recon_probe, metric="irs", value=score.value,
            ci_low=low, ci_high=high, n=n_images,
            variant=variant, model=inputs.model if variant == "model" else "pixels",  # type: ignore[arg-type]
            unavailable_reason=score.reason,
            note=(f"0.4·IoU/0.85 + 0.3·(1−LPIPS)/0.7 + 0.3·EdgeF1/0.8; IoU from {box_probe} on the spatial data "
                  f"({', '.join(box_experiments)}), LPIPS and edge F1 from {recon_probe} on the detail data; "
                  "CI resamples both test sets")))
    return out


def reference_rows(inputs: DeriveInput) -> list[MetricRow]:
    """Known degradations of the detail test images scored with every reconstruction metric, as rows
    of stage `reference.<name>` (variant `reference`): what identity, a σ = 4 px blur or a flat image
    scores on the same images, so a stage's value can be read on each metric's own scale."""
    if inputs.dataset is None:
        return []
    test = [sample for sample in inputs.dataset.split_samples("test") if sample.image is not None]
    if not test:
        return []
    rows = []
    for name, (scores, unavailable) in reference_scores(image_array(test)).items():
        common = {"experiment": inputs.experiment, "stage": f"reference.{name}", "probe": "reference",
                  "variant": "reference", "model": "reference"}
        for metric, values in scores.items():
            if not np.isfinite(values).any():
                # e.g. PSNR of an image with itself is infinite: said so, never a stand-in number
                reason = "not finite on any test image" + (" (identical images)" if name == "identity" else "")
                rows.append(MetricRow(metric=metric, value=None, n=0, unavailable_reason=reason, **common))
                continue
            ci = bootstrap_ci(values, inputs.n_bootstrap, inputs.seed)
            excluded = int((~np.isfinite(values)).sum())
            note = f"{excluded} of {len(values)} test images excluded (no edges in the reference)" if excluded else ""
            rows.append(MetricRow(metric=metric, value=_mean(values), ci_low=ci.low, ci_high=ci.high, n=ci.n,
                                  note=note, **common))
        rows += [MetricRow(metric=metric, value=None, n=len(test), unavailable_reason=reason, **common)
                 for metric, reason in unavailable.items()]
    return rows
