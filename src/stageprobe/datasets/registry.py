"""Dataset lookup by spec string (`shapes`, `coco:PATH`, …). Each dataset registers itself in its own file."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from stageprobe.datasets.base import Dataset
from stageprobe.errors import UserInputError

DatasetClass = TypeVar("DatasetClass", bound=type[Dataset])


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    cls: type[Dataset]
    # Name of the value after the colon in the spec ("path" for `coco:PATH`), or None.
    argument: str | None
    description: str
    #: the spec may leave the argument out (`pan` and `pan:images:DIR`)
    optional_argument: bool = False


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, description: str = "", argument: str | None = None, optional_argument: bool = False
) -> Callable[[DatasetClass], DatasetClass]:
    """Register a Dataset class under `name`; with `argument`, the spec is `name:VALUE` and VALUE is
    passed as the first constructor argument (with `optional_argument`, `name` alone is valid too).
    Every other constructor parameter is an option."""

    def wrap(cls: DatasetClass) -> DatasetClass:
        DATASETS[name] = DatasetEntry(name, cls, argument, description or (cls.__doc__ or "").split("\n")[0],
                                      optional_argument)
        return cls

    return wrap


def dataset_options(name: str) -> dict[str, inspect.Parameter]:
    """The options of dataset `name`: its constructor parameters, with defaults and types."""
    entry = _entry(name)
    parameters = list(inspect.signature(entry.cls.__init__, eval_str=True).parameters.values())[1:]
    if entry.argument is not None:
        parameters = parameters[1:]
    return {p.name: p for p in parameters}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(name, argument, options) of `name[:ARGUMENT][:option=value …]`.

    A `:`-separated part that reads `identifier=value` is an option (`coco:ann.json:image_dir=/imgs`);
    every other part belongs to the argument, so a path may itself contain `:`.
    """
    name, _, rest = spec.partition(":")
    argument: list[str] = []
    options: dict[str, str] = {}
    for part in rest.split(":") if rest else []:
        key, equals, value = part.partition("=")
        if equals and key.isidentifier():
            options[key] = value
        else:
            argument.append(part)
    return name, ":".join(argument), options


def load_dataset(spec: str, **options: Any) -> Dataset:
    """A dataset from a spec string (`shapes`, `textures`, `motion`, `coco:PATH`, `images:DIR`, with
    optional `:option=value` parts) and options; options written in the spec win over the keyword ones.

    Options given as strings (from a command line) are converted to the type of their default.
    """
    name, argument, spec_options = parse_spec(spec)
    entry = _entry(name)
    if entry.argument is not None and not argument and not entry.optional_argument:
        raise UserInputError(
            f"dataset {name!r} needs a {entry.argument}: write it as {name}:{entry.argument.upper()}"
        )
    if entry.argument is None and argument:
        raise UserInputError(f"dataset {name!r} takes no argument; write just {name!r} (got {spec!r})")
    options = {**options, **spec_options}
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserInputError(
            f"dataset {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(accepted)}"
        )
    resolved = {key: _from_text(name, accepted[key], value) for key, value in options.items()}
    if entry.argument is None or not argument:
        return entry.cls(**resolved)
    return entry.cls(argument, **resolved)


def dataset_from_spec(spec: dict[str, Any]) -> Dataset:
    """Rebuild a dataset from its `spec()`."""
    if not isinstance(spec, dict) or "source" not in spec or not isinstance(spec.get("options"), dict):
        raise UserInputError(
            "a dataset spec must be a dict with 'source' and 'options', as written by Dataset.spec()"
        )
    return load_dataset(spec["source"], **spec["options"])


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        known = ", ".join(
            sorted(e.name + (f"[:{e.argument.upper()}]" if e.optional_argument else f":{e.argument.upper()}"
                             if e.argument else "") for e in DATASETS.values())
        )
        raise UserInputError(f"unknown dataset {name!r}; use one of: {known}")
    return DATASETS[name]


def _from_text(dataset: str, parameter: inspect.Parameter, value: Any) -> Any:
    """Convert a command-line string to the option's declared type (bool, int or float)."""
    annotation = parameter.annotation
    if not isinstance(value, str):
        return value
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if str in allowed:
        return value
    if value.lower() == "none" and type(None) in allowed:
        return None
    for kind in (bool, int, float):
        if kind in allowed:
            try:
                return _parse(kind, value)
            except ValueError:
                raise UserInputError(
                    f"{dataset}: option {parameter.name}={value!r} must be {_KIND_WORDS[kind]}"
                ) from None
    return value


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number"}


def _parse(kind: type, text: str) -> Any:
    if kind is bool:
        words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False}
        if text.lower() not in words:
            raise ValueError(text)
        return words[text.lower()]
    return kind(text)
