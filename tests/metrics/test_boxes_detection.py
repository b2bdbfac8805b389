import numpy as np
import pytest

from stageprobe.metrics import CocoDetectionEval, Detections, GroundTruth, box_iou, box_scores, detection_map

GT = np.array([[10, 10, 50, 50], [100, 100, 160, 140]], dtype=np.float64)


def test_box_iou_hand_computed() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def test_matched_iou_penalises_surplus_and_best_match_does_not() -> None:
    pred = np.concatenate([GT, GT[:1] + 1])  # both objects found, plus a near-duplicate
    scores = box_scores([GT], [pred])
    assert scores["best_match_iou"][0] == pytest.approx(1.0)
    assert scores["matched_iou"][0] == pytest.approx(2 / 3)
    assert scores["iou_gt_0.5"][0] == 1.0


def test_matched_iou_rates_hand_computed() -> None:
    pred = np.array([[10, 10, 50, 40], [100, 100, 130, 140]])  # IoUs 0.75 and 0.5
    scores = box_scores([GT], [pred])
    assert scores["matched_iou"][0] == pytest.approx((0.75 + 0.5) / 2)
    assert scores["iou_gt_0.5"][0] == 0.5  # 0.5 is not > 0.5
    assert scores["iou_gt_0.7"][0] == 0.5


def _dets(boxes: np.ndarray, scores: list[float], labels: list[int]) -> Detections:
    return Detections(np.asarray(boxes, dtype=np.float64), np.asarray(scores), np.asarray(labels))


def test_coco_perfect_predictions_score_one() -> None:
    gts = [GroundTruth(GT, np.array([0, 1])), GroundTruth(GT[:1] + 200, np.array([2]))]
    preds = [_dets(GT, [0.9, 0.8], [0, 1]), _dets(GT[:1] + 200, [0.7], [2])]
    stats = detection_map(gts, preds, num_classes=3)
    for name in ("map_50_95", "map_50", "map_75"):
        assert stats[name] == pytest.approx(1.0)


def test_coco_boxes_shifted_off_objects_score_zero() -> None:
    gts = [GroundTruth(GT, np.array([0, 1]))]
    preds = [_dets(GT + 250, [0.9, 0.8], [0, 1])]
    stats = detection_map(gts, preds, num_classes=2)
    assert stats["map_50"] == 0.0 and stats["map_50_95"] == 0.0


def test_coco_hand_computed_half_recall() -> None:
    # One of two objects found first, then a false positive: precision 1 up to recall 0.5, so
    # 51 of COCO's 101 recall points have precision 1 → AP = 51/101 at every IoU threshold.
    gts = [GroundTruth(GT, np.array([0, 0]))]
    preds = [_dets(np.array([GT[0], [300, 300, 340, 340]]), [0.9, 0.8], [0, 0])]
    stats = detection_map(gts, preds, num_classes=1)
    assert stats["map_50"] == pytest.approx(51 / 101)
    assert stats["map_50_95"] == pytest.approx(51 / 101)


def test_coco_empty_predictions() -> None:
    stats = detection_map([GroundTruth(GT, np.array([0, 0]))], [_dets(np.zeros((0, 4)), [], [])], 1)
    assert stats["map_50"] == 0.0


def test_resampled_accumulate_matches_cocoeval() -> None:
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(30):
        k = int(rng.integers(1, 4))
        xy = rng.uniform(0, 300, (k, 2))
        wh = rng.uniform(20, 120, (k, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 3, k)
        gts.append(GroundTruth(boxes, labels))
        noisy = boxes + rng.normal(0, 8, boxes.shape)
        extra = np.concatenate([xy[:1] + 150, xy[:1] + 190], 1)
        preds.append(_dets(np.concatenate([noisy, extra]), list(rng.uniform(0, 1, k + 1)),
                           list(np.concatenate([labels, [0]]))))
    ev = CocoDetectionEval(gts, preds, num_classes=3)
    exact = ev.summary()
    ours = ev.resampled(np.ones(30))
    for name, value in exact.items():
        if np.isnan(value):
            assert np.isnan(ours[name])
        else:
            assert ours[name] == pytest.approx(value, abs=1e-9), name
    # Doubling every image leaves precision and recall unchanged.
    doubled = ev.resampled(np.full(30, 2.0))
    assert doubled["map_50"] == pytest.approx(exact["map_50"], abs=1e-9)
