"""`write_photo_coco`: a small COCO-format folder made from real photographs, for tests and demos.

Each image is a crop of one of scikit-image's bundled photographs (no download), of its own size
and aspect ratio, with 1–3 coloured shapes painted on it. The shapes' masks are known exactly, so
their annotations (RLE segmentation, bbox and area from the mask) are right by construction. Some
images also get a crowd region: a cluster of small dots annotated as one `iscrowd=1` mask, as
COCO annotates crowds. Categories are the shape names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from stageprobe.datasets.shapes import COLORS, SHAPE_NAMES, shape_mask
from stageprobe.datasets.textures import photo

FIXTURE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "brick", "gravel", "clock",
                  "immunohistochemistry", "grass", "moon"]
# Longer image side, so a fixture stays small and fast to read.
MAX_SIDE = 320
CROWD_DOTS = 6


def write_photo_coco(out_dir: Path, n_images: int = 24, seed: int = 0, crowd_every: int = 3) -> Path:
    """Write `n_images` annotated photos as `out_dir/annotations/instances_photos.json` + `out_dir/photos/`.

    Every `crowd_every`-th image (0: none) gets a crowd region. Returns the JSON path.
    """
    out_dir = Path(out_dir)
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        rng = np.random.default_rng([seed, image_id])
        pixels = _photo_crop(FIXTURE_PHOTOS[(image_id - 1) % len(FIXTURE_PHOTOS)], rng)
        height, width = pixels.shape[:2]
        masks, labels = _paint_shapes(pixels, rng)
        crowd = image_id % crowd_every == 0 if crowd_every else False
        if crowd:
            region = _paint_crowd(pixels, rng, ~np.any(masks, axis=0))
            # The objects may cover every dot; an empty region is no annotation.
            crowd = bool(region.any())
            if crowd:
                masks.append(region)
                labels.append(0)
        file_name = f"{image_id:012d}.png"
        Image.fromarray(pixels).save(out_dir / "photos" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for k, (mask, label) in enumerate(zip(masks, labels, strict=True)):
            is_crowd = crowd and k == len(masks) - 1
            annotations.append(_record(len(annotations) + 1, image_id, label, mask, is_crowd))
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_NAMES)]
    path = out_dir / "annotations" / "instances_photos.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _photo_crop(name: str, rng: np.random.Generator) -> np.ndarray:
    """A random crop (half to all of each side, so aspect ratios vary) scaled to at most MAX_SIDE."""
    source = photo(name)
    crop_w = int(rng.integers(source.width // 2, source.width + 1))
    crop_h = int(rng.integers(source.height // 2, source.height + 1))
    x0, y0 = int(rng.integers(0, source.width - crop_w + 1)), int(rng.integers(0, source.height - crop_h + 1))
    scale = min(1.0, MAX_SIDE / max(crop_w, crop_h))
    size = (max(32, round(crop_w * scale)), max(32, round(crop_h * scale)))
    crop = source.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    return np.array(crop)


def _paint_shapes(pixels: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
    """1–3 non-overlapping shapes of distinct colours, each 12–45 % of the shorter side (COCO small to large)."""
    height, width = pixels.shape[:2]
    taken = np.zeros((height, width), dtype=bool)
    masks, labels = [], []
    colours = rng.permutation(list(COLORS))
    for k in range(int(rng.integers(1, 4))):
        label = int(rng.integers(len(SHAPE_NAMES)))
        side = int(rng.uniform(0.12, 0.45) * min(height, width))
        for _ in range(50):
            x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            mask = shape_mask(SHAPE_NAMES[label], x0, y0, side, height, width)
            if not (mask & taken).any():
                break
        else:
            continue
        taken |= mask
        pixels[mask] = COLORS[str(colours[k])]
        masks.append(mask)
        labels.append(label)
    return masks, labels


def _paint_crowd(pixels: np.ndarray, rng: np.random.Generator, free: np.ndarray) -> np.ndarray:
    """A cluster of small white circles in free space; their union is the crowd mask."""
    height, width = pixels.shape[:2]
    side = max(4, min(height, width) // 16)
    crowd = np.zeros((height, width), dtype=bool)
    cx, cy = int(rng.integers(2 * side, width - 2 * side)), int(rng.integers(2 * side, height - 2 * side))
    for _ in range(CROWD_DOTS):
        x0, y0 = cx + rng.integers(-2 * side, side), cy + rng.integers(-2 * side, side)
        crowd |= shape_mask("circle", int(x0), int(y0), side, height, width) & free
    pixels[crowd] = (255, 255, 255)
    return crowd


def _record(ann_id: int, image_id: int, label: int, mask: np.ndarray, crowd: bool) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": ann_id, "image_id": image_id, "category_id": label + 1,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle)),
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "iscrowd": int(crowd)}
