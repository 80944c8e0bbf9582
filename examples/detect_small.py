"""Small-object detection on generated scenes: FPN anchors, matching, NMS; recall at IoU 0.5.

    python examples/detect_small.py [--epochs 15]

A ResNet-8 + FPN backbone feeds a shared head (objectness by focal loss,
box deltas by MSE on positive anchors) at three levels. The script trains it
twice — with and without the FPN's top-down path — and reports the recall of
small objects (side <= 6 px) and of all objects at IoU 0.5 after NMS.
"""
import argparse
import sys
import time

import numpy as np

import fastdl
from fastdl import detection, nn, optim
from fastdl import functional as F
from fastdl.data import make_shapes
from fastdl.models import resnet_fpn

SIZES = [(6,), (12,), (24,)]      # anchor sizes per level (strides 1, 2, 4)


class Detector(nn.Module):
    def __init__(self, top_down, width=8, channels=16):
        super().__init__()
        self.body = resnet_fpn(1, width, in_channels=1, out_channels=channels,
                               top_down=top_down)
        self.objectness = nn.Conv2d(channels, 1, 3, padding=1)
        self.deltas = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, x):
        outputs = []
        for level in self.body(x):
            n = level.shape[0]
            scores = self.objectness(level).permute(0, 2, 3, 1).reshape(n, -1)
            deltas = self.deltas(level).permute(0, 2, 3, 1).reshape(n, -1, 4)
            outputs.append((scores, deltas))
        return outputs


def anchors_for(size):
    feature_sizes = [(-(-size // s), -(-size // s)) for s in (1, 2, 4)]
    return detection.make_anchors(feature_sizes, [1, 2, 4], SIZES, (1.0,))


def targets(boxes, anchors):
    all_anchors = np.concatenate(anchors)
    labels, matched = detection.match_anchors(all_anchors, boxes[:, :4], 0.5, 0.3)
    deltas = np.zeros((len(all_anchors), 4))
    positive = labels == 1
    if positive.any():
        deltas[positive] = detection.encode_boxes(boxes[matched[positive], :4],
                                                  all_anchors[positive], (1, 1, 1, 1))
    return labels, deltas


def train(top_down, images, boxes, epochs, seed):
    fastdl.manual_seed(seed)
    model = Detector(top_down)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    anchors = anchors_for(images.shape[-1])
    cached = [targets(b, anchors) for b in boxes]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(images))
        for start in range(0, len(order), 16):
            batch = order[start:start + 16]
            optimizer.zero_grad()
            outputs = model(fastdl.Tensor(images[batch]))
            scores = fastdl.cat([s for s, _ in outputs], dim=1).reshape(-1, 1)
            deltas = fastdl.cat([d for _, d in outputs], dim=1).reshape(-1, 4)
            labels = np.concatenate([cached[i][0] for i in batch])
            wanted = np.concatenate([cached[i][1] for i in batch])
            keep = np.flatnonzero(labels >= 0)
            # objectness as a 2-class focal loss on [0, score] logits
            logits = fastdl.cat([scores[keep] * 0.0, scores[keep]], dim=1)
            loss = F.focal_loss(logits, labels[keep], alpha=np.array([0.25, 0.75]),
                                reduction="sum") / max(1, int((labels == 1).sum()))
            positive = np.flatnonzero(labels == 1)
            if len(positive):
                loss = loss + F.mse_loss(deltas[positive], wanted[positive])
            loss.backward()
            optimizer.step()
    return model


def recall(model, images, boxes, small=6, threshold=0.5):
    anchors = np.concatenate(anchors_for(images.shape[-1]))
    model.eval()
    found = {"small": [0, 0], "all": [0, 0]}
    with fastdl.no_grad():
        outputs = model(fastdl.Tensor(images))
    scores = np.concatenate([s.array for s, _ in outputs], axis=1)
    deltas = np.concatenate([d.array for _, d in outputs], axis=1)
    for i, truth in enumerate(boxes):
        candidates = np.flatnonzero(scores[i] > 0.0)
        predicted = detection.decode_boxes(deltas[i][candidates], anchors[candidates])
        predicted = np.clip(predicted, 0, images.shape[-1])
        kept = predicted[detection.nms(predicted, scores[i][candidates], 0.3)][:20]
        iou = detection.box_iou(truth[:, :4], kept) if len(kept) else np.zeros((len(truth),
                                                                                1))
        hit = iou.max(axis=1) >= threshold
        side = truth[:, 2] - truth[:, 0]
        for key, members in (("small", side <= small), ("all", side > 0)):
            found[key][0] += int(hit[members].sum())
            found[key][1] += int(members.sum())
    return {key: hits / max(total, 1) for key, (hits, total) in found.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    images, _, boxes = make_shapes(384, 32, max_objects=3, min_size=3, max_size=12,
                                   seed=args.seed)
    test_images, _, test_boxes = make_shapes(96, 32, max_objects=3, min_size=3, max_size=12,
                                             seed=args.seed + 1000)
    for top_down in (True, False):
        model = train(top_down, images, boxes, args.epochs, args.seed)
        result = recall(model, test_images, test_boxes)
        print("FPN %-16s recall@0.5: small objects %.3f, all objects %.3f"
              % ("with top-down" if top_down else "without top-down", result["small"],
                 result["all"]))
    print("(%.0f s)" % (time.perf_counter() - began))
    return 0


if __name__ == "__main__":
    sys.exit(main())
