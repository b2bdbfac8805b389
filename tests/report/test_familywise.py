"""Issue 21 item 7: claims that scan stages control the family-wise error (Holm); the E-Q2.3 best
layer is chosen on validation."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from conftest import row, synthetic_rows

from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.stats import familywise_beyond, holm

Z_95 = NormalDist().inv_cdf(0.975)


def test_holm_step_down_known_answer() -> None:
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.01, 0.02, 0.03]) == [True, True, True]  # 0.01 ≤ .05/3, 0.02 ≤ .05/2, 0.03 ≤ .05
    assert holm([0.2]) == [False] and holm([0.04]) == [True]


def test_one_estimate_is_the_ci_test_itself() -> None:
    assert familywise_beyond([(0.05, 0.01, 0.09)]) == [True]
    assert familywise_beyond([(0.05, -0.01, 0.11)]) == [False]
    assert familywise_beyond([(-0.05, -0.09, -0.01)]) == [False]  # beyond 0, but on the other side


def test_scanning_twenty_null_stages_claims_a_drop_in_about_5_percent_of_runs_not_most() -> None:
    rng = np.random.default_rng(0)
    se, stages, runs = 0.01, 20, 400
    uncorrected = corrected = 0
    for _ in range(runs):
        estimates = rng.normal(0.0, se, stages)
        cis = [(e, e - Z_95 * se, e + Z_95 * se) for e in estimates]
        uncorrected += any(low > 0 for _, low, _ in cis)
        corrected += any(familywise_beyond(cis))
    assert uncorrected / runs > 0.25  # one-sided per-stage tests: 1 − 0.975^20 ≈ 0.40
    assert corrected / runs < 0.06


def test_the_language_best_layer_is_chosen_on_validation_and_survival_is_family_wise() -> None:
    rows = [r for r in synthetic_rows() if r.experiment != "e_q2_3"]
    test_values = {"language.layer.0": 0.8, "language.layer.1": 0.75, "language.layer.2": 0.9}
    val_values = {"language.layer.0": 0.8, "language.layer.1": 0.85, "language.layer.2": 0.6}
    for stage, value in test_values.items():
        rows.append(row("e_q2_3", stage, "dense-context", "iou", value, ci=(value - 0.02, value + 0.02)))
        rows.append(row("e_q2_3", stage, "dense-context", "iou", val_values[stage], control="validation"))
    finding = analyse(rows, RunMeta("m", False, suite="q2")).findings["e_q2_3"]
    assert "best layer on validation (its test value) 0.750" in finding and "language.layer.1" in finding
    assert "location stays above the 0.7 target through language.layer.2" in finding
    assert "Holm's family-wise control over the 3 layers scanned" in finding
