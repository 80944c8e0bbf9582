"""NumPy references of torchvision.ops' published formulas (boxes, RoI Align, RoI pooling,
sigmoid focal loss), written with explicit loops and never calling fastdl."""
import math

import numpy as np


def box_parts(a, b):
    """Per pair of single boxes: intersection, union, enclosing area, diagonal^2, centre d^2,
    IoU (0 for a zero union)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    centre = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2
                                                            - (b[1] + b[3]) / 2) ** 2
    return inter, union, cw * ch, cw ** 2 + ch ** 2, centre


def _div(n, d):
    return n / d if d != 0 else 0.0


def giou(a, b, eps=0.0):
    inter, union, enclosing, _, _ = box_parts(a, b)
    return _div(inter, union + eps) - _div(enclosing - union, enclosing + eps)


def diou(a, b, eps=1e-7):
    inter, union, _, diagonal, centre = box_parts(a, b)
    return _div(inter, union + eps) - _div(centre, diagonal + eps)


def ciou(a, b, eps=1e-7):
    inter, union, _, _, _ = box_parts(a, b)
    iou = _div(inter, union + eps)
    angle_a = math.atan2(a[2] - a[0], a[3] - a[1])
    angle_b = math.atan2(b[2] - b[0], b[3] - b[1])
    v = 4 / math.pi ** 2 * (angle_a - angle_b) ** 2
    return diou(a, b, eps) - _div(v, 1 - iou + v + eps) * v


def pairwise(fn, boxes1, boxes2, **kwargs):
    return np.array([[fn(a, b, **kwargs) for b in boxes2] for a in boxes1]).reshape(
        len(boxes1), len(boxes2))


def _bilinear(plane, y, x):
    height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
            + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])


def roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's roi_align, one sample at a time."""
    ph_count, pw_count = output_size
    out = np.zeros((len(rois), features.shape[1], ph_count, pw_count))
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois.astype(np.float64)):
        x1, y1 = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        width = roi[3] * spatial_scale - offset - x1
        height = roi[4] * spatial_scale - offset - y1
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        bin_h, bin_w = height / ph_count, width / pw_count
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(height / ph_count)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(width / pw_count)
        for c in range(features.shape[1]):
            plane = features[int(roi[0]), c].astype(np.float64)
            for ph in range(ph_count):
                for pw in range(pw_count):
                    total = 0.0
                    for iy in range(grid_h):
                        for ix in range(grid_w):
                            y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += _bilinear(plane, y, x)
                    out[k, c, ph, pw] = total / max(grid_h * grid_w, 1)
    return out


def _c_round(value):
    return math.floor(value + 0.5) if value >= 0 else -math.floor(0.5 - value)


def roi_pool(features, rois, output_size, spatial_scale):
    """torchvision's roi_pool: rounded corners, floor/ceil bins, max (0 when empty)."""
    ph_count, pw_count = output_size
    height, width = features.shape[2:]
    out = np.zeros((len(rois), features.shape[1], ph_count, pw_count))
    for k, roi in enumerate(rois.astype(np.float64)):
        x1, y1, x2, y2 = (_c_round(v * spatial_scale) for v in roi[1:])
        bin_h = max(y2 - y1 + 1, 1) / ph_count
        bin_w = max(x2 - x1 + 1, 1) / pw_count
        for ph in range(ph_count):
            h0 = min(max(math.floor(ph * bin_h) + y1, 0), height)
            h1 = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
            for pw in range(pw_count):
                w0 = min(max(math.floor(pw * bin_w) + x1, 0), width)
                w1 = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
                if h1 > h0 and w1 > w0:
                    window = features[int(roi[0]), :, h0:h1, w0:w1]
                    out[k, :, ph, pw] = window.reshape(features.shape[1], -1).max(axis=1)
    return out


def sigmoid_focal_loss(x, t, alpha, gamma):
    """torchvision's formula, elementwise, in float64 (moderate logits only)."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss
