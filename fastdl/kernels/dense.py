"""Dense layer forward with a fused bias and activation (``fastdl_ext/dense.pyx``)."""
import numpy as np

from fastdl import runtime
from fastdl_ext import dense as _ext

__all__ = ["linear_forward"]


def linear_forward(x, weight, bias=None, out=None, negative_slope=None, threads=None):
    """``act(x @ weight.T + bias)`` in one GEMM per thread plus an in-cache epilogue.

    Parameters
    ----------
    x : ndarray (N, in_features), float32 or float64
    weight : ndarray (out_features, in_features), same dtype, C-contiguous
    bias : ndarray (out_features,) or None
    out : ndarray (N, out_features), optional, C-contiguous
    negative_slope : float, optional
        Apply ``v if v > 0 else negative_slope * v`` last (0: ReLU).
    threads : int, optional
        At most this many threads share the output features (default:
        ``fastdl.get_num_threads()``).

    Returns
    -------
    ndarray (N, out_features)
    """
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    _ext.linear_forward_into(x, weight, out, bias, negative_slope is not None,
                             0.0 if negative_slope is None else float(negative_slope),
                             runtime.get_num_threads() if threads is None else threads)
    return out
