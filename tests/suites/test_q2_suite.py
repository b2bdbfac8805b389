"""The Q2 suite's data is consistent, and its derived metrics (drop, compression, IRS) are measured
values with CIs computed from the per-image scores handed to them."""

from __future__ import annotations

import fnmatch
import warnings

import numpy as np
import pytest

from stageprobe.models.base import StageInfo
from stageprobe.suites import get_suite
from stageprobe.suites._spec import DeriveInput, Scores
from stageprobe.suites.q2 import DECIDING_BOX_PROBE, DECISION, RECONSTRUCTION_PROBE, SUITE

POST = "vision.post_merge"


def test_every_target_is_read_by_a_probe_its_experiments_run_at_post_merge() -> None:
    assert get_suite("q2") is SUITE
    for target in SUITE.targets:
        specs = [SUITE.experiment(e) for e in target.experiments]
        assert any(p.probe == target.probe for spec in specs for p in spec.probes), target.key
        assert any(fnmatch.fnmatchcase(POST, pattern) for spec in specs for pattern in spec.stages), target.key
    deciding = {p.probe for e in DECISION.experiments for p in SUITE.experiment(e).probes}
    assert DECISION.probe in deciding


def test_token_shuffle_only_where_the_probe_carries_its_own_position_code() -> None:
    shuffled = {p.probe for spec in SUITE.experiments for p in spec.probes if "token-shuffle" in p.controls}
    assert not {"dense-linear", "recon-linear"} & shuffled
    assert {"relation", "attention", "dense-context"} <= shuffled
    assert "temporal-dense" not in shuffled  # within-object shuffle needs object boxes
    assert any("not run for dense-linear and recon-linear" in note for note in SUITE.notes)


def test_every_target_has_its_probe_controls_at_its_verdict_stage() -> None:
    """Costly probes may fit their controls at fewer stages, but never skip the stage a verdict reads."""
    for target in SUITE.targets:
        for spec in (SUITE.experiment(e) for e in target.experiments):
            for probe in (p for p in spec.probes if p.probe == target.probe and p.reads(POST)):
                for size in SUITE.sizes:
                    assert SUITE.controls_at(probe, POST, size) == probe.controls, (target.key, spec.id, size)
    attention = next(p for p in SUITE.experiment("e_q2_4").probes if p.probe == "attention")
    assert attention.controls_at("language.layer.3") == () and attention.controls_at(POST)
    # --quick leaves out the deciding probe's controls before the merge, a default run fits them there
    deciding = next(p for p in SUITE.experiment("e_q2_1").probes if p.probe == DECIDING_BOX_PROBE)
    assert SUITE.controls_at(deciding, "vision.pre_merge", "default") == deciding.controls
    assert SUITE.controls_at(deciding, "vision.pre_merge", "quick") == ()


def _inputs(experiment: str, scores: dict[str, Scores]) -> DeriveInput:
    stages = {"vision.pre_merge": StageInfo("vision.pre_merge", 14, 1280, (1, 16, 16), ""),
              POST: StageInfo(POST, 28, 3584, (1, 8, 8), "")}
    return DeriveInput(experiment, [], scores, stages, "m", 400, 0)


def test_drop_is_paired_and_compression_names_tokens_and_width() -> None:
    rng = np.random.default_rng(0)
    pre = rng.uniform(0.7, 0.9, 50)
    box = DECISION.probe
    scores: Scores = {("model", "vision.pre_merge", box, "iou"): pre,
                      ("model", POST, box, "iou"): pre - 0.2,
                      ("pixels", "pixels.patch", box, "iou"): pre,
                      ("pixels", "pixels.merged", box, "iou"): pre - 0.05}
    spec = SUITE.experiment("e_q2_2")
    assert spec.derive is not None
    rows = {(r.metric, r.variant): r for r in spec.derive(_inputs("e_q2_2", {"e_q2_2": scores}))}
    drop = rows[("iou_drop", "model")]
    # every image drops by exactly 0.2: the paired CI has no width at all
    assert drop.value == pytest.approx(0.2) and drop.ci_low == pytest.approx(0.2) and drop.n == 50
    assert rows[("iou_drop", "pixels")].value == pytest.approx(0.05)
    assert rows[("compression_ratio", "model")].value == 4.0 and "tokens" in rows[("compression_ratio", "model")].note
    width = rows[("width_ratio", "model")]
    assert width.value == pytest.approx(3584 / 1280) and "4×1280 → 3584" in width.note


def test_irs_combines_both_test_sets_with_a_ci() -> None:
    spatial: Scores = {("model", POST, DECIDING_BOX_PROBE, "iou"): np.full(40, 0.85)}
    detail: Scores = {("model", POST, RECONSTRUCTION_PROBE, "lpips"): np.linspace(0.1, 0.5, 30),
                      ("model", POST, RECONSTRUCTION_PROBE, "edge_f1"): np.full(30, 0.8)}
    spec = SUITE.experiment("e_q2_5")
    assert spec.derive is not None
    rows = spec.derive(_inputs("e_q2_5", {"e_q2_2": spatial, "e_q2_5": detail}))
    irs = next(r for r in rows if r.metric == "irs")
    expected = 0.4 * 1.0 + 0.3 * (1 - 0.3) / 0.7 + 0.3 * 1.0
    assert irs.value == pytest.approx(expected)
    assert irs.ci_low < expected < irs.ci_high  # type: ignore[operator]
    assert "spatial data" in irs.note and "detail data" in irs.note
    missing = spec.derive(_inputs("e_q2_5", {"e_q2_5": detail}))
    assert missing[0].value is None and "IoU" in (missing[0].unavailable_reason or "")


def test_irs_ci_drops_draws_of_only_edgeless_images_without_a_warning() -> None:
    """Edgeless references have no edge F1 (NaN): with 2 scored images of 4, some bootstrap draws hold
    none, and those draws are left out of the CI instead of raising numpy's empty-slice warning."""
    spatial: Scores = {("model", POST, DECIDING_BOX_PROBE, "iou"): np.full(40, 0.85)}
    detail: Scores = {("model", POST, RECONSTRUCTION_PROBE, "lpips"): np.array([0.1, 0.2, 0.3, 0.4]),
                      ("model", POST, RECONSTRUCTION_PROBE, "edge_f1"): np.array([0.8, np.nan, 0.4, np.nan])}
    spec = SUITE.experiment("e_q2_5")
    assert spec.derive is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = spec.derive(_inputs("e_q2_5", {"e_q2_2": spatial, "e_q2_5": detail}))
    irs = next(r for r in rows if r.metric == "irs")
    assert irs.n == 2 and irs.value == pytest.approx(0.4 + 0.3 * 0.75 / 0.7 + 0.3 * 0.6 / 0.8)
    assert irs.ci_low is not None and irs.ci_high is not None and np.isfinite([irs.ci_low, irs.ci_high]).all()
    assert irs.ci_low < irs.value < irs.ci_high
