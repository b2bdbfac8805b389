"""Probe fits in worker processes give exactly the numbers of in-process fits, in submission order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import stageprobe as sp
from stageprobe.datasets import load_dataset
from stageprobe.features.extract import extract_dataset
from stageprobe.probes import ProbeResult
from stageprobe.suites.workers import FitRequest, ProbePool, auto_workers, dataset_key


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> list[FitRequest]:
    """Closed-form, gradient-trained and controlled fits over two stages and two datasets."""
    root = tmp_path_factory.mktemp("stores")
    model = sp.load_model("pixels")
    shapes, textures = load_dataset("shapes", n=60, seed=0), load_dataset("textures", n=40, seed=0)
    shapes_store = extract_dataset(model, shapes, root / "shapes", progress=False)
    textures_store = extract_dataset(model, textures, root / "textures", stages=["pixels.merged"], progress=False)
    boxes = FitRequest("dense-linear", "boxes", str(shapes_store.root), "pixels.patch", dataset_key(shapes),
                       with_images=False, seed=0)
    decoder = FitRequest("decoder", "reconstruction", str(textures_store.root), "pixels.merged",
                         dataset_key(textures), with_images=True, seed=0, options=(("epochs", 2),))
    return [
        boxes,
        replace(boxes, control="token-shuffle"),
        replace(boxes, probe="relation", task="relation", stage="pixels.merged", control="control-task"),
        decoder,
        replace(boxes, stage="pixels.merged", score_val=True),
    ]


def fit_all(pool: ProbePool, requests: list[FitRequest]) -> list[ProbeResult]:
    futures = [pool.submit(request) for request in requests]
    return [future.result().result for future in futures]


def test_two_workers_give_the_numbers_of_one_process(requests: list[FitRequest]) -> None:
    with ProbePool(1) as pool:
        inline = fit_all(pool, requests)
    with ProbePool(2) as pool:
        spawned = fit_all(pool, requests)
    for request, a, b in zip(requests, inline, spawned, strict=True):
        assert (a.probe, a.control) == (request.probe, request.control)
        assert (b.probe, b.control) == (a.probe, a.control)
        assert a.metrics == b.metrics, request
        assert a.metrics  # every fit measured something
        for name, values in a.per_item.items():
            np.testing.assert_array_equal(values, b.per_item[name])
        assert a.predictor is None and b.predictor is None
    recon_inline, recon_spawned = inline[3].predictions["reconstructions"], spawned[3].predictions["reconstructions"]
    np.testing.assert_array_equal(recon_inline, recon_spawned)
    # the controls are real: shuffling tokens costs the dense probe its boxes
    assert inline[1].metrics["matched_iou"] < inline[0].metrics["matched_iou"] - 0.3


def test_validation_scores_come_back_with_the_fit(requests: list[FitRequest]) -> None:
    with ProbePool(1) as pool:
        output = pool.submit(requests[-1]).result()
    assert set(output.val_scores) == {"matched_iou"}
    # the probe is selected on val, so its val IoU on pixels is high, like its test IoU
    assert output.val_scores["matched_iou"] > 0.5
    assert abs(output.val_scores["matched_iou"] - output.result.metrics["matched_iou"]) < 0.2


def test_a_failing_fit_raises_its_error_from_the_worker(requests: list[FitRequest]) -> None:
    with ProbePool(2) as pool:
        future = pool.submit(replace(requests[0], probe="no-such-probe"))
        with pytest.raises(ValueError, match="unknown probe 'no-such-probe'"):
            future.result()


def test_auto_workers_uses_the_cores_on_cpu_and_one_process_on_a_gpu() -> None:
    assert auto_workers(torch.device("cuda")) == 1
    assert 1 <= auto_workers(torch.device("cpu")) <= 4
    with pytest.raises(ValueError, match="at least 1"):
        ProbePool(0)



def test_a_request_repeated_on_the_same_data_is_fitted_once(requests: list[FitRequest]) -> None:
    boxes = requests[0]
    shapes, textures = load_dataset("shapes", n=60, seed=0), load_dataset("textures", n=40, seed=0)
    with ProbePool(1) as pool:
        pool.add_dataset(shapes)
        first = pool.submit(boxes)
        assert pool.started(boxes) and pool.submit(boxes) is first
        assert pool.submit(replace(boxes, control="token-shuffle")) is not first  # a control is its own fit
        assert first.result().seconds > 0
        pool.add_dataset(textures)  # another experiment's data: the earlier fits are let go
        assert not pool.started(boxes)


def test_this_process_leaves_busy_workers_their_cores(requests: list[FitRequest]) -> None:
    before = torch.get_num_threads()
    with ProbePool(2) as pool:
        fit = pool.submit(requests[3])  # a decoder fit: seconds, in a worker just started
        with pool.cores_left():
            beside_fits = torch.get_num_threads()
        fit.result()
        with pool.cores_left():
            idle = torch.get_num_threads()
    assert beside_fits == max(1, before - 2)
    assert idle == before == torch.get_num_threads()
