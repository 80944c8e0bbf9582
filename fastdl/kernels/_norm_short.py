"""Batch norm's walks of short runs in memory order (4x4 and 8x8 maps): each image's
runs of a chunk of channels one after another, instead of channel by channel (see
``SHORT_RUN_BYTES``), run by run or lane by lane (``LANE_RUN_BYTES``). The parallel
kernels of ``_norm_loops`` call them per chunk."""
import numpy as np

from fastdl.kernels._norm_pieces import (_SPAN, _block_moments_kernel, _inlined,
                                         _input_grad_piece_kernel, _merge_moments_kernel,
                                         _move_into_inlined, _normalize_piece_kernel,
                                         _piece_sums_kernel)

# bytes of a run up to which batch norm walks a chunk of channels in memory order (each
# image's runs of the chunk one after another) instead of channel by channel: on 4x4
# and 8x8 maps a run is one to four cache lines, the next image's a whole image
# further, and the per-run prefetches and loop overheads cost more than the run (N32
# C960 4^2, backward 0.94 ms against torch's 0.19). Every sum is still formed run by
# run in the same order; the float64 moment merge may be reassociated differently in
# the two loops (fastmath ``reassoc``), so the two walks agree to rounding, not always
# to the bit. Which walk runs depends on the shape alone, never on the thread count.
SHORT_RUN_BYTES = 256
# bytes of a run up to which the memory-order walk goes lane by lane (``_lane_forward``):
# the chunk's runs of an image as one row, each pass a loop over the row. A 4x4 map's
# run of 16 float32 is shorter than LLVM's vectorised loop body (two or four vectors)
# and ran its scalar remainder (N32 C960 4^2, interleaved: forward 0.29-0.48 -> 0.14-0.24
# ms, backward 0.38 -> 0.18-0.31); from 8x8 the runs' own loops vectorise and the lanes'
# extra loads lose (C384: backward 0.17 against 0.23).
LANE_RUN_BYTES = 64
CHANNEL_WALK, RUN_WALK, LANE_WALK = 0, 1, 2


def memory_order(x, n_sub):
    """How batch norm's kernels walk ``x`` (A, K, S * B): ``CHANNEL_WALK``, or image by
    image where there is one run an (a, k) (``n_sub`` 1), several images and runs of at
    most ``SHORT_RUN_BYTES`` (``RUN_WALK``), lane by lane for runs of at most
    ``LANE_RUN_BYTES`` (``LANE_WALK``)."""
    if n_sub != 1 or x.shape[0] < 2 or x.shape[2] * x.itemsize > SHORT_RUN_BYTES:
        return CHANNEL_WALK
    return LANE_WALK if x.shape[2] * x.itemsize <= LANE_RUN_BYTES else RUN_WALK


def _lane_sum(lanes, first, count):
    """Sum of ``lanes[first:first + count]`` (float64), in order."""
    total = np.float64(0.0)
    for i in range(first, first + count):
        total += lanes[i]
    return total


_lane_sum_kernel = _inlined(_lane_sum)


def _fill_lanes(lanes, first, count, value):
    for i in range(first, first + count):
        lanes[i] = value


_fill_lanes_kernel = _inlined(_fill_lanes)


def _lane_moments(x, first, stop, mean, var):
    """Mean and biased variance of channels ``[first, stop)`` image by image, for runs
    of one cache line or less (``LANE_RUN_BYTES``).

    The chunk's runs of one image are one contiguous row; each pass walks the rows lane
    by lane (lane ``i``: element ``i`` of the row), its loop as long as the row, where
    a run's loop of 16 elements ran LLVM's scalar remainder. The lane sums run in x's
    dtype over spans of images (``_SPAN`` elements a channel), the spans added in
    float64, a channel's lanes then in order. The two passes form the moments as
    ``_block_moments`` does over the channel's whole data: the pivot, then the
    deviations from it and their squares.
    """
    n_outer, n_kept, n_run = x.shape
    rows = x.reshape(n_outer, n_kept * n_run)
    start, end = first * n_run, stop * n_run
    width = end - start
    per_span = max(1, _SPAN // n_run)
    count = n_outer * n_run
    part = np.zeros(width, dtype=x.dtype)
    part_squares = np.zeros(width, dtype=x.dtype)
    total = np.zeros(width)
    total_squares = np.zeros(width)
    pivots = np.empty(width, dtype=x.dtype)
    for a in range(n_outer):
        row = rows[a, start:end]
        for i in range(width):
            part[i] += row[i]
        if (a + 1) % per_span == 0 or a + 1 == n_outer:
            _move_into_inlined(part, total)
    for k in range(first, stop):
        base = (k - first) * n_run
        _fill_lanes_kernel(pivots, base, n_run,
                           x.dtype.type(_lane_sum_kernel(total, base, n_run) / count))
    total[:] = 0.0
    for a in range(n_outer):
        row = rows[a, start:end]
        for i in range(width):
            deviation = row[i] - pivots[i]
            part[i] += deviation
            part_squares[i] += deviation * deviation
        if (a + 1) % per_span == 0 or a + 1 == n_outer:
            _move_into_inlined(part, total)
            _move_into_inlined(part_squares, total_squares)
    for k in range(first, stop):
        base = (k - first) * n_run
        deviation_mean = _lane_sum_kernel(total, base, n_run) / count
        mean[k] = pivots[base] + deviation_mean
        var[k] = (_lane_sum_kernel(total_squares, base, n_run)
                  - count * deviation_mean * deviation_mean) / count


_lane_moments_kernel = _inlined(_lane_moments)


def _lane_forward(x, first, stop, weight, bias, eps, mean, var, inv_std, y):
    """Batch norm's forward on channels ``[first, stop)``: ``_lane_moments``, then y
    lane by lane as ``_normalize_piece`` forms it."""
    if first >= stop:
        return
    _lane_moments_kernel(x, first, stop, mean, var)
    n_outer, n_kept, n_run = x.shape
    rows = x.reshape(n_outer, n_kept * n_run)
    out_rows = y.reshape(n_outer, n_kept * n_run)
    start, end = first * n_run, stop * n_run
    width = end - start
    shift = np.empty(width, dtype=x.dtype)
    factor = np.empty(width, dtype=x.dtype)
    offset = np.empty(width, dtype=x.dtype)
    for k in range(first, stop):
        base = (k - first) * n_run
        inv_std[k] = 1.0 / np.sqrt(var[k] + eps)
        scale = x.dtype.type(inv_std[k])
        _fill_lanes_kernel(shift, base, n_run, x.dtype.type(mean[k]))
        _fill_lanes_kernel(factor, base, n_run, scale * weight[k])
        _fill_lanes_kernel(offset, base, n_run, bias[k])
    for a in range(n_outer):
        row = rows[a, start:end]
        out = out_rows[a, start:end]
        for i in range(width):
            out[i] = (row[i] - shift[i]) * factor[i] + offset[i]


def _short_forward(x, first, stop, weight, bias, eps, mean, var, inv_std, y):
    """Batch norm's forward on channels ``[first, stop)`` image by image: each run's
    moments merged into its channel's as ``_moments_of`` merges them, then y."""
    if first >= stop:
        return
    means = np.zeros(stop - first)
    squares = np.zeros(stop - first)
    count = 0
    for a in range(x.shape[0]):
        for k in range(first, stop):
            block_mean, block_squares = _block_moments_kernel(x[a, k])
            means[k - first], squares[k - first] = _merge_moments_kernel(
                count, means[k - first], squares[k - first], x.shape[2], block_mean,
                block_squares)
        count += x.shape[2]
    for k in range(first, stop):
        mean[k] = means[k - first]
        var[k] = squares[k - first] / count
        inv_std[k] = 1.0 / np.sqrt(var[k] + eps)
    for a in range(x.shape[0]):
        for k in range(first, stop):
            _normalize_piece_kernel(x[a, k], x.dtype.type(mean[k]), x.dtype.type(inv_std[k]),
                                    weight[k], bias[k], y[a, k])


_short_forward_kernel = _inlined(_short_forward)
_lane_forward_kernel = _inlined(_lane_forward)


def _lane_backward(grad_out, x, first, stop, weight, mean, inv_std, use_input_stats,
                   needs_grad_x, grad_weight_part, grad_bias_part, grad_x):
    """Batch norm's backward on channels ``[first, stop)`` image by image, lane by lane
    as ``_lane_forward`` walks them: the sums of ``g`` and ``g * x_hat`` (in x's dtype
    over spans of images, in float64 after), then dx as ``_input_grad_piece``."""
    if first >= stop:
        return
    n_outer, n_kept, n_run = x.shape
    grad_rows = grad_out.reshape(n_outer, n_kept * n_run)
    rows = x.reshape(n_outer, n_kept * n_run)
    start, end = first * n_run, stop * n_run
    width = end - start
    per_span = max(1, _SPAN // n_run)
    count = n_outer * n_run
    to_dtype = x.dtype.type
    shift = np.empty(width, dtype=x.dtype)
    scale = np.empty(width, dtype=x.dtype)
    for k in range(first, stop):
        _fill_lanes_kernel(shift, (k - first) * n_run, n_run, to_dtype(mean[k]))
        _fill_lanes_kernel(scale, (k - first) * n_run, n_run, to_dtype(inv_std[k]))
    part_grad = np.zeros(width, dtype=x.dtype)
    part_grad_x_hat = np.zeros(width, dtype=x.dtype)
    total_grad = np.zeros(width)
    total_grad_x_hat = np.zeros(width)
    for a in range(n_outer):
        grad_row = grad_rows[a, start:end]
        row = rows[a, start:end]
        for i in range(width):
            part_grad[i] += grad_row[i]
            part_grad_x_hat[i] += grad_row[i] * ((row[i] - shift[i]) * scale[i])
        if (a + 1) % per_span == 0 or a + 1 == n_outer:
            _move_into_inlined(part_grad, total_grad)
            _move_into_inlined(part_grad_x_hat, total_grad_x_hat)
    # the lanes of the sums become those of w and of the two means of dx
    weights, mean_grads, mean_grad_x_hats = part_grad, part_grad_x_hat, np.empty_like(shift)
    for k in range(first, stop):
        base = (k - first) * n_run
        run_grad = _lane_sum_kernel(total_grad, base, n_run)
        run_grad_x_hat = _lane_sum_kernel(total_grad_x_hat, base, n_run)
        grad_bias_part[k] += run_grad
        grad_weight_part[k] += run_grad_x_hat
        w = weight[k]
        _fill_lanes_kernel(weights, base, n_run, w)
        _fill_lanes_kernel(mean_grads, base, n_run,
                           to_dtype(w * run_grad / count if use_input_stats else 0.0))
        _fill_lanes_kernel(mean_grad_x_hats, base, n_run,
                           to_dtype(w * run_grad_x_hat / count if use_input_stats else 0.0))
    if not needs_grad_x:
        return
    grad_x_rows = grad_x.reshape(n_outer, n_kept * n_run)
    for a in range(n_outer):
        grad_row = grad_rows[a, start:end]
        row = rows[a, start:end]
        grad_x_row = grad_x_rows[a, start:end]
        for i in range(width):
            x_hat = (row[i] - shift[i]) * scale[i]
            grad_x_row[i] = scale[i] * (weights[i] * grad_row[i] - mean_grads[i]
                                        - x_hat * mean_grad_x_hats[i])


def _short_backward(grad_out, x, first, stop, weight, mean, inv_std, use_input_stats,
                    needs_grad_x, grad_weight_part, grad_bias_part, grad_x):
    """Batch norm's backward on channels ``[first, stop)`` image by image: the sums of
    ``_reduce_runs`` run by run in the same order (one piece a run), then dx as
    ``_input_grad_runs`` writes it."""
    if first >= stop:
        return
    to_dtype = x.dtype.type
    sums_grad = np.zeros(stop - first)
    sums_grad_x_hat = np.zeros(stop - first)
    for a in range(x.shape[0]):
        for k in range(first, stop):
            piece_grad, piece_grad_x_hat = _piece_sums_kernel(
                grad_out[a, k], x[a, k], to_dtype(mean[k]), to_dtype(inv_std[k]))
            run_grad = np.float64(0.0) + piece_grad
            run_grad_x_hat = np.float64(0.0) + piece_grad_x_hat
            w = weight[k]
            sums_grad[k - first] += w * run_grad
            sums_grad_x_hat[k - first] += w * run_grad_x_hat
            grad_bias_part[k] += run_grad
            grad_weight_part[k] += run_grad_x_hat
    if not needs_grad_x:
        return
    count = x.shape[0] * x.shape[2]
    for a in range(x.shape[0]):
        for k in range(first, stop):
            mean_grad = to_dtype(sums_grad[k - first] / count if use_input_stats else 0.0)
            mean_grad_x_hat = to_dtype(sums_grad_x_hat[k - first] / count
                                       if use_input_stats else 0.0)
            _input_grad_piece_kernel(grad_out[a, k], x[a, k], to_dtype(mean[k]),
                                     to_dtype(inv_std[k]), weight[k], mean_grad,
                                     mean_grad_x_hat, grad_x[a, k])


_short_backward_kernel = _inlined(_short_backward)
_lane_backward_kernel = _inlined(_lane_backward)
