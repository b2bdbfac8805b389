"""Every bad input exits 2 with one message naming the problem, no traceback, and nothing written.

One row per case: the command line and words the first line of the message must contain. In the
command line `{tmp}` is the work directory (also the current one), `{file}` a file in it, `{empty}` an
empty folder, `{broken}` a folder holding one corrupt PNG, `{notcoco}` a JSON file that is not COCO and
`{badjson}` a file that is not JSON. Every case runs in-process (fast); `test_refusals_as_a_user_runs_them`
runs a few as real processes, and benchmarks/bench_refusals.py times them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    # the examples (#23), then the rest of each command's options
    "run out in /proc": (["run", "--model", "pixels", "--quick", "--out", "/proc/x"], ["--out /proc/x", "kernel"]),
    "run out in /sys": (["run", "--model", "pixels", "--quick", "--out", "/sys/x/y"], ["--out /sys/x/y"]),
    "extract out in /proc": (["extract", "-m", "pixels", "-d", "shapes", "--out", "/proc/x"], ["--out /proc/x"]),
    "calibrate out in /proc": (["calibrate", "--out", "/proc/x"], ["--out /proc/x"]),
    "run cache dir is a file": (["run", "--model", "pixels", "--out", "{tmp}/r", "--cache-dir", "{file}"],
                                ["--cache-dir", "is a file"]),
    "run cache dir in /proc": (["run", "--model", "pixels", "--out", "{tmp}/r", "--cache-dir", "/proc/c"],
                               ["--cache-dir /proc/c"]),
    "preview to a text file": (["datasets", "preview", "shapes", "--out", "p.txt"], ["p.txt", "not an image format"]),
    "preview without extension": (["datasets", "preview", "shapes", "--out", "{tmp}/p"], ["not an image format"]),
    "run limit 10 below E-Q2.1's splits": (["run", "--quick", "--limit", "10", "--experiments", "e_q2_1",
                                            "--out", "{tmp}/r"], ["E-Q2.1 needs ≥ 15 samples", "--limit 15"]),
    "run limit 1": (["run", "--model", "pixels", "--quick", "--limit", "1", "--out", "{tmp}/r"],
                    ["E-Q2.1, E-Q2.2, E-Q2.3 and E-Q2.4 need ≥ 15", "--limit 27 or more"]),
    "run n=3 in the data spec": (["run", "--model", "pixels", "--quick", "--data", "spatial=shapes:n=3",
                                  "--out", "{tmp}/r"], ["E-Q2.1", "n= in --data spatial=shapes:n=3"]),
    "run missing COCO file": (["run", "--model", "pixels", "--data", "spatial=coco:/nonexistent/ann.json",
                               "--out", "{tmp}/r"], ["/nonexistent/ann.json does not exist"]),
    "run calibrate pixels": (["run", "--model", "pixels", "--calibrate", "--out", "{tmp}/r"],
                             ["--calibrate", "pixel baseline"]),
    "run no experiments": (["run", "--model", "pixels", "--experiments", "", "--out", "{tmp}/r"],
                           ["names no experiment"]),
    "run only commas as experiments": (["run", "--model", "pixels", "--experiments", ",,", "--out", "{tmp}/r"],
                                       ["names no experiment"]),
    "run seeds 100000": (["run", "--model", "pixels", "--seeds", "100000", "--out", "{tmp}/r"],
                         ["--seeds 100000", "1…20"]),
    "run seeds 0": (["run", "--model", "pixels", "--seeds", "0", "--out", "{tmp}/r"], ["--seeds 0"]),
    "run max-disk unparsable": (["run", "--model", "pixels", "--max-disk", "10 gigs", "--out", "{tmp}/r"],
                                ["80G, 500M"]),
    "run max-disk zero": (["run", "--model", "pixels", "--max-disk", "0", "--out", "{tmp}/r"], ["80G, 500M"]),
    "run max-disk below one stage": (["run", "--model", "pixels", "--max-disk", "1000", "--out", "{tmp}/r"],
                                     ["cannot hold even one stage"]),
    "plan max-disk unparsable": (["plan", "--max-disk", "10 gigs"], ["80G, 500M"]),
    "plan seeds 0": (["plan", "--seeds", "0"], ["--seeds 0"]),
    "plan probe workers 0": (["plan", "--probe-workers", "0"], ["--probe-workers must be at least 1"]),
    "plan unknown probe precision": (["plan", "--probe-precision", "fp8"],
                                     ["--probe-precision 'fp8'", "use auto, float32, bfloat16"]),
    "run probe workers 0": (["run", "--model", "pixels", "--probe-workers", "0", "--out", "{tmp}/r"],
                            ["--probe-workers must be at least 1"]),
    "run quick and full": (["run", "--quick", "--full", "--out", "{tmp}/r"], ["--quick and --full"]),
    "run unknown probe precision": (["run", "--probe-precision", "fp8", "--out", "{tmp}/r"],
                                    ["--probe-precision 'fp8'", "use auto, float32, bfloat16"]),
    "calibrate unknown probe precision": (["calibrate", "--probe-precision", "half", "--out", "{tmp}/c"],
                                          ["--probe-precision 'half'", "use auto, float32, bfloat16"]),
    "run unknown protocol": (["run", "--protocol", "mine", "--out", "{tmp}/r"], ["--protocol 'mine'"]),
    "run unknown dtype": (["run", "--dtype", "fp8", "--out", "{tmp}/r"], ["--dtype 'fp8'"]),
    "run unknown device map": (["run", "--device-map", "diagonal", "--out", "{tmp}/r"], ["--device-map 'diagonal'"]),
    "run batch size 0": (["run", "--batch-size", "0", "--out", "{tmp}/r"], ["--batch-size must be at least 1"]),
    "run limit negative": (["run", "--limit", "-5", "--out", "{tmp}/r"], ["--limit must be at least 1"]),
    "run data without key": (["run", "--data", "shapes", "--out", "{tmp}/r"], ["KEY=DATASET"]),
    "run data unknown key": (["run", "--data", "colour=shapes", "--out", "{tmp}/r"], ["--data key 'colour'"]),
    "run data unknown dataset": (["run", "--data", "spatial=nope", "--out", "{tmp}/r"], ["unknown dataset 'nope'"]),
    "run data family twice": (["run", "--data", "spatial=shapes", "--data", "spatial=shapes:n=40",
                               "--out", "{tmp}/r"], ["given twice"]),
    "run data JSON that is not COCO": (["run", "--data", "spatial=coco:{notcoco}:image_dir={empty}",
                                        "--out", "{tmp}/r"], ["not a COCO instances file"]),
    "run data file that is not JSON": (["run", "--data", "spatial=coco:{badjson}:image_dir={empty}",
                                        "--out", "{tmp}/r"], ["is not valid JSON"]),
    "run data empty image folder": (["run", "--data", "photos=images:{empty}", "--out", "{tmp}/r"],
                                    ["0 readable images"]),
    "run data corrupt image": (["run", "--data", "photos=images:{broken}", "--out", "{tmp}/r"],
                               ["broken.png cannot be decoded", ":skip_bad=true"]),
    "run data option not a number": (["run", "--data", "spatial=shapes:n=abc", "--out", "{tmp}/r"],
                                     ["n='abc' must be a whole number"]),
    "run data option zero": (["run", "--data", "spatial=shapes:n=0", "--out", "{tmp}/r"], ["n=0 must be ≥ 1"]),
    "run data images without folder": (["run", "--data", "photos=images", "--out", "{tmp}/r"],
                                       ["dataset 'images' needs a"]),
    "run data missing cutout file": (["run", "--data", "motion=cutout:/nonexistent/ann.json", "--out", "{tmp}/r"],
                                     ["does not exist"]),
    "run data pan over an empty folder": (["run", "--data", "camera=pan:photo_dir={empty}", "--out", "{tmp}/r"],
                                          ["holds 0 readable photo", "3 are needed"]),
    "run data option unknown": (["run", "--data", "spatial=shapes:colour=red", "--out", "{tmp}/r"],
                                ["has no option colour"]),
    "run unknown suite": (["run", "--model", "pixels", "--suite", "q3", "--out", "{tmp}/r"],
                          ["--suite 'q3'", "unknown suite"]),
    "run mistyped model": (["run", "--model", "qwen-typo", "--out", "{tmp}/r"], ["unknown model 'qwen-typo'"]),
    "run local model without config": (["run", "--model", "{empty}", "--out", "{tmp}/r"], ["config.json"]),
    "run out under a file": (["run", "--model", "pixels", "--out", "{file}/r"], ["is a file"]),
    "extract missing COCO file": (["extract", "-m", "pixels", "-d", "coco:/nonexistent/ann.json", "--out", "{tmp}/s"],
                                  ["does not exist"]),
    "extract empty image folder": (["extract", "-m", "pixels", "-d", "images:{empty}", "--out", "{tmp}/s"],
                                   ["0 readable images"]),
    "extract corrupt image": (["extract", "-m", "pixels", "-d", "images:{broken}", "--out", "{tmp}/s"],
                              ["cannot be decoded", "--skip-bad"]),
    "extract unknown dataset": (["extract", "-m", "pixels", "-d", "nope", "--out", "{tmp}/s"],
                                ["unknown dataset 'nope'"]),
    "extract n zero": (["extract", "-m", "pixels", "-d", "shapes", "--n", "0", "--out", "{tmp}/s"], ["--n"]),
    "extract unknown dtype": (["extract", "-m", "pixels", "-d", "shapes", "--dtype", "fp8", "--out", "{tmp}/s"],
                              ["--dtype 'fp8'"]),
    "extract into a folder that is not a store": (["extract", "-m", "pixels", "-d", "shapes", "--n", "4",
                                                   "--out", "{tmp}"], ["is not a feature store"]),
    "extract mistyped model": (["extract", "-m", "qwen-typo", "-d", "shapes", "--out", "{tmp}/s"],
                               ["unknown model 'qwen-typo'"]),
    "calibrate the pixel baseline": (["calibrate", "--model", "pixels", "--out", "{tmp}/c"],
                                     ["calibrate", "pixel baseline"]),
    "calibrate batch size 0": (["calibrate", "--batch-size", "0", "--out", "{tmp}/c"], ["--batch-size"]),
    "calibrate device tpu": (["calibrate", "--device", "tpu", "--out", "{tmp}/c"], ["--device 'tpu'"]),
    "calibrate mistyped model": (["calibrate", "--model", "qwen-typo", "--out", "{tmp}/c"],
                                 ["unknown model 'qwen-typo'"]),
    "preview unknown dataset": (["datasets", "preview", "nope", "--out", "{tmp}/p.png"], ["unknown dataset 'nope'"]),
    "preview missing COCO file": (["datasets", "preview", "coco:/nonexistent/ann.json", "--out", "{tmp}/p.png"],
                                  ["does not exist"]),
    "preview out in /proc": (["datasets", "preview", "shapes", "--out", "/proc/p.png"], ["/proc/p.png"]),
    "bench images 0": (["bench", "--images", "0"], ["--images"]),
    "bench repeats 0": (["bench", "--repeats", "0"], ["--repeats"]),
    "bench rss images negative": (["bench", "--rss-images", "-1"], ["--rss-images"]),
    "bench mistyped model": (["bench", "--model", "qwen-typo"], ["unknown model 'qwen-typo'"]),
    "report of a missing folder": (["report", "{tmp}/nowhere"], ["is not a directory"]),
    "report of a file": (["report", "{file}"], ["is not a directory"]),
    "report of a folder that is no run": (["report", "{empty}"], ["is not a run directory"]),
    "validate of a missing folder": (["validate", "{tmp}/nowhere"], ["is not a directory"]),
    "validate of a folder that is no run": (["validate", "{empty}"], ["is not a run directory"]),
    "compare one run": (["compare", "{empty}"], ["at least two"]),
    "stages of a mistyped model": (["stages", "qwen-typo"], ["unknown model 'qwen-typo'"]),
    # issue #22: tiles beyond the run's limit, another family's stage, an unsupported architecture
    "run max-tiles 0": (["run", "--model", "internvl3.5-tiny", "--max-tiles", "0", "--out", "{tmp}/r"],
                        ["--max-tiles must be at least 1"]),
    "run InternVL images cut into more tiles than --max-tiles": (
        ["run", "--model", "internvl3.5-tiny", "--quick", "--experiments", "e_q2_1", "--max-tiles", "3",
         "--out", "{tmp}/r"], ["spatial data", "448×448 px image is cut into 2×2 = 4 tiles", "--max-tiles"]),
    "run SmolVLM images cut into more tiles than --max-tiles": (
        ["run", "--model", "smolvlm-tiny", "--quick", "--experiments", "e_q2_1", "--max-tiles", "1",
         "--data", "spatial=shapes:image_size=1024", "--out", "{tmp}/r"], ["spatial data", "tiles", "--max-tiles"]),
    "run stage of another family": (["run", "--model", "gemma3-tiny", "--stages", "vision.pre_merge",
                                     "--out", "{tmp}/r"],
                                    ["'vision.pre_merge' matches no stage", "vision.pre_pool", "vision.post_pool"]),
    "extract stage of another family": (["extract", "-m", "internvl3.5-tiny", "-d", "shapes", "--out", "{tmp}/s",
                                         "--stages", "vision.post_pool"],
                                        ["'vision.post_pool' matches no stage", "vision.pre_shuffle"]),
    "run unsupported architecture": (["run", "--model", "{bert}", "--out", "{tmp}/r"],
                                     ["'bert' model", "does not support", "gemma3", "internvl", "llava_onevision",
                                      "qwen4_exp", "smolvlm"]),
}


def make_inputs(root: Path) -> dict[str, str]:
    """The files and folders the cases name; see the module docstring."""
    (root / "file").write_text("in the way")
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notcoco.json").write_text(json.dumps({"hello": "world"}))
    (root / "badjson.json").write_text("[1, 2")
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return {"{bert}": str(root / "bert"), "{tmp}": str(root), "{file}": str(root / "file"),
            "{empty}": str(root / "empty"), "{broken}": str(root / "broken"), "{notcoco}": str(root / "notcoco.json"),
            "{badjson}": str(root / "badjson.json")}


def command_line(args: list[str], names: dict[str, str]) -> list[str]:
    for name, value in names.items():
        args = [arg.replace(name, value) for arg in args]
    return args


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, words = CASES[case]
    monkeypatch.chdir(tmp_path)  # a default output path would land here
    names = make_inputs(tmp_path)
    before = files_under(tmp_path)
    result = runner.invoke(app, command_line(args, names))
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    messages = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(set(messages)) == 1, output  # one message (stdout and stderr both hold it under CliRunner)
    for word in words:
        assert word in messages[0], messages[0]
    assert "Traceback" not in output and "run directory:" not in output
    assert files_under(tmp_path) == before


def test_the_table_covers_every_command_and_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    commands = {args[0] for args, _ in CASES.values()}
    assert commands == {"run", "extract", "calibrate", "datasets", "bench", "report", "validate", "compare",
                        "stages", "plan"}


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


@pytest.mark.parametrize("command", [["run", "--model", "pixels", "--quick"],
                                     ["calibrate", "--model", "qwen2.5-vl-tiny"]])
def test_bfloat16_on_a_device_without_it_is_refused_before_any_work(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bfloat16 asked where it would only be emulated (slower than float32): exit 2, offering float32 / auto."""
    monkeypatch.setattr("stageprobe.probes.training.native_bf16", lambda _device: False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "--probe-precision", "bfloat16", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    first = result.output.strip().splitlines()[0]
    assert "does not compute bfloat16 natively" in first and "use float32 or auto" in first, first
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


#: a user's process: runs the command line in argv, then says whether torch was imported, and the exit code
USER_PROCESS = ("import sys\nfrom stageprobe.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
                "    print('torch' in sys.modules, e.code, file=sys.stderr)\n")


@pytest.mark.parametrize("case", ["run out in /proc", "run seeds 100000", "run calibrate pixels",
                                  "run missing COCO file", "preview to a text file"])
def test_refusals_as_a_user_runs_them_import_no_torch(case: str, tmp_path: Path) -> None:
    """The fast path, in a fresh process: refused (exit 2) before torch, the suite or a model is imported.
    benchmarks/bench_refusals.py times these."""
    names = make_inputs(tmp_path)
    before = files_under(tmp_path)
    done = subprocess.run([sys.executable, "-c", USER_PROCESS, *command_line(CASES[case][0], names)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "False 2", done.stderr[-2000:]
    assert "Traceback" not in done.stderr and files_under(tmp_path) == before


def test_probe_workers_beyond_the_cores_are_capped_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   ) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("stageprobe.suites.runner.run_study", lambda config, *_, **__: seen.append(config)
                        or sys.exit(0))
    result = runner.invoke(app, ["run", "--model", "pixels", "--quick", "--probe-workers", "1000",
                                 "--out", str(tmp_path / "run")])
    cores = len(os.sched_getaffinity(0))
    assert result.exit_code == 0, result.output
    assert f"warning: --probe-workers 1000 is more than the {cores} core(s)" in result.output
    assert seen[0].probe_workers == cores
