"""Per-token targets on a stage's token grid, built from image-level annotations.

Token [r, c] covers a cell of the image (stride s = image size / grid size). Targets come from
object masks (boxes rasterised when a sample has no masks) averaged over each cell:

- `coverage_maps`: (K, H, W) share of each cell covered by each object.
- objectness: share of the cell covered by any object (soft, in [0, 1]).
- class map: 0 = background, 1 + label of the object covering most of the cell when that object
  covers at least half of it.
- edge offsets: for a cell touching an object, where the object's box edges lie inside the cell,
  in cell units clipped to [0, 1] — (left, top, right, bottom) measured from the cell's own
  left/top/right/bottom side. Interior cells get 0; a border cell gets the sub-cell position of
  the edge. These are the FCOS-style box offsets of this toolkit, clipped to the cell so a
  per-token linear head can read them from what the token itself contains.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def object_masks(target: dict[str, Any], image_size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) bool masks; boxes are rasterised when the target has no masks."""
    if "masks" in target and target["masks"] is not None and len(target["masks"]):
        return np.asarray(target["masks"], dtype=bool)
    boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    h, w = image_size
    masks = np.zeros((len(boxes), h, w), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(np.rint(boxes).astype(int)):
        masks[k, max(0, y0):y1, max(0, x0):x1] = True
    return masks


def coverage_maps(target: dict[str, Any], image_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(K, H, W) share of each token cell covered by each object's mask."""
    masks = object_masks(target, image_size)
    if len(masks) == 0:
        return np.zeros((0, *grid), dtype=np.float32)
    t = torch.from_numpy(masks).float()[:, None]
    if t.shape[-2:] != tuple(image_size):
        t = F.interpolate(t, size=image_size, mode="nearest")
    return F.adaptive_avg_pool2d(t, grid)[:, 0].numpy()


def dense_targets(target: dict[str, Any], image_size: tuple[int, int],
                  grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """Objectness (H, W), class map (H, W) int64, edge offsets (H, W, 4) and the index of the
    object each cell belongs to (H, W), −1 for none."""
    cover = coverage_maps(target, image_size, grid)
    h, w = grid
    labels = np.asarray(target.get("labels", np.zeros(len(cover))), dtype=np.int64)
    if len(cover) == 0:
        zeros = np.zeros(grid, dtype=np.float32)
        return {"objectness": zeros, "class_map": np.zeros(grid, dtype=np.int64),
                "offsets": np.zeros((h, w, 4), dtype=np.float32), "owner": np.full(grid, -1)}
    objectness = np.clip(cover.sum(0), 0, 1)
    owner = np.where(cover.max(0) > 0, cover.argmax(0), -1)
    class_map = np.where(cover.max(0) >= 0.5, labels[cover.argmax(0)] + 1, 0).astype(np.int64)
    sy, sx = image_size[0] / h, image_size[1] / w
    boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    offsets = np.zeros((h, w, 4), dtype=np.float32)
    has = owner >= 0
    b = boxes[owner[has]]
    offsets[has, 0] = np.clip((b[:, 0] - cols[has] * sx) / sx, 0, 1)
    offsets[has, 1] = np.clip((b[:, 1] - rows[has] * sy) / sy, 0, 1)
    offsets[has, 2] = np.clip(((cols[has] + 1) * sx - b[:, 2]) / sx, 0, 1)
    offsets[has, 3] = np.clip(((rows[has] + 1) * sy - b[:, 3]) / sy, 0, 1)
    return {"objectness": objectness.astype(np.float32), "class_map": class_map,
            "offsets": offsets, "owner": owner}


def stack_dense_targets(targets: list[dict[str, Any]], image_size: tuple[int, int],
                        grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """`dense_targets` of every sample, stacked on a leading sample axis."""
    per = [dense_targets(t, image_size, grid) for t in targets]
    return {k: np.stack([p[k] for p in per]) for k in per[0]}


def color_maps(target: dict[str, Any], image_size: tuple[int, int], grid: tuple[int, int],
               palette: list[str]) -> np.ndarray:
    """(C, H, W) coverage of each token cell by the object of each palette colour (0 if absent)."""
    cover = coverage_maps(target, image_size, grid)
    out = np.zeros((len(palette), *grid), dtype=np.float32)
    for k, colour in enumerate(target.get("colors", [])):
        if colour in palette:
            out[palette.index(colour)] = np.maximum(out[palette.index(colour)], cover[k])
    return out
