"""Max pooling over arbitrary windows: dilated max pooling and adaptive max pooling.

Design
------
* A window is given per axis as a row of an int64 table ``(out, taps)``: the
  input positions it reads, ``-1`` where a tap falls in the padding (or past a
  shorter adaptive bin). A 2-D window is the product of a row table and a
  column table, so one loop serves dilation, padding and adaptive bins.
* Ties and NaN as in ``kernels.pool`` (and torch): taps are scanned row-major,
  a strictly greater value or a NaN takes over, so the first maximum wins
  and a NaN always does. Indices are flat ``h * W + w`` within the plane, so
  ``pool.max_pool2d_backward`` scatters the gradient of either op.
* The plain (undilated) max pool keeps its separable kernels in ``kernels.pool``;
  these loops read every tap of every window, ``O(out * taps)``, which is what
  dilated and adaptive windows need anyway.
"""
import numpy as np

from fastdl._checks import is_int, pair
from fastdl.kernels._jit import jit, prange

__all__ = ["pooled_length", "dilated_taps", "adaptive_taps", "max_pool2d_taps_forward",
           "max_pool2d_dilated_forward", "adaptive_max_pool2d_forward",
           "adaptive_output_size"]

_SERIAL_BELOW = 1 << 16   # input elements, as kernels.pool


def pooled_length(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooled length: ``floor_or_ceil((size + 2p - d(k-1) - 1) / s) + 1``, and in
    ``ceil_mode`` no window may start in the right padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def dilated_taps(size, out_size, kernel, stride, padding, dilation):
    """``(out_size, kernel)`` int64: input position of each tap, -1 in the padding."""
    starts = np.arange(out_size, dtype=np.int64)[:, None] * stride - padding
    taps = starts + np.arange(kernel, dtype=np.int64)[None, :] * dilation
    return np.where((taps >= 0) & (taps < size), taps, -1)


def adaptive_taps(size, out_size):
    """torch's adaptive bins ``[floor(o * size / out), ceil((o + 1) * size / out))`` as a
    ``(out_size, widest bin)`` table, -1 past the end of shorter bins."""
    outputs = np.arange(out_size, dtype=np.int64)
    starts = outputs * size // out_size
    stops = -(-((outputs + 1) * size) // out_size)
    width = int((stops - starts).max())
    taps = starts[:, None] + np.arange(width, dtype=np.int64)[None, :]
    return np.where(taps < stops[:, None], taps, -1)


def _max_taps(x, rows, cols, out, indices):
    planes, width = x.shape[0], x.shape[2]
    out_h, out_w = rows.shape[0], cols.shape[0]
    for plane in prange(planes):
        for oh in range(out_h):
            for ow in range(out_w):
                best = x[plane, 0, 0]
                best_index = -1
                for i in range(rows.shape[1]):
                    h = rows[oh, i]
                    if h < 0:
                        continue
                    for j in range(cols.shape[1]):
                        w = cols[ow, j]
                        if w < 0:
                            continue
                        value = x[plane, h, w]
                        # first maximum wins; a NaN always takes over (torch's rule)
                        if best_index < 0 or value > best or value != value:
                            best = value
                            best_index = h * width + w
                out[plane, oh, ow] = best
                indices[plane, oh, ow] = best_index


_max_taps_serial = jit(_max_taps)
_max_taps_parallel = jit(_max_taps, parallel=True)


def max_pool2d_taps_forward(x, rows, cols):
    """Max of ``x (..., H, W)`` over the windows ``rows x cols`` (tap tables).

    Returns
    -------
    out : ndarray (..., out_h, out_w), dtype of ``x``
    indices : ndarray (..., out_h, out_w), int64, flat ``h * W + w``
    """
    planes = np.ascontiguousarray(x).reshape((-1,) + x.shape[-2:])
    shape = (planes.shape[0], rows.shape[0], cols.shape[0])
    out = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if planes.size and out.size:
        loop = _max_taps_serial if planes.size < _SERIAL_BELOW else _max_taps_parallel
        loop(planes, rows, cols, out, indices)
    final = x.shape[:-2] + shape[1:]
    return out.reshape(final), indices.reshape(final)


def max_pool2d_dilated_forward(x, kernel_size, stride=None, padding=0, dilation=1,
                               ceil_mode=False):
    """2-D max pooling with dilation, as torch's ``max_pool2d``.

    Parameters
    ----------
    x : ndarray (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding, dilation : int or pair
        ``stride=None`` means ``kernel_size``; padding at most half the kernel.
    ceil_mode : bool

    Returns
    -------
    out, indices : as ``max_pool2d_taps_forward``

    Raises
    ------
    ValueError
        Non-positive kernel, stride or dilation, negative or too large padding,
        or an empty output.
    """
    kernel = pair(kernel_size, "kernel_size", "max_pool2d")
    stride = kernel if stride is None or stride == () or stride == [] else pair(
        stride, "stride", "max_pool2d")
    padding = pair(padding, "padding", "max_pool2d")
    dilation = pair(dilation, "dilation", "max_pool2d")
    for name, value, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                             ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(value) < low:
            raise ValueError("max_pool2d: %s must be %s, got %s"
                             % (name, "positive" if low else "non-negative", value))
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError("max_pool2d: pad should be at most half of effective kernel size, "
                         "but got pad=%s, kernel_size=%s" % (padding, kernel))
    sizes = [pooled_length(x.shape[-2 + axis], kernel[axis], stride[axis], padding[axis],
                           dilation[axis], ceil_mode) for axis in (0, 1)]
    if min(sizes) < 1:
        raise ValueError("max_pool2d: input of spatial size %s is too small for "
                         "kernel_size=%s, dilation=%s (output size %s)"
                         % (x.shape[-2:], kernel, dilation, tuple(sizes)))
    rows = dilated_taps(x.shape[-2], sizes[0], kernel[0], stride[0], padding[0], dilation[0])
    cols = dilated_taps(x.shape[-1], sizes[1], kernel[1], stride[1], padding[1], dilation[1])
    return max_pool2d_taps_forward(x, rows, cols)


def adaptive_output_size(op, input_shape, output_size, dims=2):
    """``output_size`` (an int, or a tuple of ints/None with None keeping that input
    size) as a tuple of ``dims`` positive ints."""
    if is_int(output_size):
        output_size = (output_size,) * dims
    if not isinstance(output_size, (tuple, list)) or len(output_size) != dims:
        raise TypeError("%s: output_size must be an int or a %d-tuple of ints/None, got %r"
                        % (op, dims, output_size))
    sizes = []
    for size, given in zip(input_shape[-dims:], output_size):
        value = size if given is None else given
        if not is_int(value) or value < 1:
            raise ValueError("%s: output_size must be positive ints (or None), got %r"
                             % (op, output_size))
        sizes.append(int(value))
    return tuple(sizes)


def adaptive_max_pool2d_forward(x, output_size):
    """2-D adaptive max pooling, torch's bins (see ``adaptive_taps``).

    Parameters
    ----------
    x : ndarray (N, C, H, W) or (C, H, W), float32 or float64
    output_size : int or pair of (int or None)

    Returns
    -------
    out, indices : as ``max_pool2d_taps_forward``
    """
    if min(x.shape[-2:]) < 1:
        raise ValueError("adaptive_max_pool2d: input has an empty spatial dimension, shape %s"
                         % (x.shape,))
    out_h, out_w = adaptive_output_size("adaptive_max_pool2d", x.shape, output_size)
    return max_pool2d_taps_forward(x, adaptive_taps(x.shape[-2], out_h),
                                   adaptive_taps(x.shape[-1], out_w))
