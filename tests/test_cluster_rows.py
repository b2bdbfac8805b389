"""Test-metric rows of clips cut from a few source photos: the CI resamples photos, n says both."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stageprobe.probes import ProbeResult
from stageprobe.suites._rows import FitLabel, result_rows, selectivity_rows
from stageprobe.suites._spec import FindingInput
from stageprobe.suites.q2.findings import camera_motion, motion

LABEL = FitLabel("e_q2_6", "pixels.merged", "token-flow", "model", "pixels")


def _clips(seed: int, per_photo: tuple[float, ...] = (0.5, 0.7, 0.9)) -> ProbeResult:
    """90 clips of three test photos whose scores sit far apart."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([p + rng.normal(0, 0.03, 30) for p in per_photo])
    return ProbeResult("token-flow", "direction", {"direction_acc": float(scores.mean())},
                       {"direction_acc": scores}, {}, {})


PHOTOS = [f"photo{k}" for k in range(3) for _ in range(30)]


def test_rows_of_three_test_photos_resample_photos_and_say_so() -> None:
    by_clip = result_rows(LABEL, [_clips(0)], (), 500, 0)[0]
    by_photo = result_rows(LABEL, [_clips(0)], (), 500, 0, groups=PHOTOS)[0]
    assert by_photo.value == by_clip.value and by_photo.n == by_clip.n == 90
    assert by_photo.ci_high - by_photo.ci_low > 3 * (by_clip.ci_high - by_clip.ci_low)  # type: ignore[operator]
    assert "90 test items from 3 independent sources" in by_photo.note and by_clip.note == ""
    # every item its own source (shapes, COCO images): the item bootstrap, unchanged
    own = result_rows(LABEL, [_clips(0)], (), 500, 0, groups=[str(i) for i in range(90)])[0]
    assert (own.ci_low, own.ci_high, own.note) == (by_clip.ci_low, by_clip.ci_high, "")
    seeded = result_rows(LABEL, [_clips(0), _clips(1), _clips(2)], (), 500, 0, groups=PHOTOS)[0]
    assert "3 probe seeds" in seeded.note and "3 independent sources" in seeded.note


def test_selectivity_over_three_photos_resamples_photos() -> None:
    label = FitLabel("e_q2_6", "pixels.merged", "token-flow", "model", "pixels", control="selectivity")
    control = _clips(1, (0.2, 0.2, 0.2))  # the control task scores alike on every photo
    clip = selectivity_rows(label, [_clips(0)], [control], (), 500, 0)[0]
    photo = selectivity_rows(label, [_clips(0)], [control], (), 500, 0, groups=PHOTOS)[0]
    assert photo.value == clip.value
    assert photo.ci_high - photo.ci_low > 3 * (clip.ci_high - clip.ci_low)  # type: ignore[operator]


def test_selectivity_of_a_lower_is_better_metric_is_sign_corrected() -> None:
    """An angle error of 10° on the task and 60° on the control task is a selectivity of +50°."""
    label = FitLabel("e_q2_6", "pixels.merged", "token-flow", "model", "pixels", control="selectivity")

    def errors(value: float) -> ProbeResult:
        per_item = np.full(20, value) + np.linspace(-1, 1, 20)
        return ProbeResult("token-flow", "direction", {"flow_angle_error_deg": value},
                           {"flow_angle_error_deg": per_item}, {}, {})

    row = selectivity_rows(label, [errors(10.0)], [errors(60.0)], (), 200, 0)[0]
    assert row.value == pytest.approx(50.0) and row.ci_low > 0  # type: ignore[operator]
    assert "control task 60.0000 − task 10.0000 (lower is better)" in row.note
    higher = selectivity_rows(label, [_clips(0)], [_clips(1, (0.2, 0.2, 0.2))], (), 200, 0)[0]
    assert higher.value > 0 and higher.note.startswith("task ")  # type: ignore[operator]


def test_the_motion_finding_says_when_its_cis_resample_a_few_photos() -> None:
    rows = result_rows(LABEL, [_clips(0)], (), 200, 0, groups=PHOTOS)
    target = SimpleNamespace(label="direction accuracy", display="≥ 0.7", probe="token-flow")
    verdicts = {"direction_acc": SimpleNamespace(row=rows[0], target=target, display="PASS", reason="")}
    text = motion(FindingInput(rows, rows, verdicts, None))  # type: ignore[arg-type]
    assert "n = 90 test items from 3 independent sources" in text and "resample photos" in text
    camera = camera_motion(FindingInput(rows, rows, verdicts, None))  # type: ignore[arg-type]
    assert camera.startswith("Camera motion") and "from 3 independent sources" in camera
    alone = result_rows(LABEL, [_clips(0)], (), 200, 0)
    verdicts["direction_acc"].row = alone[0]
    assert "source photos" not in motion(FindingInput(alone, alone, verdicts, None))  # type: ignore[arg-type]
