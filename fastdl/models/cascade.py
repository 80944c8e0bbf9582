"""A two-stage detector on a ResNet + FPN: an anchor head proposes boxes, and a cascade of
box heads trained at rising IoU thresholds refines them stage by stage (Cascade R-CNN,
Cai and Vasconcelos 2018).

- Anchor head (RPN): a shared 3×3 conv, per-anchor objectness logits and box deltas over
  the chosen FPN levels. Anchors are matched to the ground truth by IoU
  (:func:`fastdl.detection.match_anchors`); objectness is trained with the sigmoid focal
  loss, deltas with a smooth L1 loss on the positive anchors.
- Proposals: the top-scoring anchors of each level, decoded, clipped, and kept by NMS
  per level (:func:`fastdl.detection.batched_nms`).
- Box heads: RoI Align from the FPN (:class:`fastdl.ops.MultiScaleRoIAlign`), a two-layer
  MLP, class logits (background = 0) and class-agnostic box deltas. Stage ``t`` is trained
  on stage ``t − 1``'s refined boxes with targets matched at its own IoU threshold
  (0.5 → 0.6 → 0.7 by default), and with box-coding weights that tighten as the boxes do.
- Inference: the stages' class probabilities are averaged, the last stage's boxes kept,
  and per-class NMS gives ``boxes``, ``scores`` and ``labels`` per image.

``model(images, targets)`` in training mode returns a dict of losses; in eval mode
``model(images)`` returns one dict of detections per image (torchvision's convention).

``fastdl.deploy.compile(model, example)`` gives compiled inference up to the NMS: one
plan for the backbone, FPN and anchor head (:class:`DenseStage`, several outputs), one
for each box head; proposals, RoI Align and the NMS stay NumPy. Its detections equal
the eager model's.
"""
import numpy as np

import fastdl
from fastdl import detection, nn
from fastdl import functional as F
from fastdl.grad_mode import no_grad
from fastdl.models.fcn import ResNetFPN
from fastdl.ops import MultiScaleRoIAlign

__all__ = ["CascadeDetector", "DenseStage", "cascade_detector",
           "stage_targets", "STAGE_WEIGHTS"]

#: box-coding weights of the three stages (Cascade R-CNN's), tighter as boxes improve
STAGE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
#: the anchor head codes its deltas unweighted
ANCHOR_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def _array(value, dtype=None):
    array = np.asarray(getattr(value, "array", value))
    return array if dtype is None else array.astype(dtype, copy=False)


def stage_targets(proposals, gt_boxes, gt_labels, iou_threshold, weights=STAGE_WEIGHTS[0]):
    """Targets of one box-head stage: each proposal takes the class of its best-matching
    ground-truth box when their IoU reaches ``iou_threshold``, else background (0).

    Parameters
    ----------
    proposals : (K, 4) boxes
    gt_boxes : (G, 4) boxes
    gt_labels : (G,) int classes, 1 and up
    iou_threshold : float, the stage's IoU threshold
    weights : the stage's box-coding weights

    Returns
    -------
    labels : int64 (K,), 0 for background
    deltas : (K, 4) regression targets (zero on background rows)
    iou : float64 (K,), each proposal's best IoU with the ground truth (0 without any)
    """
    proposals = _array(proposals, np.float64).reshape(-1, 4)
    gt_boxes = _array(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = _array(gt_labels).astype(np.int64).reshape(-1)
    labels = np.zeros(len(proposals), dtype=np.int64)
    deltas = np.zeros((len(proposals), 4))
    if len(gt_boxes) == 0 or len(proposals) == 0:
        return labels, deltas, np.zeros(len(proposals))
    iou = detection.box_iou(proposals, gt_boxes)
    matched = iou.argmax(axis=1)
    best = iou[np.arange(len(proposals)), matched]
    positive = best >= iou_threshold
    labels[positive] = gt_labels[matched[positive]]
    if positive.any():
        deltas[positive] = detection.encode_boxes(gt_boxes[matched[positive]],
                                                  proposals[positive], weights)
    return labels, deltas, best


class AnchorHead(nn.Module):
    """RPN head shared by the levels: objectness ``(N, H·W·A)`` and deltas ``(N, H·W·A, 4)``
    per level, rows in :func:`fastdl.detection.make_anchors`' order."""

    def __init__(self, channels, anchors_per_cell):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors_per_cell, 1)
        self.deltas = nn.Conv2d(channels, 4 * anchors_per_cell, 1)
        # RetinaNet's prior: every anchor starts at objectness 0.01, so the focal loss of
        # the many background anchors does not swamp the first steps
        nn.init.constant_(self.objectness.bias, -float(np.log(99.0)))

    def forward(self, levels):
        outputs = []
        for level in levels:
            n = level.shape[0]
            hidden = F.relu(self.conv(level))
            scores = self.objectness(hidden).permute(0, 2, 3, 1).reshape(n, -1)
            deltas = self.deltas(hidden).permute(0, 2, 3, 1).reshape(n, -1, 4)
            outputs.append((scores, deltas))
        return outputs


class DenseStage(nn.Module):
    """Backbone, FPN and anchor head: the convolutional part of the detector, which an
    inference plan runs.

    ``forward(images (N, C, H, W))`` returns a tuple: the used FPN levels
    ``(N, channels, H_l, W_l)``, then for each level its objectness ``(N, H_l·W_l·A)``
    and its deltas ``(N, H_l·W_l·A, 4)``.
    """

    def __init__(self, body, anchor_head, levels):
        super().__init__()
        self.body, self.anchor_head, self.levels = body, anchor_head, tuple(levels)

    def forward(self, images):
        pyramid = self.body(images)
        levels = [pyramid[level] for level in self.levels]
        outputs = self.anchor_head(levels)
        return tuple(levels) + tuple(t for pair in outputs for t in pair)


class BoxHead(nn.Module):
    """One cascade stage: pooled RoI features → two-layer MLP → class logits
    ``(K, num_classes + 1)`` and class-agnostic deltas ``(K, 4)``."""

    def __init__(self, in_features, hidden, num_classes):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes + 1)
        self.regressor = nn.Linear(hidden, 4)

    def forward(self, pooled):
        hidden = self.mlp(pooled.reshape(pooled.shape[0], -1))
        return self.classifier(hidden), self.regressor(hidden)


class CascadeDetector(nn.Module):
    """ResNet-FPN, an anchor head and a cascade of box heads (see the module docstring).

    Parameters
    ----------
    num_classes : int, object classes (background excluded)
    in_channels, width, channels, blocks_per_stage : the :class:`ResNetFPN` backbone
    levels : FPN levels used (0: stride 1, 1: stride 2, 2: stride 4); one level is a
        single-scale detector
    anchor_sizes : anchor sizes per used level (the same count per level)
    aspect_ratios : anchor aspect ratios (height / width)
    stage_ious : IoU threshold of each box-head stage; one entry is a plain two-stage
        detector, ``(0.5, 0.6, 0.7)`` the cascade
    roi_size, hidden : RoI Align output size and the box heads' width
    canonical_scale, canonical_level : the FPN level rule of the RoI pooling
    """

    def __init__(self, num_classes=2, in_channels=1, width=8, channels=16, blocks_per_stage=1,
                 levels=(0, 1, 2), anchor_sizes=((4, 6), (8, 12), (16, 24)),
                 aspect_ratios=(1.0,), stage_ious=(0.5, 0.6, 0.7), roi_size=5, hidden=64,
                 canonical_scale=8, canonical_level=1):
        super().__init__()
        self._check(levels, anchor_sizes, stage_ious)
        self.num_classes, self.levels = int(num_classes), tuple(levels)
        self.anchor_sizes = tuple(tuple(np.atleast_1d(s).tolist()) for s in anchor_sizes)
        self.aspect_ratios, self.stage_ious = tuple(aspect_ratios), tuple(stage_ious)
        self.body = ResNetFPN(blocks_per_stage, width, in_channels, channels)
        self.body.backbone.fc = nn.Identity()     # the backbone's classifier is unused here
        self.strides = tuple(self.body.strides[level] for level in self.levels)
        per_cell = len(self.anchor_sizes[0]) * len(self.aspect_ratios)
        self.anchor_head = AnchorHead(channels, per_cell)
        self.roi_pool = MultiScaleRoIAlign([str(level) for level in self.levels], roi_size, 2,
                                           canonical_scale, canonical_level)
        self.box_heads = nn.ModuleList([BoxHead(channels * roi_size * roi_size, hidden,
                                                num_classes) for _ in self.stage_ious])
        self.stage_loss_weights = (1.0, 0.5, 0.25)[:len(self.stage_ious)]
        # anchor matching, proposals and post-processing (torchvision's names)
        self.rpn_pos_iou, self.rpn_neg_iou = 0.5, 0.3
        self.pre_nms_top_n, self.rpn_nms_thresh = 200, 0.7
        self.post_nms_top_n = {"training": 64, "testing": 50}
        self.box_score_thresh, self.box_nms_thresh, self.detections_per_img = 0.05, 0.5, 100

    @staticmethod
    def _check(levels, anchor_sizes, stage_ious):
        if not levels or any(level not in (0, 1, 2) for level in levels):
            raise ValueError("CascadeDetector: levels must be a non-empty subset of (0, 1, 2),"
                             " got %r" % (levels,))
        if len(anchor_sizes) != len(levels):
            raise ValueError("CascadeDetector: need one anchor_sizes entry per level, got %d "
                             "for %d levels" % (len(anchor_sizes), len(levels)))
        if len({len(np.atleast_1d(s)) for s in anchor_sizes}) != 1:
            raise ValueError("CascadeDetector: every level needs the same number of anchor "
                             "sizes (the anchor head is shared)")
        if not stage_ious or len(stage_ious) > len(STAGE_WEIGHTS) or any(
                not 0 < u < 1 for u in stage_ious):
            raise ValueError("CascadeDetector: stage_ious needs 1 to %d thresholds in (0, 1),"
                             " got %r" % (len(STAGE_WEIGHTS), stage_ious))

    # ------------------------------------------------------------------ pieces
    def dense_stage(self):
        """The :class:`DenseStage` of this detector (sharing its modules)."""
        return DenseStage(self.body, self.anchor_head, self.levels)

    def anchors(self, image_size):
        """The anchors of every used level, for images of ``(H, W)``."""
        height, width = image_size
        sizes = [(-(-height // s), -(-width // s)) for s in self.strides]
        return detection.make_anchors(sizes, self.strides, self.anchor_sizes,
                                      self.aspect_ratios)

    def features(self, images):
        """The used FPN levels, by name (``"0"``, ``"1"``, ``"2"``)."""
        pyramid = self.body(images)
        return {str(level): pyramid[level] for level in self.levels}

    def _rpn_loss(self, outputs, anchors, targets):
        scores = fastdl.cat([s for s, _ in outputs], dim=1)
        deltas = fastdl.cat([d for _, d in outputs], dim=1)
        all_anchors = np.concatenate(anchors)
        labels, wanted = [], []
        for target in targets:
            label, matched = detection.match_anchors(all_anchors, target["boxes"],
                                                     self.rpn_pos_iou, self.rpn_neg_iou)
            goal = np.zeros((len(all_anchors), 4))
            positive = label == 1
            if positive.any():
                goal[positive] = detection.encode_boxes(target["boxes"][matched[positive]],
                                                        all_anchors[positive], ANCHOR_WEIGHTS)
            labels.append(label)
            wanted.append(goal)
        labels, wanted = np.concatenate(labels), np.concatenate(wanted)
        keep, positive = np.flatnonzero(labels >= 0), np.flatnonzero(labels == 1)
        count = max(1, len(positive))
        flat = scores.reshape(-1)[keep]
        objectness = F.sigmoid_focal_loss(flat, (labels[keep] == 1).astype(flat.dtype),
                                          reduction="sum") / count
        box = deltas.reshape(-1, 4)[positive]
        regression = F.smooth_l1_loss(box, wanted[positive].astype(box.dtype), beta=1 / 9,
                                      reduction="sum") / count
        return objectness, regression

    def proposals(self, outputs, anchors, image_size):
        """Per image: the top anchors of each level decoded, clipped and kept by NMS per
        level, at most ``post_nms_top_n`` boxes (no gradient)."""
        mode = "training" if self.training else "testing"
        height, width = image_size
        batch = outputs[0][0].shape[0]
        result = []
        for image in range(batch):
            boxes, scores, level_ids = [], [], []
            for level, ((score, delta), anchor) in enumerate(zip(outputs, anchors)):
                score = _array(score)[image].astype(np.float64)
                top = np.argsort(-score, kind="stable")[:self.pre_nms_top_n]
                decoded = detection.decode_boxes(_array(delta)[image][top], anchor[top],
                                                 ANCHOR_WEIGHTS)
                boxes.append(decoded)
                scores.append(score[top])
                level_ids.append(np.full(len(top), level, dtype=np.int64))
            boxes = _clip(np.concatenate(boxes), height, width)
            scores, level_ids = np.concatenate(scores), np.concatenate(level_ids)
            sizable = np.flatnonzero(((boxes[:, 2] - boxes[:, 0]) >= 1e-2)
                                     & ((boxes[:, 3] - boxes[:, 1]) >= 1e-2))
            kept = detection.batched_nms(boxes[sizable], scores[sizable], level_ids[sizable],
                                         self.rpn_nms_thresh)
            result.append(boxes[sizable][kept[:self.post_nms_top_n[mode]]])
        return result

    def _run_stage(self, stage, features, boxes, image_size, head=None):
        pooled = self.roi_pool(features, [b.astype(np.float32) for b in boxes],
                               [image_size] * len(boxes))
        if head is None:
            logits, deltas = self.box_heads[stage](pooled)
        else:      # a plan of the box head, on the pooled features
            logits, deltas = (fastdl.tensor(a) for a in head(_array(pooled)))
        flat = np.concatenate(boxes)
        refined = _clip(detection.decode_boxes(_array(deltas).astype(np.float64), flat,
                                               STAGE_WEIGHTS[stage]), *image_size)
        splits = np.cumsum([len(b) for b in boxes])[:-1]
        return logits, deltas, np.split(refined, splits)

    def _stage_loss(self, stage, logits, deltas, boxes, targets):
        labels, wanted = [], []
        for proposal, target in zip(boxes, targets):
            label, goal, _ = stage_targets(proposal, target["boxes"], target["labels"],
                                           self.stage_ious[stage], STAGE_WEIGHTS[stage])
            labels.append(label)
            wanted.append(goal)
        labels, wanted = np.concatenate(labels), np.concatenate(wanted)
        classification = F.cross_entropy(logits, labels)
        positive = np.flatnonzero(labels > 0)
        regression = F.smooth_l1_loss(deltas[positive], wanted[positive].astype(deltas.dtype),
                                      reduction="sum") / max(1, len(labels))
        return classification, regression

    # ------------------------------------------------------------------ forward
    def forward(self, images, targets=None):
        images = images if isinstance(images, fastdl.Tensor) else fastdl.Tensor(images)
        image_size = tuple(int(s) for s in images.shape[-2:])
        if self.training:
            if targets is None:
                raise ValueError("CascadeDetector: training mode needs targets (a list of "
                                 "dicts with 'boxes' and 'labels'); call .eval() to detect")
            return self._losses(images, _targets(targets, images.shape[0]), image_size)
        return self.detect(images, image_size)

    def _losses(self, images, targets, image_size):
        features = self.features(images)
        outputs = self.anchor_head(list(features.values()))
        anchors = self.anchors(image_size)
        objectness, rpn_box = self._rpn_loss(outputs, anchors, targets)
        losses = {"loss_objectness": objectness, "loss_rpn_box_reg": rpn_box}
        boxes = self.proposals(outputs, anchors, image_size)
        for stage, weight in enumerate(self.stage_loss_weights):
            boxes = [np.concatenate([b, t["boxes"]]) for b, t in zip(boxes, targets)]
            logits, deltas, refined = self._run_stage(stage, features, boxes, image_size)
            classification, regression = self._stage_loss(stage, logits, deltas, boxes,
                                                           targets)
            losses["loss_classifier_%d" % stage] = classification * weight
            losses["loss_box_reg_%d" % stage] = regression * weight
            boxes = refined
        return losses

    def detect(self, images, image_size, dense=None, heads=None):
        """Detections per image of ``images (N, C, H, W)``, one dict each (``boxes``,
        ``scores``, ``labels``). ``dense`` and ``heads``: callables standing in for
        :meth:`dense_stage` and each box head (the plans ``fastdl.deploy.compile``
        makes), else the modules run eagerly."""
        with no_grad():
            if dense is None:
                results = self.dense_stage()(images)
            else:
                results = tuple(fastdl.tensor(a) for a in dense(_array(images)))
            count = len(self.levels)
            features = {str(level): result for level, result in zip(self.levels,
                                                                     results[:count])}
            outputs = list(zip(results[count::2], results[count + 1::2]))
            boxes = self.proposals(outputs, self.anchors(image_size), image_size)
            probabilities = 0.0
            for stage in range(len(self.box_heads)):
                logits, _, refined = self._run_stage(stage, features, boxes, image_size,
                                                     None if heads is None else heads[stage])
                probabilities = probabilities + _array(F.softmax(logits, dim=1))
                if stage < len(self.box_heads) - 1:
                    boxes = refined
        probabilities = probabilities / len(self.box_heads)
        splits = np.cumsum([len(b) for b in refined])[:-1]
        return [self._postprocess(b, p) for b, p in zip(refined,
                                                         np.split(probabilities, splits))]

    def _postprocess(self, boxes, probabilities):
        rows, classes = np.nonzero(probabilities[:, 1:] > self.box_score_thresh)
        scores = probabilities[rows, classes + 1].astype(np.float64)
        boxes = boxes[rows]
        kept = detection.batched_nms(boxes, scores, classes, self.box_nms_thresh)
        kept = kept[:self.detections_per_img]
        return {"boxes": fastdl.tensor(boxes[kept].astype(np.float32)),
                "scores": fastdl.tensor(scores[kept].astype(np.float32)),
                "labels": fastdl.tensor((classes[kept] + 1).astype(np.int64))}


def _clip(boxes, height, width):
    boxes = boxes.copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def _targets(targets, batch):
    if len(targets) != batch:
        raise ValueError("CascadeDetector: need one target per image, got %d for %d images"
                         % (len(targets), batch))
    result = []
    for target in targets:
        boxes = _array(target["boxes"], np.float64).reshape(-1, 4)
        labels = _array(target["labels"]).astype(np.int64).reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError("CascadeDetector: a target has %d boxes and %d labels"
                             % (len(boxes), len(labels)))
        result.append({"boxes": boxes, "labels": labels})
    return result


def cascade_detector(num_classes=2, in_channels=1, stage_ious=(0.5, 0.6, 0.7), **options):
    """A :class:`CascadeDetector`; ``stage_ious=(0.5,)`` is a plain FPN two-stage detector,
    ``levels=(2,)`` with all anchor sizes on that level a single-scale one."""
    return CascadeDetector(num_classes=num_classes, in_channels=in_channels,
                           stage_ious=stage_ious, **options)
