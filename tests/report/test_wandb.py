"""W&B logging through the real client in offline mode (skipped without the wandb extra)."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from stageprobe.errors import UserInputError
from stageprobe.report import log_to_wandb


def test_missing_wandb_is_a_user_error(good_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_wandb(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserInputError, match=r"pip install 'stageprobe\[wandb\]'"):
        log_to_wandb(good_run)


def test_offline_logging_writes_a_local_run(
    good_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="wandb extra not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    where = log_to_wandb(good_run, project="stageprobe-test", wandb_dir=tmp_path)
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and str(run_dirs[0]) in where
    # The client writes media itself; the .wandb log is flushed by wandb-core in the background,
    # so only its presence is checked.
    assert list(run_dirs[0].glob("run-*.wandb"))
    images = sorted(p.name.split("_")[0] for p in run_dirs[0].glob("files/media/images/artifacts/*.png"))
    assert images == ["decay", "premerge", "retention", "stage"]
    assert list(run_dirs[0].glob("files/media/table/metrics_*.table.json"))
