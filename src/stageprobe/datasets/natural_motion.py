"""Natural-image motion: `pan` (a camera window panning and zooming across a photo) and
`cutout:PATH` (an object cut out by its COCO mask, moving over another photo).

Both give the `motion` dataset's targets — `direction` (8 classes, the on-screen motion of the
content: 0 right, 1 up-right, … 6 down, 7 down-right), `speed` (class of mean displacement per
frame, in pixels at 224 px), `reversed` (half the clips, by a hash of the key, shown backwards),
`centroids` (F, 2) — so the temporal probes run on them unchanged. Motion decelerates at a
constant rate as in `motion`, so the order of frames is recoverable.

`pan`: the window moves opposite to the direction label (the scene then moves in it on screen)
and its side changes linearly by the factor `zoom` (drawn per clip, up to ±`max_zoom`).
`centroids` track the photo point at the centre of the first window; it moves exactly along the
direction, at the speed the label says up to the zoom factor. Every clip of a photo belongs to
that photo's group, and each photo is in one split.

`pan:images:DIR` (or the option photo_dir=DIR) pans over a folder of the user's photos instead of
the bundled scikit-image ones (recursive; unreadable files are listed in `skipped` and left out;
train, val and test need a photo each, so fewer than 3 is an error saying so).

`cutout:PATH`: a non-crowd COCO object (its mask as alpha) moves over another COCO image of the
same split, or with `backgrounds=DIR` over a photo of that folder (each photo in one split);
`centroids` are the centroids of the pasted mask. The group is the object's image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from stageprobe.datasets._options import check_float, check_int, image_problem, load_rgb
from stageprobe.datasets.base import SPLITS, Dataset, Sample, Split, ranked_splits
from stageprobe.datasets.coco import CocoDataset
from stageprobe.datasets.images import image_extensions
from stageprobe.datasets.motion import (
    DIRECTION_NAMES,
    SPEED_RANGES_224,
    check_clip_options,
    decelerating_travel,
    direction_vector,
    is_reversed,
)
from stageprobe.datasets.registry import register_dataset
from stageprobe.datasets.shapes import mask_centroid
from stageprobe.datasets.textures import photo
from stageprobe.errors import UserInputError

# Bundled scikit-image photos with texture everywhere (hubble_deep_field is mostly black).
PAN_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "coins", "moon",
              "brick", "grass", "gravel", "clock", "retina"]
# The first window's side as a share of the photo's shorter side: room left to pan in.
WINDOW_FRACTION = 0.6
# Object's longer side as a share of the frame, for cutouts.
CUTOUT_SIZE = (0.2, 0.35)


def _kinematics(rng: np.random.Generator, speed_classes: int, image_size: int) -> tuple[int, int, float]:
    """(natural direction, speed class, mean speed in frame pixels) of one clip."""
    direction = int(rng.integers(8))
    speed = int(rng.integers(speed_classes))
    low, high = SPEED_RANGES_224[speed]
    return direction, speed, float(rng.uniform(low, high)) * image_size / 224


def _clip_sample(key: str, group: str, split: Split, frames: list[Image.Image], centroids: np.ndarray,
                 natural_direction: int, speed: int, extra: dict[str, Any]) -> Sample:
    """A Sample with the `motion` target schema; half the clips (by key) shown reversed."""
    shown_reversed = is_reversed(key)
    if shown_reversed:
        frames, centroids = frames[::-1], centroids[::-1]
    steps = np.linalg.norm(np.diff(centroids, axis=0), axis=1)
    target = {
        "direction": (natural_direction + 4) % 8 if shown_reversed else natural_direction,
        "speed": speed, "speed_px_per_frame": float(steps.mean()), "reversed": shown_reversed,
        "centroids": np.ascontiguousarray(centroids, dtype=np.float32),
        "image_size": (frames[0].height, frames[0].width), **extra,
    }
    return Sample(key=key, split=split, frames=list(frames), target=target, group=group)


@register_dataset("pan", "camera pans and zooms across real photos (pan:images:DIR for your own): direction, "
                  "speed, order", argument="source", optional_argument=True)
class PanDataset(Dataset):
    """Clips of a window panning (and zooming) across a photograph."""

    name = "pan"
    kind = "video"

    def __init__(
        self,
        source: str | None = None,
        n: int = 400,
        seed: int = 0,
        frames: int = 8,
        image_size: int = 224,
        speed_classes: int = 2,
        max_zoom: float = 0.1,
        photos: str | list[str] | None = None,
        photo_dir: str | None = None,
    ) -> None:
        self.n = check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.frames, self.image_size, self.speed_classes = check_clip_options(
            self.name, frames, image_size, speed_classes)
        # Beyond 0.25 the zoom would blur the speed classes (their ranges are ≥ 1.7× apart).
        self.max_zoom = check_float(self.name, "max_zoom", max_zoom, 0.0, 0.25)
        self.photo_dir = _photo_folder(source, photo_dir)
        self.skipped: list[dict[str, str]] = []
        self.photos = self._photo_names(photos)
        self.class_names = list(DIRECTION_NAMES)
        self._splits = ranked_splits([self._group(p) for p in self.photos])

    def _photo_names(self, photos: str | list[str] | None) -> list[str]:
        if self.photo_dir is not None:
            return readable_photos(self.name, self.photo_dir, self.skipped)
        names = photos.split(",") if isinstance(photos, str) else list(photos or PAN_PHOTOS)
        names = [p.strip() for p in names if p.strip()]
        unknown = [p for p in names if p not in PAN_PHOTOS]
        if unknown or len(names) < 3:
            raise UserInputError(f"pan: photos must name at least 3 of {', '.join(PAN_PHOTOS)} "
                                 f"(got {', '.join(names) or 'none'}), or give photo_dir")
        return names

    def __len__(self) -> int:
        return self.n

    def key(self, index: int) -> str:
        return f"pan-{self.seed}-{index:06d}"

    def _group(self, name: str) -> str:
        return f"photo:{name}"

    def sample_group(self, index: int) -> str:
        return self._group(self.photos[index % len(self.photos)])

    def sample_split(self, index: int) -> Split:
        return self._splits[self.sample_group(index)]

    def spec(self) -> dict[str, Any]:
        options = {"n": self.n, "seed": self.seed, "frames": self.frames, "image_size": self.image_size,
                   "speed_classes": self.speed_classes, "max_zoom": self.max_zoom, "photos": self.photos,
                   "photo_dir": None if self.photo_dir is None else str(self.photo_dir)}
        spec = {"name": self.name, "source": self.name, "options": options}
        return {**spec, "skipped": self.skipped} if self.skipped else spec

    def _photo(self, name: str) -> Image.Image:
        return photo(name) if self.photo_dir is None else load_rgb(self.photo_dir / name, self.name)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"pan index {index} out of range 0..{self.n - 1}")
        rng = np.random.default_rng([self.seed, index])
        name = self.photos[index % len(self.photos)]
        source = self._photo(name)
        direction, speed, mean_speed = _kinematics(rng, self.speed_classes, self.image_size)
        zoom = 1 + float(rng.uniform(-self.max_zoom, self.max_zoom))
        size = self.image_size
        side0 = WINDOW_FRACTION * min(source.size)
        sides = side0 * np.linspace(1, zoom, self.frames)
        # The window moves against the direction; photo pixels per frame pixel at the start.
        shift = -decelerating_travel(mean_speed, self.frames)[:, None] * np.array(direction_vector(direction))
        shift *= side0 / size
        centre0 = self._start_centre(source.size, shift, float(sides.max()), rng, name)
        centres = centre0 + shift
        frames = [source.resize((size, size), Image.Resampling.BICUBIC,
                                box=(cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2))
                  for (cx, cy), s in zip(centres, sides, strict=True)]
        # Where the first window's centre point appears in each frame.
        tracked = (centre0 - centres + sides[:, None] / 2) * size / sides[:, None]
        extra = {"source": name, "zoom": zoom, "kind": "pan"}
        return _clip_sample(self.key(index), self.sample_group(index), self.sample_split(index), frames,
                            tracked, direction, speed, extra)

    def _start_centre(self, photo_size: tuple[int, int], shift: np.ndarray, side: float,
                      rng: np.random.Generator, name: str) -> np.ndarray:
        """A first window centre that keeps every window inside the photo."""
        low = side / 2 - shift.min(axis=0)
        high = np.array(photo_size, dtype=np.float64) - side / 2 - shift.max(axis=0)
        if np.any(low > high):
            raise UserInputError(f"pan: photo {name} ({photo_size[0]}×{photo_size[1]}) is too small for a "
                                 f"{self.frames}-frame pan; use fewer frames or speed_classes, or bigger photos")
        return rng.uniform(low, high)


def readable_photos(dataset: str, folder: Path, skipped: list[dict[str, str]]) -> list[str]:
    """The images under `folder` (recursive, by path) that decode; the others are appended to `skipped`.
    Fewer than one per split is an error that says how many are needed."""
    extensions = image_extensions()
    names = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions):
        name = path.relative_to(folder).as_posix()
        problem = image_problem(path)
        if problem is None:
            names.append(name)
        else:
            skipped.append({"record": name, "reason": problem})
    if len(names) < len(SPLITS):
        raise UserInputError(
            f"{dataset}: {folder} holds {len(names)} readable photo(s); train, val and test each need their own, "
            f"so {len(SPLITS)} are needed: add {len(SPLITS) - len(names)} more")
    return names


def _photo_folder(source: str | None, photo_dir: str | None) -> Path | None:
    """The photo folder of `pan:images:DIR` or of the photo_dir option (None: the bundled photos)."""
    kind, _, folder = (source or "").partition(":")
    if source is not None and (kind != "images" or not folder):
        raise UserInputError(f"pan: {source!r} is not a photo source; write pan:images:DIR for a folder of your "
                             "photos, or just pan for the bundled ones")
    if folder and photo_dir is not None and Path(folder).resolve() != Path(photo_dir).resolve():
        raise UserInputError(f"pan: two photo folders given ({folder} and photo_dir={photo_dir}); give one")
    chosen = folder or photo_dir
    if chosen is None:
        return None
    if not Path(chosen).is_dir():
        raise UserInputError(f"pan: {chosen} is not a folder; give pan:images:DIR with DIR a folder of photos")
    return Path(chosen).resolve()


@register_dataset("cutout", "a COCO object cut out by its mask, moving over another photo", argument="path")
class CutoutDataset(Dataset):
    """Clips of one COCO instance (masked) moving over a different image of the same split."""

    name = "cutout"
    kind = "video"

    def __init__(
        self,
        path: str,
        n: int = 400,
        seed: int = 0,
        frames: int = 8,
        image_size: int = 224,
        speed_classes: int = 2,
        categories: str | list[str] | None = None,
        image_dir: str | None = None,
        min_area: float = 400.0,
        backgrounds: str | None = None,
    ) -> None:
        self.n = check_int(self.name, "n", n, 1)
        self.seed = check_int(self.name, "seed", seed, 0)
        self.frames, self.image_size, self.speed_classes = check_clip_options(
            self.name, frames, image_size, speed_classes)
        self.min_area = check_float(self.name, "min_area", min_area, 1.0)
        self.source = CocoDataset(path, categories=categories, image_dir=image_dir)
        self.objects = [(image_id, annotation) for image_id in self.source.image_ids
                        for annotation in self.source.annotations_of(image_id)
                        if not annotation.get("iscrowd", 0) and annotation.get("segmentation")
                        and float(annotation.get("area", 0)) >= self.min_area]
        if not self.objects:
            raise UserInputError(f"cutout: no non-crowd object with a segmentation of area ≥ {self.min_area:g} px "
                                 f"in {self.source.annotation_file}; lower min_area or use another set")
        self.class_names = list(DIRECTION_NAMES)
        self._images_by_split: dict[str, list[int]] = {}
        for image_id in self.source.image_ids:
            self._images_by_split.setdefault(self.source.split_of_image(image_id), []).append(image_id)
        self.backgrounds = None if backgrounds is None else Path(backgrounds).resolve()
        self.skipped: list[dict[str, str]] = []
        self._photos_by_split: dict[str, list[str]] = {}
        if self.backgrounds is not None:
            if not self.backgrounds.is_dir():
                raise UserInputError(f"cutout: backgrounds={backgrounds} is not a folder of photos")
            photos = readable_photos(self.name, self.backgrounds, self.skipped)
            # each background photo in one split, so no test clip shows a photo a training clip showed
            for name, split in ranked_splits([f"background:{p}" for p in photos]).items():
                self._photos_by_split.setdefault(split, []).append(name.removeprefix("background:"))

    def __len__(self) -> int:
        return self.n

    def key(self, index: int) -> str:
        return f"cutout-{self.seed}-{index:06d}"

    def sample_group(self, index: int) -> str:
        return f"coco-{self.objects[index % len(self.objects)][0]}"

    def sample_split(self, index: int) -> Split:
        return self.source.split_of_image(self.objects[index % len(self.objects)][0])

    def spec(self) -> dict[str, Any]:
        source = self.source.spec()
        options = {"n": self.n, "seed": self.seed, "frames": self.frames, "image_size": self.image_size,
                   "speed_classes": self.speed_classes, "categories": source["options"]["categories"],
                   "image_dir": source["options"]["image_dir"], "min_area": self.min_area,
                   "backgrounds": None if self.backgrounds is None else str(self.backgrounds)}
        spec = {"name": self.name, "source": f"cutout:{self.source.annotation_file}", "options": options}
        return {**spec, "skipped": self.skipped} if self.skipped else spec

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"cutout index {index} out of range 0..{self.n - 1}")
        rng = np.random.default_rng([self.seed, index])
        image_id, annotation = self.objects[index % len(self.objects)]
        background_id, background = self._background(image_id, rng)
        sprite, alpha = self._sprite(image_id, annotation, rng)
        direction, speed, mean_speed = _kinematics(rng, self.speed_classes, self.image_size)
        path = decelerating_travel(mean_speed, self.frames)[:, None] * np.array(direction_vector(direction))
        size = self.image_size
        low = -path.min(axis=0)
        high = np.array([size - sprite.width, size - sprite.height]) - path.max(axis=0)
        if np.any(low > high):
            raise UserInputError(f"cutout: a {self.frames}-frame clip does not fit a {size} px frame; "
                                 "use fewer frames or speed_classes, or a bigger image_size")
        corners = np.rint(rng.uniform(low, high) + path).astype(int)
        frames, centroids = [], []
        for x, y in corners:
            frame = background.copy()
            frame.paste(sprite, (int(x), int(y)), alpha)
            placed = np.zeros((size, size), dtype=bool)
            placed[y:y + sprite.height, x:x + sprite.width] = np.asarray(alpha, dtype=bool)
            frames.append(frame)
            centroids.append(mask_centroid(placed))
        name = self.source.class_names[self.source.label_of(annotation["category_id"])]
        extra = {"kind": "cutout", "object": name, "annotation_id": int(annotation["id"]),
                 ("background_image_id" if self.backgrounds is None else "background"): background_id}
        return _clip_sample(self.key(index), self.sample_group(index), self.sample_split(index), frames,
                            np.stack(centroids), direction, speed, extra)

    def _background(self, image_id: int, rng: np.random.Generator) -> tuple[int | str, Image.Image]:
        """(id, picture) of another image of the object's split (the same one if it is alone there), or
        (name, photo) of a background photo of that split, filling the frame."""
        if self.backgrounds is not None:
            photos = self._photos_by_split[self.source.split_of_image(image_id)]
            name = photos[int(rng.integers(len(photos)))]
            image = load_rgb(self.backgrounds / name, self.name)
            return name, ImageOps.fit(image, (self.image_size, self.image_size), Image.Resampling.BICUBIC)
        pool = self._images_by_split[self.source.split_of_image(image_id)]
        others = [i for i in pool if i != image_id] or pool
        chosen = others[int(rng.integers(len(others)))]
        image = load_rgb(self.source.image_dir / self.source.coco.imgs[chosen]["file_name"], self.name)
        return chosen, ImageOps.fit(image, (self.image_size, self.image_size), Image.Resampling.BICUBIC)

    def _sprite(self, image_id: int, annotation: dict[str, Any],
                rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
        """The object's box crop and its mask (alpha), scaled so its longer side is a share of the frame."""
        info = self.source.coco.imgs[image_id]
        image = load_rgb(self.source.image_dir / info["file_name"], self.name)
        mask = Image.fromarray(self.source.coco.annToMask(annotation).astype(np.uint8) * 255)
        x, y, w, h = annotation["bbox"]
        box = (math.floor(x), math.floor(y), math.ceil(x + w), math.ceil(y + h))
        longer = float(rng.uniform(*CUTOUT_SIZE)) * self.image_size
        scale = longer / max(box[2] - box[0], box[3] - box[1])
        size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
        sprite = image.crop(box).resize(size, Image.Resampling.BICUBIC)
        alpha = mask.crop(box).resize(size, Image.Resampling.NEAREST)
        return sprite, alpha
