"""`shapes`: the seed study's controlled set — coloured circles, squares and triangles on white.

Every image is a pure function of (seed, index), rendered when indexed, so `len()` and `spec()`
cost nothing. Objects within one image have distinct colours, so a colour names an object.
Boxes are xyxy in pixel-edge coordinates: a box [x0, y0, x1, y1] covers columns x0 … x1-1 and rows
y0 … y1-1, which is what COCO's xywh gives (`w` = number of columns).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from stageprobe.datasets._options import check_float, check_int, check_range
from stageprobe.datasets.base import Dataset, Sample, Split, stable_split
from stageprobe.datasets.registry import register_dataset
from stageprobe.errors import UserInputError

SHAPE_NAMES = ["circle", "square", "triangle"]
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
}
BACKGROUND = (255, 255, 255)
PLACEMENT_ATTEMPTS = 200
# With overlap allowed, a later object may hide at most this share of an earlier one, so every
# labelled object stays visible enough to be found.
MAX_HIDDEN_FRACTION = 0.5


def shape_mask(shape: str, x0: float, y0: float, size: float, height: int, width: int) -> np.ndarray:
    """Bool (height, width) mask of one filled shape inside the square [x0, x0+size) × [y0, y0+size)."""
    # Drawing on a small canvas around the shape rather than the whole image keeps rendering fast.
    left, top = math.floor(x0), math.floor(y0)
    extent = math.ceil(size) + 1
    layer = Image.new("1", (extent, extent), 0)
    draw = ImageDraw.Draw(layer)
    x0, y0 = x0 - left, y0 - top
    x1, y1 = x0 + size - 1, y0 + size - 1
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=1)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=1)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    local = np.asarray(layer, dtype=bool)
    mask = np.zeros((height, width), dtype=bool)
    bottom, right = min(height, top + extent), min(width, left + extent)
    inside = local[max(-top, 0):bottom - top, max(-left, 0):right - left]
    mask[max(top, 0):bottom, max(left, 0):right] = inside
    return mask


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box (pixel edges) of a non-empty bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def mask_centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) of the mean pixel centre of a non-empty bool mask."""
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    rows, cols = np.nonzero(mask[y0:y1, x0:x1])
    return np.array([x0 + cols.mean() + 0.5, y0 + rows.mean() + 0.5], dtype=np.float32)


def blank_canvas(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 array of the background colour."""
    return np.array(Image.new("RGB", (width, height), BACKGROUND))


def relation(centroid_a: np.ndarray, centroid_b: np.ndarray) -> str:
    """Where a is relative to b: horizontal when |dx| ≥ |dy|, else vertical (image y points down)."""
    dx, dy = float(centroid_a[0] - centroid_b[0]), float(centroid_a[1] - centroid_b[1])
    if abs(dx) >= abs(dy):
        return "left-of" if dx < 0 else "right-of"
    return "above" if dy < 0 else "below"


@register_dataset("shapes", "1–3 coloured circles, squares, triangles on white: boxes, masks, relations")
class ShapesDataset(Dataset):
    """Coloured shapes on white with boxes, masks, colours and pairwise spatial relations."""

    name = "shapes"

    def __init__(
        self,
        n: int = 600,
        seed: int = 0,
        image_size: int = 448,
        min_objects: int = 1,
        max_objects: int = 3,
        min_size: int = 30,
        max_size: int = 80,
        clutter: int = 0,
        noise: float = 0.0,
        allow_overlap: bool = False,
    ) -> None:
        self.n = check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.image_size = check_int(self.name, "image_size", image_size, 16)
        self.min_objects = check_int(self.name, "min_objects", min_objects, 1, len(COLORS))
        # Colours are distinct within an image, so there can be no more objects than colours.
        self.max_objects = check_int(self.name, "max_objects", max_objects, 1, len(COLORS))
        check_range(self.name, "object count", self.min_objects, self.max_objects)
        self.min_size = check_int(self.name, "min_size", min_size, 4, self.image_size)
        self.max_size = check_int(self.name, "max_size", max_size, 4, self.image_size)
        check_range(self.name, "object size", self.min_size, self.max_size)
        self.clutter = check_int(self.name, "clutter", clutter, 0)
        self.noise = check_float(self.name, "noise", noise, 0.0, 255.0)
        if not isinstance(allow_overlap, bool):
            raise UserInputError(f"{self.name}: option allow_overlap={allow_overlap!r} must be true or false")
        self.allow_overlap = allow_overlap
        self.class_names = list(SHAPE_NAMES)

    def __len__(self) -> int:
        return self.n

    def key(self, index: int) -> str:
        return f"shapes-{self.seed}-{index:06d}"

    def sample_group(self, index: int) -> str:
        # Each sample is drawn independently (or is its own file): it is its own source.
        return self.key(index)

    def sample_split(self, index: int) -> Split:
        return stable_split(self.key(index))

    def spec(self) -> dict[str, Any]:
        options = {
            "n": self.n, "seed": self.seed, "image_size": self.image_size, "min_objects": self.min_objects,
            "max_objects": self.max_objects, "min_size": self.min_size, "max_size": self.max_size,
            "clutter": self.clutter, "noise": self.noise, "allow_overlap": self.allow_overlap,
        }
        return {"name": self.name, "source": self.name, "options": options}

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"shapes index {index} out of range 0..{self.n - 1}")
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        pixels = blank_canvas(size, size)
        if self.clutter:
            pixels = self._draw_clutter(pixels, rng)

        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        colors = [str(c) for c in rng.choice(list(COLORS), size=count, replace=False)]
        labels = rng.integers(0, len(SHAPE_NAMES), size=count)
        sizes = rng.integers(self.min_size, self.max_size + 1, size=count)
        visible: list[np.ndarray] = []
        squares: list[tuple[int, int, int]] = []
        for label, side in zip(labels, sizes, strict=True):
            mask, square = self._place(SHAPE_NAMES[label], int(side), visible, squares, rng, index)
            visible = [m & ~mask for m in visible] + [mask]
            squares.append(square)
        for mask, color in zip(visible, colors, strict=True):
            pixels[mask] = COLORS[color]

        if self.noise > 0:
            noisy = pixels.astype(np.float32) + rng.normal(0.0, self.noise, pixels.shape).astype(np.float32)
            pixels = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

        boxes = np.stack([mask_box(m) for m in visible])
        centroids = np.stack([mask_centroid(m) for m in visible])
        relations = [
            {"a": colors[a], "b": colors[b], "relation": relation(centroids[a], centroids[b])}
            for a in range(count)
            for b in range(count)
            if a != b
        ]
        target = {
            "boxes": boxes,
            "boxes_norm": (boxes / np.float32(size)).astype(np.float32),
            "labels": labels.astype(np.int64),
            "colors": colors,
            "masks": np.stack(visible),
            "centroids": centroids,
            "relations": relations,
            "image_size": (size, size),
        }
        key = self.key(index)
        return Sample(key=key, split=stable_split(key), image=Image.fromarray(pixels), target=target)

    def _place(
        self,
        shape: str,
        side: int,
        visible: list[np.ndarray],
        squares: list[tuple[int, int, int]],
        rng: np.random.Generator,
        index: int,
    ) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Mask and (x0, y0, side) of a new object placed where it may go."""
        size = self.image_size
        for _ in range(PLACEMENT_ATTEMPTS):
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            if not self.allow_overlap and any(_squares_touch((x0, y0, side), other) for other in squares):
                continue
            mask = shape_mask(shape, x0, y0, side, size, size)
            if not self.allow_overlap or all(
                (m & mask).sum() <= MAX_HIDDEN_FRACTION * m.sum() for m in visible
            ):
                return mask, (x0, y0, side)
        raise UserInputError(
            f"shapes: could not place {len(visible) + 1} objects of up to {self.max_size} px in a "
            f"{size}×{size} image (sample {index}); lower max_size or max_objects, or set allow_overlap"
        )

    def _draw_clutter(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Grey strokes behind the objects: texture that carries no colour, so it never names an object."""
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        size = self.image_size
        for _ in range(self.clutter):
            grey = int(rng.integers(140, 225))
            x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, size=4))
            if rng.random() < 0.5:
                draw.line([x0, y0, x1, y1], fill=(grey, grey, grey), width=int(rng.integers(1, 4)))
            else:
                draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=(grey, grey, grey))
        return np.asarray(image).copy()


def _squares_touch(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Whether two (x0, y0, side) squares overlap or leave no one-pixel gap between them.

    Without the gap, neighbouring objects' boxes could share an edge and masks could touch.
    """
    (ax, ay, aside), (bx, by, bside) = a, b
    return ax <= bx + bside and bx <= ax + aside and ay <= by + bside and by <= ay + aside
