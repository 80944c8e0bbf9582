"""The small-object toolkit: IoU, NMS, anchors per FPN level, anchor matching,
rising IoU thresholds (cascades) and box encoding.

Boxes are ``(x1, y1, x2, y2)`` float arrays of shape ``(N, 4)``.
"""
import math
import numbers

import numpy as np

from fastdl.detection_eval import COCOEvaluator, evaluate_coco
from fastdl.kernels import detection as kernels

__all__ = ["box_iou", "nms", "batched_nms", "make_anchors", "match_anchors",
           "cascade_thresholds", "encode_boxes", "decode_boxes", "COCOEvaluator",
           "evaluate_coco"]

#: dw/dh are clamped at log(1000/16) before exp, as torchvision does
BBOX_CLIP = math.log(1000.0 / 16)


def _boxes(name, boxes):
    array = np.asarray(getattr(boxes, "data", boxes))
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError("%s: boxes must have shape (N, 4), got %s" % (name, array.shape))
    if not np.isfinite(array).all():
        raise ValueError("%s: boxes contain NaN or infinite coordinates" % name)
    if np.any(array[:, 2] < array[:, 0]) or np.any(array[:, 3] < array[:, 1]):
        raise ValueError("%s: boxes need x2 >= x1 and y2 >= y1 (xyxy format)" % name)
    return array


def _threshold(name, value):
    if not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError("%s: iou_threshold must be in [0, 1], got %r" % (name, value))
    return float(value)


def _scores(name, scores, n):
    array = np.asarray(getattr(scores, "data", scores), dtype=np.float64)
    if array.shape != (n,):
        raise ValueError("%s: scores must have shape (%d,), got %s" % (name, n, array.shape))
    if np.isnan(array).any():
        raise ValueError("%s: scores contain NaN" % name)
    return array


def box_iou(boxes_a, boxes_b):
    """Pairwise IoU: ``(N, 4)`` × ``(M, 4)`` → ``(N, M)``; a zero-area union gives 0."""
    return kernels.box_iou(_boxes("box_iou", boxes_a), _boxes("box_iou", boxes_b))


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression (torchvision's semantics).

    Returns the int64 indices of kept boxes, by decreasing score; equal scores
    keep the lower index first.
    """
    boxes = _boxes("nms", boxes)
    return kernels.nms(boxes, _scores("nms", scores, len(boxes)),
                       _threshold("nms", iou_threshold))


def batched_nms(boxes, scores, classes, iou_threshold):
    """NMS within each class: boxes of different classes never suppress each other."""
    boxes = _boxes("batched_nms", boxes)
    scores = _scores("batched_nms", scores, len(boxes))
    classes = np.asarray(classes)
    if classes.shape != (len(boxes),) or classes.dtype.kind not in "iu":
        raise ValueError("batched_nms: classes must be integers of shape (%d,)" % len(boxes))
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    # Shift each class to its own region of the plane so they cannot overlap.
    offsets = (classes - classes.min()).astype(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    return kernels.nms(boxes + offsets[:, None], scores, _threshold("batched_nms",
                                                                    iou_threshold))


def make_anchors(feature_sizes, strides, sizes, aspect_ratios=(0.5, 1.0, 2.0)):
    """Anchors of every FPN level (torchvision's AnchorGenerator conventions).

    Parameters
    ----------
    feature_sizes : list of (H, W)
    strides : list of int (input pixels per feature cell), one per level
    sizes : list of (float or tuple of float), anchor sizes per level
    aspect_ratios : tuple of float (height / width), shared by all levels

    Returns
    -------
    list of ndarray (H*W*A, 4), float64: for cell (y, x) and base anchor a, row
    ``(y*W + x)*A + a``; base anchors are centred at 0 and shifted by
    ``(x*stride, y*stride)``.
    """
    if not (len(feature_sizes) == len(strides) == len(sizes)):
        raise ValueError("make_anchors: feature_sizes, strides and sizes need one entry per "
                         "level, got %d, %d, %d" % (len(feature_sizes), len(strides),
                                                    len(sizes)))
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    if ratios.ndim != 1 or np.any(ratios <= 0):
        raise ValueError("make_anchors: aspect_ratios must be positive, got %r"
                         % (aspect_ratios,))
    levels = []
    for (height, width), stride, level_sizes in zip(feature_sizes, strides, sizes):
        scales = np.atleast_1d(np.asarray(level_sizes, dtype=np.float64))
        if np.any(scales <= 0) or stride <= 0 or height < 1 or width < 1:
            raise ValueError("make_anchors: sizes, strides and feature sizes must be positive")
        h_ratios = np.sqrt(ratios)
        widths = (scales[None, :] / h_ratios[:, None]).reshape(-1)
        heights = (scales[None, :] * h_ratios[:, None]).reshape(-1)
        base = np.round(np.stack([-widths, -heights, widths, heights], axis=1) / 2)
        ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride,
                             indexing="ij")
        shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
        levels.append((shifts + base[None]).reshape(-1, 4).astype(np.float64))
    return levels


def match_anchors(anchors, gt_boxes, pos_iou=0.5, neg_iou=0.4, allow_low_quality=True):
    """Label anchors positive (1), negative (0) or ignored (−1) by IoU with the GT boxes.

    Every GT box's best anchors (all that tie its highest IoU) are made positive
    too when ``allow_low_quality``, so tiny objects still get an anchor.

    Returns
    -------
    labels : int64 (A,)
    matched : int64 (A,), the GT index of each anchor's best match (−1 without GT)
    """
    anchors = _boxes("match_anchors", anchors)
    gt = _boxes("match_anchors", gt_boxes)
    if not 0.0 <= neg_iou <= pos_iou <= 1.0:
        raise ValueError("match_anchors: need 0 <= neg_iou <= pos_iou <= 1, got %r, %r"
                         % (neg_iou, pos_iou))
    labels = np.zeros(len(anchors), dtype=np.int64)
    matched = np.full(len(anchors), -1, dtype=np.int64)
    if len(gt) == 0 or len(anchors) == 0:
        return labels, matched
    iou = kernels.box_iou(anchors, gt)
    matched = iou.argmax(axis=1)
    best = iou[np.arange(len(anchors)), matched]
    labels[best >= pos_iou] = 1
    labels[(best >= neg_iou) & (best < pos_iou)] = -1
    if allow_low_quality:
        per_gt_best = iou.max(axis=0)
        rows, columns = np.nonzero((iou == per_gt_best[None]) & (per_gt_best[None] > 0))
        labels[rows] = 1
        matched[rows] = columns
    return labels, matched


def cascade_thresholds(start=0.5, stop=0.7, stages=3):
    """Rising IoU thresholds of a detection cascade, e.g. 0.5 → 0.6 → 0.7."""
    if stages < 1 or not 0 < start <= stop < 1:
        raise ValueError("cascade_thresholds: need 0 < start <= stop < 1 and stages >= 1")
    return [round(float(t), 10) for t in np.linspace(start, stop, stages)]


def encode_boxes(gt, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Faster R-CNN deltas (dx, dy, dw, dh) of ``gt`` relative to ``anchors``, row-wise."""
    gt, anchors = _boxes("encode_boxes", gt), _boxes("encode_boxes", anchors)
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    if np.any(aw <= 0) or np.any(ah <= 0) or np.any(gw <= 0) or np.any(gh <= 0):
        raise ValueError("encode_boxes: boxes need positive width and height")
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return np.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * np.log(gw / aw),
                     wh * np.log(gh / ah)], axis=1)


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Inverse of :func:`encode_boxes` (dw, dh clamped at log(1000/16))."""
    anchors = _boxes("decode_boxes", anchors)
    deltas = np.asarray(deltas, dtype=anchors.dtype)
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    cx, cy = deltas[:, 0] / wx * aw + ax, deltas[:, 1] / wy * ah + ay
    w = np.exp(np.minimum(deltas[:, 2] / ww, BBOX_CLIP)) * aw
    h = np.exp(np.minimum(deltas[:, 3] / wh, BBOX_CLIP)) * ah
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
