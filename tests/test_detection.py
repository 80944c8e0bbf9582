"""Detection toolkit against brute-force NumPy references."""
import numpy as np
import pytest

from fastdl import detection


def random_boxes(rng, n, dtype=np.float64, degenerate=0):
    xy = rng.uniform(0, 50, size=(n, 2))
    wh = rng.uniform(0, 20, size=(n, 2))
    wh[:degenerate] = 0
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def reference_iou(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a.astype(np.float64)):
        for j, q in enumerate(b.astype(np.float64)):
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            out[i, j] = w * h / union if union > 0 else 0.0
    return out


def reference_nms(boxes, scores, threshold):
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(reference_iou(boxes[[i]], boxes[[k]])[0, 0] <= threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_iou_matches_brute_force_with_degenerate_and_identical_boxes(dtype, rng):
    a = random_boxes(rng, 30, dtype, degenerate=3)
    b = np.concatenate([random_boxes(rng, 20, dtype, degenerate=2), a[:5]])
    iou = detection.box_iou(a, b)
    assert iou.dtype == dtype and not np.isnan(iou).any()
    np.testing.assert_allclose(iou, reference_iou(a, b), rtol=1e-5 if dtype == np.float32
                               else 1e-12, atol=1e-7)
    np.testing.assert_allclose(np.diag(detection.box_iou(a[3:8], a[3:8])), 1.0, rtol=1e-6)
    assert detection.box_iou(a[:1] * 0, a[:1] * 0)[0, 0] == 0.0   # zero-area union


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_nms_matches_brute_force_with_score_ties(dtype, threshold, rng):
    boxes = random_boxes(rng, 60, dtype, degenerate=2)
    boxes[10:15] = boxes[10]                        # identical boxes
    scores = np.round(rng.uniform(size=60), 1)      # many ties
    keep = detection.nms(boxes, scores, threshold)
    assert keep.tolist() == reference_nms(boxes, scores, threshold)


def test_batched_nms_never_suppresses_across_classes(rng):
    boxes = random_boxes(rng, 40)
    scores = rng.uniform(size=40)
    classes = rng.integers(0, 3, size=40)
    keep = set(detection.batched_nms(boxes, scores, classes, 0.4).tolist())
    expected = set()
    for c in range(3):
        members = np.flatnonzero(classes == c)
        expected |= {members[i] for i in reference_nms(boxes[members], scores[members], 0.4)}
    assert keep == expected


def test_anchors_follow_torchvision_conventions():
    levels = detection.make_anchors([(2, 3), (1, 1)], [8, 16], [(16,), (32, 64)], (0.5, 1, 2))
    assert [len(level) for level in levels] == [2 * 3 * 3, 1 * 1 * 6]
    first = levels[0][:3]
    # ratio 0.5 (h/w): w = 16/sqrt(.5) = 22.6 -> half 11.3 rounds to 11; h half 5.66 -> 6
    np.testing.assert_allclose(first[0], [-11, -6, 11, 6])
    np.testing.assert_allclose(first[1], [-8, -8, 8, 8])
    np.testing.assert_allclose(levels[0][3 * 4 + 1], [8 - 8, 8 - 8, 8 + 8, 8 + 8])  # cell y1 x1


def test_match_anchors_against_brute_force_and_low_quality_matches(rng):
    anchors = np.concatenate(detection.make_anchors([(6, 6)], [8], [(12,)], (1.0,)))
    gt = np.array([[10.0, 10.0, 22.0, 22.0], [40.0, 3.0, 43.0, 6.0]])   # the second is tiny
    labels, matched = detection.match_anchors(anchors, gt, 0.5, 0.4)
    iou = reference_iou(anchors, gt)
    best = iou.max(axis=1)
    expected = np.where(best >= 0.5, 1, np.where(best >= 0.4, -1, 0))
    for g in range(2):
        expected[iou[:, g] == iou[:, g].max()] = 1
    np.testing.assert_array_equal(labels, expected)
    assert labels[matched == 1].sum() >= 1            # the tiny box got an anchor
    no_gt_labels, no_gt_matched = detection.match_anchors(anchors, np.zeros((0, 4)))
    assert not no_gt_labels.any() and (no_gt_matched == -1).all()


def test_encode_decode_round_trip_and_cascade(rng):
    anchors = random_boxes(rng, 20) + np.array([0, 0, 1, 1])
    gt = random_boxes(rng, 20) + np.array([0, 0, 1, 1])
    deltas = detection.encode_boxes(gt, anchors, (10, 10, 5, 5))
    np.testing.assert_allclose(detection.decode_boxes(deltas, anchors, (10, 10, 5, 5)), gt,
                               rtol=1e-10, atol=1e-9)
    assert detection.cascade_thresholds(0.5, 0.7, 3) == [0.5, 0.6, 0.7]


@pytest.mark.parametrize("call, match", [
    (lambda: detection.box_iou(np.array([[5.0, 0, 1, 1]]), np.zeros((1, 4))), "x2 >= x1"),
    (lambda: detection.box_iou(np.zeros((2, 3)), np.zeros((1, 4))), "shape"),
    (lambda: detection.nms(np.zeros((2, 4)), np.array([0.1, np.nan]), 0.5), "NaN"),
    (lambda: detection.nms(np.zeros((2, 4)), np.array([0.1, 0.2]), 1.5), "iou_threshold"),
    (lambda: detection.nms(np.zeros((2, 4)), np.array([0.1]), 0.5), "scores"),
    (lambda: detection.match_anchors(np.zeros((1, 4)), np.zeros((1, 4)), 0.3, 0.5), "neg_iou"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
