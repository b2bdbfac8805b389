"""Help that reads at 80 columns: flags shown as flags, nothing cut off, examples for every command,
--seed and --seeds told apart, every dataset kind listed where datasets are accepted."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from stageprobe.cli import app
from stageprobe.datasets import DATASETS

runner = CliRunner(env={"COLUMNS": "80"})
COMMANDS = [["models"], ["stages"], ["extract"], ["run"], ["report"], ["validate"], ["compare"], ["bench"],
            ["calibrate"], ["datasets", "preview"]]


def help_text(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_examples_and_nothing_cut_off(command: list[str]) -> None:
    text = help_text(*command)
    assert "Examples:" in text and f"stageprobe {' '.join(command)}" in text.split("Examples:")[1]
    body = text.split("\n", 1)[1]  # the usage line marks a repeatable argument with "..."
    assert "<bool>" not in text and "…" not in body.replace("SEED+1, …", "") and "..." not in body
    assert max(len(line) for line in text.splitlines()) <= 80 or "stageprobe " in max(text.splitlines(), key=len)


def test_command_list_is_not_cut_off() -> None:
    text = help_text()
    commands = text.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    assert all(re.search(rf"^  {name}\s", commands, re.M) for name in
               ("models", "stages", "extract", "run", "report", "validate", "compare", "bench", "calibrate"))


def test_flags_are_flags_and_seed_is_told_from_seeds() -> None:
    text = help_text("run")
    assert re.search(r"^  --quick\s{2,}CPU smoke", text, re.M)
    assert "--trust-remote-code / --no-trust-remote-code" in text
    seed_help = text.split("--seed <int>")[1].split("--")[0]
    assert "--seeds" in text.split("--seed <int>")[1].split("[default")[0] or "--seeds" in seed_help
    assert "SEED, SEED+1" in text


@pytest.mark.parametrize("command", [["run"], ["extract"], ["datasets", "preview"]], ids=" ".join)
def test_every_dataset_kind_is_listed(command: list[str]) -> None:
    text = " ".join(help_text(*command).split())
    missing = [name for name in DATASETS if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"dataset kinds missing from `{' '.join(command)} --help`: {missing}"
