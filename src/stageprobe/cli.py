"""The `stageprobe` command line. Bad input → one message and exit code 2; internal errors → 1."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stageprobe import __version__
from stageprobe._checks import (
    check_image_file_name,
    check_image_size,
    check_multiple_of_patch,
    check_positive,
    check_preview_count,
    check_writable_dir,
    check_writable_file,
    parse_size,
)
from stageprobe._preflight import check_run_plan, check_run_tiles, validate_options
from stageprobe._resume import (
    DEFAULT_RUNS_ROOT,
    command_line,
    find_resumable_run,
    resume_command,
    run_never_started,
    unfinished_run,
)
from stageprobe.errors import UserInputError

if TYPE_CHECKING:
    from stageprobe.datasets import Dataset
    from stageprobe.models import StageInfo
    from stageprobe.suites.runner import RunConfig

# Only typer, rich and the torch-free `_checks` / `_resume` are imported here: `--help`,
# `--version` and every refusal of bad input answer without loading torch. Each command imports
# what it needs when it runs.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help=(
    "Measure what a vision-language model still knows at every stage of its pipeline.\n\n"
    "Bad input is refused with one message and exit code 2, before anything is written; a problem of the "
    "environment (disk, memory) exits 1; Ctrl-C 130, SIGTERM 143. `stageprobe COMMAND --help` shows examples."))
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
#: `--probe-precision` of `run` and `calibrate`
PROBE_PRECISION_HELP = ("what the gradient-trained probes compute in: auto (bfloat16 where the device does it "
                        "natively, else float32) | float32 | bfloat16")

DEFAULT_MODEL = "qwen2.5-vl-tiny"


#: every dataset kind a command takes (`--dataset`, `--data KEY=…`, `datasets preview`); a test checks it
#: against the dataset registry
DATASET_KINDS = ("shapes | textures | motion | pan[:images:DIR] | coco:PATH | cutout:PATH | images:DIR | "
                 "videos:DIR[:labels=CSV] (options as :key=value, e.g. shapes:n=200)")


def examples(*lines: str) -> str:
    """A command's help epilog: its examples, one per line (\\b keeps click from rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


DeviceMapOption = Annotated[str | None, typer.Option(
    help="split a checkpoint over several GPUs with accelerate: auto | balanced | sequential")]


#: `--debug`: let an error's trace through instead of the one-line message
_DEBUG = {"on": False}
#: errno values that mean a path the user gave is wrong (input, exit 2); any other OS error is the
#: environment's (a full disk, an I/O error: exit 1)
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                          errno.ENAMETOOLONG, errno.EEXIST})


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: finished work kept, the resume command printed (exit 143)."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def interrupted_code(error: KeyboardInterrupt) -> int:
    """The shell's code for the signal: 128 + SIGTERM (143) or 128 + SIGINT (130)."""
    return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)


def _explain(error: Exception) -> tuple[int, str]:
    """Exit code and one message for an error that ended a command."""
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(error, UserInputError):
        return 2, str(error)
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        what = error.strerror or str(error)
        if error.errno in _PATH_ERRNOS:
            return 2, f"{what}{where}; check the path and its permissions"
        return 1, f"{what}{where}: the system refused (disk full? quota? a failing disk?); fix it and rerun"
    if isinstance(error, BrokenProcessPool):
        return 1, ("a probe worker process died (killed for memory? see `dmesg`); finished experiments are kept: "
                   "rerun the same command with fewer --probe-workers to resume")
    if isinstance(error, MemoryError):
        return 1, "out of memory; finished work is kept: rerun with a smaller --batch-size or fewer --probe-workers"
    return 1, (f"internal error: {type(error).__name__}: {error} — a bug in stageprobe; rerun with --debug for "
               "the trace and report it")


def user_errors(command: F) -> F:
    """Turn an error into one red line (exit 2 for bad input, 1 for the environment or a bug), and Ctrl-C
    or SIGTERM into one line (130 / 143), with no traceback unless --debug."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise  # already the command line's own answer
        except KeyboardInterrupt as error:
            err_console.print("interrupted: finished feature shards and experiments are kept; "
                              "rerun the same command to resume", highlight=False, soft_wrap=True)
            raise typer.Exit(interrupted_code(error)) from None
        except Exception as error:
            if _DEBUG["on"]:
                raise
            code, message = _explain(error)
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _print_version(wanted: bool) -> None:
    if wanted:
        console.print(f"stageprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show the full trace of an error")] = False,
) -> None:
    """Measure what a vision-language model still knows at every stage of its pipeline."""
    _DEBUG["on"] = debug


@app.command(short_help='List model presets and supported architectures.', epilog=examples(
    "stageprobe models",
))
@user_errors
def models() -> None:
    """List model presets and supported architectures."""
    from stageprobe.models import _catalog

    table = Table("preset", "what")
    for name, description in _catalog.preset_descriptions().items():
        table.add_row(name, description)
    console.print(table)
    console.print("Hub ids and local directories of these architectures (config.json model_type): "
                  + ", ".join(_catalog.model_types()))


@app.command(short_help="A model's stages: grid, tokens and width for an N×N image.", epilog=examples(
    "stageprobe stages qwen2.5-vl-tiny",
    "stageprobe stages --model Qwen/Qwen2.5-VL-7B-Instruct --image-size 896 --json",
))
@user_errors
def stages(
    model_argument: Annotated[str | None, typer.Argument(
        metavar="[MODEL]", help="preset, Hub id or local directory (or --model)")] = None,
    model_option: Annotated[str | None, typer.Option(
        "--model", "-m", help=f"preset, Hub id or local directory (default {DEFAULT_MODEL})")] = None,
    image_size: Annotated[int, typer.Option(help="square input image size in pixels")] = 448,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
) -> None:
    """List a model's stages with grid shape and width for an N×N image."""
    if model_argument and model_option and model_argument != model_option:
        raise UserInputError(f"two models given ({model_argument!r} and --model {model_option!r}); pass one")
    model = model_argument or model_option or DEFAULT_MODEL
    check_image_size(image_size)
    infos = _stage_infos_without_weights(model, image_size, trust_remote_code)
    merged = max(infos, key=lambda info: info.stride_px)
    resized = (merged.grid[1] * merged.stride_px, merged.grid[2] * merged.stride_px)
    check_multiple_of_patch(image_size, merged.stride_px, resized, model)
    if as_json:
        sys.stdout.write(json.dumps([
            {"name": s.name, "stride_px": s.stride_px, "dim": s.dim, "grid": list(s.grid),
             "tokens": s.tokens, "description": s.description} for s in infos
        ], indent=2) + "\n")
        return
    note = "" if resized == (image_size, image_size) else f" (the model resizes it to {resized[1]}×{resized[0]})"
    table = Table("stage", "stride px", "grid T×H×W", "tokens", "width", "what",
                  title=f"{model} at {image_size} px{note}")
    for s in infos:
        table.add_row(s.name, str(s.stride_px), "×".join(map(str, s.grid)), str(s.tokens), str(s.dim), s.description)
    console.print(table)


def _stage_infos_without_weights(model: str, image_size: int, trust_remote_code: bool) -> list[StageInfo]:
    """The stages of `model` for an N×N image, from its config on the meta device (no weights read)."""
    from stageprobe.models import describe_stages

    return describe_stages(model, image_size, image_size, trust_remote_code=trust_remote_code)


def _check_stage_patterns(model: str, patterns: list[str] | None, trust_remote_code: bool) -> None:
    """Every --stages pattern names a stage of `model`, checked before the model loads."""
    if not patterns:
        return
    from stageprobe.models import check_stage_patterns

    check_stage_patterns(model, patterns, trust_remote_code=trust_remote_code)


def _check_verdict_stage(model: str, verdict_stage: str | None, trust_remote_code: bool) -> None:
    """--verdict-stage names a stage of `model`, checked before the model loads."""
    if verdict_stage is None:
        return
    from stageprobe.models import check_stage_patterns

    stages = check_stage_patterns(model, ["*"], trust_remote_code=trust_remote_code)
    if verdict_stage not in stages:
        raise UserInputError(f"--verdict-stage {verdict_stage!r} is not a stage of {model}; its stages are "
                             f"{', '.join(stages)}")


@app.command(short_help="Write a feature store of a model's stages over a dataset.", epilog=examples(
    "stageprobe extract -m pixels -d shapes --n 64 --out stores/shapes",
    "stageprobe extract -m qwen2.5-vl-tiny -d coco:instances_val2017.json -s 'vision.*' --out stores/coco",
))
@user_errors
def extract(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", metavar="DATASET", help=DATASET_KINDS)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="feature store directory (resumed if it exists)")],
    stages: Annotated[list[str] | None, typer.Option(
        "--stages", "-s", metavar="GLOB", help="stage glob, e.g. 'vision.*'; repeatable")] = None,
    batch_size: Annotated[int, typer.Option(help="images (or clips) per forward pass")] = 8,
    device_map: DeviceMapOption = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="model dtype: auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16")] = "auto",
    store_dtype: Annotated[str, typer.Option(help="dtype on disk: float16 | bfloat16 | float32")] = "float16",
    limit: Annotated[int | None, typer.Option(help="extract only the first N samples")] = None,
    shard_size: Annotated[int, typer.Option(help="samples per shard file (host memory holds about 3 shards)")] = 64,
    n: Annotated[int | None, typer.Option(help="number of samples of a generated dataset")] = None,
    seed: Annotated[int, typer.Option(help="seed of a generated dataset")] = 0,
    skip_bad: Annotated[bool, typer.Option(help="skip unreadable images (counted in the manifest)")] = False,
    frames_as_images: Annotated[bool, typer.Option(help="seed protocol: each video frame as a separate image")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
) -> None:
    """Write a feature store of the model's stages over a dataset; resumes if interrupted."""
    if device_map is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError(
            "--device-map splits one model over every GPU of one process; under torchrun each rank uses its "
            "own GPU. Run one process with --device-map, or torchrun without it"
        )
    _validated("extract", {
        "model": model, "dataset": dataset, "out": out, "batch_size": batch_size, "device_map": device_map,
        "device": device, "dtype": dtype, "limit": limit, "shard_size": shard_size, "n": n, "seed": seed,
        "skip_bad": skip_bad})
    from stageprobe.features.extract import check_extraction_options, check_store_settings, extract_dataset
    from stageprobe.models import load_model

    dtype_name = check_extraction_options(batch_size, shard_size, limit, store_dtype)
    _check_stage_patterns(model, stages, trust_remote_code)
    data = _dataset(dataset, n=n, seed=seed, skip_bad=skip_bad)
    check_store_settings(out, {"dataset_spec": data.spec(), "store_dtype": dtype_name, "shard_size": shard_size,
                               "num_samples": len(data) if limit is None else min(limit, len(data))})
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        device_map=device_map)
    try:
        store = extract_dataset(loaded, data, out, stages=stages or None, batch_size=batch_size,
                                store_dtype=store_dtype, shard_size=shard_size, limit=limit,
                                frames_as_images=frames_as_images)
    except KeyboardInterrupt as error:
        err_console.print(f"interrupted: the finished feature shards are kept in {out}; rerun the same command to "
                          f"extract the rest: {_resume_command(ctx, out)}", highlight=False, soft_wrap=True)
        raise typer.Exit(interrupted_code(error)) from None
    console.print(f"feature store: {out} ({len(store)} samples, {len(store.stages)} stages)")


@app.command(short_help='The whole study: data → features → probes → report.', epilog=examples(
    "stageprobe run --quick --model pixels",
    "stageprobe run --model qwen2.5-vl-tiny --experiments E-Q2.1,E-Q2.2 --limit 100",
    "stageprobe run --data spatial=coco:instances_val2017.json --seeds 3 --out runs/coco",
    "stageprobe run --experiments list",
))
@user_errors
def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = DEFAULT_MODEL,
    suite: Annotated[str, typer.Option(help="study to run")] = "q2",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<model>-<UTC>)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="CPU smoke test: small datasets")] = False,
    full: Annotated[bool, typer.Option("--full", help="large datasets: tighter confidence intervals")] = False,
    stages: Annotated[list[str] | None, typer.Option(
        "--stages", "-s", metavar="GLOB", help="stage glob, e.g. 'vision.*'; repeatable")] = None,
    protocol: Annotated[str, typer.Option(help="stageprobe | seed (the original pooled protocol)")] = "stageprobe",
    seed: Annotated[int, typer.Option(help="seed of data, splits, probes and bootstrap (one number; --seeds says "
                                      "how many probe seeds)")] = 0,
    no_controls: Annotated[bool, typer.Option("--no-controls", help="skip pixel / random-init controls")] = False,
    batch_size: Annotated[int, typer.Option(help="images (or clips) per forward pass")] = 8,
    probe_workers: Annotated[int | None, typer.Option(
        help="processes fitting probes at once (default: one per core on CPU, up to 4; one on a GPU)")] = None,
    device_map: DeviceMapOption = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")] = "auto",
    store_dtype: Annotated[str, typer.Option(help="feature dtype on disk: float16 | bfloat16 | float32")] = "float16",
    cache_dir: Annotated[Path | None, typer.Option(help="where feature stores live (default RUN_DIR/features)")] = None,
    use_wandb: Annotated[bool, typer.Option("--wandb", help="log config, metrics, tables and plots to W&B")] = False,
    wandb_project: Annotated[str, typer.Option(help="W&B project")] = "stageprobe",
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
    data: Annotated[list[str] | None, typer.Option(
        "--data", metavar="KEY=DATASET", help="real data for one experiment family; repeatable. Keys: spatial "
        "(E-Q2.1–4, e.g. spatial=coco:ANN.json[:image_dir=DIR]), detail (E-Q2.5, procedural textures by "
        "default), photos (E-Q2.5 on real photos, e.g. photos=images:DIR), "
        "motion (E-Q2.6, e.g. motion=cutout:ANN.json), camera (E-Q2.6 camera motion, e.g. "
        "camera=pan:photo_dir=DIR). Default: generated data and skimage photos. DATASET: "
        + DATASET_KINDS)] = None,
    experiments: Annotated[str | None, typer.Option(
        help="comma-separated experiment ids to run (see `--experiments list`; E-Q2.N works too)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most N samples per dataset (a quick look, wide CIs)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help=f"continue the newest unfinished run of these settings under {DEFAULT_RUNS_ROOT}/")] = False,
    verdict_stage: Annotated[str | None, typer.Option(
        help="judge every target at this stage (default: vision.post_merge; a ViT's last stage)")] = None,
    seeds: Annotated[int | None, typer.Option(
        help="probe seeds per fit of the deciding probes at their verdict stages and of every gradient-trained "
             "probe, SEED, SEED+1, …, their controls fitted over the same seeds: their spread goes into the CI "
             "(1–20; default: 3 for the deciding probes at the default size, 1 elsewhere)")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="start afresh in --out, discarding a run with other settings found there")] = False,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="also plant known losses and check the probes find them (a Calibration section)")] = False,
    max_disk: Annotated[str | None, typer.Option(
        help="disk the feature stores may take at once: 80G, 500M or bytes (default: the free space less 2 GiB); "
        "a study that does not fit runs in stage groups that do")] = None,
    no_twin: Annotated[bool, typer.Option(
        "--no-twin", help="skip the random-init twin of a pretrained model (then what training did is not said)")
    ] = False,
    max_tiles: Annotated[int | None, typer.Option(
        help="tiling models (InternVL, SmolVLM, LLaVA-OneVision): refuse data whose images the processor would "
        "cut into more tiles than this, before any work (default: the processor's own limit)")] = None,
    probe_precision: Annotated[str, typer.Option(help=PROBE_PRECISION_HELP)] = "auto",
) -> None:
    """The whole study: data → features → probes → metrics → report. Resumes an interrupted run."""
    if experiments == "list":
        _list_experiments(suite)
        return
    options = _validated("run", {
        "model": model, "quick": quick, "full": full, "protocol": protocol, "device": device, "dtype": dtype,
        "device_map": device_map, "batch_size": batch_size, "limit": limit, "seeds": seeds,
        "probe_workers": probe_workers, "experiments": experiments, "calibrate": calibrate, "out": out,
        "cache_dir": cache_dir, "data": data, "max_disk": max_disk, "max_tiles": max_tiles})
    from stageprobe.suites._plan import disk_budget, plan_run

    config = _run_config({
        "model": model, "suite": suite, "size": "quick" if quick else "full" if full else "default",
        "stages": stages or None, "protocol": protocol, "seed": seed, "controls": not no_controls,
        "batch_size": batch_size, "probe_workers": options["probe_workers"], "device": device,
        "device_map": device_map, "dtype": dtype, "store_dtype": store_dtype, "trust_remote_code": trust_remote_code,
        "experiments": _experiment_ids(suite, experiments) if experiments else None, "limit": limit,
        "data": options["data"] or None, "verdict_stage": verdict_stage, "seeds": seeds, "calibrate": calibrate,
        "max_disk": options["max_disk"], "twin": not no_twin, "probe_precision": probe_precision,
    })
    _check_run_inputs(config, stages or ["*"], max_tiles, use_wandb)
    run_dir = _run_dir(out, resume, config)
    # the stores against the disk budget, before the run is announced (a stage too large for it: exit 2, the recipe)
    the_plan = plan_run(config, cache_dir or run_dir / "features")
    the_plan.stage_groups(disk_budget(the_plan, config.max_disk))
    overwrite = overwrite or _check_run_folder(run_dir, config)
    _execute_run(ctx, config, run_dir, cache_dir, overwrite, wandb_project if use_wandb else None)


def _check_run_inputs(config: RunConfig, stages: list[str], max_tiles: int | None, use_wandb: bool) -> None:
    """What `run` refuses once its options parse: data the suite cannot use, stages and a verdict stage the
    model lacks, images over the tile limit, a missing W&B client — all before anything is written."""
    suite_spec = config.the_suite()
    experiment_ids = config.experiments or suite_spec.experiment_ids
    check_run_plan(suite_spec, experiment_ids, config.size, config.data, config.limit, config.seed)
    _check_stage_patterns(config.model, stages, config.trust_remote_code)  # also: the model's config can be read
    _check_verdict_stage(config.model, config.verdict_stage, config.trust_remote_code)
    check_run_tiles(config.model, max_tiles, suite_spec, experiment_ids, config.size, config.data, config.limit,
                    config.seed, config.trust_remote_code)
    if use_wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--wandb needs the wandb client: pip install 'stageprobe[wandb]'")


def _execute_run(ctx: typer.Context, config: RunConfig, run_dir: Path, cache_dir: Path | None, overwrite: bool,
                 wandb_project: str | None) -> None:
    """Announce the run directory and its resume command, run the study, log to W&B when asked."""
    from stageprobe.suites.runner import run_study

    rerun = _resume_command(ctx, run_dir)
    err_console.print(f"run directory: {run_dir}\nto resume it if interrupted: {rerun}", highlight=False,
                      soft_wrap=True)
    try:
        paths = run_study(config, run_dir, cache_dir, overwrite=overwrite)
    except KeyboardInterrupt as error:
        err_console.print(f"interrupted: finished feature shards and experiments are kept in {run_dir}; "
                          f"rerun the same command to resume: {rerun}", highlight=False, soft_wrap=True)
        raise typer.Exit(interrupted_code(error)) from None
    if wandb_project is not None:
        from stageprobe.report.wandb_log import log_to_wandb

        log_to_wandb(run_dir, project=wandb_project)
    console.print(f"findings: {paths.findings}\nreport:   {paths.html}\nresults:  {paths.results}")


def _check_run_folder(run_dir: Path, config: RunConfig) -> bool:
    """Refuse a folder holding a run with other settings, before the run directory is announced; True
    when the folder's run never started (nothing measured), so it is started afresh."""
    from stageprobe.suites.runner import _differences

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        return False
    previous = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(previous, dict) or previous.get("identity") == config.identity():
        return False
    if run_never_started(run_dir):
        return True
    there = {key: previous.get(key) for key in config.identity_settings()}
    raise UserInputError(
        f"{run_dir} holds a run with other settings ({_differences(there, config.identity_settings())}); "
        "pass the same settings to resume it, another --out, or --overwrite to start afresh")


def _run_config(settings: dict[str, Any]) -> RunConfig:
    """The validated RunConfig; options left unset (None) keep the config's defaults. Checks the store
    dtype too, which the runner would otherwise first meet after loading the model."""
    from pydantic import ValidationError

    from stageprobe.features.store import resolve_store_dtype
    from stageprobe.suites.runner import RunConfig

    resolve_store_dtype(settings["store_dtype"])
    try:
        return RunConfig(**{key: value for key, value in settings.items() if value is not None})
    except ValidationError as error:
        first = error.errors()[0]
        option = str(first["loc"][0]).replace("_", "-")
        raise UserInputError(f"--{option} {first.get('input')!r}: {_plain(first)}") from None


def _plain(error: Mapping[str, Any]) -> str:
    """A pydantic error in the tool's words ("must be at least 1", not "Input should be …" or "Value error, …")."""
    limits = error.get("ctx") or {}
    if "ge" in limits:
        return f"must be at least {limits['ge']}"
    if "le" in limits:
        return f"must be at most {limits['le']}"
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return message.replace("Input should be", "must be")


def _validated(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """The validation pass (`_preflight`): refuses bad input, prints a warning for each value it capped."""
    request = validate_options(command, options)
    for warning in request.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    return request.options


def _run_dir(out: Path | None, resume: bool, config: RunConfig) -> Path:
    """--out, else with --resume the newest unfinished run of these settings, else a new directory."""
    from stageprobe.suites.runner import default_run_dir

    found = find_resumable_run(DEFAULT_RUNS_ROOT, config.identity()) if resume and out is None else None
    if resume and out is None and found is None:
        err_console.print(f"no unfinished run of these settings under {DEFAULT_RUNS_ROOT}/: starting a new one")
    run_dir = out or found or default_run_dir(config.model)
    check_writable_dir(run_dir)
    return run_dir


def _suite_experiments(suite: str) -> dict[str, str]:
    """Experiment id → title of a suite (an unknown suite: UserInputError naming the available ones)."""
    from stageprobe.suites import get_suite

    return {spec.id: spec.title for spec in get_suite(suite).experiments}


def _list_experiments(suite: str) -> None:
    table = Table("id", "experiment", title=f"experiments of suite {suite} (run a few with --experiments ID,ID)")
    for experiment_id, title in _suite_experiments(suite).items():
        table.add_row(experiment_id, title)
    console.print(table)


def _experiment_ids(suite: str, text: str) -> list[str]:
    """Ids from a comma-separated list (the suite's ids or the seed's `E-Q2.N` spelling), in suite order, checked."""
    known = _suite_experiments(suite)
    wanted = [part.strip().lower().replace("-", "_").replace(".", "_") for part in text.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in known]
    if unknown or not wanted:
        raise UserInputError(f"--experiments: unknown experiment {', '.join(unknown) or '(none given)'}; "
                             f"the experiments of suite {suite} are {', '.join(known)} (`--experiments list`)")
    return [experiment_id for experiment_id in known if experiment_id in wanted]


def _resume_command(ctx: typer.Context, run_dir: Path) -> str:
    """The options given on this command line, with `--out RUN_DIR` in place of --out / --resume."""
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name or "")
        # by name: typer may bring its own copy of click, whose enum is not click.core's
        if param.name in ("out", "resume") or source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name or ""]
        flag = param.opts[0]
        secondary = getattr(param, "secondary_opts", None)
        if secondary and value is False:
            flag, value = secondary[0], True
        given.append((flag, value))
    return command_line(f"stageprobe {ctx.info_name or 'run'}", [*given, ("--out", run_dir)])


@app.command(short_help='Re-render FINDINGS.md and report.html of a valid run.', epilog=examples(
    "stageprobe report runs/qwen2.5-vl-tiny-20260101T000000Z",
))
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run directory")]) -> None:
    """Re-render FINDINGS.md and report.html from results.yaml + metrics.csv, once the run passes `validate`."""
    _check_finished_run(run_dir)
    from stageprobe.report.render import render_report
    from stageprobe.report.validate import validate_run

    outputs = ("FINDINGS.md is missing", "report.html is missing")  # what this command writes
    problems = [problem for problem in validate_run(run_dir) if not problem.startswith(outputs)]
    if problems:
        _list_problems(problems)
        raise UserInputError(f"{run_dir} fails validation with {len(problems)} problem(s) (listed above), so its "
                             "FINDINGS.md and report.html were left as they are; restore the run's files or rerun it")
    paths = render_report(run_dir)
    console.print(f"findings: {paths.findings}\nreport:   {paths.html}")


@app.command(short_help='Check a run: schema, artifacts, verdicts against metrics.', epilog=examples(
    "stageprobe validate runs/qwen2.5-vl-tiny-20260101T000000Z",
))
@user_errors
def validate(run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run directory")]) -> None:
    """Check results.yaml against the schema, that artifacts exist and verdicts agree with metrics."""
    _check_finished_run(run_dir)
    from stageprobe.report.validate import validate_run

    problems = validate_run(run_dir)
    if problems:
        _list_problems(problems)
        raise UserInputError(f"{run_dir} failed validation with {len(problems)} problem(s) (listed above)")
    console.print(f"[green]✓[/] {run_dir} is valid")


def _list_problems(problems: list[str]) -> None:
    for problem in problems:
        err_console.print(f"[red]✗[/] {escape(problem)}", highlight=False, soft_wrap=True)


def _check_finished_run(run_dir: Path) -> None:
    """`run_dir` is a run directory whose run finished; an unfinished one is named with its resume command."""
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir} is not a directory; pass a run directory (the --out of `stageprobe run`)")
    config = unfinished_run(run_dir)
    if config is not None:
        done = [path for path in (run_dir / "experiments").glob("*.json") if path.name != "run.json"]
        raise UserInputError(f"{run_dir} holds an unfinished run ({len(done)} experiment(s) finished, no "
                             f"results.yaml yet); resume it with: {resume_command(run_dir, config)}")
    if not (run_dir / "results.yaml").is_file():
        raise UserInputError(f"{run_dir} is not a run directory (no results.yaml or config.yaml); pass the --out "
                             "of a `stageprobe run`")


@app.command(short_help='Stage metrics of several runs side by side.', epilog=examples(
    "stageprobe compare runs/a runs/b",
    "stageprobe compare runs/qwen runs/gemma --figure families.png",
))
@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="two or more run directories")],
    figure: Annotated[Path | None, typer.Option(
        help="draw the stage-kind-aligned retention figure (PNG) here; implies --aligned")] = None,
    aligned: Annotated[bool | None, typer.Option(
        "--aligned/--by-name", help="align stages by kind (embedding, ViT depth, connector in/out, LLM depth) "
        "instead of by name (default: aligned when the runs are of different models)")] = None,
) -> None:
    """Stage metrics of several runs side by side, with deltas against the first; runs of different
    models aligned by stage kind, with each information type's retention against the pixel ceiling."""
    from stageprobe.report.compare import (
        align_runs,
        aligned_table,
        compare_runs,
        comparison_table,
        plot_aligned,
        training_table,
    )
    from stageprobe.report.render import load_run

    if len(run_dirs) < 2:
        raise UserInputError("compare needs at least two run directories")
    if figure is not None and figure.suffix.lower() != ".png":
        raise UserInputError(f"--figure {figure} must name a .png file")
    if figure is not None:
        check_writable_file(figure, "--figure")
    if aligned is None:
        aligned = figure is not None or len({str(load_run(d)[0].get("model")) for d in run_dirs}) > 1
    # one column per run plus deltas: never squeeze it into a pipe's default 80 columns
    wide = Console(width=max(console.width, 220))
    training = training_table(run_dirs)
    if not aligned:
        wide.print(comparison_table(compare_runs(run_dirs)))
    else:
        runs = align_runs(run_dirs)
        wide.print(aligned_table(runs))
        if figure is not None:
            console.print(f"figure: {plot_aligned(runs, figure)}")
    if training is not None:
        wide.print(training)


@app.command(short_help='Performance benchmark: overhead, speedup, probe speed, memory.', epilog=examples(
    "stageprobe bench --model pixels --images 8",
    "stageprobe bench --json",
))
@user_errors
def bench(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = "qwen2.5-vl-tiny",
    images: Annotated[int, typer.Option(help="images in the timed batch (448×448 shapes)")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    repeats: Annotated[int, typer.Option(help="timed repeats after a warm-up (median reported)")] = 3,
    rss_images: Annotated[int, typer.Option(help="images of the small RSS run (large: 10×); 0 skips it")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Performance benchmark: extraction overhead, speedup over the seed protocol, probe speed, memory."""
    _validated("bench", {"model": model, "device": device, "images": images, "repeats": repeats,
                         "rss_images": rss_images})
    from stageprobe.bench import BenchSettings, bench_table, run_bench

    settings = BenchSettings(model=model, images=images, device=device, repeats=repeats, rss_images=rss_images)
    result = run_bench(settings, log=lambda line: err_console.print(f"[dim]bench: {line}[/]"))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    console.print(bench_table(result))


@app.command(short_help='Plant known losses and check the probes find them.', epilog=examples(
    "stageprobe calibrate --quick",
    "stageprobe calibrate --plant blur-detail@vision.post_merge --out runs/cal",
))
@user_errors
def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = "qwen2.5-vl-tiny",
    plant: Annotated[list[str] | None, typer.Option(
        "--plant", "-p", metavar="TYPE@STAGE", help="repeatable; TYPE: erase-position | scramble-position | "
        "blur-detail | erase-time | none (default: each type at a middle ViT block, vision.post_merge, "
        "a middle LLM layer)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="CPU smoke test: small datasets, few stages")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="output directory (default runs/calibrate-<model>-<UTC>)")] = None,
    seed: Annotated[int, typer.Option(help="seed of data, splits, probes, plants and bootstrap")] = 0,
    batch_size: Annotated[int, typer.Option(help="images (or clips) per forward pass")] = 8,
    device_map: DeviceMapOption = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
    probe_precision: Annotated[str, typer.Option(help=PROBE_PRECISION_HELP)] = "auto",
) -> None:
    """Plant known losses at known stages and check the study's probes find them there, nowhere earlier."""
    _validated("calibrate", {"model": model, "out": out, "batch_size": batch_size, "device_map": device_map,
                             "device": device, "dtype": dtype})
    from stageprobe.calibrate import Calibrator, default_plants, write_calibration
    from stageprobe.models import load_model
    from stageprobe.models.planting import parse_plant
    from stageprobe.probes import training
    from stageprobe.suites import DEFAULT_SUITE, get_suite
    from stageprobe.suites.runner import default_run_dir

    try:
        precision = training.resolve_precision(probe_precision)
    except ValueError as error:
        raise UserInputError(f"--probe-precision {probe_precision!r}: {error}") from None
    loaded = load_model(model, device=device, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
    study = get_suite(DEFAULT_SUITE)
    plants = [parse_plant(text, loaded) for text in plant] if plant else default_plants(loaded, study)
    for each in plants:  # a plant no information type of the suite reads: exit 2 before any extraction
        study.row_of_plant(each.type.name)
    run_dir = out or default_run_dir(f"calibrate-{model}")
    calibrator = Calibrator(loaded, study, run_dir, size="quick" if quick else "default", seed=seed,
                            batch_size=batch_size)
    with training.probe_precision(precision):
        result = calibrator.run(plants)
    data, markdown = write_calibration(result, run_dir)
    console.print(result.to_markdown(), highlight=False, soft_wrap=True)
    console.print(f"calibration: {markdown}\nresults:     {data}")


def _dataset(spec: str, n: int | None, seed: int, skip_bad: bool) -> Dataset:
    """Pass each command-line option only to datasets that take it (generated ones take n and seed);
    with skip_bad, say how many unreadable files were left out."""
    from stageprobe.datasets import dataset_options, load_dataset

    check_positive("--n", n)
    accepted = dataset_options(spec.partition(":")[0])
    wanted = {"n": n, "seed": seed, "skip_bad": skip_bad or None}
    data = load_dataset(spec, **{k: v for k, v in wanted.items() if v is not None and k in accepted})
    skipped = list(getattr(data, "skipped", None) or [])
    if skipped:
        first = skipped[0].get("record", skipped[0]) if isinstance(skipped[0], dict) else skipped[0]
        err_console.print(f"skipped {len(skipped)} unreadable file(s) (first: {first})", highlight=False,
                          soft_wrap=True)
    return data


@app.command(short_help="Stores, memory and disk a run would need, before any weight is read.", epilog=examples(
    "stageprobe plan --model Qwen/Qwen2.5-VL-7B-Instruct",
    "stageprobe plan --model qwen2.5-vl-7b-random --stages 'vision.*_merge' --max-disk 80G --json",
))
@user_errors
def plan(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = DEFAULT_MODEL,
    quick: Annotated[bool, typer.Option("--quick", help="the sizes of `run --quick`")] = False,
    full: Annotated[bool, typer.Option("--full", help="the sizes of `run --full`")] = False,
    stages: Annotated[list[str] | None, typer.Option("--stages", "-s", help="stage glob; repeatable")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="KEY=DATASET, as for `run`; repeatable")] = None,
    experiments: Annotated[str | None, typer.Option(help="comma-separated experiment ids, as for `run`")] = None,
    limit: Annotated[int | None, typer.Option(help="at most N samples per dataset")] = None,
    seeds: Annotated[int | None, typer.Option(help="probe seeds, as for `run` (more fits, more time)")] = None,
    probe_workers: Annotated[int | None, typer.Option(
        help="probe fits at once, as for `run` (default: one per core, at most 4)")] = None,
    probe_precision: Annotated[str, typer.Option(help=PROBE_PRECISION_HELP + ", as for `run`")] = "auto",
    no_controls: Annotated[bool, typer.Option("--no-controls", help="without pixel / twin controls")] = False,
    batch_size: Annotated[int, typer.Option(help="images (or clips) per forward pass")] = 8,
    store_dtype: Annotated[str, typer.Option(help="feature dtype on disk: float16 | bfloat16 | float32")] = "float16",
    cache_dir: Annotated[Path | None, typer.Option(help="where the feature stores would live")] = None,
    max_disk: Annotated[str | None, typer.Option(help="disk budget for the stores: 80G, 500M or bytes")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
) -> None:
    """What `run` with these options would store and hold, before any weight is read."""
    from stageprobe.datasets import parse_data_options
    from stageprobe.suites._plan import disk_budget, plan_run

    if quick and full:
        raise UserInputError("--quick and --full exclude each other; pick one")
    check_positive("--limit", limit)
    check_positive("--probe-workers", probe_workers)
    validate_options("plan", {"seeds": seeds})
    budget = parse_size(max_disk) if max_disk is not None else None
    config = _run_config({
        "model": model, "size": "quick" if quick else "full" if full else "default", "stages": stages or None,
        "seeds": seeds, "probe_workers": probe_workers, "probe_precision": probe_precision,
        "controls": not no_controls, "batch_size": batch_size, "store_dtype": store_dtype,
        "trust_remote_code": trust_remote_code, "limit": limit,
        "experiments": _experiment_ids("q2", experiments) if experiments else None,
        "data": parse_data_options(data or []) or None,
    })
    _check_stage_patterns(model, stages, trust_remote_code)
    the_plan = plan_run(config, cache_dir or Path("runs") / "features")
    budget = disk_budget(the_plan, budget)
    groups = the_plan.stage_groups(budget)
    if as_json:
        sys.stdout.write(json.dumps({**the_plan.as_json(groups), "max_disk_bytes": budget,
                                     "stage_groups": len(groups)}, indent=2) + "\n")
        return
    _print_plan(the_plan, budget, len(groups))
    estimate = the_plan.estimate(groups)
    console.print("\n".join(estimate.lines()) if estimate else "time: no measured costs in this installation "
                  "(benchmarks/plan_costs.py writes them)", highlight=False, soft_wrap=True)


def _print_plan(the_plan: Any, budget: int, groups: int) -> None:
    from stageprobe.suites._plan import human

    table = Table("model", "data", "samples", "input T×H×W", "stages", "stored", title=(
        f"{the_plan.model}, {the_plan.size} run, features as {the_plan.store_dtype}"))
    for store in the_plan.stores:
        table.add_row(store.variant, f"{store.family} ({store.dataset})", str(store.samples),
                      "×".join(map(str, store.input_size)), str(len(store.stages)), human(store.bytes))
    console.print(table)
    console.print(
        f"features in all: {human(the_plan.total_bytes)} under {the_plan.store_root} "
        f"(free there: {human(the_plan.free_disk)}; budget {human(budget)}: "
        f"{'one pass' if groups == 1 else f'{groups} stage groups, one forward pass each'})\n"
        f"host memory, estimated: extraction {human(the_plan.extraction_ram())} "
        f"(weights {human(the_plan.weight_bytes)} + a batch of activations), "
        f"one probe worker {human(the_plan.worker_ram())} (its largest stage in float32, twice)",
        highlight=False, soft_wrap=True)


datasets_app = typer.Typer(no_args_is_help=True, help="Look at the datasets before trusting a probe.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("preview", epilog=examples(
    "stageprobe datasets preview shapes", "stageprobe datasets preview coco:instances_val2017.json --out coco.png"))
@user_errors
def datasets_preview(
    name: Annotated[str, typer.Argument(
        metavar="DATASET", help=DATASET_KINDS)],
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: <name>-preview.png)")] = None,
    count: Annotated[int, typer.Option("--count", help="samples on the sheet")] = 16,
    seed: Annotated[int, typer.Option(help="seed of a generated dataset")] = 0,
) -> None:
    """Write a contact sheet with the targets drawn on (boxes, masks, motion arrows)."""
    check_preview_count(count)
    target = out or Path(f"{name.split(':')[0]}-preview.png")
    check_writable_file(target)
    check_image_file_name(target)
    from stageprobe.datasets import dataset_options, parse_spec, write_preview

    # A dataset read from disk (default n None) is opened whole: a folder with fewer files than
    # --count is previewed, not refused as too small for an experiment.
    natural_size = dataset_options(parse_spec(name)[0]).get("n")
    reads_disk = natural_size is not None and natural_size.default is None
    data = _dataset(name, n=None if reads_disk else count, seed=seed, skip_bad=True)
    console.print(f"preview: {write_preview(data, target, n=count)}")


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    app()


if __name__ == "__main__":
    main()
