"""Train an FCN to segment small squares and disks; report mean IoU on held-out scenes.

    python examples/segment_shapes.py [--epochs 12]

Per-pixel cross-entropy with class weights (foreground pixels are rare), or
focal loss with ``--focal``.
"""
import argparse
import sys
import time

import numpy as np

import fastdl
from fastdl import functional as F
from fastdl import optim
from fastdl.data import class_weights, make_shapes
from fastdl.models import fcn


def mean_iou(prediction, truth, classes):
    scores = []
    for c in range(classes):
        union = np.sum((prediction == c) | (truth == c))
        if union:
            scores.append(np.sum((prediction == c) & (truth == c)) / union)
    return float(np.mean(scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--focal", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    images, masks, _ = make_shapes(args.train, 32, seed=args.seed)
    test_images, test_masks, _ = make_shapes(128, 32, seed=args.seed + 1000)
    weight = np.sqrt(class_weights(masks.reshape(-1), 3))   # softened inverse frequency
    fastdl.manual_seed(args.seed)
    model = fcn(in_channels=1, num_classes=3, width=8, depth=2)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(images))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            logits = model(fastdl.Tensor(images[batch]))
            loss = (F.focal_loss(logits, masks[batch], alpha=weight, gamma=2.0) if args.focal
                    else F.cross_entropy(logits, masks[batch], weight=weight))
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    with fastdl.no_grad():
        prediction = model(fastdl.Tensor(test_images)).array.argmax(axis=1)
    score = mean_iou(prediction, test_masks, 3)
    print("mean IoU on %d held-out scenes: %.3f (%.0f s)" % (len(test_images), score,
                                                             time.perf_counter() - began))
    return 0 if score >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
