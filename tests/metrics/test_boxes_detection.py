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


def _noisy_detections(n: int, seed: int = 0) -> tuple[list[GroundTruth], list[Detections]]:
    """n images of 1–3 objects in 3 classes; per image its objects found with noise plus a spurious box."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n):
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
    return gts, preds


def test_resampled_accumulate_matches_cocoeval() -> None:
    gts, preds = _noisy_detections(30)
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


def test_a_bootstrap_draw_scores_what_cocoeval_gives_the_resampled_images() -> None:
    """A draw counts image i `counts[i]` times: COCOeval on a dataset holding each image that many
    times (none for 0) must give the same six stats. Scores are continuous, so copies never tie with
    another image's detections."""
    gts, preds = _noisy_detections(25, seed=3)
    ev = CocoDetectionEval(gts, preds, num_classes=3)
    for draw in range(5):
        counts = np.bincount(np.random.default_rng(draw).integers(0, 25, 25), minlength=25)
        copies = [i for i in range(25) for _ in range(counts[i])]
        reference = CocoDetectionEval([gts[i] for i in copies], [preds[i] for i in copies], num_classes=3).summary()
        ours = ev.resampled(counts)
        for name, value in reference.items():
            assert ours[name] == pytest.approx(value, abs=1e-12, nan_ok=True), (draw, name)


def test_coco_data_through_our_wrapper_equals_pycocotools_on_the_same_files(tmp_path) -> None:
    """Crowd regions, original-pixel areas and size bins, non-square images resized onto a padded
    canvas: detections made on the canvas score what pycocotools gives for them in original pixels."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from stageprobe.datasets import load_dataset, write_photo_coco

    annotation_file = write_photo_coco(tmp_path, n_images=18, seed=1, crowd_every=2)
    dataset = load_dataset(f"coco:{annotation_file}", image_size=224)
    rng = np.random.default_rng(0)
    gts, preds, results = [], [], []
    for sample in dataset:
        target = sample.target
        assert target["original_size"][0] != target["original_size"][1]
        boxes = np.concatenate([target["boxes_original"], target["crowd_boxes_original"], [[5, 5, 40, 30]]])
        wh = boxes[:, 2:] - boxes[:, :2]
        jitter = rng.normal(0, 0.08, boxes.shape) * np.concatenate([wh, wh], 1)
        original = boxes + jitter
        labels = np.concatenate([target["labels"], target["crowd_labels"], [rng.integers(3)]])
        scores = rng.uniform(0, 1, len(original))
        sx, sy, ox, oy = target["transform"]
        preds.append(_dets(original * [sx, sy, sx, sy] + [ox, oy, ox, oy], list(scores), list(labels)))
        gts.append(GroundTruth.from_target(target))
        results += [{"image_id": target["image_id"], "category_id": int(label) + 1, "score": float(score),
                     "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                    for b, label, score in zip(original.tolist(), labels, scores, strict=True)]
    ours = CocoDetectionEval(gts, preds, num_classes=len(dataset.class_names))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(annotation_file))
        reference = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    summary = ours.summary()
    expected = [float("nan") if v == -1 else v for v in reference.stats[:6]]
    np.testing.assert_allclose(list(summary.values()), expected, rtol=1e-12)
    # Every size bin is exercised, and crowds were really there to be ignored.
    assert not np.isnan(list(summary.values())).any()
    assert sum(len(g.crowd_boxes) for g in gts) >= 5
    np.testing.assert_allclose(list(ours.resampled(np.ones(len(gts))).values()), expected, rtol=1e-9)


def test_crowd_regions_make_detections_on_them_ignored() -> None:
    # A detection on a crowd region is neither a hit nor a false positive: precision stays 1.
    crowd = np.array([[200.0, 200, 300, 300]])
    gt = GroundTruth(GT, np.array([0, 0]), crowd_boxes=crowd, crowd_labels=np.array([0]),
                     crowd_areas=np.array([10000.0]))
    preds = [_dets(np.concatenate([crowd + 5, GT]), [0.99, 0.9, 0.8], [0, 0, 0])]
    assert detection_map([gt], preds, 1)["map_50"] == pytest.approx(1.0)
    without_crowd = GroundTruth(GT, np.array([0, 0]))
    assert detection_map([without_crowd], preds, 1)["map_50"] < 1.0


def test_interpolated_precision_reads_cocoeval_recipe_exactly() -> None:
    """The per-draw interpolation (one preallocated index table) gives exactly what the plain recipe
    gives: precision made non-increasing from the right, a zero column appended, `np.searchsorted` per
    row, `np.take_along_axis` — on rows with ties at the thresholds and thresholds no detection reaches."""
    from stageprobe.metrics.detection import _interpolated_precision

    rec_thrs = np.linspace(0.0, 1.00, 101)
    rng = np.random.default_rng(0)
    for n_dets, npig in ((0, 4.0), (1, 1.0), (7, 10.0), (40, 25.0)):
        hits = rng.random((10, n_dets)) < 0.6
        w = rng.integers(0, 3, n_dets).astype(float)
        tp, fp = np.cumsum(hits * w, axis=1), np.cumsum(~hits * w, axis=1)
        recall = tp / npig
        pr = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
        pr = np.concatenate([pr, np.zeros((10, 1))], axis=1)
        idx = np.stack([np.searchsorted(row, rec_thrs, side="left") for row in recall])
        expected = np.take_along_axis(pr, idx, axis=1)
        assert np.array_equal(_interpolated_precision(tp, fp, recall, rec_thrs), expected), n_dets
        assert n_dets < 7 or (expected > 0).any()  # not an all-zero table
