"""The `stageprobe` command line. Bad input → one message and exit code 2; internal errors → 1."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stageprobe import __version__
from stageprobe._checks import (
    check_device,
    check_image_size,
    check_multiple_of_patch,
    check_positive,
    check_preview_count,
    check_writable_dir,
    check_writable_file,
)
from stageprobe._resume import DEFAULT_RUNS_ROOT, command_line, find_resumable_run
from stageprobe.errors import UserInputError

if TYPE_CHECKING:
    from stageprobe.datasets import Dataset
    from stageprobe.models import StageInfo
    from stageprobe.suites.runner import RunConfig

# Only typer, rich and the torch-free `_checks` / `_resume` are imported here: `--help`,
# `--version` and every refusal of bad input answer without loading torch. Each command imports
# what it needs when it runs.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MODEL = "qwen2.5-vl-tiny"


DeviceMapOption = Annotated[str | None, typer.Option(
    help="split a checkpoint over several GPUs with accelerate: auto | balanced | sequential")]


def user_errors(command: F) -> F:
    """Turn a UserInputError into one red line and exit code 2, and Ctrl-C into one line and 130,
    with no traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserInputError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished feature shards and experiments are kept; "
                              "rerun the same command to resume", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_version(wanted: bool) -> None:
    if wanted:
        console.print(f"stageprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print the version and exit")] = None,
) -> None:
    """Measure what a vision-language model still knows at every stage of its pipeline."""


@app.command()
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


@app.command()
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


@app.command()
@user_errors
def extract(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="shapes | textures | motion | coco:PATH | images:DIR")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="feature store directory (resumed if it exists)")],
    stages: Annotated[list[str] | None, typer.Option("--stages", "-s", help="stage glob; repeatable")] = None,
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
    from stageprobe.features.extract import check_extraction_options, check_store_settings, extract_dataset
    from stageprobe.models import load_model

    check_device(device)
    dtype_name = check_extraction_options(batch_size, shard_size, limit, store_dtype)
    check_writable_dir(out)
    if device_map is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError(
            "--device-map splits one model over every GPU of one process; under torchrun each rank uses its "
            "own GPU. Run one process with --device-map, or torchrun without it"
        )
    _check_stage_patterns(model, stages, trust_remote_code)
    data = _dataset(dataset, n=n, seed=seed, skip_bad=skip_bad)
    check_store_settings(out, {"dataset_spec": data.spec(), "store_dtype": dtype_name, "shard_size": shard_size,
                               "num_samples": len(data) if limit is None else min(limit, len(data))})
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        device_map=device_map)
    store = extract_dataset(loaded, data, out, stages=stages or None, batch_size=batch_size,
                            store_dtype=store_dtype, shard_size=shard_size, limit=limit,
                            frames_as_images=frames_as_images)
    console.print(f"feature store: {out} ({len(store)} samples, {len(store.stages)} stages)")


@app.command()
@user_errors
def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = DEFAULT_MODEL,
    suite: Annotated[str, typer.Option(help="study to run")] = "q2",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<model>-<UTC>)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="CPU smoke test: small datasets")] = False,
    full: Annotated[bool, typer.Option("--full", help="large datasets: tighter confidence intervals")] = False,
    stages: Annotated[list[str] | None, typer.Option("--stages", "-s", help="stage glob; repeatable")] = None,
    protocol: Annotated[str, typer.Option(help="stageprobe | seed (the original pooled protocol)")] = "stageprobe",
    seed: Annotated[int, typer.Option(help="seed of data, splits, probes and bootstrap")] = 0,
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
        "--data", help="real data for one experiment family, KEY=DATASET; repeatable. Keys: spatial "
        "(E-Q2.1–4, e.g. spatial=coco:ANN.json[:image_dir=DIR]), detail (E-Q2.5, procedural textures by "
        "default), photos (E-Q2.5 on real photos, e.g. photos=images:DIR), "
        "motion (E-Q2.6, e.g. motion=cutout:ANN.json), camera (E-Q2.6 camera motion, e.g. "
        "camera=pan:photo_dir=DIR). Default: generated data and skimage photos")] = None,
    experiments: Annotated[str | None, typer.Option(
        help="comma-separated experiment ids to run (see `--experiments list`; E-Q2.N works too)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most N samples per dataset (a quick look, wide CIs)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help=f"continue the newest unfinished run of these settings under {DEFAULT_RUNS_ROOT}/")] = False,
    verdict_stage: Annotated[str | None, typer.Option(
        help="judge every target at this stage (default: vision.post_merge; a ViT's last stage)")] = None,
    seeds: Annotated[int, typer.Option(help="fits of every gradient-trained probe (probe-seed spread and CI)")] = 1,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="start afresh in --out, discarding a run with other settings found there")] = False,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="also plant known losses and check the probes find them (a Calibration section)")] = False,
) -> None:
    """The whole study: data → features → probes → metrics → report. Resumes an interrupted run."""
    from stageprobe.datasets import parse_data_options
    from stageprobe.suites.runner import run_study

    if experiments == "list":
        _list_experiments(suite)
        return
    if quick and full:
        raise UserInputError("--quick and --full exclude each other; pick one")
    check_device(device)
    check_positive("--limit", limit)
    config = _run_config({
        "model": model, "suite": suite, "size": "quick" if quick else "full" if full else "default",
        "stages": stages or None, "protocol": protocol, "seed": seed, "controls": not no_controls,
        "batch_size": batch_size, "probe_workers": probe_workers, "device": device, "device_map": device_map,
        "dtype": dtype, "store_dtype": store_dtype, "trust_remote_code": trust_remote_code,
        "experiments": _experiment_ids(suite, experiments) if experiments else None, "limit": limit,
        "data": parse_data_options(data or []) or None, "verdict_stage": verdict_stage, "seeds": seeds,
        "calibrate": calibrate,
    })
    _check_stage_patterns(model, stages, trust_remote_code)
    if use_wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--wandb needs the wandb client: pip install 'stageprobe[wandb]'")
    run_dir = _run_dir(out, resume, config)
    resume_command = _resume_command(ctx, run_dir)
    err_console.print(f"run directory: {run_dir}\nto resume it if interrupted: {resume_command}", highlight=False,
                      soft_wrap=True)
    try:
        paths = run_study(config, run_dir, cache_dir, overwrite=overwrite)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished feature shards and experiments are kept in {run_dir}; "
                          f"rerun the same command to resume: {resume_command}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if use_wandb:
        from stageprobe.report.wandb_log import log_to_wandb

        log_to_wandb(run_dir, project=wandb_project)
    console.print(f"findings: {paths.findings}\nreport:   {paths.html}\nresults:  {paths.results}")


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
        raise UserInputError(f"--{option}: {first['msg']}") from None


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
    """Experiment id → title of a suite (only q2 exists; RunConfig refuses other names)."""
    from stageprobe.suites.q2 import Q2

    if suite != "q2":
        raise UserInputError(f"unknown suite {suite!r}; the available suite is q2")
    return {spec.id: spec.title for spec in Q2}


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


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Re-render FINDINGS.md and report.html from results.yaml + metrics.csv."""
    from stageprobe.report.render import render_report

    paths = render_report(run_dir)
    console.print(f"findings: {paths.findings}\nreport:   {paths.html}")


@app.command()
@user_errors
def validate(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Check results.yaml against the schema, that artifacts exist and verdicts agree with metrics."""
    from stageprobe.report.validate import validate_run

    problems = validate_run(run_dir)
    if problems:
        for problem in problems:
            err_console.print(f"[red]✗[/] {problem}", highlight=False)
        raise UserInputError(f"{run_dir} failed validation with {len(problems)} problem(s) (listed above)")
    console.print(f"[green]✓[/] {run_dir} is valid")


@app.command()
@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    figure: Annotated[Path | None, typer.Option(
        help="draw the stage-kind-aligned retention figure (PNG) here; implies --aligned")] = None,
    aligned: Annotated[bool | None, typer.Option(
        "--aligned/--by-name", help="align stages by kind (embedding, ViT depth, connector in/out, LLM depth) "
        "instead of by name (default: aligned when the runs are of different models)")] = None,
) -> None:
    """Stage metrics of several runs side by side, with deltas against the first; runs of different
    models aligned by stage kind, with each information type's retention against the pixel ceiling."""
    from stageprobe.report.compare import align_runs, aligned_table, compare_runs, comparison_table, plot_aligned
    from stageprobe.report.render import load_run

    if len(run_dirs) < 2:
        raise UserInputError("compare needs at least two run directories")
    if figure is not None and figure.suffix.lower() != ".png":
        raise UserInputError(f"--figure {figure} must name a .png file")
    if aligned is None:
        aligned = figure is not None or len({str(load_run(d)[0].get("model")) for d in run_dirs}) > 1
    # one column per run plus deltas: never squeeze it into a pipe's default 80 columns
    wide = Console(width=max(console.width, 220))
    if not aligned:
        wide.print(comparison_table(compare_runs(run_dirs)))
        return
    runs = align_runs(run_dirs)
    wide.print(aligned_table(runs))
    if figure is not None:
        console.print(f"figure: {plot_aligned(runs, figure)}")


@app.command()
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
    from stageprobe.bench import BenchSettings, bench_table, run_bench

    check_device(device)
    if images < 1 or repeats < 1 or rss_images < 0:
        raise UserInputError("--images and --repeats must be at least 1, --rss-images at least 0")
    settings = BenchSettings(model=model, images=images, device=device, repeats=repeats, rss_images=rss_images)
    result = run_bench(settings, log=lambda line: err_console.print(f"[dim]bench: {line}[/]"))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    console.print(bench_table(result))


@app.command()
@user_errors
def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = "qwen2.5-vl-tiny",
    plant: Annotated[list[str] | None, typer.Option(
        "--plant", "-p", help="TYPE@STAGE, repeatable; TYPE: erase-position | scramble-position | blur-detail | "
        "erase-time | none (default: each type at a middle ViT block, vision.post_merge, a middle LLM layer)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="CPU smoke test: small datasets, few stages")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="output directory (default runs/calibrate-<model>-<UTC>)")] = None,
    seed: Annotated[int, typer.Option(help="seed of data, splits, probes, plants and bootstrap")] = 0,
    batch_size: Annotated[int, typer.Option(help="images (or clips) per forward pass")] = 8,
    device_map: DeviceMapOption = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
) -> None:
    """Plant known losses at known stages and check the study's probes find them there, nowhere earlier."""
    from stageprobe.calibrate import Calibrator, default_plants, write_calibration
    from stageprobe.models import load_model
    from stageprobe.models.planting import parse_plant
    from stageprobe.suites.runner import default_run_dir

    check_device(device)
    check_positive("--batch-size", batch_size)
    if out is not None:
        check_writable_dir(out)
    loaded = load_model(model, device=device, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
    plants = [parse_plant(text, loaded) for text in plant] if plant else default_plants(loaded)
    run_dir = out or default_run_dir(f"calibrate-{model}")
    calibrator = Calibrator(loaded, run_dir, size="quick" if quick else "default", seed=seed, batch_size=batch_size)
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


datasets_app = typer.Typer(no_args_is_help=True, help="Look at the datasets before trusting a probe.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("preview")
@user_errors
def datasets_preview(
    name: Annotated[str, typer.Argument(
        help="shapes | textures | motion | pan | coco:PATH | cutout:PATH | images:DIR (options as :key=value)")],
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: <name>-preview.png)")] = None,
    count: Annotated[int, typer.Option("--count", help="samples on the sheet")] = 16,
    seed: Annotated[int, typer.Option(help="seed of a generated dataset")] = 0,
) -> None:
    """Write a contact sheet with the targets drawn on (boxes, masks, motion arrows)."""
    from stageprobe.datasets import dataset_options, parse_spec, write_preview

    check_preview_count(count)
    # A dataset read from disk (default n None) is opened whole: a folder with fewer files than
    # --count is previewed, not refused as too small for an experiment.
    natural_size = dataset_options(parse_spec(name)[0]).get("n")
    reads_disk = natural_size is not None and natural_size.default is None
    target = out or Path(f"{name.split(':')[0]}-preview.png")
    check_writable_file(target)
    data = _dataset(name, n=None if reads_disk else count, seed=seed, skip_bad=True)
    console.print(f"preview: {write_preview(data, target, n=count)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
