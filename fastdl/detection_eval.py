"""COCO-style evaluation of box detections: AP@[.5:.95], AP50, AP75, AP by object size, AR.

The semantics are pycocotools' ``COCOeval`` (iouType ``"bbox"``), reproduced in NumPy so
that the numbers are the same with or without pycocotools installed:

- per image and category, detections are sorted by score (stable: equal scores keep
  their input order) and the top ``maxDets[-1]`` (100) are kept;
- at each IoU threshold t in {.50, .55, ..., .95} every detection, best score first, takes
  the unmatched ground truth with the highest IoU >= t (ties: the later one), preferring
  ground truth that counts over ground truth that is ignored;
- ground truth is ignored when it is a crowd region or its area is outside the area
  range; a crowd region can absorb any number of detections, and its IoU is taken over
  the detection's area alone; a detection matched to ignored ground truth, or unmatched
  and itself outside the area range, counts neither as true nor as false positive;
- precision is made monotone and read at 101 recall points (0, .01, ..., 1); a category
  without ground truth that counts is left out of the means.

Boxes are ``(x1, y1, x2, y2)``; internally they are ``(x, y, w, h)`` and the IoU is
computed with the arithmetic of pycocotools' ``bbIou``, so matches agree to the last bit.
Areas: a ground-truth box's ``w * h`` unless an ``area`` is given (COCO's annotations
carry the segmentation's area there); a detection's ``w * h``.
"""
import contextlib
import io

import numpy as np

__all__ = ["COCOEvaluator", "evaluate_coco", "COCO_METRICS"]

#: The twelve numbers of ``COCOeval.summarize()``, in its order.
COCO_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
#: all, small (< 32²), medium (32²..96²), large (> 96²); COCOeval's bounds, both inclusive
AREA_RANGES = ((0.0, 1e5 ** 2), (0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e5 ** 2))
# COCOeval keeps the 1e-10 so that a threshold of 1 still matches a perfect box.
_MAX_IOU_THRESHOLD = 1 - 1e-10


class COCOEvaluator:
    """Accumulate detections and ground truth image by image; :meth:`compute` the metrics.

    Parameters
    ----------
    backend : {'auto', 'numpy', 'pycocotools'}
        'auto' uses pycocotools when it imports and the NumPy implementation otherwise;
        both give the same numbers.

    Examples
    --------
    >>> evaluator = COCOEvaluator()
    >>> evaluator.update(predictions, targets)      # lists of per-image dicts
    >>> evaluator.compute()["AP"]
    """

    def __init__(self, backend="auto"):
        if backend not in ("auto", "numpy", "pycocotools"):
            raise ValueError("COCOEvaluator: backend must be 'auto', 'numpy' or "
                             "'pycocotools', got %r" % (backend,))
        self.backend = backend
        self.predictions, self.ground_truth = [], []
        self.precision = self.recall = None

    def update(self, predictions, ground_truth):
        """Add images.

        Parameters
        ----------
        predictions : sequence of dict, one per image
            ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,) int.
        ground_truth : sequence of dict, one per image (same order)
            ``boxes`` (M, 4) xyxy, ``labels`` (M,) int; optional ``iscrowd`` (M,) bool/int
            and ``area`` (M,) float.

        Returns
        -------
        self
        """
        predictions, ground_truth = list(predictions), list(ground_truth)
        if len(predictions) != len(ground_truth):
            raise ValueError("COCOEvaluator.update: %d predictions for %d ground-truth images"
                             % (len(predictions), len(ground_truth)))
        first = len(self.ground_truth)
        for i, (pred, target) in enumerate(zip(predictions, ground_truth)):
            self.predictions.append(_detections(pred, first + i))
            self.ground_truth.append(_targets(target, first + i))
        return self

    def compute(self):
        """The twelve COCO numbers as a dict (names in :data:`COCO_METRICS`).

        A number that has nothing to average (no ground truth in that area range) is -1,
        as in ``COCOeval.summarize()``. Also sets ``self.precision`` (T, 101, K, 4, 3) and
        ``self.recall`` (T, K, 4, 3), indexed as COCOeval's ``eval`` arrays (K: the sorted
        labels present in the ground truth or the detections).
        """
        backend = self.backend
        if backend == "auto":
            backend = "pycocotools" if _pycocotools() is not None else "numpy"
        if backend == "pycocotools":
            if _pycocotools() is None:
                raise ImportError("COCOEvaluator(backend='pycocotools') needs pycocotools "
                                  "(pip install fastdl[coco])")
            self.precision, self.recall = _accumulate_pycocotools(self.predictions,
                                                                  self.ground_truth)
        else:
            self.precision, self.recall = _accumulate_numpy(self.predictions,
                                                            self.ground_truth)
        return summarize(self.precision, self.recall)


def evaluate_coco(predictions, ground_truth, backend="auto"):
    """COCO box AP/AR of per-image ``predictions`` against ``ground_truth``.

    See :class:`COCOEvaluator` for the inputs. Returns a dict with ``AP`` (mean over IoU
    .50:.05:.95), ``AP50``, ``AP75``, ``AP_small``/``AP_medium``/``AP_large`` (areas below
    32², between 32² and 96², above 96²), ``AR1``/``AR10``/``AR100`` (at most that many
    detections per image) and ``AR_small``/``AR_medium``/``AR_large`` (at 100).
    """
    return COCOEvaluator(backend).update(predictions, ground_truth).compute()


# ---------------------------------------------------------------------------- inputs

def _array(name, value, shape_tail, dtype, index):
    array = np.asarray(value, dtype=dtype)
    if array.size == 0:
        array = array.reshape((0,) + shape_tail)
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise ValueError("evaluate_coco: image %d: %s must have shape (N%s), got %s"
                         % (index, name, "".join(", %d" % s for s in shape_tail),
                            array.shape))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("evaluate_coco: image %d: %s contain NaN or infinite values"
                         % (index, name))
    return array


def _xywh(boxes, index):
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError("evaluate_coco: image %d: boxes need x2 >= x1 and y2 >= y1 "
                         "(xyxy format)" % index)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def _same_length(index, **arrays):
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("evaluate_coco: image %d: lengths differ: %s" % (index, lengths))


def _detections(pred, index):
    for key in ("boxes", "scores", "labels"):
        if key not in pred:
            raise ValueError("evaluate_coco: prediction %d has no %r" % (index, key))
    boxes = _xywh(_array("boxes", pred["boxes"], (4,), np.float64, index), index)
    scores = _array("scores", pred["scores"], (), np.float64, index)
    labels = _array("labels", pred["labels"], (), np.int64, index)
    _same_length(index, boxes=boxes, scores=scores, labels=labels)
    return {"boxes": boxes, "scores": scores, "labels": labels}


def _targets(target, index):
    for key in ("boxes", "labels"):
        if key not in target:
            raise ValueError("evaluate_coco: ground truth %d has no %r" % (index, key))
    boxes = _xywh(_array("boxes", target["boxes"], (4,), np.float64, index), index)
    labels = _array("labels", target["labels"], (), np.int64, index)
    iscrowd = target.get("iscrowd")
    iscrowd = np.zeros(len(boxes), bool) if iscrowd is None else \
        _array("iscrowd", iscrowd, (), np.int64, index).astype(bool)
    area = target.get("area")
    area = boxes[:, 2] * boxes[:, 3] if area is None else \
        _array("area", area, (), np.float64, index)
    _same_length(index, boxes=boxes, labels=labels, iscrowd=iscrowd, area=area)
    return {"boxes": boxes, "labels": labels, "iscrowd": iscrowd, "area": area}


def _categories(predictions, ground_truth):
    labels = [p["labels"] for p in predictions] + [g["labels"] for g in ground_truth]
    return np.unique(np.concatenate(labels)) if labels else np.zeros(0, np.int64)


# ------------------------------------------------------------------------ matching

def box_iou_xywh(dets, gts, iscrowd):
    """``(D, G)`` IoU of ``(x, y, w, h)`` boxes, pycocotools' ``bbIou``: over a crowd
    ground truth the union is the detection's area alone."""
    det_x2 = dets[:, 0:1] + dets[:, 2:3]
    det_y2 = dets[:, 1:2] + dets[:, 3:4]
    width = np.minimum(det_x2, gts[:, 0] + gts[:, 2]) - np.maximum(dets[:, 0:1], gts[:, 0])
    height = np.minimum(det_y2, gts[:, 1] + gts[:, 3]) - np.maximum(dets[:, 1:2], gts[:, 1])
    inter = np.where((width > 0) & (height > 0), width * height, 0.0)
    det_area = (dets[:, 2] * dets[:, 3])[:, None]
    gt_area = gts[:, 2] * gts[:, 3]
    union = np.where(iscrowd[None, :], det_area, det_area + gt_area - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def match_image(ious, gt_ignore, iscrowd, det_area_ignore):
    """Greedy matching of one image and category at every IoU threshold (COCOeval).

    Parameters
    ----------
    ious : (D, G) float, detections by decreasing score, ground truth with the
        ignored ones last
    gt_ignore, iscrowd : (G,) bool
    det_area_ignore : (D,) bool, the detection's area is outside the range

    Returns
    -------
    det_matched : (T, D) bool
    det_ignore : (T, D) bool
    """
    num_dets, num_gts = ious.shape
    thresholds = np.minimum(IOU_THRESHOLDS, _MAX_IOU_THRESHOLD)[:, None]
    det_matched = np.zeros((len(thresholds), num_dets), bool)
    det_ignore = np.zeros((len(thresholds), num_dets), bool)
    if num_gts and num_dets:
        counted = ~gt_ignore
        gt_taken = np.zeros((len(thresholds), num_gts), bool)   # per threshold
        rows = np.arange(len(thresholds))
        for d in range(num_dets):   # best score first; all thresholds at once
            free = (~gt_taken | iscrowd) & (ious[d] >= thresholds)
            # A ground truth that counts beats an ignored one of any IoU.
            free_counted = free & counted
            pool = np.where(free_counted.any(axis=1, keepdims=True), free_counted, free)
            found = pool.any(axis=1)
            candidates = np.where(pool, ious[d], -1.0)
            # the loop in COCOeval moves to a later ground truth on an equal IoU
            best = num_gts - 1 - np.argmax(candidates[:, ::-1], axis=1)
            det_matched[:, d] = found
            det_ignore[:, d] = found & gt_ignore[best]
            gt_taken[rows[found], best[found]] = True
    det_ignore |= ~det_matched & det_area_ignore[None, :]
    return det_matched, det_ignore


def _evaluate_image(dets, gts, area_range, max_det):
    """COCOeval.evaluateImg for one image, category and area range (None when empty)."""
    if len(dets["scores"]) == 0 and len(gts["area"]) == 0:
        return None
    low, high = area_range
    gt_ignore = gts["iscrowd"] | (gts["area"] < low) | (gts["area"] > high)
    gt_order = np.argsort(gt_ignore, kind="stable")
    det_order = np.argsort(-dets["scores"], kind="stable")[:max_det]
    det_boxes = dets["boxes"][det_order]
    ious = box_iou_xywh(det_boxes, gts["boxes"][gt_order], gts["iscrowd"][gt_order])
    det_area = det_boxes[:, 2] * det_boxes[:, 3]
    matched, ignore = match_image(ious, gt_ignore[gt_order], gts["iscrowd"][gt_order],
                                  (det_area < low) | (det_area > high))
    return {"scores": dets["scores"][det_order], "matched": matched, "ignore": ignore,
            "gt_ignore": gt_ignore}


def precision_recall(images, max_det):
    """COCOeval.accumulate for one category, area range and max detections.

    Returns ``(precision (T, 101), recall (T,))``, or None when no ground truth counts.
    """
    num_counted = sum(int(np.count_nonzero(~e["gt_ignore"])) for e in images)
    if num_counted == 0:
        return None
    scores = np.concatenate([e["scores"][:max_det] for e in images])
    order = np.argsort(-scores, kind="stable")
    matched = np.concatenate([e["matched"][:, :max_det] for e in images], axis=1)[:, order]
    ignore = np.concatenate([e["ignore"][:, :max_det] for e in images], axis=1)[:, order]
    true_pos = np.cumsum(matched & ~ignore, axis=1, dtype=np.float64)
    false_pos = np.cumsum(~matched & ~ignore, axis=1, dtype=np.float64)
    thresholds = len(IOU_THRESHOLDS)
    precision = np.zeros((thresholds, len(RECALL_THRESHOLDS)))
    recall = np.zeros(thresholds)
    for t in range(thresholds):
        if true_pos.shape[1] == 0:
            continue
        rec = true_pos[t] / num_counted
        prec = true_pos[t] / (true_pos[t] + false_pos[t] + np.spacing(1))
        recall[t] = rec[-1]
        # the precision envelope: the best precision at this recall or beyond
        prec = np.maximum.accumulate(prec[::-1])[::-1]
        at = np.searchsorted(rec, RECALL_THRESHOLDS, side="left")
        inside = at < len(prec)
        precision[t, :np.count_nonzero(inside)] = prec[at[inside]]
    return precision, recall


def _accumulate_numpy(predictions, ground_truth):
    categories = _categories(predictions, ground_truth)
    shape = (len(IOU_THRESHOLDS), len(categories), len(AREA_RANGES), len(MAX_DETS))
    precision = -np.ones(shape[:1] + (len(RECALL_THRESHOLDS),) + shape[1:])
    recall = -np.ones(shape)
    for k, label in enumerate(categories):
        per_image = [(_select(d, label), _select(g, label))
                     for d, g in zip(predictions, ground_truth)]
        for a, area_range in enumerate(AREA_RANGES):
            images = [_evaluate_image(d, g, area_range, MAX_DETS[-1]) for d, g in per_image]
            images = [e for e in images if e is not None]
            if not images:
                continue
            for m, max_det in enumerate(MAX_DETS):
                result = precision_recall(images, max_det)
                if result is not None:
                    precision[:, :, k, a, m], recall[:, k, a, m] = result
    return precision, recall


def _select(arrays, label):
    keep = arrays["labels"] == label
    return {name: value[keep] for name, value in arrays.items()}


def summarize(precision, recall):
    """The twelve numbers of COCOeval.summarize() from its precision and recall arrays."""
    def mean(values):
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    every, last = 0, len(MAX_DETS) - 1
    stats = [mean(precision[:, :, :, every, last]), mean(precision[0, :, :, every, last]),
             mean(precision[5, :, :, every, last])]
    stats += [mean(precision[:, :, :, a, last]) for a in (1, 2, 3)]
    stats += [mean(recall[:, :, every, m]) for m in range(len(MAX_DETS))]
    stats += [mean(recall[:, :, a, last]) for a in (1, 2, 3)]
    return dict(zip(COCO_METRICS, stats))


# --------------------------------------------------------------------- pycocotools

def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        return None
    return COCO, COCOeval


def _accumulate_pycocotools(predictions, ground_truth):
    COCO, COCOeval = _pycocotools()
    categories = _categories(predictions, ground_truth)
    annotations, results = [], []
    for image, (dets, gts) in enumerate(zip(predictions, ground_truth), start=1):
        for box, label, crowd, area in zip(gts["boxes"], gts["labels"], gts["iscrowd"],
                                           gts["area"]):
            annotations.append({"id": len(annotations) + 1, "image_id": image,
                                "category_id": int(label), "bbox": [float(v) for v in box],
                                "area": float(area), "iscrowd": int(crowd)})
        for box, score, label in zip(dets["boxes"], dets["scores"], dets["labels"]):
            results.append({"image_id": image, "category_id": int(label),
                            "bbox": [float(v) for v in box], "score": float(score)})
    dataset = {"images": [{"id": i} for i in range(1, len(ground_truth) + 1)],
               "annotations": annotations,
               "categories": [{"id": int(label)} for label in categories]}
    with contextlib.redirect_stdout(io.StringIO()):   # COCO prints its progress
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else _empty_results(COCO, dataset)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"], evaluator.eval["recall"]


def _empty_results(COCO, dataset):
    """loadRes refuses an empty list; an index with the images and no annotations."""
    coco_dt = COCO()
    coco_dt.dataset = dict(dataset, annotations=[])
    coco_dt.createIndex()
    return coco_dt
