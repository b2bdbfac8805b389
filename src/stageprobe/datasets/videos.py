"""`videos:DIR`: every video file under a folder (mp4, webm, mkv, mov, avi; recursive), shown to the
model as `motion`'s clips are, with `motion`'s targets.

Sampling. Each file is decoded with PyAV and `frames` frames (even: video models take frames in
pairs) are taken — the centres of `frames` equal segments of the clip, or with `fps=R` a step of
(the clip's own fps)/R frames centred in it — each centre-cropped to an `image_size`² square, the
size the study's generated clips have (8 × 224² by default, a whole number of merged patches for
Qwen2.x's 28 px and Qwen3's 32 px, so the video processor keeps it as it is). The clip's own fps,
frame count and the chosen frame indices are recorded in its target.

Order needs no labels: half the clips of each split, chosen by a seeded hash of their path, are
shown time-reversed (`reversed`), as in `motion`. Direction and speed need a labels file, `videos:DIR:labels=FILE.csv`,
with columns `path,direction[,speed][,group]`: `path` relative to DIR; `direction` one of
right, up-right, up, up-left, left, down-left, down, down-right or an angle in degrees
(counter-clockwise from +x, screen up); `speed` slow / medium / fast (`motion`'s classes) or pixels per
frame of the file at its own size and rate, turned into the class of the shown clip. Labels
describe the file as recorded: a clip shown reversed gets the opposite direction. A row whose file
is missing or undecodable, whose direction or speed cannot be read, or that repeats a path, and a
file that has no row, is listed and skipped (`skipped`), never silently. Without labels the
dataset's `unlabelled_tasks` are direction and speed, which the study then does not measure.

`centroids` (the motion path the flow probes train on): with labels, a straight path in the
labelled direction at the labelled speed (at the clip's measured mean shift when the speed is not
given), its steps shaped like the measured ones where the whole-frame motion follows the label;
without, the whole-frame shift between consecutive frames measured by phase correlation
(`centroids_source` says which). Splits are per source: the `group` column, else the file's parent
folder (a file directly in DIR is its own source), so clips cut from one video stay in one split.

`n` caps the number of clips (a seeded choice); the content hash covers every file's bytes, so a
changed file gives another feature store, and the decoded frames are cached (see `_video_decode`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stageprobe.datasets._options import check_float, check_int, seeded_order
from stageprobe.datasets._video_decode import VIDEO_EXTENSIONS, DecodedClip, Sampling, cached_decode, is_cached
from stageprobe.datasets.base import SPLITS, Dataset, Sample, Split, ranked_splits
from stageprobe.datasets.motion import (
    DIRECTION_NAMES,
    SPEED_RANGES_224,
    check_clip_options,
    direction_vector,
)
from stageprobe.datasets.registry import register_dataset
from stageprobe.errors import UserInputError

#: names of `motion`'s speed classes (SPEED_RANGES_224), slowest first
SPEED_NAMES = ("slow", "medium", "fast")
LABEL_COLUMNS = "path,direction[,speed][,group]"
#: skipped records printed one by one before the rest are only counted
SHOWN_SKIPS = 20


@dataclass(frozen=True)
class ClipLabel:
    """One labels row: the direction class of the file as recorded, its speed text, its group."""

    direction: int
    speed: str | None
    group: str | None


def parse_direction(text: str) -> int | None:
    """Class of a direction name or an angle in degrees (nearest 45°), None if it is neither."""
    name = text.strip().lower()
    if name in DIRECTION_NAMES:
        return DIRECTION_NAMES.index(name)
    try:
        angle = float(name)
    except ValueError:
        return None
    return round((angle % 360) / 45) % 8 if math.isfinite(angle) else None


def speed_problem(text: str, speed_classes: int) -> str | None:
    """Why a speed entry cannot be used, or None."""
    name = text.strip().lower()
    if name in SPEED_NAMES[:speed_classes]:
        return None
    if name in SPEED_NAMES:
        return f"speed {text!r} needs speed_classes={SPEED_NAMES.index(name) + 1}"
    try:
        value = float(name)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        return (f"speed {text!r} is neither one of {', '.join(SPEED_NAMES[:speed_classes])} nor pixels per "
                "frame (a number ≥ 0)")
    return None


def speed_class(px_per_frame: float, image_size: int, speed_classes: int) -> int:
    """The `motion` speed class of a mean shift in shown pixels per frame: classes are split halfway
    between their ranges (scaled from 224 px to `image_size`)."""
    scale = image_size / 224
    bounds = [(SPEED_RANGES_224[k][1] + SPEED_RANGES_224[k + 1][0]) / 2 * scale for k in range(speed_classes - 1)]
    return sum(px_per_frame >= bound for bound in bounds)


@dataclass
class LabelsFile:
    """A labels CSV as read: labels by path relative to DIR, the rows skipped (and their paths)."""

    labels: dict[str, ClipLabel]
    skipped: list[dict[str, str]]
    rejected: set[str]
    has_speed: bool


def read_labels(file: Path, root: Path, speed_classes: int) -> LabelsFile:
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"videos: labels file {file} cannot be read ({error}); give a CSV with columns "
                             f"{LABEL_COLUMNS}") from None
    header = [column.strip().lower() for column in rows[0]] if rows else []
    if "path" not in header or "direction" not in header:
        raise UserInputError(f"videos: labels file {file} has columns {', '.join(header) or 'none'}; expected "
                             f"{LABEL_COLUMNS} (a header row naming them)")
    column = {name: header.index(name) for name in ("path", "direction", "speed", "group") if name in header}
    found = LabelsFile({}, [], set(), "speed" in column)
    first_row: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = {name: (row[i].strip() if i < len(row) else "") for name, i in column.items()}
        record = f"{file.name} row {line} ({cells['path'] or 'no path'})"
        relative, problem = _row_path(cells["path"], root)
        if problem is None and relative in first_row:
            problem = f"repeats the path of row {first_row[relative]}"
        direction = parse_direction(cells["direction"])
        if problem is None and direction is None:
            problem = (f"direction {cells['direction']!r} is neither one of {', '.join(DIRECTION_NAMES)} nor an "
                       "angle in degrees")
        if problem is None and "speed" in cells:
            problem = speed_problem(cells["speed"], speed_classes) if cells["speed"] else "has no speed"
        if problem is not None:
            found.skipped.append({"record": record, "reason": problem})
            found.rejected.add(relative)
            continue
        first_row[relative] = line
        found.labels[relative] = ClipLabel(direction, cells.get("speed") or None,  # type: ignore[arg-type]
                                           cells.get("group") or None)
    return found


def _row_path(text: str, root: Path) -> tuple[str, str | None]:
    """(path relative to root, problem) of a labels row's path."""
    if not text:
        return "", "has no path"
    path = Path(text)
    path = path if path.is_absolute() else root / path
    try:
        return path.resolve().relative_to(root).as_posix(), None
    except ValueError:
        return text, f"names {text}, which is outside {root}"


def video_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def measured_path(frames: np.ndarray) -> np.ndarray:
    """(F, 2) position of the frame centre's content in each frame, from the whole-frame shift between
    consecutive frames (phase correlation, sub-pixel; the Hann window keeps the still frame edges from
    pulling the estimate to zero)."""
    # imported here: skimage.registration pulls in scipy's FFT stack, which only video datasets need
    from skimage.registration import phase_cross_correlation

    size = frames.shape[1]
    hann = np.outer(np.hanning(frames.shape[1]), np.hanning(frames.shape[2]))
    grey = [frame.astype(np.float64).mean(-1) * hann for frame in frames]
    steps = [phase_cross_correlation(later, earlier, upsample_factor=10)[0][::-1]
             for later, earlier in zip(grey[1:], grey[:-1], strict=True)]
    return size / 2 + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def labelled_path(direction: int, step_px: float, measured: np.ndarray, size: int) -> np.ndarray:
    """(F, 2) positions along direction class `direction` at a mean step of `step_px`, centred in the
    frame. Where the measured whole-frame motion goes the labelled way (within 45°, ≥ 0.5 px a step),
    its step-by-step lengths shape the path (a decelerating pan stays decelerating); elsewhere (an
    object moving over a still background) the steps are equal."""
    unit = np.array(direction_vector(direction))
    lengths = np.linalg.norm(np.diff(measured, axis=0), axis=1)
    net = measured[-1] - measured[0]
    follows = lengths.mean() >= 0.5 and float(net @ unit) >= math.cos(math.pi / 4) * float(np.linalg.norm(net))
    profile = lengths / lengths.mean() if follows else np.ones_like(lengths)
    travel = np.concatenate([[0.0], np.cumsum(profile * step_px)])[:, None] * unit
    return size / 2 + travel - travel[-1] / 2


@register_dataset("videos", "every video under a folder (recursive): order; direction and speed with "
                  "labels=FILE.csv", argument="dir")
class VideoFolderDataset(Dataset):
    """Clips decoded from video files, half shown time-reversed; direction and speed from a labels file."""

    name = "videos"
    kind = "video"
    #: its content is the user's files: the study keeps one feature store per content hash
    content_from_files = True

    def __init__(
        self,
        directory: str,
        n: int | None = None,
        seed: int = 0,
        frames: int = 8,
        image_size: int = 224,
        speed_classes: int = 2,
        fps: float | None = None,
        labels: str | None = None,
    ) -> None:
        self.n = None if n is None else check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.frames, self.image_size, self.speed_classes = check_clip_options(
            self.name, frames, image_size, speed_classes)
        self.fps = None if fps is None else check_float(self.name, "fps", fps, 1e-3)
        self.sampling = Sampling(self.frames, self.image_size, self.fps)
        self.root = Path(directory).resolve()
        self.labels_file = None if labels is None else Path(labels).resolve()
        self.class_names = list(DIRECTION_NAMES)
        self.skipped: list[dict[str, str]] = []
        self._labels: dict[str, ClipLabel] = {}
        #: motion tasks this data has no labels for (the study does not measure them)
        self.unlabelled_tasks: tuple[str, ...] = ("direction", "speed")
        candidates = self._candidates()
        self._groups = {relative: self._group_of(relative) for relative in candidates}
        self._check_sources(candidates)
        self.files = self._decodable(candidates)
        self._check_sources(self.files)
        # Ranked over the clips in use, so even a few sources give train, val and test their share.
        self._splits = ranked_splits([self._groups[path] for path in self.files])
        self._reversed = self._shown_reversed()
        self._say_skipped()

    # -- building ----------------------------------------------------------------------------------

    def _candidates(self) -> list[str]:
        """The video files to decode (those with a labels row, when labels are given)."""
        if not self.root.is_dir():
            raise UserInputError(f"videos: {self.root} is not a folder; give videos:DIR with DIR a folder of "
                                 f"videos ({', '.join(VIDEO_EXTENSIONS)})")
        files = video_files(self.root)
        if not files:
            raise UserInputError(f"videos: {self.root} holds no video files ({', '.join(VIDEO_EXTENSIONS)}, "
                                 "searched recursively); give the folder that holds them")
        if self.labels_file is None:
            return files
        if not self.labels_file.is_file():
            raise UserInputError(f"videos: labels file {self.labels_file} does not exist; give a CSV with columns "
                                 f"{LABEL_COLUMNS}")
        read = read_labels(self.labels_file, self.root, self.speed_classes)
        self._labels = read.labels
        self.unlabelled_tasks = () if read.has_speed else ("speed",)
        present = set(files)
        self.skipped += read.skipped
        self.skipped += [{"record": f"{self.labels_file.name}: {path}",
                          "reason": f"is not a video file ({', '.join(VIDEO_EXTENSIONS)})"
                          if (self.root / path).is_file() else "file not found in the folder"}
                         for path in self._labels if path not in present]
        self.skipped += [{"record": path, "reason": f"has no row in {self.labels_file.name}"}
                         for path in files if path not in self._labels and path not in read.rejected]
        return [path for path in files if path in self._labels]

    def _group_of(self, relative: str) -> str:
        label = self._labels.get(relative)
        if label is not None and label.group:
            return f"group:{label.group}"
        parent = Path(relative).parent.as_posix()
        return f"folder:{parent}" if parent != "." else f"file:{relative}"

    def _check_sources(self, candidates: list[str]) -> None:
        sources = len({self._groups[path] for path in candidates})
        if sources < len(SPLITS):
            where = f"{len(candidates)} usable video(s)" if candidates else "no usable video"
            raise UserInputError(
                f"videos: {self.root} holds {where} from {sources} source(s) (groups: labels column `group`, else "
                f"the parent folder); train, val and test each need their own, so give videos from at least "
                f"{len(SPLITS)} sources")

    def _decodable(self, candidates: list[str]) -> list[str]:
        """Up to `n` files that decode (a seeded choice), in path order; the others listed in `skipped`."""
        order = [candidates[i] for i in seeded_order(candidates, self.seed)]
        wanted = len(order) if self.n is None else min(self.n, len(order))
        todo = sum(not is_cached(self.root / path, self.sampling) for path in order[:wanted])
        chosen: list[str] = []
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), disable=todo == 0, transient=True) as bar:
            task = bar.add_task(f"decoding videos in {self.root.name}", total=wanted)
            for path in order:
                if len(chosen) == wanted:
                    break
                clip = cached_decode(self.root / path, self.sampling)
                if isinstance(clip, str):
                    self.skipped.append({"record": path, "reason": clip})
                else:
                    chosen.append(path)
                    bar.advance(task)
        if not chosen:
            reasons = "; ".join(f"{s['record']} {s['reason']}" for s in self.skipped[:3])
            raise UserInputError(f"videos: no video in {self.root} could be used ({reasons}); fix or replace the "
                                 "files")
        return sorted(chosen)

    def _shown_reversed(self) -> set[str]:
        """Keys of the clips shown time-reversed: half of each split (the first half in a seeded hash
        order), so order labels are balanced wherever a probe is fitted or scored."""
        chosen: set[str] = set()
        for split in SPLITS:
            keys = [self.key(i) for i in range(len(self.files)) if self.sample_split(i) == split]
            ranked = sorted(keys, key=lambda key: hashlib.sha256(f"reverse:{self.seed}:{key}".encode()).digest())
            chosen.update(ranked[:len(keys) // 2])
        return chosen

    def _say_skipped(self) -> None:
        # Probe workers rebuild the dataset from its spec; only the main process speaks.
        if not self.skipped or multiprocessing.parent_process() is not None:
            return
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"videos: skipped {len(self.skipped)} record(s); using {len(self.files)} clip(s):")
        for skip in self.skipped[:SHOWN_SKIPS]:
            console.print(f"  {skip['record']}: {skip['reason']}", markup=False)
        if len(self.skipped) > SHOWN_SKIPS:
            console.print(f"  … and {len(self.skipped) - SHOWN_SKIPS} more (all listed in the dataset spec)")

    # -- the dataset contract ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def key(self, index: int) -> str:
        return f"videos-{self.files[index]}"

    def sample_group(self, index: int) -> str:
        return self._groups[self.files[index]]

    def sample_split(self, index: int) -> Split:
        return self._splits[self.sample_group(index)]

    def spec(self) -> dict[str, Any]:
        options = {"n": self.n, "seed": self.seed, "frames": self.frames, "image_size": self.image_size,
                   "speed_classes": self.speed_classes, "fps": self.fps,
                   "labels": None if self.labels_file is None else str(self.labels_file)}
        return {"name": self.name, "source": f"videos:{self.root}", "options": options, "skipped": self.skipped,
                "unlabelled_tasks": list(self.unlabelled_tasks)}

    def _hash_content(self) -> str:
        """The spec, the decoder's version and every used file's bytes (and the labels file's): no decoding."""
        digest = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode())
        digest.update(av.__version__.encode())
        files = [self.root / path for path in self.files]
        for path in [*files, *([self.labels_file] if self.labels_file else [])]:
            digest.update(str(path).encode())
            digest.update(_file_digest(path))
        return digest.hexdigest()

    def __getitem__(self, index: int) -> Sample:
        relative = self.files[index]
        clip = cached_decode(self.root / relative, self.sampling)
        if isinstance(clip, str):
            raise UserInputError(f"videos: {self.root / relative} {clip} (it decoded when the dataset was built: "
                                 "was it changed during the run?)")
        key = self.key(index)
        natural_direction, target = self._motion_target(relative, clip)
        shown_reversed = key in self._reversed
        frames = clip.frames[::-1] if shown_reversed else clip.frames
        target["centroids"] = np.ascontiguousarray(target["centroids"][::-1] if shown_reversed else target["centroids"],
                                                   dtype=np.float32)
        if natural_direction is not None:
            target["direction"] = (natural_direction + 4) % 8 if shown_reversed else natural_direction
        target.update({"reversed": shown_reversed, "image_size": (self.image_size, self.image_size),
                       "path": relative, "source_fps": clip.source_fps, "source_frames": clip.source_frames,
                       "frame_indices": list(clip.indices), "original_size": clip.original_size, "kind": "video"})
        return Sample(key=key, split=self.sample_split(index), frames=[Image.fromarray(f) for f in frames],
                      target=target, group=self.sample_group(index))

    def _motion_target(self, relative: str, clip: DecodedClip) -> tuple[int | None, dict[str, Any]]:
        """(the file's own direction class or None, the target's speed and path in the file's frame order)."""
        measured = measured_path(clip.frames)
        measured_step = float(np.linalg.norm(np.diff(measured, axis=0), axis=1).mean())
        label = self._labels.get(relative)
        if label is None:
            return None, {"centroids": measured, "centroids_source": "phase correlation",
                          "speed_px_per_frame": measured_step}
        target: dict[str, Any] = {"centroids_source": "labels", "speed_px_per_frame": measured_step}
        step = measured_step
        if label.speed is not None and label.speed.lower() in SPEED_NAMES:
            target["speed"] = SPEED_NAMES.index(label.speed.lower())
            step = float(np.mean(SPEED_RANGES_224[target["speed"]])) * self.image_size / 224
        elif label.speed is not None:
            # pixels per frame of the file → pixels per shown frame of the shown square
            step = float(label.speed) * clip.step * self.image_size / min(clip.original_size)
            target["speed"] = speed_class(step, self.image_size, self.speed_classes)
            target["speed_px_per_frame"] = step
        target["centroids"] = labelled_path(label.direction, step, measured, self.image_size)
        return label.direction, target


def _file_digest(path: Path, chunk: int = 1 << 20) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.digest()
