"""Checks for dataset options: a bad value becomes a UserInputError that names the option."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from stageprobe.errors import UserInputError


def check_int(dataset: str, option: str, value: object, minimum: int, maximum: int | None = None) -> int:
    # bool is an int subclass; `n=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError(f"{dataset}: option {option}={value!r} must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and ≤ {maximum}"
        raise UserInputError(f"{dataset}: option {option}={value} must be ≥ {minimum}{upper}")
    return value


def check_float(
    dataset: str, option: str, value: object, minimum: float, maximum: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserInputError(f"{dataset}: option {option}={value!r} must be a number")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and ≤ {maximum}"
        raise UserInputError(f"{dataset}: option {option}={value} must be ≥ {minimum}{upper}")
    return float(value)


def check_range(dataset: str, option: str, low: int, high: int) -> None:
    if low > high:
        raise UserInputError(
            f"{dataset}: {option} range is empty ({low} > {high}); make the minimum ≤ the maximum"
        )


def check_choice(dataset: str, option: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UserInputError(f"{dataset}: option {option}={value!r} is not one of {', '.join(choices)}")
    return str(value)


def seeded_subset(keys: Sequence[str], n: int | None, seed: int) -> list[int]:
    """Indices of `n` of `keys`, chosen by a seeded hash and returned in their original order.

    Hashing each key (rather than shuffling) keeps a sample's membership independent of which
    other files exist, so adding files to a folder does not reshuffle the subset.
    """
    if n is None or n >= len(keys):
        return list(range(len(keys)))
    return sorted(seeded_order(keys, seed)[:n])


def seeded_order(keys: Sequence[str], seed: int) -> list[int]:
    """Indices of all `keys` in the order of a seeded hash of each (see `seeded_subset`)."""
    return sorted(range(len(keys)), key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).digest())


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be decoded as an image, or None if it can.

    A full decode is needed: `Image.verify` does not notice a truncated JPEG. Draft mode lets
    JPEGs decode at 1/8 scale, which still reads the whole stream and so still finds truncation.
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except FileNotFoundError:
        return "file not found"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot be decoded ({error})"
    return None


def load_rgb(path: Path, dataset: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise UserInputError(
            f"{dataset}: image {path} cannot be read ({error}); fix or remove it, or add :skip_bad=true to the "
            "dataset spec (extract: --skip-bad) to leave unreadable images out"
        ) from error
