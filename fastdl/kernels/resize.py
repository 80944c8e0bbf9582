"""Upsampling by integer scale factors, forward and backward: nearest and bilinear.

Both modes are separable linear maps, ``out = A_h @ x @ A_w^T`` per plane, so
the backward is the adjoint ``A_h^T @ g @ A_w``. The kernels never build the
matrices (the tests do, as the reference): every output row or column reads at
most two source rows or columns, so they are compiled
loops over ``x.reshape(N * C, H, W)`` with, per axis, the two source indices
and weights (``_bilinear_axis``): O(output) work per plane, not O(H_out * H * W).

* Bilinear follows torch's ``align_corners=False``: source coordinate
  ``(dst + 0.5) / scale - 0.5`` clamped at 0, ``low = min(floor(src), size - 1)``,
  ``high = min(low + 1, size - 1)``, weights ``(1 - frac, frac)``.
* Forward accumulates in the input dtype. Backward sums (up to ``4 * sh * sw``
  terms on one input cell for bilinear, ``sh * sw`` for nearest) in float64
  and rounds once.
* Planes are independent and each is owned by one thread (``prange`` over
  planes), so the backward's scatter-adds never race and every result is
  bitwise the same whatever the thread count, and for the serial and parallel
  bindings alike. Work below ``_SERIAL_BELOW`` output elements runs serially.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["upsample_nearest2d_forward", "upsample_nearest2d_backward",
           "upsample_bilinear2d_forward", "upsample_bilinear2d_backward"]

# output elements (as the pool kernels): below it a parallel launch costs more
# than it saves (bilinear forward, 16k outputs: 21 us serial, 40 us parallel)
_SERIAL_BELOW = 1 << 16


def _nearest_forward(x, scale_h, scale_w, out):
    planes, height, width = x.shape
    for plane in prange(planes):
        for h in range(height):
            source, first = x[plane, h], out[plane, h * scale_h]
            for w in range(width):
                value = source[w]
                for j in range(scale_w):
                    first[w * scale_w + j] = value
            # copy the finished row instead of repeating the per-column fan-out
            for i in range(1, scale_h):
                out[plane, h * scale_h + i, :] = first


def _nearest_backward(grad_out, scale_h, scale_w, grad_in):
    planes, height, width = grad_in.shape
    for plane in prange(planes):
        block_sum = np.empty(width, dtype=np.float64)
        for h in range(height):
            block_sum[:] = 0.0
            for i in range(scale_h):
                row = grad_out[plane, h * scale_h + i]
                for w in range(width):
                    for j in range(scale_w):
                        block_sum[w] += row[w * scale_w + j]
            for w in range(width):
                grad_in[plane, h, w] = block_sum[w]


def _bilinear_forward(x, rows, cols, out):
    # Columns first: widen each input row to out_w once, then every output row
    # blends two widened rows in a contiguous loop. The indexed gathers (the
    # slow part) then run H * out_w times, not out_h * out_w (measured 10-25%
    # faster than rows first at scale 2).
    row_low, row_high, row_low_weight, row_high_weight = rows
    col_low, col_high, col_low_weight, col_high_weight = cols
    planes, height = x.shape[0], x.shape[1]
    out_h, out_w = out.shape[1], out.shape[2]
    for plane in prange(planes):
        widened = np.empty((height, out_w), dtype=x.dtype)
        for h in range(height):
            source, target = x[plane, h], widened[h]
            for ow in range(out_w):
                target[ow] = (col_low_weight[ow] * source[col_low[ow]]
                              + col_high_weight[ow] * source[col_high[ow]])
        for oh in range(out_h):
            upper, lower = widened[row_low[oh]], widened[row_high[oh]]
            upper_weight, lower_weight = row_low_weight[oh], row_high_weight[oh]
            out_row = out[plane, oh]
            for ow in range(out_w):
                out_row[ow] = upper_weight * upper[ow] + lower_weight * lower[ow]


def _bilinear_backward(grad_out, rows, cols, grad_in):
    # The transpose of _bilinear_forward, in reverse order: scatter each output
    # row onto its two input rows (contiguous loops), then each of those H rows
    # onto its W input columns. One thread owns the plane, so the scatter
    # order, and hence the rounding, is fixed.
    row_low, row_high, row_low_weight, row_high_weight = rows
    col_low, col_high, col_low_weight, col_high_weight = cols
    planes, height, width = grad_in.shape
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for plane in prange(planes):
        row_sums = np.zeros((height, out_w), dtype=np.float64)
        column_sums = np.empty(width, dtype=np.float64)
        for oh in range(out_h):
            grad_row = grad_out[plane, oh]
            upper, lower = row_sums[row_low[oh]], row_sums[row_high[oh]]
            upper_weight, lower_weight = row_low_weight[oh], row_high_weight[oh]
            for ow in range(out_w):
                upper[ow] += upper_weight * grad_row[ow]
            for ow in range(out_w):
                lower[ow] += lower_weight * grad_row[ow]
        for h in range(height):
            column_sums[:] = 0.0
            source = row_sums[h]
            for ow in range(out_w):
                column_sums[col_low[ow]] += col_low_weight[ow] * source[ow]
                column_sums[col_high[ow]] += col_high_weight[ow] * source[ow]
            target = grad_in[plane, h]
            for w in range(width):
                target[w] = column_sums[w]


_nearest_forward_serial = jit(_nearest_forward)
_nearest_forward_parallel = jit(_nearest_forward, parallel=True)
_nearest_backward_serial = jit(_nearest_backward)
_nearest_backward_parallel = jit(_nearest_backward, parallel=True)
_bilinear_forward_serial = jit(_bilinear_forward)
_bilinear_forward_parallel = jit(_bilinear_forward, parallel=True)
_bilinear_backward_serial = jit(_bilinear_backward)
_bilinear_backward_parallel = jit(_bilinear_backward, parallel=True)


def _pick(serial, parallel, output_elements):
    return serial if output_elements < _SERIAL_BELOW else parallel


def _planes(array):
    """``array (N, C, H, W)`` as a C-contiguous ``(N * C, H, W)`` stack (a view when possible)."""
    n, c, height, width = array.shape
    return np.ascontiguousarray(array).reshape(n * c, height, width)


def _upsample(x, scale, serial, parallel, *axes):
    """``x`` upsampled by ``scale`` through a forward loop ``(planes, *axes, out)``."""
    n, c, height, width = x.shape
    out = np.empty((n, c, height * scale[0], width * scale[1]), dtype=x.dtype)
    _pick(serial, parallel, out.size)(_planes(x), *axes, _planes(out))
    return out


def _bilinear_axis(size, scale, dtype):
    """Per output index along one axis: ``(low, high, low_weight, high_weight)``.

    Indices are int64; weights are computed in float64 and cast to ``dtype``.
    """
    source = np.maximum((np.arange(size * scale) + 0.5) / scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    fraction = source - low
    return low, high, (1.0 - fraction).astype(dtype), fraction.astype(dtype)


def upsample_nearest2d_forward(x, scale):
    """Nearest-neighbour upsampling of ``x (N, C, H, W)`` (float32 or float64) by
    integer factors ``scale = (sh, sw)``: a C-contiguous (N, C, H*sh, W*sw) array of
    ``x``'s dtype, each input cell repeated over an ``sh x sw`` block."""
    return _upsample(x, scale, _nearest_forward_serial, _nearest_forward_parallel,
                     int(scale[0]), int(scale[1]))


def upsample_nearest2d_backward(grad_out, scale):
    """Adjoint of nearest upsampling: the sum of each ``sh x sw`` block of ``grad_out``.

    Parameters
    ----------
    grad_out : ndarray (N, C, H*sh, W*sw), float32 or float64
    scale : pair of positive ints ``(sh, sw)``

    Returns
    -------
    ndarray (N, C, H, W), C-contiguous, dtype of ``grad_out``
    """
    n, c, out_h, out_w = grad_out.shape
    if out_h % scale[0] or out_w % scale[1]:
        raise ValueError("upsample_nearest2d_backward: grad_out shape %s is not a multiple of "
                         "scale %s" % (tuple(grad_out.shape), tuple(scale)))
    grad_in = np.empty((n, c, out_h // scale[0], out_w // scale[1]), dtype=grad_out.dtype)
    _pick(_nearest_backward_serial, _nearest_backward_parallel, grad_out.size)(
        _planes(grad_out), int(scale[0]), int(scale[1]), _planes(grad_in))
    return grad_in


def upsample_bilinear2d_forward(x, scale):
    """Bilinear upsampling (torch's ``align_corners=False``) by integer factors.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    scale : pair of positive ints ``(sh, sw)``

    Returns
    -------
    ndarray (N, C, H*sh, W*sw), C-contiguous, dtype of ``x``
    """
    return _upsample(x, scale, _bilinear_forward_serial, _bilinear_forward_parallel,
                     _bilinear_axis(x.shape[2], int(scale[0]), x.dtype),
                     _bilinear_axis(x.shape[3], int(scale[1]), x.dtype))


def upsample_bilinear2d_backward(grad_out, input_shape, scale):
    """Adjoint of bilinear upsampling, summed in float64.

    Parameters
    ----------
    grad_out : ndarray (N, C, H*sh, W*sw), float32 or float64
    input_shape : tuple ``(N, C, H, W)`` of the forward's input
    scale : pair of positive ints ``(sh, sw)``

    Returns
    -------
    ndarray ``input_shape``, C-contiguous, dtype of ``grad_out``
    """
    n, c, height, width = input_shape
    if tuple(grad_out.shape) != (n, c, height * scale[0], width * scale[1]):
        raise ValueError("upsample_bilinear2d_backward: grad_out shape %s does not match input "
                         "shape %s at scale %s" % (tuple(grad_out.shape), tuple(input_shape),
                                                   tuple(scale)))
    grad_in = np.empty((n, c, height, width), dtype=grad_out.dtype)
    rows = _bilinear_axis(height, int(scale[0]), np.float64)
    cols = _bilinear_axis(width, int(scale[1]), np.float64)
    _pick(_bilinear_backward_serial, _bilinear_backward_parallel, grad_out.size)(
        _planes(grad_out), rows, cols, _planes(grad_in))
    return grad_in
