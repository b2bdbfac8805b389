"""The on-disk feature store: one directory, a JSON manifest and per-stage safetensors shards.

Layout::

    STORE/
      manifest.json                       # what was extracted, from what, how
      {stage}/shard-00000.safetensors     # one tensor "features": (n, T, H, W, D) in the store dtype
      shards/shard-00000.done.json        # written last: sample range, keys, sha256 of every stage file

A shard counts as finished only when its `.done.json` exists and every stage file matches the
checksum recorded there; files are written to a temporary name and renamed, so a killed process
leaves either a whole file or none. Everything is read with `safetensors` and `json`: nothing is
ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from stageprobe._atomic import TEMP_MARKER, write_bytes_atomic
from stageprobe.errors import UserInputError

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "shards"
STORE_FORMAT = "stageprobe.feature-store"
STORE_FORMAT_VERSION = 1
TENSOR_NAME = "features"

STORE_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32",
                  "float": "float32"}


def resolve_store_dtype(name: str) -> str:
    """Canonical store dtype name ("float16", "bfloat16", "float32") for a name or alias."""
    canonical = _DTYPE_ALIASES.get(name, name)
    if canonical not in STORE_DTYPES:
        raise UserInputError(
            f"unknown store dtype {name!r} (--store-dtype); use one of fp16, bf16, fp32 (or float16, bfloat16, float32)"
        )
    return canonical


def write_json_atomic(path: Path, content: Any) -> None:
    write_bytes_atomic(path, (json.dumps(content, indent=1) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_temp_files(root: Path) -> None:
    """Delete temporaries left by a killed writer; they are never part of a finished shard."""
    for temp in root.rglob(f".*{TEMP_MARKER}*"):
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class StageLayout:
    """How one stage is stored: per-sample shape (T, H, W, D), grid stride and the model's dtype."""

    name: str
    shape: tuple[int, int, int, int]
    stride_px: int
    source_dtype: str
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "stride_px": self.stride_px,
                "source_dtype": self.source_dtype, "description": self.description}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> StageLayout:
        t, h, w, d = entry["shape"]
        return cls(entry["name"], (t, h, w, d), entry["stride_px"], entry["source_dtype"],
                   entry["description"])


@dataclass(frozen=True)
class ShardRecord:
    """Proof that shard `index` (samples `start`…`stop`-1) is complete: keys, splits, file checksums."""

    index: int
    start: int
    stop: int
    keys: list[str]
    splits: list[str]
    sha256: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start, "stop": self.stop, "keys": self.keys,
                "splits": self.splits, "sha256": self.sha256}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ShardRecord:
        return cls(entry["index"], entry["start"], entry["stop"], list(entry["keys"]), list(entry["splits"]),
                   dict(entry["sha256"]))


@dataclass(frozen=True)
class FeatureShard:
    """One shard of one stage as read back: samples `start`…`stop`-1, features (n, T, H, W, D)."""

    index: int
    start: int
    stop: int
    features: torch.Tensor


def shard_ranges(num_samples: int, shard_size: int) -> list[range]:
    return [range(start, min(start + shard_size, num_samples)) for start in range(0, num_samples, shard_size)]


def stage_file(root: Path, stage: str, index: int) -> Path:
    return root / stage / f"shard-{index:05d}.safetensors"


def record_file(root: Path, index: int) -> Path:
    return root / RECORDS_DIR / f"shard-{index:05d}.done.json"


def read_record(root: Path, index: int) -> ShardRecord | None:
    path = record_file(root, index)
    try:
        return ShardRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # A record that does not parse proves nothing: the shard is treated as not done.
        return None


def write_shard(
    root: Path,
    index: int,
    rows: range,
    keys: list[str],
    splits: list[str],
    features: dict[str, torch.Tensor],
) -> ShardRecord:
    """Write every stage file of one shard, then its record; the record is the commit point."""
    record_file(root, index).unlink(missing_ok=True)
    checksums: dict[str, str] = {}
    for stage, tensor in features.items():
        # One metadata entry: safetensors writes several in hash-map order, which varies from run to
        # run, and resumed stores must be byte-identical to uninterrupted ones.
        provenance = json.dumps({"stage": stage, "start": rows.start, "stop": rows.stop}, sort_keys=True)
        data = safetensors_bytes({TENSOR_NAME: tensor.contiguous()}, metadata={"stageprobe": provenance})
        path = stage_file(root, stage, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
        checksums[stage] = hashlib.sha256(data).hexdigest()
    record = ShardRecord(index, rows.start, rows.stop, keys, splits, checksums)
    (root / RECORDS_DIR).mkdir(exist_ok=True)
    write_json_atomic(record_file(root, index), record.to_json())
    return record


def verified_record(root: Path, index: int, rows: range, stages: Sequence[str]) -> ShardRecord | None:
    """The shard's record if the shard is complete and every stage file matches its checksum."""
    record = read_record(root, index)
    if record is None or (record.start, record.stop) != (rows.start, rows.stop):
        return None
    if set(record.sha256) != set(stages):
        return None
    for stage in stages:
        path = stage_file(root, stage, index)
        if not path.is_file() or sha256_file(path) != record.sha256[stage]:
            return None
    return record


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise UserInputError(
            f"{root} is not a feature store (no {MANIFEST_NAME}); "
            f"create one with `stageprobe extract --out {root}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise UserInputError(
            f"{path} is not valid JSON ({error}); delete {root} and extract again"
        ) from error
    if manifest.get("format") != STORE_FORMAT:
        raise UserInputError(f"{path} is not a stageprobe feature-store manifest")
    if manifest.get("format_version") != STORE_FORMAT_VERSION:
        raise UserInputError(
            f"{root} uses feature-store format {manifest.get('format_version')}, this stageprobe reads "
            f"{STORE_FORMAT_VERSION}; extract again into a new directory"
        )
    return manifest


class FeatureStore:
    """Read access to a feature store. Open one with `FeatureStore.open(path)`."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.layouts = {entry["name"]: StageLayout.from_json(entry) for entry in manifest["stages"]}

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> FeatureStore:
        """Open a store; an unfinished one is refused unless `require_complete=False` (inspection)."""
        root = Path(path)
        store = cls(root, read_manifest(root))
        if require_complete and not store.complete:
            raise UserInputError(
                f"the feature store at {root} is unfinished (extraction was interrupted); "
                "rerun the same `stageprobe extract` command to resume it"
            )
        return store

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def stages(self) -> list[str]:
        return list(self.layouts)

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def keys(self) -> list[str]:
        return list(self._samples()["keys"])

    @property
    def splits(self) -> list[str]:
        return list(self._samples()["splits"])

    @property
    def store_dtype(self) -> torch.dtype:
        return STORE_DTYPES[self.manifest["store_dtype"]]

    @property
    def shard_size(self) -> int:
        return int(self.manifest["shard_size"])

    def __len__(self) -> int:
        return self.num_samples

    def split_indices(self, split: str) -> list[int]:
        return [i for i, name in enumerate(self.splits) if name == split]

    def shape(self, stage: str) -> tuple[int, int, int, int]:
        """Per-sample shape (T, H, W, D) of a stage."""
        return self._layout(stage).shape

    def load(self, stage: str, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Features of `stage` for the samples at `indices` (all by default), as (N, T, H, W, D) float32."""
        layout = self._layout(stage)
        wanted = list(range(self.num_samples)) if indices is None else [int(i) for i in indices]
        for position in wanted:
            if not 0 <= position < self.num_samples:
                raise IndexError(f"sample index {position} out of range for a store of {self.num_samples}")
        out = torch.empty((len(wanted), *layout.shape), dtype=torch.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for row, position in enumerate(wanted):
            by_shard.setdefault(position // self.shard_size, []).append((row, position % self.shard_size))
        for index, pairs in by_shard.items():
            rows = torch.tensor([row for row, _ in pairs])
            offsets = [offset for _, offset in pairs]
            low, high = min(offsets), max(offsets) + 1
            # Read only the span of rows needed from this shard, not the whole shard.
            with safe_open(str(self._existing_file(stage, index)), framework="pt") as handle:
                span = handle.get_slice(TENSOR_NAME)[low:high]
            out[rows] = span[torch.tensor(offsets) - low].to(torch.float32)
        return out

    def iter_shards(self, stage: str) -> Iterator[FeatureShard]:
        """Shards of `stage` in sample order, each as float32, so a big store never sits in memory whole."""
        self._layout(stage)
        for index, rows in enumerate(shard_ranges(self.num_samples, self.shard_size)):
            with safe_open(str(self._existing_file(stage, index)), framework="pt") as handle:
                features = handle.get_tensor(TENSOR_NAME).to(torch.float32)
            yield FeatureShard(index, rows.start, rows.stop, features)

    def verify(self) -> list[int]:
        """Indices of shards that are missing or whose files no longer match their checksums."""
        ranges = shard_ranges(self.num_samples, self.shard_size)
        return [index for index, rows in enumerate(ranges)
                if verified_record(self.root, index, rows, self.stages) is None]

    def _samples(self) -> dict[str, list[str]]:
        samples = self.manifest.get("samples")
        if samples is None:
            raise UserInputError(
                f"the feature store at {self.root} is unfinished; rerun the extraction to resume it"
            )
        return samples

    def _layout(self, stage: str) -> StageLayout:
        if stage not in self.layouts:
            raise UserInputError(
                f"stage {stage!r} is not in the feature store at {self.root}; "
                f"it holds: {', '.join(self.layouts)}"
            )
        return self.layouts[stage]

    def _existing_file(self, stage: str, index: int) -> Path:
        path = stage_file(self.root, stage, index)
        if not path.is_file():
            raise UserInputError(
                f"{path} is missing from the feature store; rerun the extraction to rebuild that shard"
            )
        return path
