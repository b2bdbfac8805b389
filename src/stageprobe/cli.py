"""The `stageprobe` command line. Bad input → one message and exit code 2; internal errors → 1."""

from __future__ import annotations

import json
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


def user_errors(command: F) -> F:
    """Turn a UserInputError into one red line and exit code 2, with no traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserInputError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
