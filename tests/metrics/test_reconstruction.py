from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skdata
from skimage.transform import resize

from stageprobe.metrics import (
    LpipsMetric,
    MetricValue,
    edge_f1,
    gram_distance,
    irs,
    load_lpips,
    lpips_weights_reason,
    psnr,
    reconstruction_scores,
    ssim,
)

SIGMAS = (1.0, 2.0, 4.0)


def _photo(name: str, size: int = 128) -> np.ndarray:
    image = getattr(skdata, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    return resize(image[..., :3], (size, size), anti_aliasing=True).astype(np.float64)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))


@pytest.fixture(scope="module")
def random_lpips() -> LpipsMetric:
    import lpips
    import torch

    torch.manual_seed(0)
    return LpipsMetric(lpips.LPIPS(net="alex", pnet_rand=True, verbose=False))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_identity_scores(name: str, random_lpips: LpipsMetric) -> None:
    x = _photo(name)
    assert ssim(x, x) == pytest.approx(1.0)
    assert edge_f1(x, x) == pytest.approx(1.0)
    assert psnr(x, x) == float("inf")
    assert gram_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert random_lpips([x], [x])[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_scores_worsen_monotonically_with_blur(name: str, random_lpips: LpipsMetric) -> None:
    x = _photo(name)
    blurred = [_blur(x, s) for s in SIGMAS]
    ssims = [ssim(x, b) for b in blurred]
    edges = [edge_f1(x, b) for b in blurred]
    psnrs = [psnr(x, b) for b in blurred]
    lp = random_lpips([x] * len(blurred), blurred)
    assert all(a > b for a, b in pairwise(ssims)), ssims
    assert all(a > b for a, b in pairwise(edges)), edges
    assert all(a > b for a, b in pairwise(psnrs)), psnrs
    assert all(a < b for a, b in pairwise(lp)), lp
    assert ssims[0] < 1 and edges[0] < 1 and lp[0] > 0


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_edge_f1_tolerates_one_pixel_shift_only(name: str) -> None:
    # At 224 px, the input resolution edge F1 is scored at (E-Q2.5 textures).
    x = _photo(name, 224)
    assert edge_f1(x, np.roll(x, 1, axis=1)) > 0.9
    assert edge_f1(x, np.roll(x, 6, axis=1)) < 0.6


def test_lpips_is_unavailable_not_substituted_without_weights() -> None:
    reason = lpips_weights_reason()
    metric = load_lpips()
    if reason is None:
        assert isinstance(metric, LpipsMetric)
        return
    assert isinstance(metric, MetricValue) and metric.value is None and "weights" in metric.reason
    x = _photo("astronaut")[None]
    scores, unavailable = reconstruction_scores(x, x)
    assert "lpips" not in scores and "lpips" in unavailable


def test_reconstruction_scores_with_given_lpips(random_lpips: LpipsMetric) -> None:
    x = np.stack([_photo("astronaut"), _photo("coffee")])
    scores, unavailable = reconstruction_scores(x, x, random_lpips)
    assert not unavailable
    assert set(scores) == {"ssim", "psnr", "edge_f1", "gram_gabor", "lpips"}
    assert scores["lpips"].shape == (2,)


def test_irs_formula_and_unavailability() -> None:
    value = irs(MetricValue("iou", 0.85), MetricValue("lpips", 0.3), MetricValue("edge_f1", 0.8)).value
    assert value == pytest.approx(1.0)
    value = irs(MetricValue("iou", 0.5), MetricValue("lpips", 0.2), MetricValue("edge_f1", 0.4)).value
    assert value == pytest.approx(0.4 * 0.5 / 0.85 + 0.3 * 0.8 / 0.7 + 0.3 * 0.4 / 0.8)
    missing = irs(MetricValue("iou", 0.5), MetricValue.unavailable("lpips", "no weights"),
                  MetricValue("edge_f1", 0.4))
    assert missing.value is None and "lpips: no weights" in (missing.reason or "")
    assert str(missing).startswith("unavailable (")


def test_metric_value_needs_value_xor_reason() -> None:
    with pytest.raises(ValueError):
        MetricValue("x", None)
    with pytest.raises(ValueError):
        MetricValue("x", 1.0, "both")


def _direct_gram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """gram_gabor by the definition: scipy's direct reflect-mode convolution with skimage's Gabor kernels."""
    from skimage.color import rgb2gray
    from skimage.filters import gabor_kernel

    def gram(image: np.ndarray) -> np.ndarray:
        grey = rgb2gray(image)
        kernels = [np.real(gabor_kernel(f, theta=t)) for f in (0.1, 0.2, 0.3) for t in np.arange(4) * np.pi / 4]
        maps = np.stack([(grey - grey.mean()).ravel()]
                        + [ndimage.convolve(grey, k, mode="reflect").ravel() for k in kernels])
        return maps @ maps.T / maps.shape[1]

    ga, gb = gram(a), gram(b)
    return float(np.linalg.norm(ga - gb) / (np.linalg.norm(ga) + np.linalg.norm(gb)))


def test_gram_distance_equals_the_direct_convolution_definition() -> None:
    reference = _photo("coffee")[:96, :80]
    blurred = ndimage.gaussian_filter(reference, sigma=(2, 2, 0))
    other = _photo("chelsea")[:96, :80]
    for recon in (blurred, other):
        assert gram_distance(reference, recon) == pytest.approx(_direct_gram_distance(reference, recon), rel=1e-9)
    # the reference-side cache never answers for different content
    assert gram_distance(other, reference) == pytest.approx(_direct_gram_distance(other, reference), rel=1e-9)
    assert gram_distance(reference, blurred) < gram_distance(reference, other)


def _package_lpips(metric: LpipsMetric, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The lpips package's one-call forward on each pair, one pair at a time: the independent reference."""
    import torch

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1

    with torch.no_grad():
        return np.array([float(metric.net(tensor(x), tensor(y))) for x, y in zip(a, b, strict=True)])


def test_lpips_in_two_halves_equals_the_package_forward(random_lpips: LpipsMetric) -> None:
    references = np.stack([_photo(name, 64) for name in ("astronaut", "coffee", "chelsea")])
    candidates = {"blur": np.stack([_blur(x, 2.0) for x in references]),
                  "other": np.roll(references, 1, axis=0), "same": references.copy()}
    # the reference side computed once (batches of 2: a whole and a partial batch) for every candidate stack
    features = random_lpips.reference_features(references, batch_size=2)
    assert features is not None and len(features) == 2
    for name, stack in candidates.items():
        expected = _package_lpips(random_lpips, references, stack)
        assert np.allclose(random_lpips(references, stack, batch_size=2, reference=features), expected,
                           rtol=0, atol=1e-6), name
        assert np.allclose(random_lpips(references, stack), expected, rtol=0, atol=1e-6), name
    assert np.all(_package_lpips(random_lpips, references, candidates["other"]) > 0.01)  # not a trivial zero


def _direct_edge_f1(reference: np.ndarray, candidate: np.ndarray, tolerance: float = 1.5) -> float:
    from skimage.color import rgb2gray
    from skimage.feature import canny

    e_ref, e_cand = (canny(rgb2gray(x), sigma=1.0, low_threshold=0.2, high_threshold=0.4)
                     for x in (reference, candidate))
    if not e_ref.any():
        return float("nan")
    if not e_cand.any():
        return 0.0
    precision = np.mean(ndimage.distance_transform_edt(~e_ref)[e_cand] <= tolerance)
    recall = np.mean(ndimage.distance_transform_edt(~e_cand)[e_ref] <= tolerance)
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def test_kept_reference_side_scores_as_each_pair_alone(random_lpips: LpipsMetric) -> None:
    from stageprobe.metrics.reconstruction import ReferenceImages

    flat = np.full((64, 64, 3), 0.5)
    references = np.stack([_photo("astronaut", 64), _photo("coffee", 64), flat])
    kept = ReferenceImages(references)
    for candidates in (np.stack([_blur(x, 1.0) for x in references]), references[::-1].copy(),
                       np.stack([flat, flat, _photo("chelsea", 64)])):
        scores, _ = reconstruction_scores(kept, candidates, random_lpips)
        alone, _ = reconstruction_scores(references, candidates, random_lpips)
        for metric, values in alone.items():
            assert np.array_equal(scores[metric], values, equal_nan=True), metric
        direct = [_direct_edge_f1(r, c) for r, c in zip(references, candidates, strict=True)]
        assert np.array_equal(scores["edge_f1"], direct, equal_nan=True)
        assert np.allclose(scores["lpips"], _package_lpips(random_lpips, references, candidates), rtol=0, atol=1e-6)
