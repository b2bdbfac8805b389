"""Contact sheet of a dataset's first samples with their targets drawn on, to check labels by eye."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from stageprobe.datasets.base import Dataset, Sample

THUMB_PX = 224
CAPTION_PX = 14
BOX_COLOR = (255, 0, 255)
CROWD_COLOR = (0, 255, 255)
TRACK_COLOR = (0, 0, 0)


def write_preview(dataset: Dataset, out_png: Path, n: int = 16) -> Path:
    """Write the first `n` samples of `dataset` as a grid PNG at `out_png`; returns the path."""
    count = min(n, len(dataset))
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    cell_height = THUMB_PX + CAPTION_PX
    sheet = Image.new("RGB", (columns * THUMB_PX, rows * cell_height), (255, 255, 255))
    font = ImageFont.load_default()
    for i in range(count):
        sample = dataset[i]
        thumb, caption = _render(sample, dataset.class_names)
        x, y = (i % columns) * THUMB_PX, (i // columns) * cell_height
        sheet.paste(thumb, (x, y))
        ImageDraw.Draw(sheet).text((x + 2, y + THUMB_PX + 1), caption[:40], fill=(0, 0, 0), font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def _render(sample: Sample, class_names: list[str]) -> tuple[Image.Image, str]:
    target = sample.target
    if sample.frames is not None:
        return _render_clip(sample.frames, target, class_names)
    if sample.image is None:
        raise ValueError(f"sample {sample.key} has neither an image nor frames")
    image = sample.image.convert("RGB")
    if "masks" in target:
        pixels = np.asarray(image).copy()
        for mask in target["masks"]:
            # Thick outlines survive the downscale to a thumbnail.
            pixels[find_boundaries(mask, mode="thick")] = 0
        image = Image.fromarray(pixels)
    scale = THUMB_PX / max(image.size)
    thumb = _fit(image)
    if "boxes" in target:
        draw = ImageDraw.Draw(thumb)
        names = _box_names(target, class_names)
        for box, name in zip(target["boxes"], names, strict=True):
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOR, width=2)
            draw.text((x0 + 2, max(0.0, y0 - 11)), name, fill=BOX_COLOR)
        crowds = target.get("crowd_boxes", [])
        for box in crowds:
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=CROWD_COLOR, width=2)
            draw.text((x0 + 2, max(0.0, y0 - 11)), "crowd", fill=CROWD_COLOR)
        crowd_note = f", {len(crowds)} crowd" if len(crowds) else ""
        return thumb, f"{sample.key} ({len(names)} obj{crowd_note})"
    if "texture" in target:
        details = [f"{k[0]}={target[k]:g}" for k in ("frequency", "orientation") if target.get(k) is not None]
        return thumb, " ".join([target["texture"], *details])
    return thumb, str(target.get("path", sample.key))


def _render_clip(
    frames: list[Image.Image], target: dict[str, Any], class_names: list[str]
) -> tuple[Image.Image, str]:
    """First and last frames blended, with the centroid track and an arrowhead at the last position."""
    image = Image.blend(frames[0].convert("RGB"), frames[-1].convert("RGB"), 0.5)
    scale = THUMB_PX / max(image.size)
    thumb = _fit(image)
    if "centroids" in target:
        points = [(float(x) * scale, float(y) * scale) for x, y in target["centroids"]]
        draw = ImageDraw.Draw(thumb)
        draw.line(points, fill=TRACK_COLOR, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=TRACK_COLOR)
        (xa, ya), (xb, yb) = points[-2], points[-1]
        heading = math.atan2(yb - ya, xb - xa)
        head = [(xb + 10 * math.cos(heading + s), yb + 10 * math.sin(heading + s)) for s in (2.6, -2.6)]
        draw.polygon([(xb, yb), *head], fill=TRACK_COLOR)
    direction = target.get("direction")
    known = isinstance(direction, int) and direction < len(class_names)
    name = class_names[direction] if known else direction
    order = "reversed" if target.get("reversed") else "natural"
    kind = f"{target['kind']} " if "kind" in target else ""
    return thumb, f"{kind}{name} speed {target.get('speed')} {order}"


def _box_names(target: dict[str, Any], class_names: list[str]) -> list[str]:
    """Label of each box, with the name that identifies the object in relations when it adds to it
    ("red circle"; a COCO object's name is its category already)."""
    labels = [class_names[int(i)] if class_names else str(int(i)) for i in target.get("labels", [])]
    colors = target.get("colors")
    if not colors:
        return labels
    return [label if c == label else f"{c} {label}" for c, label in zip(colors, labels, strict=True)]


def _fit(image: Image.Image) -> Image.Image:
    """The image scaled so its longer side is THUMB_PX, on a white square."""
    scale = THUMB_PX / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    resized = image.resize(size, Image.Resampling.BILINEAR)
    thumb = Image.new("RGB", (THUMB_PX, THUMB_PX), (255, 255, 255))
    thumb.paste(resized, (0, 0))
    return thumb
