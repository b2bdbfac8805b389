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
