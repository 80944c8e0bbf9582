"""Resampling to any output size, forward and backward: nearest, nearest-exact,
(bi)linear and bicubic, with torch's ``align_corners`` and scale conventions.

Design
------
* Every mode is separable: per axis, each output index reads ``taps`` input
  indices with weights (nearest 1, linear 2, cubic 4), given as two tables
  ``(out, taps)`` built once per call in float64 (``*_taps`` below). One
  compiled loop then resamples ``x.reshape(N * C, H, W)``: columns first (each
  input row widened to ``out_w``), then rows; the backward is its adjoint in
  reverse order. ``kernels.resize`` keeps its faster loops for integer scale
  factors; these loops serve every other size.
* Source coordinates follow ATen's ``UpSample.h``: the scale is
  ``1 / scale_factor`` when a factor is given (and not recomputed), else
  ``in / out``; with ``align_corners`` it is ``(in - 1) / (out - 1)``. Linear:
  ``src = scale * (dst + 0.5) - 0.5`` clamped at 0; cubic: the same without
  the clamp, Keys' kernel with ``A = -0.75`` and indices clamped to the edge.
  Nearest: ``floor(dst * scale)`` in float32, as ATen computes it
  (``nearest-exact``: ``floor((dst + 0.5) * scale)``).
* Sums run in float64 and are rounded once; planes are independent, one
  thread each, so results do not depend on the thread count.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["axis_scale", "nearest_taps", "linear_taps", "cubic_taps", "mode_taps",
           "integer_factors", "resample2d_forward", "resample2d_backward"]

_SERIAL_BELOW = 1 << 16   # output elements, as kernels.resize
_CUBIC_A = -0.75          # ATen's (and OpenCV's) bicubic constant


def axis_scale(in_size, out_size, align_corners, scale_factor):
    """ATen's ``area_pixel_compute_scale``: output-to-input coordinate scale of one axis."""
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    if scale_factor is not None and scale_factor > 0:
        return 1.0 / scale_factor
    return in_size / out_size


def nearest_taps(in_size, out_size, scale_factor=None, exact=False):
    """One tap per output: ``min(floor((dst [+ 0.5]) * scale), in - 1)``, weight 1."""
    scale = np.float32(axis_scale(in_size, out_size, False, scale_factor))
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5 if exact else 0.0)
    index = np.minimum(np.floor(dst * scale).astype(np.int64), in_size - 1)
    return index[:, None], np.ones((out_size, 1))


def linear_taps(in_size, out_size, align_corners, scale_factor=None):
    """Two taps per output (``low``, ``low + 1`` clipped), linear weights."""
    scale = axis_scale(in_size, out_size, align_corners, scale_factor)
    dst = np.arange(out_size, dtype=np.float64)
    src = scale * dst if align_corners else np.maximum(scale * (dst + 0.5) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = src - low
    return np.stack([low, high], axis=1), np.stack([1.0 - fraction, fraction], axis=1)


def _cubic_near(t):
    # Keys' kernel for |t| <= 1
    return ((_CUBIC_A + 2) * t - (_CUBIC_A + 3)) * t * t + 1


def _cubic_far(t):
    # Keys' kernel for 1 < |t| < 2
    return ((_CUBIC_A * t - 5 * _CUBIC_A) * t + 8 * _CUBIC_A) * t - 4 * _CUBIC_A


def cubic_taps(in_size, out_size, align_corners, scale_factor=None):
    """Four taps per output (``floor(src) - 1 .. + 2``, clamped to the edge), Keys' weights."""
    scale = axis_scale(in_size, out_size, align_corners, scale_factor)
    dst = np.arange(out_size, dtype=np.float64)
    src = scale * dst if align_corners else scale * (dst + 0.5) - 0.5
    base = np.floor(src).astype(np.int64)
    t = src - base
    weights = np.stack([_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t),
                        _cubic_far(2 - t)], axis=1)
    index = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return index, weights


def mode_taps(mode, in_size, out_size, align_corners, scale_factor=None):
    """The taps of one axis for an ``interpolate`` mode (``"nearest"``,
    ``"nearest-exact"``, ``"bicubic"``, else linear): ``(index, weight)``, each
    ``(out_size, taps)``."""
    if mode in ("nearest", "nearest-exact"):
        return nearest_taps(in_size, out_size, scale_factor, mode == "nearest-exact")
    if mode == "bicubic":
        return cubic_taps(in_size, out_size, align_corners, scale_factor)
    return linear_taps(in_size, out_size, align_corners, scale_factor)


def integer_factors(input_shape, sizes, scales):
    """``(sh, sw)`` when both axes of ``input_shape (N, C, H, W)`` are upsampled to
    ``sizes`` by whole factors (agreeing with ``scales`` where given), else None."""
    factors = []
    for n, out, scale in zip(input_shape[2:], sizes, scales):
        if out % n or (scale is not None and scale != out // n):
            return None
        factors.append(out // n)
    return tuple(factors)

def _forward(x, rows, row_weights, cols, col_weights, out):
    planes, height = x.shape[0], x.shape[1]
    out_h, out_w = out.shape[1], out.shape[2]
    for plane in prange(planes):
        widened = np.empty((height, out_w))
        line = np.empty(out_w)
        for h in range(height):
            source = x[plane, h]
            for ow in range(out_w):
                total = 0.0
                for j in range(cols.shape[1]):
                    total += col_weights[ow, j] * source[cols[ow, j]]
                widened[h, ow] = total
        for oh in range(out_h):
            line[:] = 0.0
            for i in range(rows.shape[1]):
                weight = row_weights[oh, i]
                source_row = widened[rows[oh, i]]
                for ow in range(out_w):
                    line[ow] += weight * source_row[ow]
            for ow in range(out_w):
                out[plane, oh, ow] = line[ow]


def _backward(grad_out, rows, row_weights, cols, col_weights, grad_in):
    # the adjoint of _forward: rows scattered first, then columns
    planes, height, width = grad_in.shape
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for plane in prange(planes):
        row_sums = np.zeros((height, out_w))
        line = np.empty(width)
        for oh in range(out_h):
            grad_row = grad_out[plane, oh]
            for i in range(rows.shape[1]):
                weight = row_weights[oh, i]
                target = row_sums[rows[oh, i]]
                for ow in range(out_w):
                    target[ow] += weight * grad_row[ow]
        for h in range(height):
            line[:] = 0.0
            for ow in range(out_w):
                value = row_sums[h, ow]
                for j in range(cols.shape[1]):
                    line[cols[ow, j]] += col_weights[ow, j] * value
            for w in range(width):
                grad_in[plane, h, w] = line[w]


_FORWARD = (jit(_forward), jit(_forward, parallel=True))
_BACKWARD = (jit(_backward), jit(_backward, parallel=True))


def resample2d_forward(x, rows, cols):
    """Resample ``x (..., H, W)`` by the tap tables ``rows = (index, weight)`` (over H)
    and ``cols`` (over W).

    Returns
    -------
    ndarray (..., out_h, out_w), dtype of ``x``, C-contiguous
    """
    planes = np.ascontiguousarray(x).reshape((-1,) + x.shape[-2:])
    out = np.empty((planes.shape[0], rows[0].shape[0], cols[0].shape[0]), dtype=x.dtype)
    if out.size:
        _FORWARD[out.size >= _SERIAL_BELOW](planes, rows[0], rows[1], cols[0], cols[1], out)
    return out.reshape(x.shape[:-2] + out.shape[1:])


def resample2d_backward(grad_out, input_shape, rows, cols):
    """Adjoint of ``resample2d_forward``: the gradient with respect to its input.

    Returns
    -------
    ndarray ``input_shape``, dtype of ``grad_out``
    """
    grad_planes = np.ascontiguousarray(grad_out).reshape((-1,) + grad_out.shape[-2:])
    grad_in = np.empty((grad_planes.shape[0],) + tuple(input_shape[-2:]), dtype=grad_out.dtype)
    if grad_in.size:
        _BACKWARD[grad_planes.size >= _SERIAL_BELOW](grad_planes, rows[0], rows[1], cols[0],
                                                     cols[1], grad_in)
    return grad_in.reshape(input_shape)
