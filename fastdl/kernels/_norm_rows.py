"""The compiled layer norm loops behind ``fastdl.kernels.norm`` (see its design notes):
forward and backward on the ``(rows, row_length)`` view, one weight per column.

Inlined helpers and one set of fastmath flags per kernel, as in ``_norm_loops``.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange
from fastdl.kernels._norm_loops import _moments_of_kernel
from fastdl.kernels._norm_pieces import (_BLOCK, _FASTMATH, _SPAN, _block_moments_kernel,
                                         _chunk_bounds_kernel, _grad_chunks_kernel, _inlined,
                                         _move_into, _sum_chunks_kernel)

# backward: rows whose parameter-gradient terms are summed in x's dtype before
# joining the float64 chunk sums (float64 read-modify-writes of every element
# cost about as much as the rest of the backward; 64 float32 terms bound the
# added relative error by 64 * 2**-24)
_PARAM_TILE = 64


def _row_moments(row):
    """Mean and biased variance of a 1-D contiguous ``row``."""
    if row.shape[0] <= _BLOCK:
        # the usual case, one block: no merge step
        mean, squares = _block_moments_kernel(row)
        return mean, squares / row.shape[0]
    # long rows: block moments merged with Chan's update, as for the other norms
    return _moments_of_kernel(row.reshape(1, 1, row.shape[0]), 0)


_row_moments_kernel = _inlined(_row_moments)


def _normalize_row(row, weight, bias, shift, scale, y_row):
    """``y = x_hat * weight + bias`` with ``x_hat = (row - shift) * scale``."""
    for i in range(row.shape[0]):
        y_row[i] = (row[i] - shift) * scale * weight[i] + bias[i]


_normalize_row_kernel = _inlined(_normalize_row)


def _layer_norm_forward(x, weight, bias, eps, mean, var, inv_std, y):
    # x, y: (rows, row_length); weight, bias: (row_length,) in x's dtype;
    # mean, var (biased), inv_std: (rows,) float64 outputs
    n_rows = x.shape[0]
    n_chunks = _grad_chunks_kernel(n_rows)
    for chunk in prange(n_chunks):
        first, stop = _chunk_bounds_kernel(chunk, n_chunks, n_rows)
        for row in range(first, stop):
            # no software prefetch of the rows ahead, the hardware's streams do better:
            # prefetching the row two ahead took the 4096x768 forward 1.3-1.4x the time
            # (the backward prefetches neither: x and g ahead slowed it, dx for
            # writing, the row being summed or the next, took it 1.3x)
            # the second pass over the row (in the normalisation) hits L1
            mean_row, var_row = _row_moments_kernel(x[row])
            mean[row] = mean_row
            var[row] = var_row
            inv_std[row] = 1.0 / np.sqrt(var_row + eps)
            # elementwise in x's dtype, as in _normalize_forward
            _normalize_row_kernel(x[row], weight, bias, x.dtype.type(mean_row),
                                  x.dtype.type(inv_std[row]), y[row])


layer_norm_forward_kernel = jit(_layer_norm_forward, parallel=True, fastmath=_FASTMATH)


# a call, once per _PARAM_TILE rows
_move_into_kernel = jit(_move_into, fastmath=_FASTMATH)


def _layer_norm_backward(grad_out, x, weight, mean, inv_std, needs_grad_x, grad_x):
    # grad_out, x, grad_x: (rows, row_length); weight: (row_length,) in x's
    # dtype; mean, inv_std: (rows,) float64. Returns grad_weight and grad_bias,
    # (row_length,) float64, summed per fixed chunk of rows, then over chunks.
    # Per row, two passes written out here (as calls, the same loops run slower):
    # the first brings the row in from memory and does nothing but its two sums, so
    # that its few instructions per line keep many loads in flight; the second, in
    # L1, writes dx and adds the per-column parameter terms.
    n_rows, row_length = x.shape
    n_chunks = _grad_chunks_kernel(n_rows)
    # each chunk's sums zeroed by the thread that fills them, in parallel
    grad_weight_parts = np.empty((n_chunks, row_length))
    grad_bias_parts = np.empty((n_chunks, row_length))
    to_dtype = x.dtype.type
    for chunk in prange(n_chunks):
        grad_weight_parts[chunk] = 0.0
        grad_bias_parts[chunk] = 0.0
        tile_grad_weight = np.zeros(row_length, dtype=x.dtype)
        tile_grad_bias = np.zeros(row_length, dtype=x.dtype)
        chunk_start, chunk_stop = _chunk_bounds_kernel(chunk, n_chunks, n_rows)
        for tile_start in range(chunk_start, chunk_stop, _PARAM_TILE):
            for row in range(tile_start, min(tile_start + _PARAM_TILE, chunk_stop)):
                shift, scale = to_dtype(mean[row]), to_dtype(inv_std[row])
                grad_row, x_row = grad_out[row], x[row]
                # sum(w·g) and sum(w·g·(x - shift)), in float32 spans
                sum_grad = np.float64(0.0)
                sum_grad_centred = np.float64(0.0)
                for start in range(0, row_length, _SPAN):
                    grad_span = grad_row[start:start + _SPAN]
                    x_span = x_row[start:start + _SPAN]
                    weight_span = weight[start:start + _SPAN]
                    part_grad = to_dtype(0.0)
                    part_centred = to_dtype(0.0)
                    for i in range(grad_span.shape[0]):
                        weighted = weight_span[i] * grad_span[i]
                        part_grad += weighted
                        part_centred += weighted * (x_span[i] - shift)
                    sum_grad += part_grad
                    sum_grad_centred += part_centred
                # dx = scale·(w·g − mean(w·g) − x_hat·mean(w·g·x_hat)); g·x_hat and g
                # into the tile sums (x_hat = (x − shift)·scale, as the forward's)
                if needs_grad_x:
                    mean_grad = to_dtype(sum_grad / row_length)
                    mean_grad_x_hat = to_dtype(sum_grad_centred * inv_std[row] / row_length)
                    grad_x_row = grad_x[row]
                    for i in range(row_length):
                        g = grad_row[i]
                        x_hat = (x_row[i] - shift) * scale
                        tile_grad_weight[i] += g * x_hat
                        tile_grad_bias[i] += g
                        grad_x_row[i] = scale * (weight[i] * g - mean_grad
                                                 - x_hat * mean_grad_x_hat)
                else:
                    for i in range(row_length):
                        g = grad_row[i]
                        tile_grad_weight[i] += g * ((x_row[i] - shift) * scale)
                        tile_grad_bias[i] += g
            _move_into_kernel(tile_grad_weight, grad_weight_parts[chunk])
            _move_into_kernel(tile_grad_bias, grad_bias_parts[chunk])
    return _sum_chunks_kernel(grad_weight_parts), _sum_chunks_kernel(grad_bias_parts)


layer_norm_backward_kernel = jit(_layer_norm_backward, parallel=True, fastmath=_FASTMATH)
