"""Controls applied to the splits before probing.

- `control-task` (Hewitt & Liang, 2019): each target is replaced by a **fixed random function of a
  recurring, observable input type**, the same function in train, val and test, independent of the
  real target and with the real targets' statistics:
  - boxes: each object type (class and colour) gets the box of one object of the dataset drawn at
    random for that type, so control boxes have the dataset's box sizes and positions and say
    nothing about where this object is; class and relation labels: a random label per type;
  - motion: each clip type (the moving object's shape and colour; a camera clip's source photo)
    gets the whole motion target of one clip of the dataset drawn for it — direction, speed, order
    *and* the centroid path the flow and saliency probes are trained on;
  - reconstructions: each sample type (texture kind, …) gets one random-phase texture with the
    mean amplitude spectrum and colour of that type's images (random phase, same for the three
    channels), so the control image has the type's statistics but no pixel in common with any image.
  Where a type does not recur across splits (photos are split whole), the test split's control
  targets are unseen and the control task scores what chance does. A probe can score on it only
  by telling the types apart and memorising their random answers; selectivity = task − control on
  the same test images says how much of the task score is more than that.
- `chance`: targets (and reconstruction images) permuted across the images of each split — no
  relation between input and label is left, so this is what chance gives.
- `token-shuffle`: each image's tokens permuted **within each object's cells** (one seeded
  permutation per image, shared by its time steps); background cells stay. Every object keeps the
  cells it covers, so a probe reading where an object is from which tokens show it is unaffected;
  one reading the object's extent from where *inside* the object each token sits (its border
  tokens, sub-cell edges) loses that. Raw pixels lose the sub-cell edges; a model whose tokens carry
  the object's extent does not, so the row can differ between model and pixels. (Permuting every
  token with targets left at raster positions collapsed on raw pixels as much as on any model.)
  Defined only for targets with boxes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stageprobe.probes.base import ProbeData
from stageprobe.probes.relation import RELATIONS
from stageprobe.probes.targets import dense_targets

CONTROLS = ("control-task", "chance", "token-shuffle")
#: keys of a whole sample's target that the control task takes, together, from one clip drawn per type
SAMPLE_KEYS = ("direction", "speed", "speed_px_per_frame", "reversed", "centroids", "label")


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


@dataclass
class _ControlPool:
    """What the control targets are drawn from: every object box and every sample target of all
    three splits (so a type's control target is the same wherever it occurs), and the images of
    each sample type for its control texture."""

    boxes: np.ndarray  # (M, 4) boxes as fractions of their image's width / height
    samples: list[dict[str, Any]]
    n_classes: int
    images: dict[str, list[np.ndarray]]
    _candidates: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, splits: Sequence[ProbeData]) -> _ControlPool:
        boxes, images = [], defaultdict(list)
        for data in splits:
            scale = np.array([data.image_size[1], data.image_size[0]] * 2, dtype=np.float64)
            for i, target in enumerate(data.targets):
                boxes += [np.asarray(b, dtype=np.float64) / scale
                          for b in np.asarray(target.get("boxes", np.zeros((0, 4)))).reshape(-1, 4)]
                if data.images is not None:
                    images[sample_type(target)].append(data.images[i])
        n_classes = max((int(np.max(t["labels"])) + 1 for d in splits for t in d.targets
                         if len(np.asarray(t.get("labels", [])))), default=1)
        return cls(np.array(boxes).reshape(-1, 4), [t for d in splits for t in d.targets], n_classes, dict(images))

    def box(self, kind: str, image_size: tuple[int, int], seed: int) -> np.ndarray:
        """The box of one object of the dataset, drawn for this type, at this image's size."""
        drawn = self.boxes[type_rng(seed, "box", kind).integers(len(self.boxes))]
        return drawn * np.array([image_size[1], image_size[0]] * 2)

    def donor(self, target: dict[str, Any], seed: int) -> dict[str, Any] | None:
        """The target of one sample of the dataset with the same sample keys, drawn for this type."""
        keys = sample_keys(target)
        if not keys:
            return None
        signature = (*keys, np.shape(target.get("centroids")))
        if signature not in self._candidates:
            self._candidates[signature] = [t for t in self.samples if all(k in t for k in keys)
                                           and np.shape(t.get("centroids")) == signature[-1]]
        candidates = self._candidates[signature]
        return candidates[type_rng(seed, "sample", sample_type(target)).integers(len(candidates))]


def sample_keys(target: dict[str, Any]) -> list[str]:
    """The whole-sample keys of a target that its control takes from a donor clip; an object
    target's centroids follow its control boxes instead."""
    return [k for k in SAMPLE_KEYS if k in target and not (k == "centroids" and "boxes" in target)]


def _object_control(target: dict[str, Any], image_size: tuple[int, int], pool: _ControlPool,
                    seed: int) -> dict[str, Any]:
    kinds = object_types(target)
    out = dict(target)
    if "boxes" in target and len(kinds):
        boxes = np.stack([pool.box(k, image_size, seed) for k in kinds])
        out["boxes"] = boxes
        out["boxes_norm"] = (boxes / np.array([image_size[1], image_size[0]] * 2)).astype(np.float32)
        out["centroids"] = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        out.pop("masks", None)  # the boxes moved: coverage is rasterised from them
    if "labels" in target and len(kinds):
        out["labels"] = np.array([type_rng(seed, "class", k).integers(pool.n_classes) for k in kinds],
                                 dtype=np.int64)
    if target.get("relations"):
        by_colour = dict(zip(target.get("colors", []), kinds, strict=False))
        out["relations"] = [
            {**r, "relation": RELATIONS[type_rng(seed, "relation", by_colour.get(r["a"]), by_colour.get(r["b"]))
                                        .integers(len(RELATIONS))]}
            for r in target["relations"]]
    return out


def _sample_control(target: dict[str, Any], pool: _ControlPool, seed: int) -> dict[str, Any]:
    donor = pool.donor(target, seed)
    if donor is None:
        return target
    return {**target, **{k: donor[k] for k in sample_keys(target)}}


def random_phase_texture(images: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) texture with the images' mean colour and mean power spectrum and a random phase
    (one phase for the three channels, so colours keep their correlation)."""
    shape = np.shape(images[0])
    mean, power = np.zeros(shape[2]), np.zeros(shape)
    for image in images:  # one at a time: a type's images at full size would not fit in memory at once
        pixels = np.asarray(image, dtype=np.float64)
        mean += pixels.mean(axis=(0, 1)) / len(images)
        power += np.abs(np.fft.fft2(pixels - pixels.mean(axis=(0, 1)), axes=(0, 1))) ** 2 / len(images)
    # the phase of real white noise is Hermitian-symmetric, so the inverse transform is real
    phase = np.angle(np.fft.fft2(rng.standard_normal(shape[:2])))
    texture = np.fft.ifft2(np.sqrt(power) * np.exp(1j * phase)[..., None], axes=(0, 1)).real + mean
    return np.clip(texture, 0, 1).astype(np.float32)


def control_task(splits: Sequence[ProbeData], seed: int) -> list[ProbeData]:
    """The control task on every split with one random function of input type, shared by all splits."""
    pool = _ControlPool.of(splits)
    textures = {kind: random_phase_texture(images, type_rng(seed, "image", kind))
                for kind, images in pool.images.items()}
    out = []
    for data in splits:
        targets = [_sample_control(_object_control(t, data.image_size, pool, seed), pool, seed) for t in data.targets]
        images = None if data.images is None else np.stack([textures[sample_type(t)] for t in data.targets])
        out.append(data.replace(targets=targets, images=images))
    return out


def permute_labels(data: ProbeData, seed: int) -> ProbeData:
    """The same features with targets (and images) drawn from other images of the split: chance."""
    order = np.random.default_rng(seed).permutation(len(data))
    images = None if data.images is None else data.images[order]
    return data.replace(targets=[data.targets[i] for i in order], images=images)


def _within_object_permutation(target: dict[str, Any], image_size: tuple[int, int], grid: tuple[int, int],
                                rng: np.random.Generator) -> np.ndarray:
    """A permutation of the H·W cells that moves each cell only among the cells of its object."""
    owner = dense_targets(target, image_size, grid)["owner"].ravel()
    perm = np.arange(owner.size)
    for k in np.unique(owner[owner >= 0]):
        cells = np.flatnonzero(owner == k)
        perm[cells] = cells[rng.permutation(cells.size)]
    return perm


def shuffle_tokens(data: ProbeData, seed: int) -> ProbeData:
    """Tokens permuted within each object's cells of each image; background cells and targets stay."""
    if not any(len(np.asarray(t.get("boxes", []))) for t in data.targets):
        raise ValueError("token-shuffle permutes tokens within each object's cells; these targets have no "
                         "object boxes (use it on box or relation tasks)")
    n, t, h, w, d = data.features.shape
    rng = np.random.default_rng(seed)
    perms = torch.from_numpy(np.stack([_within_object_permutation(target, data.image_size, (h, w), rng)
                                       for target in data.targets]))
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
