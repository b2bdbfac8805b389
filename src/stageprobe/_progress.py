"""Progress a user can trust: one column order for every bar, a sign of life at least every second
while something runs, and, without a terminal (a log file, a batch job), a line per finished step
instead of a bar drawn only at the end.

`steps` counts finished steps (samples, probe fits); `working` covers a step without a count (deriving,
drawing, writing the report): a spinner with the elapsed time in a terminal, a line when done elsewhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: without a terminal, a counted step prints at most one line per this many seconds (and its last step)
LOG_INTERVAL_S = 5.0


def columns() -> list[ProgressColumn]:
    """What every bar shows, in this order: what, bar, done/total, elapsed, remaining."""
    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn()]


class Steps:
    """A counted task: `advance` after each finished step; `describe` names the step now running."""

    def __init__(self, console: Console, description: str, total: int, completed: int = 0,
                 disable: bool = False) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.completed = completed
        self.disable = disable
        self.started = time.perf_counter()
        self._logged = 0.0
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> Steps:
        if not self.disable and self.console.is_terminal:
            self._bar = Progress(*columns(), console=self.console)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.completed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def describe(self, description: str) -> None:
        self.description = description
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=description)

    def advance(self, count: int = 1) -> None:
        self.completed += count
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)
            return
        now = time.perf_counter()
        if self.disable or (now - self._logged < LOG_INTERVAL_S and self.completed < self.total):
            return
        self._logged = now
        self.console.print(f"{self.description}: {self.completed}/{self.total} done "
                           f"({now - self.started:.0f} s)", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def working(console: Console, description: str, disable: bool = False) -> Iterator[None]:
    """A step without a count: a spinner and the elapsed seconds in a terminal; a line when it is done
    elsewhere."""
    if disable:
        yield
        return
    started = time.perf_counter()
    if console.is_terminal:
        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as spinner:
            spinner.add_task(description, total=None)
            yield
    else:
        yield
        console.print(f"{description}: done ({time.perf_counter() - started:.1f} s)", highlight=False,
                      soft_wrap=True, style="dim")
