"""Studies as data. A suite (see `_spec.Suite`) owns its experiments, targets, decision rule,
derived metrics and finding texts; `get_suite(name)` returns one. Suites load lazily, so the
report can read a run without importing the runner."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stageprobe.suites._spec import Suite

#: suite name → module holding its `SUITE`
SUITES: dict[str, str] = {"q2": "stageprobe.suites.q2"}
#: the study `stageprobe run` runs unless told otherwise
DEFAULT_SUITE = "q2"


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        from stageprobe.errors import UserInputError

        raise UserInputError(f"unknown suite {name!r}; available: {', '.join(sorted(SUITES))}")
    suite: Suite = import_module(SUITES[name]).SUITE
    return suite
