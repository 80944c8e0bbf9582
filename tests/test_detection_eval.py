"""COCO box evaluation: hand-computed cases, and the NumPy implementation against pycocotools."""
import numpy as np
import pytest

import fastdl
from fastdl import detection
from fastdl.detection_eval import COCO_METRICS, COCOEvaluator, box_iou_xywh, evaluate_coco


def image(boxes, labels, scores=None, iscrowd=None):
    boxes = np.asarray(boxes, np.float64)
    out = {"boxes": boxes.reshape(-1, 4) if boxes.size == 0 else boxes,
           "labels": np.asarray(labels, np.int64)}
    if scores is not None:
        out["scores"] = np.asarray(scores, np.float64)
    if iscrowd is not None:
        out["iscrowd"] = np.asarray(iscrowd)
    return out


def numpy_eval(predictions, ground_truth):
    return evaluate_coco(predictions, ground_truth, backend="numpy")


# ------------------------------------------------------------------ hand-computed cases

def test_one_perfect_small_box():
    result = numpy_eval([image([[0, 0, 10, 10]], [3], [0.9])], [image([[0, 0, 10, 10]], [3])])
    # precision is tp / (tp + fp + eps), as in COCOeval: 1 less an ulp or two
    for name in ("AP", "AP50", "AP75", "AP_small"):
        assert result[name] == pytest.approx(1.0, abs=1e-12)
    assert result["AR1"] == result["AR100"] == result["AR_small"] == 1.0
    # no ground truth of that size: nothing to average, -1 as in COCOeval.summarize
    for name in ("AP_medium", "AP_large", "AR_medium", "AR_large"):
        assert result[name] == -1.0


def test_greedy_matching_by_score():
    # The better-scored detection has IoU exactly .5: a true positive at .50 only, where
    # it takes the ground truth from the exact box; at .55 and above the order is FP, TP:
    # precision (0, 1/2), made monotone (1/2, 1/2), so AP = 1/2 there.
    gt = [image([[0, 0, 10, 10]], [0])]
    pred = [image([[0, 0, 10, 5], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])]
    result = numpy_eval(pred, gt)
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP75"] == pytest.approx(0.5)
    assert result["AP"] == pytest.approx((1.0 + 9 * 0.5) / 10)
    assert result["AR100"] == pytest.approx(1.0)
    assert result["AR1"] == pytest.approx(0.1)   # the top detection matches at .50 alone


def test_area_ranges_and_ignored_detections():
    # A false positive of medium size outscores a small and a large exact detection.
    gt = [image([[0, 0, 10, 10], [100, 100, 200, 200]], [0, 0])]
    pred = [image([[300, 300, 350, 350], [0, 0, 10, 10], [100, 100, 200, 200]], [0, 0, 0],
                  [0.9, 0.5, 0.4])]
    result = numpy_eval(pred, gt)
    # all sizes: FP, TP, TP -> precision (0, 1/2, 2/3), envelope 2/3 at every recall
    assert result["AP"] == pytest.approx(2 / 3)
    # per size, the other sizes' ground truth and unmatched detections are ignored
    assert result["AP_small"] == pytest.approx(1.0)
    assert result["AP_large"] == pytest.approx(1.0)
    assert result["AP_medium"] == -1.0
    assert result["AR_small"] == result["AR_large"] == result["AR100"] == 1.0


def test_crowd_regions_absorb_detections():
    # Three detections inside a crowd region (IoU over the detection's area: 1) are
    # ignored, and a crowd region is no ground truth to find.
    gt = [image([[0, 0, 100, 100], [200, 200, 210, 210]], [1, 1], iscrowd=[1, 0])]
    pred = [image([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [200, 200, 210, 210]],
                  [1] * 4, [0.9, 0.8, 0.7, 0.6])]
    assert numpy_eval(pred, gt)["AP"] == pytest.approx(1.0)
    gt[0]["iscrowd"] = np.zeros(2, int)
    assert numpy_eval(pred, gt)["AP"] < 0.5
    iou = box_iou_xywh(np.array([[0.0, 0, 10, 10]]), np.array([[0.0, 0, 100, 100]]),
                       np.array([True]))
    assert iou[0, 0] == 1.0


def test_categories_are_evaluated_separately():
    # The second box is found with the wrong label: a false positive of class 0 (after
    # its true positive, so class 0's AP stays 1) and a miss of class 1 (AP 0).
    gt = [image([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1])]
    pred = [image([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.9, 0.8])]
    result = numpy_eval(pred, gt)
    assert result["AP"] == pytest.approx(0.5)
    assert result["AR100"] == pytest.approx(0.5)


def test_empty_inputs():
    gt = [image([[0, 0, 10, 10]], [0]), image(np.zeros((0, 4)), [])]
    none = [image(np.zeros((0, 4)), [], []), image(np.zeros((0, 4)), [], [])]
    assert numpy_eval(none, gt)["AP"] == 0.0
    result = numpy_eval(none, [image(np.zeros((0, 4)), [])] * 2)
    assert all(value == -1.0 for value in result.values())


def test_max_detections_per_image():
    # 150 false positives outscore the one true positive: beyond maxDets=100 it is cut.
    boxes = [[500 + i, 500, 510 + i, 510] for i in range(150)] + [[0, 0, 10, 10]]
    scores = list(np.linspace(1.0, 0.5, 150)) + [0.1]
    result = numpy_eval([image(boxes, [0] * 151, scores)], [image([[0, 0, 10, 10]], [0])])
    assert result["AP"] == result["AR100"] == 0.0


def test_evaluator_accumulates_and_takes_tensors():
    gt = [image([[0, 0, 10, 10]], [0]), image([[5, 5, 50, 50]], [0])]
    pred = [image([[0, 0, 10, 10]], [0], [0.9]), image([[5, 5, 40, 50]], [0], [0.7])]
    evaluator = COCOEvaluator(backend="numpy")
    evaluator.update(pred[:1], gt[:1]).update(pred[1:], gt[1:])
    assert evaluator.compute() == numpy_eval(pred, gt)
    assert evaluator.precision.shape == (10, 101, 1, 4, 3)
    assert evaluator.recall.shape == (10, 1, 4, 3)
    tensors = [{key: fastdl.tensor(value) for key, value in p.items()} for p in pred]
    assert numpy_eval(tensors, gt) == numpy_eval(pred, gt)
    assert detection.evaluate_coco is evaluate_coco
    assert list(numpy_eval(pred, gt)) == list(COCO_METRICS)


@pytest.mark.parametrize("predictions, ground_truth, match", [
    ([], [image([[0, 0, 1, 1]], [0])], "1 ground-truth"),
    ([{"boxes": np.zeros((1, 4)), "labels": [0]}], [image([[0, 0, 1, 1]], [0])], "scores"),
    ([image(np.zeros((1, 3)), [0], [1.0])], [image([[0, 0, 1, 1]], [0])], "boxes"),
    ([image([[2, 0, 1, 1]], [0], [1.0])], [image([[0, 0, 1, 1]], [0])], "xyxy"),
    ([image([[0, 0, 1, 1]], [0, 1], [1.0])], [image([[0, 0, 1, 1]], [0])], "lengths"),
    ([image([[0, 0, 1, 1]], [0], [np.nan])], [image([[0, 0, 1, 1]], [0])], "NaN"),
])
def test_bad_input(predictions, ground_truth, match):
    with pytest.raises(ValueError, match=match):
        numpy_eval(predictions, ground_truth)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        COCOEvaluator(backend="torch")


# ------------------------------------------------------------------- against pycocotools

def random_case(rng, num_images=8, num_classes=3, max_dets=30):
    predictions, ground_truth = [], []
    for _ in range(num_images):
        m = int(rng.integers(0, 8))
        xy = rng.uniform(0, 200, (m, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(2, 150, (m, 2))], axis=1)
        gt_labels = rng.integers(0, num_classes, m)
        n = int(rng.integers(0, max_dets))
        if m:
            source = rng.integers(0, m, n)
            boxes = gt_boxes[source] + rng.normal(0, 8, (n, 4))
            labels = np.where(rng.random(n) < 0.8, gt_labels[source],
                              rng.integers(0, num_classes, n))
        else:
            xy = rng.uniform(0, 200, (n, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(2, 100, (n, 2))], axis=1)
            labels = rng.integers(0, num_classes, n)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        scores = np.round(rng.random(n), 1)   # ties: the input order decides
        predictions.append(image(boxes, labels, scores))
        ground_truth.append(image(gt_boxes, gt_labels, iscrowd=rng.random(m) < 0.15))
    return predictions, ground_truth


@pytest.mark.parametrize("seed", range(12))
def test_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(seed)
    predictions, ground_truth = random_case(rng, max_dets=130 if seed % 4 == 3 else 30)
    ours = COCOEvaluator(backend="numpy").update(predictions, ground_truth)
    theirs = COCOEvaluator(backend="pycocotools").update(predictions, ground_truth)
    assert ours.compute() == theirs.compute()
    np.testing.assert_array_equal(ours.precision, theirs.precision)
    np.testing.assert_array_equal(ours.recall, theirs.recall)


def test_hand_cases_equal_pycocotools():
    pytest.importorskip("pycocotools")
    gt = [image([[0, 0, 100, 100], [200, 200, 210, 210], [0, 0, 10, 10]], [1, 1, 0],
                iscrowd=[1, 0, 0])]
    pred = [image([[0, 0, 10, 10], [20, 20, 30, 30], [200, 200, 210, 210], [0, 0, 10, 5]],
                  [1, 1, 1, 0], [0.9, 0.8, 0.6, 0.95])]
    assert numpy_eval(pred, gt) == evaluate_coco(pred, gt, backend="pycocotools")
    empty = [image(np.zeros((0, 4)), [], [])]
    assert numpy_eval(empty, gt) == evaluate_coco(empty, gt, backend="pycocotools")
