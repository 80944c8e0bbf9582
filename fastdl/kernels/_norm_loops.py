"""The compiled loops behind ``fastdl.kernels.norm`` (see its design notes).

Plain-Python kernels bound through ``jit``: batch, group and instance norm on
the ``(A, K, S, B)`` view, walking channel by channel, or for batch norm's short runs
in memory order (``_norm_short``). The pieces they inline, shared with the layer norm
kernels (``_norm_rows``), are in ``_norm_pieces``.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange
from fastdl.kernels._norm_pieces import (_BLOCK, _FASTMATH, _SPAN,
                                         _block_moments_kernel, _chunk_bounds_kernel,
                                         _grad_chunks_kernel, _inlined,
                                         _input_grad_piece_kernel, _merge_moments_kernel,
                                         _normalize_piece_kernel, _piece_sums_kernel,
                                         _sum_chunks_kernel)
from fastdl.kernels._norm_short import (LANE_WALK, RUN_WALK, _lane_backward_kernel,
                                        _lane_forward_kernel, _lane_moments_kernel,
                                        _short_backward_kernel, _short_forward_kernel)
from fastdl.kernels._prefetch import prefetch, prefetch_for_write

# elements of the next run that batch norm's passes prefetch at a time (1 KiB of float32;
# a larger piece loses the gain)
_PREFETCH_PIECE = 256
# bytes of one k's run from which the backward on one image (group norm) prefetches
# that run of dx for writing, piece by piece as its reduction sums x and g: the dx
# pass that follows (32 KiB and more of L2 reads) then does not also wait for its
# stores' lines (N32 C64 32^2 float32, G=8: backward 0.90-0.96x of the time, float64
# even; G=16, 16 KiB runs: no gain; instance norm's 4 KiB runs: 1.6x slower, so they
# do not)
LONG_RUN_BYTES = 32768
# elements per work item of the forward with given statistics (64 KiB of float32)
_GIVEN_ITEM = 16384


def _run_piece(n_outer, n_inner):
    """Elements a run is walked in: ``_PREFETCH_PIECE`` where the next run (an image
    further on) is prefetched meanwhile, else up to ``_SPAN`` (group and instance norm:
    a piece's sums run in x's dtype)."""
    return _PREFETCH_PIECE if n_outer > 1 else max(min(n_inner, _SPAN), 1)


_run_piece_kernel = _inlined(_run_piece)


def _prefetch_next_run(out, a, k, start, piece):
    """Prefetch ``out[a + 1, k, start:start + piece]`` for writing, if there is an ``a + 1``.

    Batch norm's output passes call it piece by piece, so that their stores into the
    next run (an image further on) do not wait for its lines.
    """
    if a + 1 < out.shape[0]:
        prefetch_for_write(out[a + 1, k, start:start + piece])


_prefetch_next_run_kernel = _inlined(_prefetch_next_run)


def _moments_of(x, k):
    """Mean and biased variance of ``x[:, k]`` (all ``a`` and all of each run)."""
    count, mean, squares = 0, 0.0, 0.0
    for a in range(x.shape[0]):
        run = x[a, k]
        # batch norm's runs lie a whole image apart, each a page or so: the hardware
        # prefetcher stops at the page and starts cold on the next, so it is requested
        # whole while this one is summed (piece by piece, as the backward does, it
        # gains nothing here)
        if a + 1 < x.shape[0]:
            prefetch(x[a + 1, k])
        for start in range(0, run.shape[0], _BLOCK):
            block = run[start:start + _BLOCK]
            block_mean, block_squares = _block_moments_kernel(block)
            mean, squares = _merge_moments_kernel(count, mean, squares, block.shape[0],
                                                  block_mean, block_squares)
            count += block.shape[0]
    return mean, squares / count


_moments_of_kernel = _inlined(_moments_of)


def _normalize_runs(x, k, n_sub, param_base, weight, bias, shift, scale, y):
    """``y = x_hat * w + b`` with ``x_hat = (x - shift) * scale`` over ``x[:, k]``."""
    n_inner = x.shape[2] // n_sub
    piece = _run_piece_kernel(x.shape[0], n_inner)
    for a in range(x.shape[0]):
        for s in range(n_sub):
            x_run = x[a, k, s * n_inner:(s + 1) * n_inner]
            y_run = y[a, k, s * n_inner:(s + 1) * n_inner]
            w = weight[param_base + s]
            b = bias[param_base + s]
            for start in range(0, n_inner, piece):
                _prefetch_next_run_kernel(y, a, k, s * n_inner + start, piece)
                _normalize_piece_kernel(x_run[start:start + piece], shift, scale, w, b,
                                        y_run[start:start + piece])


_normalize_runs_kernel = _inlined(_normalize_runs)


def _normalize_forward(x, weight, bias, n_params, n_sub, eps, use_input_stats, mean, var,
                       inv_std, y, memory_order):
    # x, y: (A, K, S * B); weight, bias: (P * S,) in x's dtype; mean,
    # var, inv_std: (K,) float64, outputs when use_input_stats (var is then
    # the biased variance), else mean and inv_std are inputs; memory_order: the walk of
    # batch norm's short runs (``memory_order``)
    n_kept = x.shape[1]
    n_chunks = _grad_chunks_kernel(n_kept)
    for chunk in prange(n_chunks):
        first, stop = _chunk_bounds_kernel(chunk, n_chunks, n_kept)
        if memory_order == LANE_WALK and use_input_stats:
            _lane_forward_kernel(x, first, stop, weight, bias, eps, mean, var, inv_std, y)
            continue
        if memory_order == RUN_WALK and use_input_stats:
            _short_forward_kernel(x, first, stop, weight, bias, eps, mean, var, inv_std, y)
            continue
        for k in range(first, stop):
            if use_input_stats:
                mean_k, var_k = _moments_of_kernel(x, k)
                mean[k] = mean_k
                var[k] = var_k
                inv_std[k] = 1.0 / np.sqrt(var_k + eps)
            # the elementwise pass runs in x's dtype (as torch): float32 SIMD is
            # twice as wide, and the statistics are already exact
            _normalize_runs_kernel(x, k, n_sub, (k % n_params) * n_sub, weight, bias,
                                   x.dtype.type(mean[k]), x.dtype.type(inv_std[k]), y)


normalize_forward_kernel = jit(_normalize_forward, parallel=True, fastmath=_FASTMATH)


def _given_vectors(weight, bias, n_params, n_sub, mean, inv_std, like):
    # per segment kind (k, s) of the forward with given statistics: the shift (mean[k]),
    # the scale inv_std[k] * w and the offset b, in the dtype of ``like``, the scale
    # formed as the training forward forms it (_normalize_piece), so that given
    # statistics reproduce that forward bit for bit (SyncBatchNorm's split)
    n_kept = mean.shape[0]
    shifts = np.empty(n_kept * n_sub, dtype=like.dtype)
    scales = np.empty(n_kept * n_sub, dtype=like.dtype)
    offsets = np.empty(n_kept * n_sub, dtype=like.dtype)
    for k in range(n_kept):
        base = (k % n_params) * n_sub
        for s in range(n_sub):
            shifts[k * n_sub + s] = mean[k]
            scales[k * n_sub + s] = inv_std[k]   # rounded to x's dtype first
            scales[k * n_sub + s] *= weight[base + s]
            offsets[k * n_sub + s] = bias[base + s]
    return shifts, scales, offsets


given_vectors_kernel = jit(_given_vectors, fastmath=_FASTMATH)


def _affine_segments(x, shift, scale, offset, residual, add_residual, activate, slope, y):
    # y = act((x - shift[j]) * scale[j] + offset[j] (+ residual)) on x (A, J, B), segment
    # kind j, y may be x: the forward with given statistics (eval batch norm), and a conv's
    # batch norm epilogue (shift 0). Over the flat arrays in memory order, in items of
    # about _GIVEN_ITEM elements: flat indexing keeps a 4x4 map's 16-element segment one
    # vector with no per-row view to build (N32 C960 4^2: 0.26 -> 0.05 ms), and memory
    # order keeps the streams sequential where channel order would jump by a channel's
    # whole stride.
    n_outer, kinds, n_run = x.shape
    x_flat = x.reshape(-1)
    y_flat = y.reshape(-1)
    residual_flat = residual.reshape(-1)
    segments = n_outer * kinds
    per_item = max(1, _GIVEN_ITEM // max(n_run, 1))
    for item in prange((segments + per_item - 1) // per_item):
        for segment in range(item * per_item, min(segments, (item + 1) * per_item)):
            kind = segment % kinds
            subtract = shift[kind]
            factor = scale[kind]
            add = offset[kind]
            x_segment = x_flat[segment * n_run:(segment + 1) * n_run]
            y_segment = y_flat[segment * n_run:(segment + 1) * n_run]
            residual_segment = residual_flat[segment * n_run:(segment + 1) * n_run]
            for i in range(n_run):
                value = (x_segment[i] - subtract) * factor + add
                if add_residual:
                    value += residual_segment[i]
                if activate and value < 0:
                    value *= slope
                y_segment[i] = value


affine_segments_kernel = jit(_affine_segments, parallel=True, fastmath=_FASTMATH)


def _reduce_runs(grad_out, x, k, n_sub, param_base, weight, shift, scale, grad_weight_part,
                 grad_bias_part, write_ahead):
    """Per-``k`` sums of ``w·g`` and ``w·g·x_hat``; per-parameter sums into the parts.

    ``x_hat = (x - shift) * scale`` is recomputed in x's dtype, as the forward did. Each
    piece (at most ``_SPAN``) is summed in x's dtype, the pieces in float64.
    ``write_ahead``: dx, whose run ``[0, k]`` is prefetched for writing piece by piece
    as it is summed, or None (a type of its own: the kernel compiled without it).
    """
    n_inner = x.shape[2] // n_sub
    sum_grad = np.float64(0.0)
    sum_grad_x_hat = np.float64(0.0)
    piece = _run_piece_kernel(x.shape[0], n_inner)
    for a in range(x.shape[0]):
        has_next = a + 1 < x.shape[0]
        for s in range(n_sub):
            grad_run = grad_out[a, k, s * n_inner:(s + 1) * n_inner]
            x_run = x[a, k, s * n_inner:(s + 1) * n_inner]
            run_grad = np.float64(0.0)
            run_grad_x_hat = np.float64(0.0)
            for start in range(0, n_inner, piece):
                # batch norm's runs lie an image apart, and the hardware prefetcher
                # starts cold on each: the same piece of the next run is requested as
                # each piece of this one is summed (N32 C64 32^2 fwd+bwd: 0.92-0.94 of
                # the time; its head only: 0.96; all of it at once: 0.98)
                if has_next:
                    ahead = s * n_inner + start
                    prefetch(grad_out[a + 1, k, ahead:ahead + piece])
                    prefetch(x[a + 1, k, ahead:ahead + piece])
                if write_ahead is not None:
                    here = s * n_inner + start
                    prefetch_for_write(write_ahead[0, k, here:here + piece])
                piece_grad, piece_grad_x_hat = _piece_sums_kernel(
                    grad_run[start:start + piece], x_run[start:start + piece], shift, scale)
                run_grad += piece_grad
                run_grad_x_hat += piece_grad_x_hat
            w = weight[param_base + s]
            sum_grad += w * run_grad
            sum_grad_x_hat += w * run_grad_x_hat
            grad_bias_part[param_base + s] += run_grad
            grad_weight_part[param_base + s] += run_grad_x_hat
    return sum_grad, sum_grad_x_hat


def _input_grad_runs(grad_out, x, k, n_sub, param_base, weight, shift, scale, mean_grad,
                     mean_grad_x_hat, grad_x):
    """``dx = scale · (w·g − mean_grad − x_hat · mean_grad_x_hat)`` over ``[:, k]``."""
    n_inner = x.shape[2] // n_sub
    piece = _run_piece_kernel(x.shape[0], n_inner)
    for a in range(x.shape[0]):
        for s in range(n_sub):
            grad_run = grad_out[a, k, s * n_inner:(s + 1) * n_inner]
            x_run = x[a, k, s * n_inner:(s + 1) * n_inner]
            grad_x_run = grad_x[a, k, s * n_inner:(s + 1) * n_inner]
            w = weight[param_base + s]
            for start in range(0, n_inner, piece):
                _prefetch_next_run_kernel(grad_x, a, k, s * n_inner + start, piece)
                _input_grad_piece_kernel(grad_run[start:start + piece],
                                         x_run[start:start + piece], shift, scale, w,
                                         mean_grad, mean_grad_x_hat,
                                         grad_x_run[start:start + piece])


_reduce_runs_kernel = _inlined(_reduce_runs)
_input_grad_runs_kernel = _inlined(_input_grad_runs)


def _normalize_backward(grad_out, x, weight, n_params, n_sub, mean, inv_std, use_input_stats,
                        needs_grad_x, grad_x, write_ahead, memory_order):
    # grad_out, x, grad_x: (A, K, S * B); weight: (P * S,) in x's dtype; mean,
    # inv_std: (K,) float64, the forward's statistics. Returns grad_weight and
    # grad_bias, (P * S,) float64, summed per fixed chunk of k, then over chunks.
    # write_ahead: grad_x itself where A = 1 and runs are of LONG_RUN_BYTES or more
    # (see there), else None. memory_order: as the forward's.
    count = x.shape[0] * x.shape[2]
    n_kept = x.shape[1]
    n_chunks = _grad_chunks_kernel(n_kept)
    # zeroed per chunk inside the loop: np.zeros here would be a parallel loop of its own,
    # and each one costs waking the sleeping workers (tens of microseconds)
    grad_weight_parts = np.empty((n_chunks, weight.shape[0]))
    grad_bias_parts = np.empty((n_chunks, weight.shape[0]))
    to_dtype = x.dtype.type
    for chunk in prange(n_chunks):
        grad_weight_parts[chunk] = 0.0
        grad_bias_parts[chunk] = 0.0
        first, stop = _chunk_bounds_kernel(chunk, n_chunks, n_kept)
        if memory_order == LANE_WALK:
            _lane_backward_kernel(grad_out, x, first, stop, weight, mean, inv_std,
                                  use_input_stats, needs_grad_x, grad_weight_parts[chunk],
                                  grad_bias_parts[chunk], grad_x)
            continue
        if memory_order == RUN_WALK:
            _short_backward_kernel(grad_out, x, first, stop, weight, mean, inv_std,
                                   use_input_stats, needs_grad_x, grad_weight_parts[chunk],
                                   grad_bias_parts[chunk], grad_x)
            continue
        for k in range(first, stop):
            param_base = (k % n_params) * n_sub
            shift, scale = to_dtype(mean[k]), to_dtype(inv_std[k])
            sum_grad, sum_grad_x_hat = _reduce_runs_kernel(
                grad_out, x, k, n_sub, param_base, weight, shift, scale,
                grad_weight_parts[chunk], grad_bias_parts[chunk], write_ahead)
            if not needs_grad_x:
                continue
            # with fixed (running) statistics x_hat does not depend on the batch
            mean_grad = sum_grad / count if use_input_stats else 0.0
            mean_grad_x_hat = sum_grad_x_hat / count if use_input_stats else 0.0
            _input_grad_runs_kernel(grad_out, x, k, n_sub, param_base, weight, shift, scale,
                                    to_dtype(mean_grad), to_dtype(mean_grad_x_hat), grad_x)
    return _sum_chunks_kernel(grad_weight_parts), _sum_chunks_kernel(grad_bias_parts)


normalize_backward_kernel = jit(_normalize_backward, parallel=True, fastmath=_FASTMATH)


# ---------------------------------------------------------------------------
# The same passes split, for statistics taken over a larger batch than x's
# (SyncBatchNorm: each rank holds part of it, the sums are added across ranks)
# ---------------------------------------------------------------------------

def _moments(x, mean, var, memory_order):
    # x: (A, K, S * B); mean, var (biased): (K,) float64 outputs, as _normalize_forward's
    # (lane by lane where it goes so)
    n_kept = x.shape[1]
    n_chunks = _grad_chunks_kernel(n_kept)
    for chunk in prange(n_chunks):
        first, stop = _chunk_bounds_kernel(chunk, n_chunks, n_kept)
        if memory_order == LANE_WALK:
            _lane_moments_kernel(x, first, stop, mean, var)
            continue
        for k in range(first, stop):
            mean_k, var_k = _moments_of_kernel(x, k)
            mean[k] = mean_k
            var[k] = var_k


moments_kernel = jit(_moments, parallel=True, fastmath=_FASTMATH)


def _normalize_input_grad(grad_out, x, weight, n_params, n_sub, mean, inv_std, mean_grad,
                          mean_grad_x_hat, grad_x):
    # dx as _normalize_backward's with input statistics, the means of w·g and w·g·x_hat
    # per k given (mean_grad, mean_grad_x_hat: (K,) float64) instead of taken over x
    to_dtype = x.dtype.type
    n_kept = x.shape[1]
    n_chunks = _grad_chunks_kernel(n_kept)
    for chunk in prange(n_chunks):
        first, stop = _chunk_bounds_kernel(chunk, n_chunks, n_kept)
        for k in range(first, stop):
            _input_grad_runs_kernel(grad_out, x, k, n_sub, (k % n_params) * n_sub, weight,
                                    to_dtype(mean[k]), to_dtype(inv_std[k]),
                                    to_dtype(mean_grad[k]), to_dtype(mean_grad_x_hat[k]),
                                    grad_x)


normalize_input_grad_kernel = jit(_normalize_input_grad, parallel=True, fastmath=_FASTMATH)
