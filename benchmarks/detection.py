"""box_iou (4,000 x 4,000) and NMS (10,000 boxes): fastdl vs vectorised NumPy.

    python benchmarks/detection.py
"""
import time

import numpy as np

from fastdl import detection


def numpy_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2])
                    - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3])
                     - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def numpy_nms(boxes, scores, threshold):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        overlap = numpy_iou(boxes[[i]], boxes[order[1:]])[0]
        order = order[1:][overlap <= threshold]
    return np.array(keep)


def median_time(function, repeats=5):
    function()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(10_000, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 40, size=(10_000, 2))], axis=1)
    scores = rng.uniform(size=10_000).astype(np.float32)
    a, b = boxes[:4000], boxes[4000:8000]
    assert np.allclose(detection.box_iou(a, b), numpy_iou(a, b), atol=1e-6)
    assert np.array_equal(detection.nms(boxes, scores, 0.5), numpy_nms(boxes, scores, 0.5))
    rows = [("box_iou 4000x4000", median_time(lambda: detection.box_iou(a, b)),
             median_time(lambda: numpy_iou(a, b))),
            ("nms 10000 boxes @0.5", median_time(lambda: detection.nms(boxes, scores, 0.5)),
             median_time(lambda: numpy_nms(boxes, scores, 0.5), 3))]
    print("%-22s %10s %10s %7s" % ("case", "fastdl ms", "numpy ms", "ratio"))
    for name, ours, theirs in rows:
        print("%-22s %10.2f %10.2f %7.3f" % (name, ours * 1e3, theirs * 1e3, ours / theirs))


if __name__ == "__main__":
    main()
