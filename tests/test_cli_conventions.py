"""A conventional, fast command line: --version, --help without torch, `stages --model`, run's
--experiments / --limit, and diagnoses that name the real problem."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict
from typer.testing import CliRunner

from stageprobe import __version__
from stageprobe.cli import app
from stageprobe.features.extract import describe_difference

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_version() -> None:
    assert invoke("--version") == (0, f"stageprobe {__version__}\n")


def test_help_and_refusals_do_not_import_torch() -> None:
    script = ("import sys; from typer.testing import CliRunner; from stageprobe.cli import app; "
              "r = CliRunner(); codes = [r.invoke(app, a).exit_code for a in "
              "(['--help'], ['run', '--help'], ['models'], ['stages', 'pixels', '--image-size', '0'])]; "
              "print(codes, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[0, 0, 0, 2] False", done.stderr[-2000:]


def test_stages_takes_the_model_as_option_or_argument() -> None:
    by_option, by_argument = invoke("stages", "--model", "pixels", "--json"), invoke("stages", "pixels", "--json")
    assert by_option == by_argument and by_option[0] == 0
    assert [s["name"] for s in json.loads(by_option[1])] == ["pixels.patch", "pixels.merged"]


def test_experiments_list_names_every_experiment() -> None:
    code, out = invoke("run", "--experiments", "list")
    assert code == 0
    assert all(f"e_q2_{i}" in out for i in range(1, 7))


def test_experiments_and_limit_reach_the_run_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stageprobe.suites.runner import RunConfig

    class OpenRunConfig(RunConfig):
        model_config = ConfigDict(extra="allow")  # whether or not the runner declares the fields yet

    seen: list[Any] = []
    monkeypatch.setattr("stageprobe.suites.runner.RunConfig", OpenRunConfig)
    monkeypatch.setattr("stageprobe.suites.runner.run_study",
                        lambda config, *_, **__: seen.append(config) or sys.exit(0))
    code, out = invoke("run", "--model", "pixels", "--experiments", "e_q2_4,E-Q2.1", "--limit", "20",
                       "--out", str(tmp_path / "run"))
    assert code == 0, out
    assert (seen[0].experiments, seen[0].limit) == (["e_q2_1", "e_q2_4"], 20)


def test_skip_bad_says_how_many_files_it_skipped(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (56, 56), (90 * i, 90, 200)).save(tmp_path / f"ok{i}.png")
    for name in ("bad1.png", "bad2.jpg"):
        (tmp_path / name).write_bytes(b"not an image at all")
    code, out = invoke("extract", "--model", "pixels", "--dataset", f"images:{tmp_path}", "--skip-bad",
                       "--out", str(tmp_path / "store"))
    assert code == 0, out
    assert "skipped 2 unreadable file(s)" in out


def test_store_mismatch_names_the_field_that_differs(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    assert invoke("extract", "-m", "pixels", "-d", "shapes", "--n", "4", "--out", store)[0] == 0
    code, out = invoke("extract", "-m", "pixels", "-d", "shapes", "--n", "4", "--seed", "7", "--out", store)
    assert code == 2
    assert "dataset spec: options.seed: 0 there, 7 now" in out.splitlines()[0]


def test_difference_of_long_lists_shows_the_differing_items() -> None:
    before = [f"language.layer.{i}" for i in range(40)]
    now = [*before[:-1], "language.norm"]
    text = describe_difference(before, now)
    assert '["language.layer.39"] only there' in text and '["language.norm"] only now' in text
    assert describe_difference({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == "b.c: 2 there, 3 now"


def test_broken_local_config_is_reported_as_broken(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl",')
    code, out = invoke("stages", str(tmp_path))
    assert code == 2
    assert "config.json is not a readable JSON model config" in out and "download" not in out


def test_unreachable_hub_answers_at_once_with_the_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)

    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("stageprobe.models.registry.socket.create_connection", no_network)
    started = time.monotonic()
    code, out = invoke("stages", "stageprobe-test/not-a-cached-model")
    assert code == 2
    assert time.monotonic() - started < 5
    assert "hf download stageprobe-test/not-a-cached-model" in out and "HF_HUB_OFFLINE=1" in out
