"""FINDINGS.md says in one line which precision the gradient-trained probes computed in (`--probe-precision`)."""

from __future__ import annotations

from dataclasses import replace

from conftest import synthetic_context, synthetic_rows

from stageprobe.report import build_results, render_findings


def _note(precision: str | None) -> list[str]:
    rows = synthetic_rows()
    context = synthetic_context()
    if precision is not None:
        context = replace(context, config={**context.config, "probe_precision": precision})
    text = render_findings(build_results(rows, context), rows)
    return [line for line in text.splitlines() if line.startswith("**Probe precision:**")]


def test_bfloat16_is_named_with_the_probes_and_the_way_back_to_float32() -> None:
    (line,) = _note("bfloat16")
    assert "decoder, decoder-pooled, dense-context computed in bfloat16" in line  # in registration order
    assert "every other probe in float32" in line and "`--probe-precision float32`" in line


def test_float32_says_full_precision_and_an_older_run_says_nothing() -> None:
    assert _note("float32") == ["**Probe precision:** every probe computed in float32 (full precision)."]
    assert _note(None) == []
