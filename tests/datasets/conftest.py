"""A private cache of decoded video frames for the dataset tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_decode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Decoded frames cached in a folder of the test session, never the user's cache."""
    cache = tmp_path_factory.mktemp("stageprobe-cache")
    before = os.environ.get("STAGEPROBE_CACHE")
    os.environ["STAGEPROBE_CACHE"] = str(cache)
    yield cache
    if before is None:
        del os.environ["STAGEPROBE_CACHE"]
    else:
        os.environ["STAGEPROBE_CACHE"] = before
