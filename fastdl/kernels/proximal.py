"""Proximal steps over an optimizer's flat parameter buffer (Numba).

The proximal operator of ``t * ||w||_1`` is the soft threshold
``w <- sign(w) max(|w| - t, 0)``: applied after a gradient step with
``t = lr * l1`` it is proximal gradient descent (ISTA), which sets to exactly 0
the weights that the L1 term should remove — a subgradient step
``w - lr * l1 * sign(w)`` only makes them oscillate around 0.

One parallel loop over the chunks of the flat buffer (``kernels.optim.make_chunks``),
with the threshold per segment (0 leaves a parameter unchanged).
"""
from fastdl.kernels._jit import jit, prange

__all__ = ["soft_threshold_"]


def _soft_threshold(params, chunk_start, chunk_end, chunk_segment, threshold):
    for chunk in prange(chunk_start.shape[0]):
        t = threshold[chunk_segment[chunk]]
        if t > 0.0:
            for i in range(chunk_start[chunk], chunk_end[chunk]):
                w = params[i]
                if w > t:
                    params[i] = w - t
                elif w < -t:
                    params[i] = w + t
                elif w == w:      # a NaN weight stays NaN, for the caller to notice
                    params[i] = 0.0


_SOFT_THRESHOLD = jit(_soft_threshold, parallel=True)


def soft_threshold_(params, chunk_start, chunk_end, chunk_segment, threshold):
    """In place on the 1-D contiguous ``params``: ``w <- sign(w) max(|w| - t, 0)`` with
    ``t = threshold[segment]`` (in the params' dtype) over each chunk's range."""
    _SOFT_THRESHOLD(params, chunk_start, chunk_end, chunk_segment,
                    threshold.astype(params.dtype, copy=False))
