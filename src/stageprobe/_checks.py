"""Checks of command-line input that need no model and no torch: run before any work is done.

Each check raises `UserInputError` naming the option, the bad value and what to pass instead,
so a mistake costs a second, not a model load, and leaves nothing written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stageprobe.errors import UserInputError

#: Largest `--image-size`: Qwen-VL processors cap inputs near 3584 px (12.8 M pixels); far beyond
#: that, a blank probe image alone would take gigabytes.
MAX_IMAGE_SIZE = 8192

#: Most samples a contact sheet shows (16 × 16 thumbnails of 224 px: a 3584 px square).
MAX_PREVIEW_COUNT = 256

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_positive(option: str, value: int | None) -> None:
    """`value` is None (not given) or at least 1."""
    if value is not None and value < 1:
        raise UserInputError(f"{option} must be at least 1, got {value}")


def check_image_size(size: int) -> None:
    """A square input side in pixels within (0, MAX_IMAGE_SIZE]."""
    if size <= 0:
        raise UserInputError(f"--image-size must be a positive number of pixels, got {size}; try 448")
    if size > MAX_IMAGE_SIZE:
        raise UserInputError(
            f"--image-size {size} is beyond the limit of {MAX_IMAGE_SIZE} px (Qwen-VL processors shrink "
            "anything above about 3584 px anyway); pass a smaller size, e.g. 448"
        )


def check_multiple_of_patch(size: int, merged_patch: int, resized: tuple[int, int], model: str) -> None:
    """The image side must be a whole number of merged patches: say what the model resizes it to.

    `resized` is the (height, width) the model's processor actually makes of a size×size image.
    """
    if size % merged_patch:
        height, width = resized
        suggestion = height if height == width else max(merged_patch, round(size / merged_patch) * merged_patch)
        raise UserInputError(
            f"--image-size {size} is not a multiple of the merged patch of {model} ({merged_patch} px): the "
            f"model would resize it to {width}×{height} px. Pass --image-size {suggestion}"
        )


def check_preview_count(count: int) -> None:
    if not 1 <= count <= MAX_PREVIEW_COUNT:
        raise UserInputError(
            f"--count {count} is outside 1…{MAX_PREVIEW_COUNT}, the samples one contact sheet can show; "
            f"pass a count in that range"
        )


def check_device(device: str) -> None:
    """Syntax only: whether CUDA is actually there is checked when the model loads."""
    if not _DEVICE.fullmatch(device):
        raise UserInputError(f"--device {device!r} is not a device stageprobe can use; pass auto, cpu, cuda or cuda:N")


def check_writable_dir(path: Path, option: str = "--out") -> None:
    """`path` is a directory, or could be created as one, that this process may write into."""
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{option} {path} is a file, not a directory; pass a directory path")
    _check_creatable(path, option)


def check_writable_file(path: Path, option: str = "--out") -> None:
    """`path` names a file (not a directory) this process may create or replace."""
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory; pass a file path such as {path / 'preview.png'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserInputError(f"{option} {path} is not writable; choose another {option}")
    _check_creatable(path.parent, option, shown=path)


def _check_creatable(path: Path, option: str, shown: Path | None = None) -> None:
    """The nearest existing ancestor of `path` is a directory we may create entries in, on a file
    system that stores files (not read-only, not a kernel one such as /proc or /sys). Messages name
    `shown` (what the user gave), `path` by default."""
    ancestor = path.absolute()
    path = shown or path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"{option} {path} cannot be created: {ancestor} is a file; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"{option} {path} is not writable (no write permission in {ancestor}); "
                             f"choose another {option}")
    problem = _file_system_problem(ancestor)
    if problem:
        raise UserInputError(f"{option} {path} is not writable: {ancestor} {problem}; choose another {option}")


def _file_system_problem(directory: Path) -> str | None:
    """Why files cannot be stored under `directory` even where permissions allow it (root may "write"
    to /proc), or None. Kernel file systems report no blocks at all."""
    if not hasattr(os, "statvfs"):
        return None
    stats = os.statvfs(directory)
    if stats.f_flag & os.ST_RDONLY:
        return "is on a read-only file system"
    if stats.f_blocks == 0:
        return "is on a kernel file system (like /proc or /sys) that holds no files"
    return None


def check_image_file_name(path: Path, option: str = "--out") -> None:
    """`path` ends in an image format Pillow writes (.png, .jpg, …)."""
    from PIL import Image

    Image.init()
    formats = Image.registered_extensions()
    if path.suffix.lower() not in formats or formats[path.suffix.lower()] not in Image.SAVE:
        raise UserInputError(f"{option} {path}: {path.suffix or 'no extension'} is not an image format; "
                             f"name a .png or .jpg file, e.g. {path.with_suffix('.png')}")


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)
_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes of a size written `80G`, `500M`, `1.5T`, `64GiB` or a plain number of bytes."""
    match = _SIZE.fullmatch(text)
    size = float(match.group(1)) * _UNIT[(match.group(2) or "")[:1].lower()] if match else 0.0
    if size < 1:
        raise UserInputError(f"--max-disk {text!r} is not a size; write it as 80G, 500M, 1.5T or a number of bytes")
    return int(size)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
