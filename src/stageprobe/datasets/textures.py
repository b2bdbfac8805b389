"""`textures`: procedural textures at known frequencies and orientations, and real photographs.

Procedural textures give fine detail with a known answer (how many cycles, which way); the
photographs bundled with scikit-image (no download) give natural images for reconstruction
metrics. Sample i is a photo when ⌊(i+1)·photo_fraction⌋ > ⌊i·photo_fraction⌋, so photos are
interleaved evenly and a sample's kind never depends on `n`. The j-th photo sample shows photo
j mod P; its first appearance is a centre crop, later ones random crops, some mirrored.

Every crop of a photo belongs to that photo's group (`photo:NAME`), and each photo is assigned
whole to one split (`ranked_splits`, so test and val each get some photos): a test crop never
comes from a photo seen in train. Procedural textures are their own groups.

Conventions: `frequency` is in cycles per image side; `orientation` is the direction along which
the pattern varies, in degrees counter-clockwise from the +x axis as seen on screen.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import skimage.data
from PIL import Image
from skimage.transform import resize

from stageprobe.datasets._options import check_float, check_int
from stageprobe.datasets.base import Dataset, Sample, Split, ranked_splits, stable_split
from stageprobe.datasets.registry import register_dataset
from stageprobe.errors import UserInputError

PROCEDURAL = ["stripes", "checkerboard", "noise", "bricks", "dots", "gradient"]
FREQUENCIES = [2.0, 4.0, 8.0, 16.0, 32.0]
ORIENTATIONS = [0.0, 45.0, 90.0, 135.0]
# Photographs shipped inside scikit-image's wheel (others need the optional `pooch` download).
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
          "retina", "coins", "moon", "brick", "grass", "gravel", "clock"]
MIN_CROP_FRACTION = 0.5


@cache
def photo(name: str) -> Image.Image:
    """A bundled scikit-image photograph as RGB."""
    try:
        pixels = getattr(skimage.data, name)()
    except (ImportError, OSError, AttributeError) as error:
        raise UserInputError(
            f"textures: scikit-image photo {name!r} cannot be loaded ({error}); "
            "leave it out with the photos option"
        ) from None
    return Image.fromarray(np.asarray(pixels)).convert("RGB")


def photo_group(name: str) -> str:
    """The group of every crop of photo `name`."""
    return f"photo:{name}"


@register_dataset("textures", "procedural textures (frequency, orientation) and scikit-image photographs")
class TexturesDataset(Dataset):
    """Procedural textures and real photographs, for reconstruction and fine-detail probes."""

    name = "textures"

    def __init__(
        self,
        n: int = 300,
        seed: int = 0,
        image_size: int = 224,
        photo_fraction: float = 0.5,
        photos: str | list[str] | None = None,
    ) -> None:
        self.n = check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.image_size = check_int(self.name, "image_size", image_size, 16)
        self.photo_fraction = check_float(self.name, "photo_fraction", photo_fraction, 0.0, 1.0)
        names = photos.split(",") if isinstance(photos, str) else list(photos or PHOTOS)
        self.photos = [p.strip() for p in names if p.strip()]
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown:
            raise UserInputError(
                f"textures: unknown photo {', '.join(unknown)}; choose from {', '.join(PHOTOS)}"
            )
        if not self.photos and self.photo_fraction > 0:
            raise UserInputError(
                "textures: the photos option is empty; name some photos or set photo_fraction=0"
            )
        self.class_names = PROCEDURAL + self.photos
        self._photo_splits = ranked_splits([photo_group(p) for p in self.photos])

    def __len__(self) -> int:
        return self.n

    def key(self, index: int) -> str:
        return f"textures-{self.seed}-{index:06d}"

    def sample_group(self, index: int) -> str:
        if self.is_photo(index):
            return photo_group(self.photos[math.floor(index * self.photo_fraction) % len(self.photos)])
        return self.key(index)

    def sample_split(self, index: int) -> Split:
        group = self.sample_group(index)
        return self._photo_splits.get(group) or stable_split(group)

    def spec(self) -> dict[str, Any]:
        options = {"n": self.n, "seed": self.seed, "image_size": self.image_size,
                   "photo_fraction": self.photo_fraction, "photos": self.photos}
        return {"name": self.name, "source": self.name, "options": options}

    def is_photo(self, index: int) -> bool:
        return math.floor((index + 1) * self.photo_fraction) > math.floor(index * self.photo_fraction)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"textures index {index} out of range 0..{self.n - 1}")
        rng = np.random.default_rng([self.seed, index])
        if self.is_photo(index):
            image, target = self._photo(math.floor(index * self.photo_fraction), rng)
        else:
            image, target = self._procedural(rng)
        target["label"] = self.class_names.index(target["texture"])
        return Sample(key=self.key(index), split=self.sample_split(index), image=image, target=target,
                      group=self.sample_group(index))

    def _photo(self, ordinal: int, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
        name = self.photos[ordinal % len(self.photos)]
        source = photo(name)
        width, height = source.size
        side = min(width, height)
        if ordinal < len(self.photos):
            x0, y0, flipped = (width - side) // 2, (height - side) // 2, False
        else:
            side = int(rng.integers(int(side * MIN_CROP_FRACTION), side + 1))
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            flipped = bool(rng.random() < 0.5)
        crop = (x0, y0, x0 + side, y0 + side)
        image = source.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS, box=crop)
        if flipped:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        target = {"source": "photo", "texture": name, "frequency": None, "orientation": None,
                  "crop": list(crop), "flipped": flipped}
        return image, target

    def _procedural(self, rng: np.random.Generator) -> tuple[Image.Image, dict[str, Any]]:
        texture = PROCEDURAL[int(rng.integers(len(PROCEDURAL)))]
        frequency: float | None = FREQUENCIES[int(rng.integers(len(FREQUENCIES)))]
        orientation: float | None = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
        phase = float(rng.random())
        dark = rng.integers(0, 100, size=3)
        light = rng.integers(155, 256, size=3)
        if texture == "noise":
            orientation = None
            pattern = _noise(int(frequency), self.image_size, rng)
        elif texture == "gradient":
            frequency = None
            pattern = _gradient(orientation, self.image_size)
        else:
            pattern = _periodic(texture, frequency, orientation, phase, self.image_size)
        blend = pattern[..., None].astype(np.float32)
        pixels = np.rint(dark * (1 - blend) + light * blend).astype(np.uint8)
        target = {"source": "procedural", "texture": texture, "frequency": frequency,
                  "orientation": orientation}
        return Image.fromarray(pixels), target


def _axes(orientation: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (in image sides, centred) along `orientation` and across it; image y points down."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    x, y = np.meshgrid(centres, centres)
    theta = math.radians(orientation)
    along = x * math.cos(theta) - y * math.sin(theta)
    across = x * math.sin(theta) + y * math.cos(theta)
    return along, across


def _periodic(texture: str, frequency: float, orientation: float, phase: float, size: int) -> np.ndarray:
    """A two-level pattern in {0, 1} with `frequency` cycles per image side along `orientation`."""
    along, across = _axes(orientation, size)
    u = along * frequency + phase
    v = across * frequency + phase
    if texture == "stripes":
        return (u % 1.0 < 0.5).astype(np.float32)
    if texture == "checkerboard":
        return ((u % 1.0 < 0.5) ^ (v % 1.0 < 0.5)).astype(np.float32)
    if texture == "bricks":
        # Rows of bricks twice as long as high, every other row shifted by half a brick.
        row = np.floor(v)
        brick = u / 2 + 0.5 * (row % 2)
        mortar = (v % 1.0 < 0.12) | (brick % 1.0 < 0.06)
        return (~mortar).astype(np.float32)
    if texture == "dots":
        radius = np.hypot(u % 1.0 - 0.5, v % 1.0 - 0.5)
        return (radius < 0.3).astype(np.float32)
    raise ValueError(f"unknown periodic texture {texture!r}")


def _gradient(orientation: float, size: int) -> np.ndarray:
    along, _ = _axes(orientation, size)
    return ((along - along.min()) / (along.max() - along.min())).astype(np.float32)


def _noise(frequency: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field with about `frequency` blobs per side: a coarse grid upsampled (cubic spline)."""
    coarse = rng.normal(size=(frequency + 1, frequency + 1))
    field = resize(coarse, (size, size), order=3, mode="reflect", anti_aliasing=False).astype(np.float32)
    return (field - field.min()) / max(float(field.max() - field.min()), 1e-6)
