"""Every family's declared connector pair has a name the findings can say (`report.answer.CONNECTOR_KINDS`),
so a new family without one fails here instead of being called "the connector" in its findings."""

from __future__ import annotations

from stageprobe.models import _catalog
from stageprobe.models.registry import skeleton
from stageprobe.report.answer import CONNECTOR_KINDS, connector_name
from stageprobe.report.schema import CONNECTOR_PAIRS, MetricRow


def test_every_familys_connector_pair_is_named() -> None:
    for family in _catalog.FAMILIES:
        name = next(iter(family.presets))
        if name.startswith("pixels"):
            continue
        pre, post = skeleton(name).connector_stages
        assert (pre, post) in CONNECTOR_PAIRS and post in CONNECTOR_KINDS, name


def test_the_block_size_comes_from_the_measured_compression() -> None:
    def rows(stage: str, ratio: float) -> list[MetricRow]:
        common = {"experiment": "e_q2_2", "stage": stage, "n": 1, "model": "m"}
        return [MetricRow(probe="dense-context", metric="iou", value=0.5, **common),
                MetricRow(probe="geometry", metric="compression_ratio", value=ratio, **common)]

    assert connector_name(rows("vision.post_pool", 16.0)) == "the 4×4 average pool"
    assert connector_name(rows("vision.post_shuffle", 4.0)) == "the 2×2 pixel shuffle"
    assert connector_name(rows("vision.post_merge", 4.0)) == "the 2×2 merger"
    assert connector_name(rows("vision.post_projector", 1.0)) == "the projector"
    assert connector_name(rows("vision.post_merge", 3.0)) == "the merger"  # no k×k block: no block is claimed
