"""Box kernels for small-object detection: pairwise IoU and greedy NMS (Numba).

Boxes are ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1``. A pair whose
union has zero area (two degenerate boxes) has IoU 0, never NaN. NMS visits
boxes by decreasing score (a stable sort, so ties keep the lower index first)
and suppresses every later box whose IoU with a kept one exceeds the threshold.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["box_iou", "nms"]


def _box_iou(a, b, out):
    for i in prange(a.shape[0]):
        area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
        for j in range(b.shape[0]):
            width = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
            height = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
            inter = width * height if width > 0 and height > 0 else 0.0
            union = area_a + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0


def _nms(boxes, order, threshold, keep):
    suppressed = np.zeros(boxes.shape[0], dtype=np.bool_)
    count = 0
    for position in range(order.shape[0]):
        i = order[position]
        if suppressed[i]:
            continue
        keep[count] = i
        count += 1
        area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        for later in range(position + 1, order.shape[0]):
            j = order[later]
            if suppressed[j]:
                continue
            width = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            height = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if width <= 0 or height <= 0:
                continue
            inter = width * height
            union = area_i + (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - inter
            if union > 0 and inter / union > threshold:
                suppressed[j] = True
    return count


_BOX_IOU = jit(_box_iou, parallel=True)
_NMS = jit(_nms)


def box_iou(a, b):
    """Pairwise IoU of ``a (N, 4)`` and ``b (M, 4)`` → ``(N, M)`` in their dtype."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.result_type(a.dtype, b.dtype))
    if out.size:
        _BOX_IOU(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def nms(boxes, scores, threshold):
    """Indices (int64) of the boxes kept by greedy NMS, by decreasing score."""
    order = np.argsort(-scores, kind="stable").astype(np.int64)
    keep = np.empty(boxes.shape[0], dtype=np.int64)
    count = _NMS(np.ascontiguousarray(boxes), order, float(threshold), keep)
    return keep[:count]
