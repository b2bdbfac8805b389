"""Whole-file writes: a reader, a resume or a crash never sees half a file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

#: in the names of the temporary files a write goes through (a store cleans up ones a crash left)
TEMP_MARKER = ".tmp-"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file + fsync + rename, so readers and resumes never see half a file.

    The temporary's name carries host and pid: ranks on different nodes writing one file of a
    shared store (the initial manifest) may have the same pid.
    """
    temp = path.with_name(f".{path.name}{TEMP_MARKER}{socket.gethostname()}-{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
