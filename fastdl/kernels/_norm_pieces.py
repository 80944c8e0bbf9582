"""The inlined pieces of the normalisation kernels (``_norm_loops``, ``_norm_short``,
``_norm_rows``): the constants of their sums, the fixed chunks of their parallel loops,
and the sums, moments and elementwise steps over one piece of a run.

Every helper is inlined into the parallel kernel that uses it (``_inlined``): no
call per run or piece inside the loops (a call passes each array with a reference
count, an atomic instruction), and each kernel compiled with one set of fastmath
flags (``_FASTMATH``).
"""
import numpy as np

from fastdl.kernels._jit import jit

# elements per statistics block: 16 KiB of float32, resident in L1 for the second pass
_BLOCK = 4096
# elements summed in x's dtype before joining a float64 total: the memory-bound first
# passes then run at the full SIMD width with no conversions; 1024 float32 terms,
# vectorised, leave each lane's partial sum a few dozen terms long, so the float64 total
# keeps ~1e-7 relative accuracy however long the reduction
_SPAN = 1024
# fixed number of chunks for the parameter-gradient sums (independent of threads);
# the forward passes take the same chunks
_GRAD_CHUNKS = 64
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


def _move_into(partial, total):
    """``total += partial`` (widening to ``total``'s dtype), then ``partial = 0``."""
    for i in range(partial.shape[0]):
        total[i] += partial[i]
        partial[i] = 0


_move_into_inlined = _inlined(_move_into)
