"""The information types are declared once, on the suite: one edit of a row's deciding probe moves the
verdicts, the answer table, the figures and the calibration together; a row naming an unknown probe
or metric fails when the suite is built."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from stageprobe.calibrate import checks_of
from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.report.answer import stage_answers
from stageprobe.report.plots import _draw_info_panel
from stageprobe.report.schema import MetricRow
from stageprobe.suites._spec import InformationType, ProbeRead
from stageprobe.suites.q2 import SUITE

LOCATION = SUITE.row("location")
STAGES = ("vision.block.0", "vision.pre_merge", "vision.post_merge", "language.layer.0")
#: a second box probe that scores higher than the deciding one everywhere: a per-stage maximum would pick it
OTHER = "dense-linear"


def _row(experiment: str, stage: str, probe: str, value: float, control: str = "none",
         variant: str = "model") -> MetricRow:
    return MetricRow(experiment=experiment, stage=stage, probe=probe, metric="iou", value=value,  # type: ignore[arg-type]
                     ci_low=value - 0.01, ci_high=value + 0.01, n=100, control=control, variant=variant)


def _rows() -> list[MetricRow]:
    rows = []
    for k, stage in enumerate(STAGES):
        experiment = "e_q2_3" if stage.startswith("language.") else "e_q2_2"
        for control in ("none", "validation"):
            rows.append(_row(experiment, stage, LOCATION.probe, 0.8 - 0.1 * k, control))
            rows.append(_row(experiment, stage, OTHER, 0.95 - 0.2 * k, control))
    for stage, value in (("pixels.patch", 0.9), ("pixels.merged", 0.85)):
        rows += [_row("e_q2_2", stage, probe, value, variant="pixels") for probe in (LOCATION.probe, OTHER)]
    return rows


def _panel_line(rows: list[MetricRow], suite=SUITE) -> list[float]:  # type: ignore[no-untyped-def]
    ax = Figure().subplots()
    _draw_info_panel(ax, rows, suite, suite.row("location"))
    return [float(v) for v in ax.lines[0].get_ydata()]


def test_one_edit_of_the_deciding_probe_moves_verdicts_answer_figures_and_calibration() -> None:
    rows = _rows()
    edited = replace(SUITE, information=(replace(LOCATION, probe=OTHER), *SUITE.information[1:]))
    meta = RunMeta("tiny", weights_random=True, suite="q2")
    for suite, probe in ((SUITE, LOCATION.probe), (edited, OTHER)):
        analysis = analyse(rows, meta, suite)
        verdict = analysis.verdicts["bbox_iou"]
        assert verdict.target.probe == probe and verdict.row is not None and verdict.row.probe == probe
        assert analysis.decision.probe == probe
        (answer, *_) = stage_answers(rows, analysis)
        assert answer.verdict is not None and answer.verdict.best_val.probe == probe  # type: ignore[union-attr]
        expected = [r.value for r in rows if r.probe == probe and r.control == "none" and r.variant == "model"]
        assert _panel_line(rows, suite) == pytest.approx(expected)
        deciding = {c.probe for c in checks_of(suite.row("location")) if c.primary}
        assert deciding == {probe}


def test_the_spatial_panel_draws_the_deciding_probe_never_a_maximum_and_the_ceiling_per_grid() -> None:
    rows = _rows()
    ax = Figure().subplots()
    _draw_info_panel(ax, rows, SUITE, LOCATION)
    main, steps = ax.lines[0], next(line for line in ax.lines if "pixel ceiling" in str(line.get_label()))
    assert list(main.get_ydata()) == pytest.approx([0.8, 0.7, 0.6, 0.5])  # the deciding probe, not dense-linear
    # 14 px grid before the merge, 28 px after: a step, not the maximum of both grids
    assert sorted(set(np.round(steps.get_ydata(), 3))) == [0.85, 0.9]


def test_a_row_naming_an_unregistered_probe_or_metric_fails_with_the_rows_name() -> None:
    with pytest.raises(ValueError, match=r"information type 'where'.*probe 'no-such-probe' is not registered"):
        InformationType("where", "Where", "x", "spatial", "no-such-probe", (("boxes", "iou"),), targets=())
    with pytest.raises(ValueError, match=r"information type 'where'.*metric 'no_such_metric' has no metadata"):
        InformationType("where", "Where", "x", "spatial", LOCATION.probe, (("boxes", "no_such_metric"),), targets=())
    with pytest.raises(ValueError, match=r"information type 'where' \(secondary\).*'nope' is not registered"):
        replace(LOCATION, name="where", secondary=(ProbeRead("nope", "boxes", "iou"),))


def test_only_the_suite_and_the_probes_name_the_study_s_experiments_and_deciding_probes() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "stageprobe"
    found = subprocess.run(["grep", "-rln", r"e_q2_\|dense-context\|token-flow", str(src), "--include=*.py"],
                           capture_output=True, text=True, check=False).stdout.split()
    outside = [p for p in found if "/suites/q2/" not in p and "/probes/" not in p]
    assert not outside, outside
