"""Relative position of two objects named by colour ("is the red one left-of/right-of/above/below
the blue one?"), asked for every ordered pair of objects in an image.

- `relation-pooled` (the seed's pooled view): the mean-pooled vector (PCA-reduced on train) is
  crossed with one-hot codes of the two colours and a linear classifier (ridge, closed form)
  picks the relation. It sees what the image holds, not where.
- `relation` (dense): a linear map per token predicts, for each colour of the palette, how much of
  the token's cell that colour's object covers (ridge, closed form). The queried objects'
  centroids are the coverage-weighted means of cell centres (cells predicted under a quarter
  covered left out); a linear classifier on their offset
  (dx, dy) gives the relation — left/right/above/below are linearly separable in (dx, dy).

Score: `relation_acc` = mean over test images (with at least one pair) of the share of that
image's pairs answered right, so the bootstrap over images matches the point estimate;
`relation_balanced_acc` over all pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stageprobe.metrics.classification import balanced_accuracy
from stageprobe.probes.base import ProbeData, ProbeResult, register_probe
from stageprobe.probes.classify import fit_ridge_classifier
from stageprobe.probes.dense_linear import token_matrix
from stageprobe.probes.targets import color_maps
from stageprobe.probes.tokens import PCAReducer
from stageprobe.probes.training import RidgeSolver

RELATIONS = ("left-of", "right-of", "above", "below")
POOLED_PCA_DIM = 64


def _queries(data: ProbeData) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """(image index, colour a, colour b, relation index) of every pair in the split."""
    image, a, b, rel = [], [], [], []
    for i, t in enumerate(data.targets):
        for r in t.get("relations", []):
            image.append(i)
            a.append(r["a"])
            b.append(r["b"])
            rel.append(RELATIONS.index(r["relation"]))
    return np.asarray(image, dtype=np.int64), a, b, np.asarray(rel, dtype=np.int64)


def _palette(*datas: ProbeData) -> list[str]:
    return sorted({c for d in datas for t in d.targets for c in t.get("colors", [])})


def _score(data: ProbeData, image: np.ndarray, truth: np.ndarray, pred: np.ndarray
           ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    per_image = np.full(len(data), np.nan)
    for i in np.unique(image):
        per_image[i] = np.mean(pred[image == i] == truth[image == i])
    metrics = {"relation_acc": float(np.nanmean(per_image)),
               "relation_balanced_acc": balanced_accuracy(truth, pred)}
    return metrics, {"relation_acc": per_image}


def _check(split: str, image: np.ndarray) -> None:
    if len(image) == 0:
        raise ValueError(f"the {split} split has no object pairs with a relation; the relation probe needs "
                         "images with at least two objects")


def _one_hot(colours: list[str], palette: list[str]) -> torch.Tensor:
    out = torch.zeros(len(colours), len(palette))
    for k, c in enumerate(colours):
        if c in palette:
            out[k, palette.index(c)] = 1
    return out


@register_probe("relation-pooled", ["relation"],
                "mean-pooled vector × colour-pair code → linear relation classifier (the seed's pooled view)")
def fit_relation_pooled(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int) -> ProbeResult:
    del seed  # closed form
    palette = _palette(train, val)
    reducer = PCAReducer(train.features.float().mean(dim=(1, 2, 3)), POOLED_PCA_DIM)

    def design(data: ProbeData) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        image, a, b, rel = _queries(data)
        pooled = reducer(data.features.float().mean(dim=(1, 2, 3)))[torch.as_tensor(image)]
        x = torch.cat([(pooled[:, :, None] * _one_hot(colours, palette)[:, None]).flatten(1)
                       for colours in (a, b)], 1)
        return x, image, rel

    (x_tr, i_tr, y_tr), (x_va, i_va, y_va) = design(train), design(val)
    for split, image in (("train", i_tr), ("val", i_va)):
        _check(split, image)
    classifier, history = fit_ridge_classifier(x_tr, y_tr, x_va, y_va, len(RELATIONS))

    def predict(data: ProbeData) -> dict[str, Any]:
        x, image, _ = design(data)
        return {"image": image, "relation": classifier(x).argmax(1).numpy()}

    predictions = predict(test)
    _, _, _, truth = _queries(test)
    metrics, per_item = _score(test, predictions["image"], truth, predictions["relation"])
    return ProbeResult("relation-pooled", task, metrics, per_item, predictions, history, predictor=predict,
                       config={"palette": palette, "pca_dim": POOLED_PCA_DIM})


@register_probe("relation", ["relation"],
                "per-token linear colour-coverage maps → centroids of the two named objects → linear on (dx, dy)")
def fit_relation_dense(task: str, train: ProbeData, val: ProbeData, test: ProbeData, seed: int) -> ProbeResult:
    del seed  # closed form
    palette = _palette(train, val)
    _, h, w = train.grid

    def coverage_targets(data: ProbeData) -> torch.Tensor:
        maps = np.stack([color_maps(t, data.image_size, (h, w), palette) for t in data.targets])
        return torch.from_numpy(maps).permute(0, 2, 3, 1).reshape(-1, len(palette))

    colour_head, history = RidgeSolver(token_matrix(train)).fit(coverage_targets(train), token_matrix(val),
                                                                coverage_targets(val))
    history = {f"colour.{k}": v for k, v in history.items()}

    def offsets(data: ProbeData) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        """(dx, dy) between the two named objects' centroids in image-size units, per pair."""
        image, a, b, rel = _queries(data)
        # Cells under a quarter covered are left out, so near-zero noise over the whole grid
        # cannot pull a centroid toward the image centre.
        cover = (colour_head(token_matrix(data)).clamp(0, 1) - 0.25).clamp_min(0)
        cover = cover.reshape(len(data), h, w, len(palette))
        rows = (torch.arange(h).float() + 0.5) / h
        cols = (torch.arange(w).float() + 0.5) / w
        mass = cover.sum(dim=(1, 2)).clamp_min(1e-6)
        cx = torch.einsum("nhwc,w->nc", cover, cols) / mass
        cy = torch.einsum("nhwc,h->nc", cover, rows) / mass
        ia = torch.as_tensor([palette.index(c) if c in palette else 0 for c in a], dtype=torch.long)
        ib = torch.as_tensor([palette.index(c) if c in palette else 0 for c in b], dtype=torch.long)
        img = torch.as_tensor(image)
        d = torch.stack([cx[img, ia] - cx[img, ib], cy[img, ia] - cy[img, ib]], 1)
        return d, image, rel, cover.numpy()

    (d_tr, i_tr, y_tr, _), (d_va, i_va, y_va, _) = offsets(train), offsets(val)
    for split, image in (("train", i_tr), ("val", i_va)):
        _check(split, image)
    classifier, hist = fit_ridge_classifier(d_tr, y_tr, d_va, y_va, len(RELATIONS))
    history.update({f"relation.{k}": v for k, v in hist.items()})

    def predict(data: ProbeData) -> dict[str, Any]:
        d, image, _, cover = offsets(data)
        return {"image": image, "relation": classifier(d).argmax(1).numpy(), "offsets": d.numpy(),
                "colour_maps": cover}

    predictions = predict(test)
    _, _, _, truth = _queries(test)
    metrics, per_item = _score(test, predictions["image"], truth, predictions["relation"])
    return ProbeResult("relation", task, metrics, per_item, predictions, history, predictor=predict,
                       config={"palette": palette})
