"""Video folders written by the tests themselves: camera pans over bundled photos, encoded with PyAV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from stageprobe.datasets import load_dataset
from stageprobe.datasets.motion import DIRECTION_NAMES

#: codec and container of each test encoding; `libx264rgb` at crf 0 is lossless (the uncompressed twin)
ENCODINGS = {"mp4": ("libx264", "mp4", {"crf": "18"}), "webm": ("libvpx-vp9", "webm", {"crf": "20", "b": "0"}),
             "lossless": ("libx264rgb", "mp4", {"crf": "0"})}


@dataclass(frozen=True)
class PanClip:
    """One written clip: its path under the folder, its frames in recorded order and its labels."""

    path: str
    frames: np.ndarray
    direction: int
    speed_px_per_frame: float
    photo: str


def encode(path: Path, frames: np.ndarray, encoding: str, fps: int = 8) -> None:
    codec, _, options = ENCODINGS[encoding]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "yuv420p"
        stream.options = options
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def pan_clips(n: int, image_size: int, seed: int = 0) -> list[PanClip]:
    """`pan` clips in their natural (recorded) order, with their natural direction and speed."""
    clips = []
    for sample in load_dataset("pan", n=n, seed=seed, image_size=image_size):
        frames = np.stack([np.asarray(f) for f in sample.frames])
        direction = sample.target["direction"]
        if sample.target["reversed"]:
            frames, direction = frames[::-1], (direction + 4) % 8
        photo = sample.target["source"]
        clips.append(PanClip(f"{photo}/{sample.key}", np.ascontiguousarray(frames), int(direction),
                             float(sample.target["speed_px_per_frame"]), photo))
    return clips


def write_videos(folder: Path, clips: list[PanClip], encoding: str) -> dict[str, PanClip]:
    """Each clip encoded under `folder` (one subfolder per photo); {relative path: clip}."""
    extension = ENCODINGS[encoding][1]
    written = {}
    for clip in clips:
        relative = f"{clip.path}.{extension}"
        encode(folder / relative, clip.frames, encoding)
        written[relative] = clip
    return written


def write_labels(file: Path, written: dict[str, PanClip], extra_rows: list[list[str]] = ()) -> Path:
    """path,direction,speed: directions alternately as names and angles in degrees, speeds in px/frame."""
    with file.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "direction", "speed"])
        for k, (relative, clip) in enumerate(sorted(written.items())):
            direction = DIRECTION_NAMES[clip.direction] if k % 2 else f"{45 * clip.direction + 10:g}"
            out.writerow([relative, direction, f"{clip.speed_px_per_frame:.3f}"])
        out.writerows(extra_rows)
    return file
