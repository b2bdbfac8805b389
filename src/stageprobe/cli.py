"""The `stageprobe` command line. Bad input → one message and exit code 2; internal errors → 1."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stageprobe.errors import UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


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


@app.command()
@user_errors
def models() -> None:
    """List model presets and supported architectures."""
    from stageprobe.models import ARCHITECTURES, PRESETS

    table = Table("preset", "what")
    for preset in PRESETS.values():
        table.add_row(preset.name, preset.description)
    console.print(table)
    console.print("Hub ids and local directories of these architectures (config.json model_type): "
                  + ", ".join(sorted(ARCHITECTURES)))


@app.command()
@user_errors
def stages(
    model: Annotated[str, typer.Argument(help="preset, Hub id or local directory")],
    image_size: Annotated[int, typer.Option(help="square input image size in pixels")] = 448,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="allow custom code from the model repo")] = False,
) -> None:
    """List a model's stages with grid shape and width for an N×N image."""
    from stageprobe.models import load_model

    loaded = load_model(model, device="cpu", trust_remote_code=trust_remote_code)
    infos = loaded.stages_for(image_size, image_size)
    if as_json:
        sys.stdout.write(json.dumps([
            {"name": s.name, "stride_px": s.stride_px, "dim": s.dim, "grid": list(s.grid),
             "tokens": s.tokens, "description": s.description} for s in infos
        ], indent=2) + "\n")
        return
    table = Table("stage", "stride px", "grid T×H×W", "tokens", "width", "what", title=f"{model} at {image_size} px")
    for s in infos:
        table.add_row(s.name, str(s.stride_px), "×".join(map(str, s.grid)), str(s.tokens), str(s.dim), s.description)
    console.print(table)


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
    from stageprobe.features.extract import extract_dataset
    from stageprobe.models import load_model

    if device_map is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError(
            "--device-map splits one model over every GPU of one process; under torchrun each rank uses its "
            "own GPU. Run one process with --device-map, or torchrun without it"
        )
    data = _dataset(dataset, n=n, seed=seed, skip_bad=skip_bad)
    loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        device_map=device_map)
    store = extract_dataset(loaded, data, out, stages=stages or None, batch_size=batch_size,
                            store_dtype=store_dtype, shard_size=shard_size, limit=limit,
                            frames_as_images=frames_as_images)
    console.print(f"feature store: {out} ({len(store)} samples, {len(store.stages)} stages)")


@app.command()
@user_errors
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="preset, Hub id or local directory")] = "qwen2.5-vl-tiny",
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
    verdict_stage: Annotated[str | None, typer.Option(
        help="judge every target at this stage (default: vision.post_merge; a ViT's last stage)")] = None,
    seeds: Annotated[int, typer.Option(help="fits of every gradient-trained probe (probe-seed spread and CI)")] = 1,
) -> None:
    """The whole study: data → features → probes → metrics → report. Resumes an interrupted run."""
    from pydantic import ValidationError

    from stageprobe.suites.runner import RunConfig, default_run_dir, run_study

    if quick and full:
        raise UserInputError("--quick and --full exclude each other; pick one")
    try:
        config = RunConfig(model=model, suite=suite, size="quick" if quick else "full" if full else "default",
                           stages=stages or None, protocol=protocol, seed=seed, controls=not no_controls,
                           batch_size=batch_size, probe_workers=probe_workers, device=device,
                           device_map=device_map, dtype=dtype, store_dtype=store_dtype,
                           trust_remote_code=trust_remote_code, verdict_stage=verdict_stage, seeds=seeds)
    except ValidationError as error:
        first = error.errors()[0]
        option = str(first["loc"][0]).replace("_", "-")
        raise UserInputError(f"--{option}: {first['msg']}") from None
    run_dir = out or default_run_dir(model)
    if use_wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--wandb needs the wandb client: pip install 'stageprobe[wandb]'")
    paths = run_study(config, run_dir, cache_dir)
    if use_wandb:
        from stageprobe.report.wandb_log import log_to_wandb

        log_to_wandb(run_dir, project=wandb_project)
    console.print(f"findings: {paths.findings}\nreport:   {paths.html}\nresults:  {paths.results}")


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
def compare(run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories")]) -> None:
    """Stage metrics of several runs side by side, with deltas against the first."""
    from stageprobe.report.compare import compare_runs, comparison_table

    if len(run_dirs) < 2:
        raise UserInputError("compare needs at least two run directories")
    # one column per run plus deltas: never squeeze it into a pipe's default 80 columns
    Console(width=max(console.width, 220)).print(comparison_table(compare_runs(run_dirs)))


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

    if images < 1 or repeats < 1 or rss_images < 0:
        raise UserInputError("--images and --repeats must be at least 1, --rss-images at least 0")
    settings = BenchSettings(model=model, images=images, device=device, repeats=repeats, rss_images=rss_images)
    result = run_bench(settings, log=lambda line: err_console.print(f"[dim]bench: {line}[/]"))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    console.print(bench_table(result))


def _dataset(spec: str, n: int | None, seed: int, skip_bad: bool) -> Any:
    """Pass each command-line option only to datasets that take it (generated ones take n and seed)."""
    from stageprobe.datasets import dataset_options, load_dataset

    accepted = dataset_options(spec.partition(":")[0])
    wanted = {"n": n, "seed": seed, "skip_bad": skip_bad or None}
    return load_dataset(spec, **{k: v for k, v in wanted.items() if v is not None and k in accepted})


datasets_app = typer.Typer(no_args_is_help=True, help="Look at the datasets before trusting a probe.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("preview")
@user_errors
def datasets_preview(
    name: Annotated[str, typer.Argument(help="shapes | textures | motion | coco:PATH | images:DIR")],
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: <name>-preview.png)")] = None,
    count: Annotated[int, typer.Option("--count", help="samples on the sheet")] = 16,
    seed: Annotated[int, typer.Option(help="seed of a generated dataset")] = 0,
) -> None:
    """Write a contact sheet with the targets drawn on (boxes, masks, motion arrows)."""
    from stageprobe.datasets import write_preview

    data = _dataset(name, n=count, seed=seed, skip_bad=True)
    target = out or Path(f"{name.split(':')[0]}-preview.png")
    console.print(f"preview: {write_preview(data, target, n=count)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
