"""Decoding a video file into the clip a model sees: `frames` frames of `image_size`² px, chosen
evenly across the clip (or at a frame rate), each centre-cropped to a square; cached on disk.

PyAV (FFmpeg bindings shipped as a wheel with its own FFmpeg) reads every container and codec
FFmpeg knows. A file that cannot be read gives a *problem* (a sentence saying why) instead of an
exception, so a folder with a few bad files is listed and skipped, never a traceback.

The cache holds one `.npz` per (file, size, mtime, settings, PyAV version) under
`$STAGEPROBE_CACHE/decoded` (default ~/.cache/stageprobe/decoded): a second run, and every probe
worker that rebuilds the dataset, reads the frames instead of decoding again; a changed file has
another size or mtime, so it is decoded afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi")


@dataclass(frozen=True)
class DecodedClip:
    """The frames shown to the model and where in the file they come from."""

    #: (frames, image_size, image_size, 3) uint8
    frames: np.ndarray
    #: the source frame each shown frame is (0-based, in decoding order)
    indices: tuple[int, ...]
    #: frames in the file and its own frame rate (None when the container does not say)
    source_frames: int
    source_fps: float | None
    #: (height, width) of the file's frames
    original_size: tuple[int, int]

    @property
    def step(self) -> float:
        """Mean number of source frames between two shown frames."""
        return float(np.diff(self.indices).mean()) if len(self.indices) > 1 else 1.0


@dataclass(frozen=True)
class Sampling:
    """How a clip is sampled: frame count, square side, and the frame rate (None: spread evenly)."""

    frames: int
    image_size: int
    fps: float | None = None


def decoded_cache_dir() -> Path:
    return Path(os.environ.get("STAGEPROBE_CACHE") or Path.home() / ".cache" / "stageprobe") / "decoded"


def frame_indices(total: int, source_fps: float | None, sampling: Sampling) -> list[int] | str:
    """Indices of the shown frames among `total`, or a problem. Without `fps`: the centre of each of
    `frames` equal segments (so a clip of exactly `frames` frames is shown whole); with `fps`: a step
    of source_fps/fps frames, centred in the clip."""
    count = sampling.frames
    if sampling.fps is None:
        if total < count:
            return f"has {total} frames; frames={count} are needed"
        return [int((i + 0.5) * total / count) for i in range(count)]
    if not source_fps:
        return "does not state its frame rate, so fps cannot be applied; leave fps out"
    step = source_fps / sampling.fps
    span = step * (count - 1)
    if span > total - 1:
        return (f"lasts {total} frames at {source_fps:g} fps; {count} frames at fps={sampling.fps:g} need "
                f"{span + 1:.0f}")
    start = (total - 1 - span) / 2
    return [round(start + i * step) for i in range(count)]


def decode_clip(path: Path, sampling: Sampling) -> DecodedClip | str:
    """The clip of `path` under `sampling`, or why it cannot be read."""
    try:
        if path.stat().st_size == 0:
            return "is empty (0 bytes)"
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "holds no video stream"
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else None
            total = sum(1 for packet in container.demux(stream) if packet.size)
            indices = frame_indices(total, source_fps, sampling)
            if isinstance(indices, str):
                return indices
            container.seek(0)
            return _decode_frames(container, indices, total, source_fps, sampling)
    except FileNotFoundError:
        return "does not exist"
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as error:
        return f"cannot be decoded ({error})"


def _decode_frames(container: av.container.InputContainer, indices: list[int], total: int,
                   source_fps: float | None, sampling: Sampling) -> DecodedClip | str:
    wanted = {index: position for position, index in enumerate(indices)}
    frames: list[np.ndarray | None] = [None] * len(indices)
    original = (0, 0)
    for number, frame in enumerate(container.decode(video=0)):
        if number in wanted:
            image = frame.to_image()
            original = (image.height, image.width)
            frames[wanted[number]] = _square(image, sampling.image_size)
    missing = [indices[i] for i, f in enumerate(frames) if f is None]
    if missing:
        return f"stops decoding before frame {missing[0]} of the {total} its container lists"
    return DecodedClip(np.stack(frames), tuple(indices), total, source_fps, original)  # type: ignore[arg-type]


def _square(image: Image.Image, size: int) -> np.ndarray:
    """The centre square of `image` at `size`² px (no resampling when it already is that size)."""
    if image.size != (size, size):
        image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def cache_key(path: Path, sampling: Sampling) -> str:
    """Names a decoded clip by the file (path, size, mtime), the sampling and the decoder's version."""
    stat = path.stat()
    record = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, sampling.frames, sampling.image_size,
              sampling.fps, av.__version__]
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


def cached_decode(path: Path, sampling: Sampling) -> DecodedClip | str:
    """`decode_clip` through the on-disk cache (problems are cached too, so workers do not retry them)."""
    try:
        key = cache_key(path, sampling)
    except OSError as error:
        return f"cannot be read ({error})"
    folder = decoded_cache_dir() / key[:2]
    found = _read_cached(folder, key)
    if found is not None:
        return found
    clip = decode_clip(path, sampling)
    _write_cached(folder, key, clip)
    return clip


def is_cached(path: Path, sampling: Sampling) -> bool:
    try:
        key = cache_key(path, sampling)
    except OSError:
        return False
    folder = decoded_cache_dir() / key[:2]
    return (folder / f"{key}.npz").is_file() or (folder / f"{key}.json").is_file()


def _read_cached(folder: Path, key: str) -> DecodedClip | str | None:
    problem = folder / f"{key}.json"
    if problem.is_file():
        return str(json.loads(problem.read_text())["problem"])
    file = folder / f"{key}.npz"
    if not file.is_file():
        return None
    try:
        with np.load(file) as stored:
            meta = json.loads(str(stored["meta"]))
            return DecodedClip(stored["frames"], tuple(meta["indices"]), meta["source_frames"], meta["source_fps"],
                               tuple(meta["original_size"]))  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is decoded again


def _write_cached(folder: Path, key: str, clip: DecodedClip | str) -> None:
    """Written to a temporary name and renamed, so a reader never sees half a file; a cache that
    cannot be written (read-only home) only costs decoding again."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(clip, str):
            temporary = folder / f"{key}.{os.getpid()}.json.tmp"
            temporary.write_text(json.dumps({"problem": clip}))
            temporary.replace(folder / f"{key}.json")
            return
        meta = {"indices": list(clip.indices), "source_frames": clip.source_frames, "source_fps": clip.source_fps,
                "original_size": list(clip.original_size)}
        temporary = folder / f"{key}.{os.getpid()}.tmp.npz"
        np.savez(temporary, frames=clip.frames, meta=json.dumps(meta))
        temporary.replace(folder / f"{key}.npz")
    except OSError:
        return
