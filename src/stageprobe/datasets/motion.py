"""`motion`: clips of one coloured shape moving in one of 8 directions, at a few speed classes.

Directions: class k moves at k·45° counter-clockwise from +x as seen on screen — 0 right,
1 up-right, 2 up, 3 up-left, 4 left, 5 down-left, 6 down, 7 down-right (image y points down).

The order of frames must be recoverable from the frames, or an order probe could only guess:
natural clips decelerate under constant friction (the last step is END_SPEED_RATIO of the first),
so a time-reversed clip accelerates. Half the clips, chosen by a hash of their key, are shown
reversed; `direction` is then the direction of the frames *as shown* and `reversed` is True.

Speeds are classes of mean displacement per frame, in pixels at 224 px and scaled with
`image_size`, so a clip looks the same at any resolution.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from PIL import Image

from stageprobe.datasets._options import check_choice, check_int, check_range
from stageprobe.datasets.base import Dataset, Sample, Split, stable_split
from stageprobe.datasets.registry import register_dataset
from stageprobe.datasets.shapes import COLORS, SHAPE_NAMES, blank_canvas, mask_centroid, shape_mask
from stageprobe.errors import UserInputError

DIRECTION_NAMES = ["right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"]
# Mean pixels per frame at 224 px, per speed class; gaps between classes keep them separable.
SPEED_RANGES_224 = [(2.0, 3.5), (6.0, 8.0), (11.0, 13.0)]
END_SPEED_RATIO = 0.25
# A randomly moving distractor steps at most this many pixels (at 224 px) per frame.
DISTRACTOR_STEP_224 = 3.0
DISTRACTOR_MOTIONS = ["static", "random"]


def decelerating_travel(mean_speed: float, frames: int) -> np.ndarray:
    """(frames,) distance travelled by each frame under constant deceleration from v0 to
    END_SPEED_RATIO·v0 at the last frame, with mean speed `mean_speed` (v0·(1 + END_SPEED_RATIO)/2)."""
    start_speed = 2 * mean_speed / (1 + END_SPEED_RATIO)
    deceleration = start_speed * (1 - END_SPEED_RATIO) / (frames - 1)
    t = np.arange(frames, dtype=np.float64)
    return start_speed * t - deceleration * t**2 / 2


def direction_vector(direction: int) -> tuple[float, float]:
    """Unit (dx, dy) on screen of direction class k (k·45° counter-clockwise from +x; y points down)."""
    angle = math.radians(45 * direction)
    return math.cos(angle), -math.sin(angle)


def is_reversed(key: str) -> bool:
    """Whether clip `key` is shown time-reversed.

    The hash is salted apart from the split's, so order and split are independent.
    """
    return hashlib.sha256(f"reverse:{key}".encode()).digest()[0] < 128


def check_clip_options(dataset: str, frames: int, image_size: int, speed_classes: int) -> tuple[int, int, int]:
    """(frames, image_size, speed_classes) of a moving-clip dataset, checked."""
    check_int(dataset, "frames", frames, 1)
    if frames % 2:
        raise UserInputError(
            f"{dataset}: frames={frames} is odd; video models group frames in pairs (temporal patches), "
            f"so use an even number such as {max(4, frames + 1)}"
        )
    # Fewer than 4 frames leave no change of speed to see, so the order would not be learnable.
    return (check_int(dataset, "frames", frames, 4), check_int(dataset, "image_size", image_size, 56),
            check_int(dataset, "speed_classes", speed_classes, 1, len(SPEED_RANGES_224)))


@register_dataset("motion", "clips of a shape moving in 8 directions at several speeds, half time-reversed")
class MotionDataset(Dataset):
    """Video clips with direction, speed and order labels."""

    name = "motion"
    kind = "video"

    def __init__(
        self,
        n: int = 400,
        seed: int = 0,
        frames: int = 8,
        image_size: int = 224,
        speed_classes: int = 2,
        min_size: int = 24,
        max_size: int = 40,
        distractors: int = 0,
        distractor_motion: str = "static",
    ) -> None:
        self.n = check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.frames, self.image_size, self.speed_classes = check_clip_options(
            self.name, frames, image_size, speed_classes)
        self.min_size = check_int(self.name, "min_size", min_size, 4, self.image_size)
        self.max_size = check_int(self.name, "max_size", max_size, 4, self.image_size)
        check_range(self.name, "object size", self.min_size, self.max_size)
        self.distractors = check_int(self.name, "distractors", distractors, 0, len(COLORS) - 1)
        self.distractor_motion = check_choice(
            self.name, "distractor_motion", distractor_motion, DISTRACTOR_MOTIONS
        )
        self.class_names = list(DIRECTION_NAMES)
        self._pixel_scale = self.image_size / 224
        fastest_travel = SPEED_RANGES_224[self.speed_classes - 1][1] * self._pixel_scale * (self.frames - 1)
        if fastest_travel + self.max_size > self.image_size:
            raise UserInputError(
                f"motion: the fastest object travels {fastest_travel:.0f} px over {self.frames} frames and "
                f"does not fit a {self.image_size} px frame; use fewer frames, fewer speed_classes "
                "or a smaller max_size"
            )

    def __len__(self) -> int:
        return self.n

    def key(self, index: int) -> str:
        return f"motion-{self.seed}-{index:06d}"

    def sample_group(self, index: int) -> str:
        # Each sample is drawn independently (or is its own file): it is its own source.
        return self.key(index)

    def sample_split(self, index: int) -> Split:
        return stable_split(self.key(index))

    def spec(self) -> dict[str, Any]:
        options = {
            "n": self.n, "seed": self.seed, "frames": self.frames, "image_size": self.image_size,
            "speed_classes": self.speed_classes, "min_size": self.min_size, "max_size": self.max_size,
            "distractors": self.distractors, "distractor_motion": self.distractor_motion,
        }
        return {"name": self.name, "source": self.name, "options": options}

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"motion index {index} out of range 0..{self.n - 1}")
        rng = np.random.default_rng([self.seed, index])
        key = self.key(index)
        size = self.image_size
        natural_direction = int(rng.integers(8))
        speed = int(rng.integers(self.speed_classes))
        low, high = SPEED_RANGES_224[speed]
        mean_speed = float(rng.uniform(low, high)) * self._pixel_scale
        shape_index = int(rng.integers(len(SHAPE_NAMES)))
        colors = [str(c) for c in rng.choice(list(COLORS), size=1 + self.distractors, replace=False)]
        side = int(rng.integers(self.min_size, self.max_size + 1))

        travelled = decelerating_travel(mean_speed, self.frames)
        dx, dy = direction_vector(natural_direction)
        xs, ys = travelled * dx, travelled * dy
        x_start = rng.uniform(max(0.0, -xs.min()), size - side - max(0.0, xs.max()))
        y_start = rng.uniform(max(0.0, -ys.min()), size - side - max(0.0, ys.max()))
        path = np.stack([x_start + xs, y_start + ys], axis=1)

        count = self.distractors
        distractor_paths = [self._distractor_path(rng) for _ in range(count)]
        distractor_shapes = [SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))] for _ in range(count)]
        distractor_sides = [int(rng.integers(self.min_size, self.max_size + 1)) for _ in range(count)]

        frames, centroids = [], []
        for f in range(self.frames):
            pixels = blank_canvas(size, size)
            # Distractors go underneath, so the moving object is always whole and its centroid exact.
            for d in range(self.distractors):
                x, y = distractor_paths[d][f]
                distractor = shape_mask(distractor_shapes[d], x, y, distractor_sides[d], size, size)
                pixels[distractor] = COLORS[colors[d + 1]]
            mask = shape_mask(SHAPE_NAMES[shape_index], path[f, 0], path[f, 1], side, size, size)
            pixels[mask] = COLORS[colors[0]]
            frames.append(Image.fromarray(pixels))
            centroids.append(mask_centroid(mask))

        shown_reversed = is_reversed(key)
        if shown_reversed:
            frames.reverse()
            centroids.reverse()
        target = {
            "direction": (natural_direction + 4) % 8 if shown_reversed else natural_direction,
            "speed": speed,
            "speed_px_per_frame": mean_speed,
            "reversed": shown_reversed,
            "centroids": np.stack(centroids).astype(np.float32),
            "shape": SHAPE_NAMES[shape_index],
            "color": colors[0],
            "image_size": (size, size),
        }
        return Sample(key=key, split=stable_split(key), frames=frames, target=target)

    def _distractor_path(self, rng: np.random.Generator) -> np.ndarray:
        """(frames, 2) top-left corners of a distractor: fixed, or a random walk kept inside the frame."""
        limit = self.image_size - self.max_size
        start = rng.uniform(0, limit, size=2)
        if self.distractor_motion == "static":
            return np.repeat(start[None], self.frames, axis=0)
        steps = rng.uniform(-1, 1, size=(self.frames - 1, 2)) * DISTRACTOR_STEP_224 * self._pixel_scale
        return np.clip(start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)]), 0, limit)
