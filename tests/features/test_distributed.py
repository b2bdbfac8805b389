"""Extraction split over torch.distributed ranks writes the same store as one process.

The two-rank test launches this file under torchrun (gloo on CPU); run as a script, it is the
worker: each rank extracts into every store directory given on its command line and reports how
many samples its model saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from feature_fakes import InstrumentedPixels, tree_bytes

from stageprobe.datasets import load_dataset
from stageprobe.datasets.base import Dataset
from stageprobe.errors import UserInputError
from stageprobe.features import FeatureStore, extract_dataset
from stageprobe.features.distributed import Ranks, check_model_device, launched_ranks

SAMPLES, SHARD, BATCH = 10, 2, 2  # five shards: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3


def shapes() -> Dataset:
    return load_dataset("shapes", n=SAMPLES, image_size=56, min_size=8, max_size=20)


def extract(model: InstrumentedPixels, out: Path) -> FeatureStore:
    return extract_dataset(model, shapes(), out, batch_size=BATCH, shard_size=SHARD, progress=False)


def worker(outs: list[Path]) -> None:
    rank = int(os.environ["RANK"])
    for out in outs:
        model = InstrumentedPixels()
        store = extract(model, out)
        assert store.complete and len(store) == SAMPLES  # every rank gets the finished store back
        out.with_name(f"{out.name}.rank{rank}.json").write_text(json.dumps(sum(model.batch_sizes)))


def samples_seen(out: Path, rank: int) -> int:
    return json.loads(out.with_name(f"{out.name}.rank{rank}.json").read_text())


def test_two_gloo_ranks_write_the_store_one_process_writes(tmp_path: Path) -> None:
    reference, fresh, resumed = tmp_path / "reference", tmp_path / "fresh", tmp_path / "resumed"
    extract(InstrumentedPixels(), reference)
    extract(InstrumentedPixels(), resumed)
    for index in (1, 2, 3):  # as if an earlier run died before these shards were recorded
        (resumed / "shards" / f"shard-{index:05d}.done.json").unlink()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              __file__, str(fresh), str(resumed)]
    child = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]

    assert tree_bytes(fresh) == tree_bytes(reference)  # shard files, records and manifest, byte for byte
    assert tree_bytes(resumed) == tree_bytes(reference)
    assert (samples_seen(fresh, 0), samples_seen(fresh, 1)) == (6, 4)  # shards 0, 2, 4 | 1, 3
    # Only the three unrecorded shards were redone, dealt out in turn: 1, 3 to rank 0, 2 to rank 1.
    assert (samples_seen(resumed, 0), samples_seen(resumed, 1)) == (4, 2)


def test_without_torchrun_environment_extraction_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_ranks() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launched_ranks() is None


def test_torchrun_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ranks = launched_ranks()
    assert ranks == Ranks(rank=3, world_size=4, local_rank=1)
    assert ranks.share(list(range(10))) == [3, 7]


@pytest.mark.parametrize(("env", "complaint"), [
    ({"WORLD_SIZE": "2"}, "RANK is not"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "must be integers"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "outside"),
])
def test_broken_torchrun_environment_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], complaint: str
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserInputError, match=complaint):
        launched_ranks()


def test_ranks_sharing_one_gpu_by_accident_are_refused() -> None:
    ranks = Ranks(rank=1, world_size=2, local_rank=1)
    check_model_device(ranks, torch.device("cuda", 1))
    check_model_device(ranks, torch.device("cpu"))
    with pytest.raises(UserInputError, match="cuda:1"):
        check_model_device(ranks, torch.device("cuda", 0))


if __name__ == "__main__":
    worker([Path(arg) for arg in sys.argv[1:]])
