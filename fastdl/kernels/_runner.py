"""The prepared-call closure shared by the forward convolution paths."""
import numpy as np


def fused_runner(forward, out_shape, weight, middle, bias, negative_slope):
    """``run(x, out=None, residual=None)`` around a compiled forward with a fused epilogue.

    ``forward(x, weight, out, *middle, bias, residual, activate, slope)`` is the
    calling convention of the im2col, Winograd and direct loops; ``out`` is
    allocated (``out_shape``, x's dtype) when not given.
    """
    activate = negative_slope is not None
    slope = 0.0 if negative_slope is None else float(negative_slope)

    def run(x, out=None, residual=None):
        if out is None:
            out = np.empty(out_shape, dtype=x.dtype)
        forward(x, weight, out, *middle, bias, residual, activate, slope)
        return out
    return run
