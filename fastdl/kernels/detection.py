"""Detection kernels (Numba): pairwise IoU, greedy NMS, RoI Align, RoI pooling and
the sigmoid focal loss.

Boxes are ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1``. A pair whose
union has zero area (two degenerate boxes) has IoU 0, never NaN. NMS visits
boxes by decreasing score (a stable sort, so ties keep the lower index first)
and suppresses every later box whose IoU with a kept one exceeds the threshold.

RoI Align and RoI pooling follow torchvision's CPU kernels exactly (sample
positions, bilinear clamping at the border, rounding of RoI pooling's corners
half away from zero, first maximum in row-major order). Regions are given as
``rois (K, 5)``: ``[batch_index, x1, y1, x2, y2]`` in input-image coordinates.
Forward runs in parallel over the RoIs. Backward scatters into the input
gradient in parallel over the ``(image, channel)`` planes, each plane visiting
the RoIs in index order, so it is race-free and bitwise the same at any thread
count.
"""
import math

import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["box_iou", "nms", "roi_align_forward", "roi_align_backward", "roi_pool_forward",
           "roi_pool_backward", "sigmoid_focal_loss_forward_backward"]


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


# ------------------------------------------------------------------------ RoI Align
def _roi_geometry(roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """(start_y, start_x, bin_h, bin_w, grid_h, grid_w) of one RoI (torchvision's)."""
    offset = 0.5 if aligned else 0.0
    start_x = roi[1] * spatial_scale - offset
    start_y = roi[2] * spatial_scale - offset
    roi_width = roi[3] * spatial_scale - offset - start_x
    roi_height = roi[4] * spatial_scale - offset - start_y
    if not aligned:   # the legacy form forces RoIs to be at least 1x1
        roi_width = max(roi_width, 1.0)
        roi_height = max(roi_height, 1.0)
    bin_h = roi_height / pooled_height
    bin_w = roi_width / pooled_width
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_height / pooled_height))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_width / pooled_width))
    return start_y, start_x, bin_h, bin_w, grid_h, grid_w


def _neighbours(v, size):
    """``(low, high, v)`` along one axis of a bilinear sample at ``v >= 0``: the two
    neighbouring indices, both the last one (and ``v`` on it) at or past the edge."""
    low = int(v)
    if low >= size - 1:
        return size - 1, size - 1, float(size - 1)
    return low, low + 1, v


_neighbours_inline = jit(_neighbours, inline="always")


def _bilinear(y, x, height, width):
    """Corner indices and weights of a bilinear sample; all weights 0 outside the map."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0
    y_low, y_high, y = _neighbours_inline(max(y, 0.0), height)
    x_low, x_high, x = _neighbours_inline(max(x, 0.0), width)
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    return y_low, y_high, x_low, x_high, hy * hx, hy * lx, ly * hx, ly * lx


_roi_geometry_inline = jit(_roi_geometry, inline="always")
_bilinear_inline = jit(_bilinear, inline="always")


def _roi_align_forward(features, rois, batch, spatial_scale, sampling_ratio, aligned, out):
    height, width = features.shape[2], features.shape[3]
    pooled_height, pooled_width = out.shape[2], out.shape[3]
    for k in prange(rois.shape[0]):
        start_y, start_x, bin_h, bin_w, grid_h, grid_w = _roi_geometry_inline(
            rois[k], spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
        count = max(grid_h * grid_w, 1)
        image = batch[k]
        for c in range(features.shape[1]):
            plane = features[image, c]
            for ph in range(pooled_height):
                for pw in range(pooled_width):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            y0, y1, x0, x1, w00, w01, w10, w11 = _bilinear_inline(
                                y, x, height, width)
                            total += (w00 * plane[y0, x0] + w01 * plane[y0, x1]
                                      + w10 * plane[y1, x0] + w11 * plane[y1, x1])
                    out[k, c, ph, pw] = total / count


def _roi_align_backward(grad_output, rois, batch, spatial_scale, sampling_ratio, aligned,
                        grad_input):
    channels, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    pooled_height, pooled_width = grad_output.shape[2], grad_output.shape[3]
    for plane_index in prange(grad_input.shape[0] * channels):
        image = plane_index // channels
        c = plane_index % channels
        plane = grad_input[image, c]
        for k in range(rois.shape[0]):
            if batch[k] != image:
                continue
            start_y, start_x, bin_h, bin_w, grid_h, grid_w = _roi_geometry_inline(
                rois[k], spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
            count = max(grid_h * grid_w, 1)
            for ph in range(pooled_height):
                for pw in range(pooled_width):
                    grad = grad_output[k, c, ph, pw] / count
                    for iy in range(grid_h):
                        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            y0, y1, x0, x1, w00, w01, w10, w11 = _bilinear_inline(
                                y, x, height, width)
                            plane[y0, x0] += w00 * grad
                            plane[y0, x1] += w01 * grad
                            plane[y1, x0] += w10 * grad
                            plane[y1, x1] += w11 * grad


_ROI_ALIGN_FORWARD = jit(_roi_align_forward, parallel=True)
_ROI_ALIGN_BACKWARD = jit(_roi_align_backward, parallel=True)


def roi_align_forward(features, rois, batch, pooled_size, spatial_scale, sampling_ratio,
                      aligned):
    """RoI Align of ``features (N, C, H, W)`` → ``(K, C, PH, PW)`` in its dtype.

    ``rois (K, 5)`` in the features' dtype, ``batch (K,)`` int64 image indices
    (checked by the caller), ``pooled_size = (PH, PW)``.
    """
    out = np.zeros((rois.shape[0], features.shape[1]) + tuple(pooled_size), features.dtype)
    if out.size:
        _ROI_ALIGN_FORWARD(np.ascontiguousarray(features), np.ascontiguousarray(rois), batch,
                           float(spatial_scale), int(sampling_ratio), bool(aligned), out)
    return out


def roi_align_backward(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio,
                       aligned):
    """Gradient of :func:`roi_align_forward` with respect to its features."""
    grad_input = np.zeros(input_shape, dtype=grad_output.dtype)
    if grad_output.size:
        _ROI_ALIGN_BACKWARD(np.ascontiguousarray(grad_output), np.ascontiguousarray(rois), batch,
                            float(spatial_scale), int(sampling_ratio), bool(aligned),
                            grad_input)
    return grad_input


# ---------------------------------------------------------------------- RoI pooling
def _round_half_away(value):
    # C's round(), which torchvision uses for the RoI corners (NumPy rounds half to even)
    return math.floor(value + 0.5) if value >= 0 else -math.floor(0.5 - value)


_round_half_away_inline = jit(_round_half_away, inline="always")


def _roi_pool_forward(features, rois, batch, spatial_scale, out, argmax):
    height, width = features.shape[2], features.shape[3]
    pooled_height, pooled_width = out.shape[2], out.shape[3]
    for k in prange(rois.shape[0]):
        start_x = int(_round_half_away_inline(rois[k, 1] * spatial_scale))
        start_y = int(_round_half_away_inline(rois[k, 2] * spatial_scale))
        end_x = int(_round_half_away_inline(rois[k, 3] * spatial_scale))
        end_y = int(_round_half_away_inline(rois[k, 4] * spatial_scale))
        bin_h = max(end_y - start_y + 1, 1) / pooled_height
        bin_w = max(end_x - start_x + 1, 1) / pooled_width
        image = batch[k]
        for ph in range(pooled_height):
            h_start = min(max(int(math.floor(ph * bin_h)) + start_y, 0), height)
            h_end = min(max(int(math.ceil((ph + 1) * bin_h)) + start_y, 0), height)
            for pw in range(pooled_width):
                w_start = min(max(int(math.floor(pw * bin_w)) + start_x, 0), width)
                w_end = min(max(int(math.ceil((pw + 1) * bin_w)) + start_x, 0), width)
                for c in range(features.shape[1]):
                    best = 0.0
                    best_index = -1
                    for h in range(h_start, h_end):
                        for w in range(w_start, w_end):
                            value = features[image, c, h, w]
                            if best_index < 0 or value > best:
                                best = value
                                best_index = h * width + w
                    out[k, c, ph, pw] = best
                    argmax[k, c, ph, pw] = best_index


def _roi_pool_backward(grad_output, batch, argmax, grad_input):
    channels, width = grad_input.shape[1], grad_input.shape[3]
    for plane_index in prange(grad_input.shape[0] * channels):
        image = plane_index // channels
        c = plane_index % channels
        for k in range(grad_output.shape[0]):
            if batch[k] != image:
                continue
            for ph in range(grad_output.shape[2]):
                for pw in range(grad_output.shape[3]):
                    index = argmax[k, c, ph, pw]
                    if index >= 0:
                        grad_input[image, c, index // width, index % width] += \
                            grad_output[k, c, ph, pw]


_ROI_POOL_FORWARD = jit(_roi_pool_forward, parallel=True)
_ROI_POOL_BACKWARD = jit(_roi_pool_backward, parallel=True)


def roi_pool_forward(features, rois, batch, pooled_size, spatial_scale):
    """RoI max pooling → ``(out (K, C, PH, PW), argmax int64 (K, C, PH, PW))``.

    ``argmax`` holds ``h * W + w`` of each bin's first maximum, −1 for an empty bin
    (whose output is 0).
    """
    shape = (rois.shape[0], features.shape[1]) + tuple(pooled_size)
    out = np.zeros(shape, dtype=features.dtype)
    argmax = np.full(shape, -1, dtype=np.int64)
    if out.size:
        _ROI_POOL_FORWARD(np.ascontiguousarray(features), np.ascontiguousarray(rois), batch,
                          float(spatial_scale), out, argmax)
    return out, argmax


def roi_pool_backward(grad_output, batch, argmax, input_shape):
    """Gradient of :func:`roi_pool_forward`: each bin's gradient to its argmax."""
    grad_input = np.zeros(input_shape, dtype=grad_output.dtype)
    if grad_output.size:
        _ROI_POOL_BACKWARD(np.ascontiguousarray(grad_output), batch, argmax, grad_input)
    return grad_input


# --------------------------------------------------------------- sigmoid focal loss
def _softplus(z):
    # log(1 + exp(z)) without overflow: exp(z) overflows float64 for z > 709
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


_softplus_inline = jit(_softplus, inline="always")


def _sigmoid_focal(logits, targets, alpha, gamma, loss, grad):
    for i in prange(logits.shape[0]):
        z = logits[i]
        t = targets[i]
        log_p = -_softplus_inline(-z)           # log sigmoid(z)
        log_q = -_softplus_inline(z)            # log sigmoid(-z)
        p = math.exp(log_p)
        q = math.exp(log_q)
        cross_entropy = -(t * log_p + (1.0 - t) * log_q)
        # 1 - p_t = p (1 - t) + q t, formed from both tails: exact at saturation
        miss = p * (1.0 - t) + q * t
        modulation = miss ** gamma
        # d(miss)/dz = (1 - 2t) p q; (p q / miss) is bounded, and the term carries
        # miss**gamma, so gamma < 1 gives no 0 * inf where miss underflows to 0
        ratio = p * q / miss if miss > 0.0 else 0.0
        weight = alpha * t + (1.0 - alpha) * (1.0 - t) if alpha >= 0.0 else 1.0
        loss[i] = weight * cross_entropy * modulation
        grad[i] = weight * modulation * ((p - t) + gamma * (1.0 - 2.0 * t) * cross_entropy
                                         * ratio)


_SIGMOID_FOCAL = jit(_sigmoid_focal, parallel=True)


def sigmoid_focal_loss_forward_backward(logits, targets, alpha, gamma):
    """Elementwise ``alpha_t (1 - p_t)^gamma BCE(logits, targets)`` and its logit gradient.

    ``alpha < 0`` disables the class weighting (torchvision's convention). Returns
    ``(loss, grad)`` shaped like ``logits``, in its dtype.
    """
    flat_logits = np.ascontiguousarray(logits).reshape(-1)
    flat_targets = np.ascontiguousarray(targets, dtype=logits.dtype).reshape(-1)
    loss = np.empty(flat_logits.shape, dtype=logits.dtype)
    grad = np.empty(flat_logits.shape, dtype=logits.dtype)
    if loss.size:
        _SIGMOID_FOCAL(flat_logits, flat_targets, float(alpha), float(gamma), loss, grad)
    return loss.reshape(logits.shape), grad.reshape(logits.shape)
