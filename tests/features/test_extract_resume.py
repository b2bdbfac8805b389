"""Interrupted, corrupted, mismatched and out-of-memory extractions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from feature_fakes import GeneratedImages, InstrumentedPixels, tree_bytes

from stageprobe.errors import UserInputError
from stageprobe.features import FeatureStore, extract_dataset

SHARD = 4
BATCH = 2


def extract(
    model: InstrumentedPixels, out: Path, dataset: GeneratedImages | None = None, **options: object
) -> FeatureStore:
    settings: dict = {"batch_size": BATCH, "shard_size": SHARD, "progress": False, **options}
    return extract_dataset(model, dataset or GeneratedImages(10), out, **settings)


def finished_shards(store: Path) -> int:
    records = store / "shards"
    return len(list(records.glob("*.done.json"))) if records.exists() else 0


@pytest.fixture
def uninterrupted(tmp_path: Path) -> Path:
    extract(InstrumentedPixels(), tmp_path / "reference")
    return tmp_path / "reference"


def test_resume_after_crash_equals_uninterrupted_run(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(InstrumentedPixels(fail_after_calls=4), out)  # dies on the 3rd shard's first batch
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.done.json",
                                                                  "shard-00001.done.json"]
    with pytest.raises(UserInputError, match="unfinished"):
        FeatureStore.open(out)
    rerun = InstrumentedPixels()
    extract(rerun, out)
    assert sum(rerun.batch_sizes) == 2  # only the last shard (samples 8, 9) was computed again
    assert tree_bytes(out) == tree_bytes(uninterrupted)


def test_corrupted_shard_is_detected_and_redone(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "store"
    extract(InstrumentedPixels(), out)
    damaged = out / "pixels.merged" / "shard-00001.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (out / "pixels.patch" / "shard-00002.safetensors").unlink()
    assert FeatureStore.open(out).verify() == [1, 2]
    rerun = InstrumentedPixels()
    extract(rerun, out)
    assert sum(rerun.batch_sizes) == SHARD + 2  # shards 1 and 2 only
    assert FeatureStore.open(out).verify() == []
    assert tree_bytes(out) == tree_bytes(uninterrupted)


def test_half_written_shard_without_record_is_redone(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "store"
    extract(InstrumentedPixels(), out)
    (out / "shards" / "shard-00000.done.json").unlink()
    (out / "pixels.patch" / "shard-00000.safetensors").write_bytes(b"truncated")
    (out / "pixels.patch" / ".shard-00000.safetensors.tmp-999").write_bytes(b"left by a killed writer")
    rerun = InstrumentedPixels()
    extract(rerun, out)
    assert sum(rerun.batch_sizes) == SHARD
    assert tree_bytes(out) == tree_bytes(uninterrupted)


@pytest.mark.parametrize(("model", "dataset", "options", "complaint"), [
    (InstrumentedPixels(name="other-model"), None, {}, "different model:"),
    (InstrumentedPixels(weights_id="random"), None, {}, "different model weights"),
    (InstrumentedPixels(), GeneratedImages(10, seed=1), {}, "different dataset spec"),
    (InstrumentedPixels(), None, {"limit": 6}, "number of samples"),
    (InstrumentedPixels(), None, {"stages": ["pixels.patch"]}, "stage set"),
    (InstrumentedPixels(), None, {"store_dtype": "fp32"}, "store dtype"),
    (InstrumentedPixels(), None, {"shard_size": 5}, "shard size"),
])
def test_refuses_to_append_to_a_store_made_differently(
    tmp_path: Path, uninterrupted: Path, model: InstrumentedPixels, dataset: GeneratedImages | None,
    options: dict, complaint: str,
) -> None:
    before = tree_bytes(uninterrupted)
    with pytest.raises(UserInputError, match=complaint):
        extract(model, uninterrupted, dataset, **options)
    assert tree_bytes(uninterrupted) == before


def test_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not a feature store"):
        extract(InstrumentedPixels(), tmp_path)


def test_sigkill_mid_run_then_rerun_is_byte_equal(tmp_path: Path, uninterrupted: Path) -> None:
    out = tmp_path / "killed"
    here = Path(__file__).parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import feature_fakes; "
            f"feature_fakes.run_slow_extraction({str(out)!r}, 0.15)")
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    try:
        while finished_shards(out) < 2:
            assert child.poll() is None, "the extraction finished or failed before it could be killed"
            assert time.monotonic() < deadline, "no shard finished within 60 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    finished_before_kill = finished_shards(out)
    assert 2 <= finished_before_kill < 6
    rerun = InstrumentedPixels()
    extract_dataset(rerun, GeneratedImages(24), out, batch_size=2, shard_size=4, progress=False)
    assert sum(rerun.batch_sizes) <= 24 - 4 * finished_before_kill
    reference = tmp_path / "reference24"
    extract_dataset(InstrumentedPixels(), GeneratedImages(24), reference, batch_size=2, shard_size=4,
                    progress=False)
    assert tree_bytes(out) == tree_bytes(reference)


def test_cuda_out_of_memory_halves_the_batch(tmp_path: Path) -> None:
    model = InstrumentedPixels(oom_above_batch=2)
    out = tmp_path / "store"
    extract(model, out, batch_size=8, shard_size=8)
    assert model.batch_sizes == [2, 2, 2, 2, 2]  # 8 → 4 → 2, then kept at 2
    reference = tmp_path / "reference"
    extract(InstrumentedPixels(), reference, batch_size=8, shard_size=8)
    assert tree_bytes(out) == tree_bytes(reference)


def test_cuda_out_of_memory_at_batch_one_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as caught:
        extract(InstrumentedPixels(oom_above_batch=0), tmp_path / "store", batch_size=4)
    message = str(caught.value)
    for advice in ("--batch-size", "--stages", "--dtype"):
        assert advice in message


def test_shards_are_written_while_extraction_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "store"
    seen: list[int] = []

    def count_finished_shards(call: int) -> None:
        # Called before each forward; one batch = one shard here.
        seen.append(finished_shards(out))

    extract(InstrumentedPixels(on_call=count_finished_shards), out, GeneratedImages(16), batch_size=2,
            shard_size=2)
    # With a write queue of one shard, shard k-3 is on disk before shard k is computed.
    assert all(finished >= call - 2 for call, finished in enumerate(seen)), seen
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
