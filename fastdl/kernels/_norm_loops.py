"""The compiled loops behind ``fastdl.kernels.norm`` (see its design notes).

Plain-Python kernels bound through ``jit``: batch, group and instance norm on
the ``(A, K, S, B)`` view, and the statistics and chunking helpers that the layer
norm kernels (``_norm_rows``) share.

Every helper is inlined into the parallel kernel that uses it (``_inlined``): no
call per run or piece inside the loops (a call passes each array with a reference
count, an atomic instruction), and each kernel compiled with one set of fastmath
flags (``_FASTMATH``).
"""
import numpy as np

from fastdl.kernels._jit import jit, prange
from fastdl.kernels._prefetch import prefetch, prefetch_for_write

# elements per statistics block: 16 KiB of float32, resident in L1 for the second pass
_BLOCK = 4096
# elements summed in x's dtype before joining a float64 total: the memory-bound first
# passes then run at the full SIMD width with no conversions; 1024 float32 terms,
# vectorised, leave each lane's partial sum a few dozen terms long, so the float64 total
# keeps ~1e-7 relative accuracy however long the reduction
_SPAN = 1024
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


# fixed number of chunks for the parameter-gradient sums (independent of threads);
# the forward passes take the same chunks
_GRAD_CHUNKS = 64
# elements per work item of the forward with given statistics (64 KiB of float32)
_GIVEN_ITEM = 16384
# the flags of every kernel here: reassoc lets LLVM vectorise the sums in an order
# fixed at compile time (so results do not depend on the thread count); contract:
# FMA. Both change results by rounding only; no nnan/ninf, so NaN and inf propagate.
_FASTMATH = {"reassoc", "contract"}


def _inlined(function):
    """``function`` compiled into each caller (no call, no reference counting), under
    the caller's fastmath flags."""
    return jit(function, inline="always")


def _grad_chunks(n_items):
    """The number of chunks of the parameter-gradient sums over ``n_items``: at most
    ``_GRAD_CHUNKS``, whatever the thread count."""
    return min(n_items, _GRAD_CHUNKS)


def _chunk_bounds(chunk, n_chunks, n_items):
    """``[first, stop)`` of chunk ``chunk``: the items shared out as evenly as they go
    (sizes differ by at most one). A ``prange`` over the chunks splits them evenly
    among the threads, so each thread gets its share of the items: with ``ceil(n /
    chunks)`` items a chunk, 144 channels filled 48 of 64 chunks and the first of two
    threads took 96 of them (batch norm N32 C144 32^2 forward 1.4x the time a channel
    of C128's)."""
    return chunk * n_items // n_chunks, (chunk + 1) * n_items // n_chunks


_grad_chunks_kernel = _inlined(_grad_chunks)
_chunk_bounds_kernel = _inlined(_chunk_bounds)


def _sum_chunks(parts):
    """Column sums of ``parts`` (chunks, P), adding the chunks in order (float64)."""
    total = np.zeros(parts.shape[1])
    for chunk in range(parts.shape[0]):
        part = parts[chunk]
        for i in range(part.shape[0]):
            total[i] += part[i]
    return total


# a call, after the parallel loop (inlined there, the backward kernels ran 10-20 % slower)
_sum_chunks_kernel = jit(_sum_chunks)


# ---------------------------------------------------------------------------
# Numba kernels on the (A, K, S, B) layout
# ---------------------------------------------------------------------------

def _span_sum(values):
    """Sum of a 1-D ``values``: partial sums of ``_SPAN`` elements in its dtype, added in
    float64."""
    # loops index from 0 over slices throughout this module: Numba then knows
    # the index is non-negative, drops its wraparound check, and LLVM vectorises
    total = np.float64(0.0)
    for start in range(0, values.shape[0], _SPAN):
        span = values[start:start + _SPAN]
        part = span.dtype.type(0)
        for i in range(span.shape[0]):
            part += span[i]
        total += part
    return total


_span_sum_kernel = _inlined(_span_sum)


def _block_moments(block):
    """Mean and sum of squared deviations of a 1-D ``block`` (two passes, in cache).

    The shifted two-pass form: the first pass gives a pivot (the mean rounded to
    x's dtype), the second sums ``d = x - pivot`` and ``d²``; the mean is
    ``pivot + mean(d)`` and the squares ``sum(d²) - n·mean(d)²``. The deviations
    are of the spread's size, so their float32 span sums keep the variance to
    ~1e-7 relative at any offset (measured: mean 1e4, std 1e-2 exact; mean 1,
    std 1e-4: 2.4e-7).
    """
    n = block.shape[0]
    pivot = block.dtype.type(_span_sum_kernel(block) / n)
    deviations = np.float64(0.0)
    squares = np.float64(0.0)
    for start in range(0, n, _SPAN):
        span = block[start:start + _SPAN]
        part = span.dtype.type(0)
        part_squares = span.dtype.type(0)
        for i in range(span.shape[0]):
            deviation = span[i] - pivot
            part += deviation
            part_squares += deviation * deviation
        deviations += part
        squares += part_squares
    offset = deviations / n
    return pivot + offset, squares - n * offset * offset


_block_moments_kernel = _inlined(_block_moments)


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


def _merge_moments(count, mean, squares, block_count, block_mean, block_squares):
    """Chan et al.'s pairwise update of (count, mean, M2) by a block's: the merged mean
    and M2 (the count is ``count + block_count``)."""
    merged = count + block_count
    delta = block_mean - mean
    return (mean + delta * block_count / merged,
            squares + (block_squares + delta * delta * count * block_count / merged))


_merge_moments_kernel = _inlined(_merge_moments)


def _normalize_piece(x_piece, shift, scale, w, b, y_piece):
    """``y = (x - shift) * (scale * w) + b``, in x's dtype, over one piece of a run (the
    forward with given statistics, ``_normalize_given``, forms the same product)."""
    scale_w = scale * w
    for i in range(x_piece.shape[0]):
        y_piece[i] = (x_piece[i] - shift) * scale_w + b


_normalize_piece_kernel = _inlined(_normalize_piece)


def _piece_sums(grad_piece, x_piece, shift, scale):
    """``sum(g)`` and ``sum(g * x_hat)`` of one piece, in x's dtype."""
    piece_grad = x_piece.dtype.type(0)
    piece_grad_x_hat = x_piece.dtype.type(0)
    for i in range(grad_piece.shape[0]):
        piece_grad += grad_piece[i]
        piece_grad_x_hat += grad_piece[i] * ((x_piece[i] - shift) * scale)
    return piece_grad, piece_grad_x_hat


_piece_sums_kernel = _inlined(_piece_sums)


def _input_grad_piece(grad_piece, x_piece, shift, scale, w, mean_grad, mean_grad_x_hat,
                      grad_x_piece):
    """``dx = scale · (w·g − mean_grad − x_hat · mean_grad_x_hat)`` over one piece."""
    for i in range(grad_piece.shape[0]):
        x_hat = (x_piece[i] - shift) * scale
        grad_x_piece[i] = scale * (w * grad_piece[i] - mean_grad - x_hat * mean_grad_x_hat)


_input_grad_piece_kernel = _inlined(_input_grad_piece)


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


def _move_into(partial, total):
    """``total += partial`` (widening to ``total``'s dtype), then ``partial = 0``."""
    for i in range(partial.shape[0]):
        total[i] += partial[i]
        partial[i] = 0


_move_into_inlined = _inlined(_move_into)


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
