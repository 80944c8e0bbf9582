"""Small-object detection with a cascade: single-scale vs FPN vs FPN + cascade, COCO-style AP.

    python examples/detect_cascade.py [--epochs 6] [--train 320]

Three detectors trained on the same generated scenes (squares and disks of side 3 to 12 px
in 32 × 32 images) from the same seed:

- single-scale: the anchor head and the box head on one FPN level (stride 4), all anchor
  sizes there, one box head at IoU 0.5;
- FPN: anchors of two sizes per level on three levels (strides 1, 2, 4), RoIs pooled from
  the level that fits their size, one box head at IoU 0.5;
- FPN + cascade: the same, with three box heads at IoU 0.5, 0.6 and 0.7, each refining the
  previous one's boxes.

Reported: COCO-style AP (mean over IoU 0.50:0.05:0.95, 101-point interpolation, averaged
over classes), AP50, and AP_small. Every object here is far below COCO's "small" area
(32²), so AP_small uses side <= 6 px (area <= 36) instead: COCO's rule with that area range
(ground truth outside it ignored, and unmatched detections outside it too).
"""
import argparse
import sys
import time

import numpy as np

import fastdl
from fastdl import detection, optim
from fastdl.data import make_shapes
from fastdl.models import cascade_detector

VARIANTS = {
    "single-scale": dict(levels=(2,), anchor_sizes=((4, 6, 8, 12, 16, 24),),
                         stage_ious=(0.5,)),
    "FPN": dict(stage_ious=(0.5,)),
    "FPN + cascade": dict(stage_ious=(0.5, 0.6, 0.7)),
}
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
SMALL_AREA = 6 * 6


def as_targets(boxes):
    return [{"boxes": b[:, :4], "labels": b[:, 4].astype(np.int64)} for b in boxes]


def train(options, images, boxes, epochs, seed, batch_size=16):
    fastdl.manual_seed(seed)
    model = cascade_detector(num_classes=2, in_channels=1, **options)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    targets = as_targets(boxes)
    rng = np.random.default_rng(seed)
    model.train()
    for epoch in range(epochs):
        order, total = rng.permutation(len(images)), 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            losses = model(images[batch], [targets[i] for i in batch])
            loss = sum(losses.values())
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(batch)
        print("    epoch %d  loss %.3f" % (epoch + 1, total / len(images)))
    return model


def detect(model, images, batch_size=32):
    model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        for output in model(images[start:start + batch_size]):
            results.append({key: value.numpy() for key, value in output.items()})
    return results


# ---------------------------------------------------------------- COCO-style AP
def _match_image(det_boxes, det_scores, gt_boxes, area_range, threshold):
    """COCO's greedy matching of one image and class at one IoU threshold: returns the
    detections' (matched, ignored) flags, by decreasing score, and the count of GT kept."""
    order = np.argsort(-det_scores, kind="stable")
    det_boxes = det_boxes[order]
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    gt_ignored = (gt_area < area_range[0]) | (gt_area > area_range[1])
    gt_order = np.argsort(gt_ignored, kind="stable")          # kept GT first
    gt_boxes, gt_ignored = gt_boxes[gt_order], gt_ignored[gt_order]
    iou = (detection.box_iou(det_boxes, gt_boxes) if len(det_boxes) and len(gt_boxes)
           else np.zeros((len(det_boxes), len(gt_boxes))))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    matched = np.zeros(len(det_boxes), dtype=bool)
    ignored = np.zeros(len(det_boxes), dtype=bool)
    for d in range(len(det_boxes)):
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for g in range(len(gt_boxes)):
            if taken[g] or (best > -1 and not gt_ignored[best] and gt_ignored[g]):
                continue
            if iou[d, g] >= best_iou:
                best, best_iou = g, iou[d, g]
        if best > -1:
            taken[best], matched[d], ignored[d] = True, True, gt_ignored[best]
    area = (det_boxes[:, 2] - det_boxes[:, 0]) * (det_boxes[:, 3] - det_boxes[:, 1])
    outside = (area < area_range[0]) | (area > area_range[1])
    ignored |= ~matched & outside
    return det_scores[order], matched, ignored, int((~gt_ignored).sum())


def _average_precision(scores, matched, ignored, n_gt):
    """101-point interpolated precision over recall (COCO), -1 without ground truth."""
    if n_gt == 0:
        return -1.0
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[order], ignored[order]
    tp = np.cumsum(matched & ~ignored)
    fp = np.cumsum(~matched & ~ignored)
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    where = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in where]))


def coco_ap(detections, truths, classes=(1, 2), area_range=(0, np.inf)):
    """AP at each IoU threshold of :data:`IOU_THRESHOLDS`, averaged over classes."""
    per_threshold = []
    for threshold in IOU_THRESHOLDS:
        per_class = []
        for cls in classes:
            parts, n_gt = [], 0
            for found, truth in zip(detections, truths):
                mine = found["labels"] == cls
                result = _match_image(found["boxes"][mine].astype(np.float64),
                                      found["scores"][mine], truth[truth[:, 4] == cls, :4],
                                      area_range, threshold)
                parts.append(result[:3])
                n_gt += result[3]
            scores, matched, ignored = (np.concatenate(p) for p in zip(*parts))
            ap = _average_precision(scores, matched, ignored, n_gt)
            if ap >= 0:
                per_class.append(ap)
        per_threshold.append(np.mean(per_class) if per_class else float("nan"))
    return np.array(per_threshold)


def evaluate(detections, truths):
    ap = coco_ap(detections, truths)
    small = coco_ap(detections, truths, area_range=(0, SMALL_AREA))
    return {"AP": ap.mean(), "AP50": ap[0], "AP_small": small.mean()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--test", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scene = dict(max_objects=3, min_size=3, max_size=12)
    images, _, boxes = make_shapes(args.train, 32, seed=args.seed, **scene)
    test_images, _, test_boxes = make_shapes(args.test, 32, seed=args.seed + 1000, **scene)
    rows = []
    for name, options in VARIANTS.items():
        print(name)
        began = time.perf_counter()
        model = train(options, images, boxes, args.epochs, args.seed)
        trained = time.perf_counter()
        scores = evaluate(detect(model, test_images), test_boxes)
        rows.append((name, scores, trained - began, time.perf_counter() - trained))
    print("\n%-14s %6s %6s %9s %9s %9s" % ("variant", "AP", "AP50", "AP_small", "train s",
                                           "infer s"))
    for name, scores, train_s, infer_s in rows:
        print("%-14s %6.3f %6.3f %9.3f %9.1f %9.2f" % (name, scores["AP"], scores["AP50"],
                                                       scores["AP_small"], train_s, infer_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
