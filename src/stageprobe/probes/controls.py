"""Controls applied to the splits before probing.

- `control-task` (Hewitt & Liang, 2019): each target is replaced by a **fixed random function of a
  recurring, observable input type**, the same function in train, val and test — each object's
  (shape, colour) for box, class and relation targets; each clip's (shape, colour) for motion
  labels (a camera clip: its source photo); each texture's kind for reconstructions. Where a type does
  not recur across splits (photos are split whole), the test split's control labels are unseen and
  the control task scores what chance does. A probe can score on it only by telling the
  types apart and memorising their random answers; selectivity = task − control on the same test
  images says how much of the task score is more than that.
- `chance`: targets (and reconstruction images) permuted across the images of each split — no
  relation between input and label is left, so this is what chance gives.
- `token-shuffle`: each image's token positions permuted (one seeded permutation per image,
  shared by its time steps). A probe carrying its own position code that scores the same was not
  reading position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stageprobe.probes.base import ProbeData
from stageprobe.probes.relation import RELATIONS

CONTROLS = ("control-task", "chance", "token-shuffle")
#: integer labels of a whole sample that the control task redraws per type (motion, textures, COCO crops)
SAMPLE_LABELS = ("direction", "speed", "reversed", "label")
#: control images are random colour blocks this coarse: a decoder that knows the type can draw them, and
#: their block borders are edges, so edge F1 is defined on them (a smooth field has no Canny edges)
CONTROL_IMAGE_CELLS = 4


def type_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator fixed by the seed and an input type: the same type always draws the same values."""
    digest = hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def object_types(target: dict[str, Any]) -> list[str]:
    """Each object's observable type: its class and, where the data has them, its colour."""
    labels = [int(v) for v in np.asarray(target.get("labels", [])).ravel()]
    colours = list(target.get("colors", [None] * len(labels)))
    return [f"{label}/{colour}" for label, colour in zip(labels, colours, strict=False)]


def sample_type(target: dict[str, Any]) -> str:
    """A whole sample's observable type: the moving object's shape and colour, the texture kind, or
    the source photo a camera clip pans across. Without any of them each sample is its own type (one
    shared type would give every sample the same control label, which any probe predicts)."""
    for keys in (("shape", "color"), ("texture",), ("label",), ("source",)):
        if all(k in target for k in keys):
            return "/".join(str(target[k]) for k in keys)
    return "sample/" + hashlib.sha256(repr(sorted(map(str, target.items()))).encode()).hexdigest()[:16]


def _control_box(box: np.ndarray, kind: str, image_size: tuple[int, int], seed: int) -> np.ndarray:
    """The object's box moved by up to one box size and rescaled by 0.5–1.5, both fixed by its type."""
    rng = type_rng(seed, "box", kind)
    dx, dy = rng.uniform(-1, 1, 2)
    scale = rng.uniform(0.5, 1.5)
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    cx, cy = (x0 + x1) / 2 + dx * (x1 - x0), (y0 + y1) / 2 + dy * (y1 - y0)
    height, width = image_size
    nx0, ny0 = np.clip(cx - w / 2, 0, width - 1), np.clip(cy - h / 2, 0, height - 1)
    return np.array([nx0, ny0, max(nx0 + 1, min(cx + w / 2, width)), max(ny0 + 1, min(cy + h / 2, height))])


def _object_control(target: dict[str, Any], image_size: tuple[int, int], n_classes: int, seed: int) -> dict[str, Any]:
    kinds = object_types(target)
    out = dict(target)
    if "boxes" in target and len(kinds):
        boxes = np.stack([_control_box(b, k, image_size, seed)
                          for b, k in zip(np.asarray(target["boxes"]).reshape(-1, 4), kinds, strict=True)])
        out["boxes"] = boxes
        out["boxes_norm"] = (boxes / np.array([image_size[1], image_size[0]] * 2)).astype(np.float32)
        out["centroids"] = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        out.pop("masks", None)  # the boxes moved: coverage is rasterised from them
    if "labels" in target and len(kinds):
        out["labels"] = np.array([type_rng(seed, "class", k).integers(max(n_classes, 1)) for k in kinds],
                                 dtype=np.int64)
    if target.get("relations"):
        by_colour = dict(zip(target.get("colors", []), kinds, strict=False))
        out["relations"] = [
            {**r, "relation": RELATIONS[type_rng(seed, "relation", by_colour.get(r["a"]), by_colour.get(r["b"]))
                                        .integers(len(RELATIONS))]}
            for r in target["relations"]]
    return out


def _sample_control(target: dict[str, Any], ranges: dict[str, int], seed: int) -> dict[str, Any]:
    kind = sample_type(target)
    out = dict(target)
    for key, size in ranges.items():
        value = type_rng(seed, key, kind).integers(size)
        out[key] = bool(value) if isinstance(target[key], bool | np.bool_) else int(value)
    return out


def _control_image(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    coarse = torch.from_numpy(type_rng(seed, "image", kind).random((1, 3, CONTROL_IMAGE_CELLS, CONTROL_IMAGE_CELLS)))
    full = torch.nn.functional.interpolate(coarse.float(), size=shape[:2], mode="nearest")
    return full[0].permute(1, 2, 0).numpy().astype(np.float32)


def _label_ranges(splits: Sequence[ProbeData]) -> dict[str, int]:
    """How many values each sample-level label takes over all splits (the control draws among them)."""
    ranges: dict[str, int] = {}
    for key in SAMPLE_LABELS:
        values = [int(t[key]) for data in splits for t in data.targets if key in t]
        if values and all(key in t for data in splits for t in data.targets):
            ranges[key] = max(values) + 1
    return ranges


def control_task(splits: Sequence[ProbeData], seed: int) -> list[ProbeData]:
    """The control task on every split with one random function of input type, shared by all splits."""
    n_classes = max((int(np.max(t["labels"])) + 1 for d in splits for t in d.targets
                     if len(np.asarray(t.get("labels", [])))), default=1)
    ranges = _label_ranges(splits)
    out = []
    for data in splits:
        targets = [_sample_control(_object_control(t, data.image_size, n_classes, seed), ranges, seed)
                   for t in data.targets]
        images = None
        if data.images is not None:
            images = np.stack([_control_image(sample_type(t), data.images.shape[1:], seed) for t in data.targets])
        out.append(data.replace(targets=targets, images=images))
    return out


def permute_labels(data: ProbeData, seed: int) -> ProbeData:
    """The same features with targets (and images) drawn from other images of the split: chance."""
    order = np.random.default_rng(seed).permutation(len(data))
    images = None if data.images is None else data.images[order]
    return data.replace(targets=[data.targets[i] for i in order], images=images)


def shuffle_tokens(data: ProbeData, seed: int) -> ProbeData:
    """Token positions permuted within each image; targets untouched."""
    n, t, h, w, d = data.features.shape
    generator = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)])
    flat = data.features.reshape(n, t, h * w, d)
    index = perms[:, None, :, None].expand(n, t, h * w, d)
    return data.replace(features=torch.gather(flat, 2, index).reshape(n, t, h, w, d))


def apply_control(control: str, train: ProbeData, val: ProbeData, test: ProbeData,
                  seed: int) -> tuple[ProbeData, ProbeData, ProbeData]:
    """The three splits under a control; per-split transforms get their own derived seed."""
    if control == "control-task":
        train, val, test = control_task((train, val, test), seed)
        return train, val, test
    transforms: dict[str, Callable[[ProbeData, int], ProbeData]] = {"chance": permute_labels,
                                                                    "token-shuffle": shuffle_tokens}
    if control not in transforms:
        raise ValueError(f"unknown control {control!r}; choose one of {CONTROLS}")
    fn = transforms[control]
    return fn(train, seed * 3 + 1), fn(val, seed * 3 + 2), fn(test, seed * 3 + 3)
