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

Each is also compiled (``fastdl.deploy.compile``: plans up to the NMS) and timed on the
same test images; its AP is reported beside the eager one's.

Reported, by fastdl.detection.evaluate_coco: COCO AP (mean over IoU 0.50:0.05:0.95),
AP50, and AP_small. Every object here is below COCO's "small" area (32²), where COCO's
AP_small is its AP; AP_small here is COCO's rule for objects of side <= 6 px (area <= 36)
instead (see ``evaluate``).
"""
import argparse
import sys
import time

import numpy as np

import fastdl
from fastdl import deploy, detection, optim
from fastdl.data import make_shapes
from fastdl.models import cascade_detector

VARIANTS = {
    "single-scale": dict(levels=(2,), anchor_sizes=((4, 6, 8, 12, 16, 24),),
                         stage_ious=(0.5,)),
    "FPN": dict(stage_ious=(0.5,)),
    "FPN + cascade": dict(stage_ious=(0.5, 0.6, 0.7)),
}


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
    """Detections of ``model`` (eval mode) or of its compiled form (``deploy.compile``)."""
    if hasattr(model, "eval"):
        model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        for output in model(images[start:start + batch_size]):
            results.append({key: value.numpy() for key, value in output.items()})
    return results


def evaluate(detections, truths):
    """COCO AP and AP50 (fastdl.detection.evaluate_coco), and AP of the objects of side
    <= 6 px: every object here is below COCO's "small" area (32²), so COCO's AP_small
    equals its AP; scaling all boxes by 32/6 keeps every IoU and maps area 6² to 32², so
    COCO's small range then holds exactly the objects of side <= 6 px."""
    targets = as_targets(truths)
    coco = detection.evaluate_coco(detections, targets)
    scale = 32.0 / 6.0 * (1 - 1e-9)    # side 6 lands just inside, not on, the bound
    scaled = detection.evaluate_coco(
        [dict(d, boxes=d["boxes"].astype(np.float64) * scale) for d in detections],
        [dict(t, boxes=t["boxes"] * scale) for t in targets])
    return {"AP": coco["AP"], "AP50": coco["AP50"], "AP_small": scaled["AP_small"],
            "AP_coco_small": coco["AP_small"]}


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
        inferred = time.perf_counter()
        # inference up to the NMS as plans: the same detections, less time
        compiled = deploy.compile(model, test_images[:1])
        began_plan = time.perf_counter()
        planned = evaluate(detect(compiled, test_images), test_boxes)
        rows.append((name, scores, trained - began, inferred - trained,
                     time.perf_counter() - began_plan, planned["AP"]))
    print("\n%-14s %6s %6s %9s %9s %9s %9s %8s" % ("variant", "AP", "AP50", "AP_small",
                                                   "train s", "infer s", "plan s", "plan AP"))
    print("(AP_small: objects of side <= 6 px; all objects are COCO-small)")
    for name, scores, train_s, infer_s, plan_s, plan_ap in rows:
        print("%-14s %6.3f %6.3f %9.3f %9.1f %9.2f %9.2f %8.3f" % (
            name, scores["AP"], scores["AP50"], scores["AP_small"], train_s, infer_s, plan_s,
            plan_ap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
