"""Probe results → metric rows: pure functions (no files, no models), so they can be tested alone
and reused by anything that fits the study's probes (e.g. calibration).

A fit may have been repeated with several probe seeds (`--seeds N`): its value is the mean over
seeds, its CI resamples seeds and test images together, and the row's note gives the spread.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stageprobe.metrics._catalog import higher_is_better, metric_info, report_name
from stageprobe.probes import ProbeResult
from stageprobe.report.schema import MetricRow
from stageprobe.report.verdicts import VALIDATION
from stageprobe.stats import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_map_cis,
    seeded_bootstrap_ci,
    seeded_map_cis,
)


@dataclass(frozen=True)
class FitLabel:
    """Where a fit's rows go: experiment, stage, probe, the model variant and its name, the control."""

    experiment: str
    stage: str
    probe: str
    variant: str
    model: str
    control: str = "none"

    def row(self, metric: str, **values: object) -> MetricRow:
        return MetricRow(experiment=self.experiment, stage=self.stage, probe=self.probe, metric=metric,
                         control=self.control, variant=self.variant, model=self.model,  # type: ignore[arg-type]
                         **values)


def _kept(name: str, skip: Sequence[str]) -> bool:
    return not name.startswith(tuple(skip))


def seeded_ci(per_seed: Sequence[np.ndarray], n_bootstrap: int, seed: int,
              groups: Sequence[str] | None = None) -> tuple[float, float, float]:
    """(estimate, low, high) of the mean score over probe seeds: `stats.seeded_bootstrap_ci`."""
    ci = seeded_bootstrap_ci(per_seed, n_bootstrap, seed, groups=groups)
    return ci.estimate, ci.low, ci.high


def source_groups(groups: Sequence[str] | None) -> list[str] | None:
    """The test items' sources when some share one (clips of a photo): the bootstrap resamples
    sources then. None when every item is its own source, so the item bootstrap is unchanged."""
    if groups is None or len(set(groups)) == len(groups):
        return None
    return list(groups)


def group_note(n: int, groups: Sequence[str] | None) -> str:
    """How many independent sources the row's n items come from, where they share sources."""
    if groups is None:
        return ""
    return (f"n = {n} test items from {len(set(groups))} independent sources (the clips or crops of one photo "
            "count once); the CI resamples sources (cluster bootstrap)")


def _spread_note(values: Sequence[float]) -> str:
    return (f"{len(values)} probe seeds: sd {np.std(values, ddof=1):.4f}, range {min(values):.4f}…{max(values):.4f}; "
            "CI resamples seeds and test images")


def result_rows(label: FitLabel, results: Sequence[ProbeResult], skip: Sequence[str], n_bootstrap: int,
                seed: int, groups: Sequence[str] | None = None) -> list[MetricRow]:
    """One row per metric the fit emitted (mean over probe seeds), with its bootstrap CI; `n` counts
    the test images with a finite score. `groups`: each test item's source (e.g. the photo a clip
    pans over); where items share sources the CI resamples sources (`source_groups`). A metric only
    some seeds' fits measured (a control task draws its random boxes per seed, and one draw may hold no
    small object) is the mean over those fits, and its note says so."""
    groups = source_groups(groups)
    measured: dict[str, tuple[int, ...]] = {}
    for result in results:
        for raw in result.metrics:
            if _kept(raw, skip) and raw not in measured:
                measured[raw] = tuple(k for k, r in enumerate(results) if raw in r.metrics)
    map_cis: dict[str, BootstrapCI] = {}
    for fits in dict.fromkeys(measured.values()):  # the COCO metrics of the same fits: one bootstrap
        names = [raw for raw, by in measured.items() if by == fits and raw.startswith("map")]
        map_cis.update(_map_cis([results[k] for k in fits], names, n_bootstrap, seed, groups))
    rows = [_metric_row(label, raw, [results[k] for k in fits], len(results), map_cis.get(raw), n_bootstrap,
                        seed, groups) for raw, fits in measured.items()]
    for raw in dict.fromkeys(raw for r in results for raw in r.unavailable):
        if _kept(raw, skip) and raw not in measured:
            reason = next(r.unavailable[raw] for r in results if raw in r.unavailable)
            rows.append(label.row(metric_info(raw).name, value=None, unavailable_reason=reason))
    return rows


def _metric_row(label: FitLabel, raw: str, results: Sequence[ProbeResult], n_fits: int, map_ci: BootstrapCI | None,
                n_bootstrap: int, seed: int, groups: Sequence[str] | None) -> MetricRow:
    """The row of one metric from the fits that measured it (of `n_fits` probe seeds)."""
    first = results[0]
    value: float = first.metrics[raw]
    per_seed = [r.per_item[raw] for r in results if raw in r.per_item]
    low = high = None
    n = int(np.isfinite(per_seed[0]).sum()) if per_seed else len(first.per_item.get("matched_iou", []))
    parts: list[str] = []
    if per_seed and n:
        if len(per_seed) > 1:
            value, low, high = seeded_ci(per_seed, n_bootstrap, seed, groups)
            parts.append(_spread_note([float(r.metrics[raw]) for r in results]))
        else:
            # the mean of the per-image scores, so the value always sits inside its own CI
            ci = bootstrap_ci(per_seed[0], n_bootstrap, seed, groups=groups)
            value, low, high = ci.estimate, ci.low, ci.high
    elif map_ci is not None:
        value, low, high, n = map_ci.estimate, map_ci.low, map_ci.high, map_ci.n
        if len(results) > 1:
            parts.append(_spread_note([float(r.metrics[raw]) for r in results]))
    if len(results) < n_fits:
        parts.append(f"measured by {len(results)} of the {n_fits} probe seeds' fits (the others had nothing to "
                     "score it on)")
    if (per_seed and n) or map_ci is not None:
        parts.append(group_note(n, groups))
    return label.row(metric_info(raw).name, value=value, ci_low=low, ci_high=high, n=n,
                     note="; ".join(p for p in parts if p))


def _map_cis(results: Sequence[ProbeResult], metrics: Sequence[str], n_bootstrap: int, seed: int,
             groups: Sequence[str] | None) -> dict[str, BootstrapCI]:
    """CIs of the COCO metrics: over test images (or their shared sources), and over probe seeds too
    where there are several."""
    if results[0].detection is None or not metrics:
        return {}
    if len(results) > 1 and all(r.detection is not None for r in results):
        return seeded_map_cis([r.detection for r in results], metrics, n_bootstrap, seed,  # type: ignore[misc]
                              groups=groups)
    return bootstrap_map_cis(results[0].detection, metrics, n_bootstrap, seed, groups=groups)


def selectivity_rows(label: FitLabel, tasks: Sequence[ProbeResult], controls: Sequence[ProbeResult],
                     skip: Sequence[str], n_bootstrap: int, seed: int,
                     groups: Sequence[str] | None = None) -> list[MetricRow]:
    """Task − control-task score, both on the same test images (their sources resampled where they share
    them, as in `result_rows`). `tasks` and `controls` are the fits of the same probe seeds, in order: each
    task fit is paired with its seed's control fit, the value is the mean over seeds and, with several, the
    CI resamples seeds and test images together (`seeded_bootstrap_ci`; with one, the paired bootstrap).
    For a lower-is-better metric (LPIPS, angle and path errors) it is control − task, so a positive
    selectivity always means the probe does better on the task than on the control task."""
    if len(tasks) != len(controls):
        raise ValueError(f"selectivity pairs each task fit with its seed's control fit: {len(tasks)} task fits, "
                         f"{len(controls)} control fits")
    groups = source_groups(groups)
    rows = []
    for raw in tasks[0].per_item:
        if not _kept(raw, skip) or any(raw not in c.per_item for c in controls):
            continue
        task_items = [np.asarray(t.per_item[raw], dtype=np.float64) for t in tasks]
        control_items = [np.asarray(c.per_item[raw], dtype=np.float64) for c in controls]
        if not any((np.isfinite(t) & np.isfinite(c)).any() for t, c in zip(task_items, control_items, strict=True)):
            continue  # undefined on every image for task or control (e.g. no reference edges): no pairs
        better, worse = (task_items, control_items) if higher_is_better(raw) else (control_items, task_items)
        ci = _paired_ci(better, worse, n_bootstrap, seed, groups)
        task_mean = float(np.mean([np.nanmean(t) for t in task_items]))
        control_mean = float(np.mean([np.nanmean(c) for c in control_items]))
        how = (f"task {task_mean:.4f} − control task {control_mean:.4f}" if higher_is_better(raw)
               else f"control task {control_mean:.4f} − task {task_mean:.4f} (lower is better)")
        seeds = (f"; mean over {len(tasks)} probe seeds, each task fit paired with its seed's control fit, "
                 "CI resamples seeds and test images") if len(tasks) > 1 else ""
        rows.append(label.row(metric_info(raw).name, value=ci.estimate, ci_low=ci.low, ci_high=ci.high, n=ci.n,
                              note=f"{how} on the same {ci.n} test images{seeds}"))
    return rows


def _paired_ci(better: Sequence[np.ndarray], worse: Sequence[np.ndarray], n_bootstrap: int, seed: int,
               groups: Sequence[str] | None) -> BootstrapCI:
    """CI of mean(better − worse) per image over the images both score, pooled over seed pairs (with one
    pair this is `paired_bootstrap_diff`, draw for draw)."""
    diffs = [np.where(np.isfinite(b) & np.isfinite(w), b - w, np.nan) for b, w in zip(better, worse, strict=True)]
    return seeded_bootstrap_ci(diffs, n_bootstrap, seed, groups=groups)


def validation_rows(label: FitLabel, val_scores: Sequence[Mapping[str, float]], skip: Sequence[str]) -> list[MetricRow]:
    """The fit's headline scores on the validation split (mean over probe seeds): they pick the best stage."""
    if not val_scores or not val_scores[0]:
        return []
    return [MetricRow(experiment=label.experiment, stage=label.stage, probe=label.probe,
                      metric=metric_info(raw).name, value=float(np.mean([s[raw] for s in val_scores])),
                      control=VALIDATION, variant=label.variant, model=label.model,  # type: ignore[arg-type]
                      note="validation split: chooses the stage only")
            for raw in val_scores[0] if _kept(raw, skip)]


def per_image_scores(results: Sequence[ProbeResult]) -> dict[str, np.ndarray]:
    """Per-test-image scores under report names, averaged over probe seeds (for derived metrics);
    NaN stays NaN (an image the score does not apply to)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: images without the score
        return {report_name(raw): np.nanmean(np.stack([r.per_item[raw] for r in results]), axis=0)
                for raw in results[0].per_item}
