"""Every bad input exits 2 with one message naming the problem, no traceback, and nothing written.

One row per case: the command line (`{tmp}` is an empty work directory, `{file}` a file in it), and
words the first line of the message must contain.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageprobe.cli import app

runner = CliRunner()

CASES: dict[str, tuple[list[str], list[str]]] = {
    "image size zero": (["stages", "pixels", "--image-size", "0"], ["--image-size", "positive"]),
    "image size negative": (["stages", "--model", "pixels", "--image-size", "-28"], ["--image-size", "positive"]),
    "image size off the merged patch": (["stages", "pixels", "--image-size", "450"],
                                        ["--image-size 450", "28 px", "448×448", "--image-size 448"]),
    "image size off the Qwen merged patch": (["stages", "qwen2.5-vl-tiny", "--image-size", "450"],
                                             ["--image-size 450", "28 px", "448×448", "--image-size 448"]),
    "image size absurd": (["stages", "pixels", "--image-size", "100000"], ["--image-size 100000", "limit"]),
    "two different models": (["stages", "pixels", "--model", "qwen2.5-vl-tiny"], ["two models"]),
    "preview count huge": (["datasets", "preview", "shapes", "--count", "100000", "--out", "{tmp}/p.png"],
                           ["--count 100000"]),
    "preview count zero": (["datasets", "preview", "shapes", "--count", "0", "--out", "{tmp}/p.png"],
                           ["--count 0"]),
    "preview out is a directory": (["datasets", "preview", "shapes", "--out", "{tmp}"], ["is a directory"]),
    "preview out under a file": (["datasets", "preview", "shapes", "--out", "{file}/p.png"], ["is a file"]),
    "extract out is a file": (["extract", "-m", "pixels", "-d", "shapes", "--n", "4", "--out", "{file}"],
                              ["--out", "is a file"]),
    "run out is a file": (["run", "--model", "pixels", "--quick", "--out", "{file}"], ["--out", "is a file"]),
    "extract device tpu": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--device", "tpu"],
                           ["--device 'tpu'"]),
    "run device tpu": (["run", "--model", "pixels", "--out", "{tmp}/r", "--device", "tpu"], ["--device 'tpu'"]),
    "bench device tpu": (["bench", "--model", "pixels", "--device", "tpu"], ["--device 'tpu'"]),
    "extract store dtype": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--store-dtype", "fp8"],
                            ["store dtype 'fp8'"]),
    "run store dtype": (["run", "--model", "pixels", "--out", "{tmp}/r", "--store-dtype", "fp8"],
                        ["store dtype 'fp8'"]),
    "extract batch size": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--batch-size", "0"],
                           ["--batch-size"]),
    "extract shard size": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--shard-size", "0"],
                           ["--shard-size"]),
    "extract limit": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--limit", "0"], ["--limit"]),
    "extract stage typo": (["extract", "-m", "pixels", "-d", "shapes", "--out", "{tmp}/s", "--stages", "pixel.*"],
                           ["'pixel.*' matches no stage"]),
    "run stage typo": (["run", "--model", "pixels", "--out", "{tmp}/r", "--stages", "pixel.*"],
                       ["'pixel.*' matches no stage"]),
    "run limit": (["run", "--model", "pixels", "--out", "{tmp}/r", "--limit", "0"], ["--limit"]),
    "run unknown experiment": (["run", "--model", "pixels", "--out", "{tmp}/r", "--experiments", "e_q2_1,e_q2_9"],
                               ["--experiments", "e_q2_9"]),
}


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, words = CASES[case]
    monkeypatch.chdir(tmp_path)  # a default output path would land here
    (tmp_path / "file").write_text("in the way")
    before = files_under(tmp_path)
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(tmp_path / "file"))
                                 for a in args])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    first_line = output.strip().splitlines()[0]
    for word in words:
        assert word in first_line, first_line
    assert "Traceback" not in output
    assert files_under(tmp_path) == before


def test_an_out_directory_without_write_permission_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    # root may write anywhere, so the permission bits are simulated where they would not bite
    real_access = os.access
    monkeypatch.setattr("stageprobe._checks.os.access",
                        lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    for args in (["extract", "-m", "pixels", "-d", "shapes", "--n", "4", "--out", str(locked / "store")],
                 ["run", "--model", "pixels", "--out", str(locked / "run")],
                 ["datasets", "preview", "shapes", "--out", str(locked / "p.png")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "not writable" in result.output.splitlines()[0]
    assert not any(locked.iterdir())
