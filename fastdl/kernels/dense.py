"""Dense layer forward with a fused bias and activation (``fastdl_ext/dense.pyx``)."""
import numpy as np

from fastdl import runtime
from fastdl_ext import dense as _ext

__all__ = ["LinearRunner", "linear_forward"]

# rows of x per register block and output features per packed panel
PANEL_ROWS, PANEL = _ext.panel_shape()


def pack_weight(weight):
    """``weight (F, K)`` as panels ``(ceil(F / PANEL), K, PANEL)``, zeros past F: panel p
    holds ``weight[p * PANEL:(p + 1) * PANEL].T``."""
    features, inputs = weight.shape
    panels = -(-features // PANEL)
    padded = np.zeros((panels * PANEL, inputs), dtype=weight.dtype)
    padded[:features] = weight
    return np.ascontiguousarray(padded.reshape(panels, PANEL, inputs).transpose(0, 2, 1))


class LinearRunner:
    """``act(x @ weight.T + bias)`` for any number of rows, its weights prepared once.

    float32 layers get their weights packed into panels for the register kernel
    (``pack_weight``), used from ``PANEL_ROWS`` rows on; fewer rows, and float64,
    go through BLAS on the weights as they are.

    Parameters
    ----------
    weight : ndarray (out_features, in_features), float32 or float64
    bias : ndarray (out_features,) or None
    negative_slope : float, optional
        Apply ``v if v > 0 else negative_slope * v`` last (0: ReLU).
    """

    def __init__(self, weight, bias=None, negative_slope=None):
        if not isinstance(weight, np.ndarray) or weight.dtype not in (np.float32, np.float64):
            raise TypeError("LinearRunner: weight must be a float32 or float64 ndarray, got %r"
                            % (getattr(weight, "dtype", type(weight)),))
        if weight.ndim != 2:
            raise ValueError("LinearRunner: weight must be 2-D (out_features, in_features), "
                             "got shape %s" % (weight.shape,))
        features = weight.shape[0]
        if bias is not None and np.shape(bias) != (features,):
            raise ValueError("LinearRunner: bias must have shape (%d,), got %s"
                             % (features, np.shape(bias)))
        self.weight = np.ascontiguousarray(weight)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=weight.dtype)
        self.activate = negative_slope is not None
        self.slope = 0.0 if negative_slope is None else float(negative_slope)
        self.panels = self.panel_bias = None
        if weight.dtype == np.float32:
            self.panels = pack_weight(self.weight)
            if self.bias is not None:
                self.panel_bias = np.zeros(self.panels.shape[0] * PANEL, dtype=weight.dtype)
                self.panel_bias[:features] = self.bias

    def __call__(self, x, out=None, threads=None):
        """``act(x (N, in_features) @ weight.T + bias)`` into ``out (N, out_features)``
        (new if None); at most ``threads`` threads (default ``fastdl.get_num_threads()``)."""
        x = np.ascontiguousarray(x)
        if out is None:
            out = np.empty((x.shape[0], self.weight.shape[0]), dtype=x.dtype)
        threads = runtime.get_num_threads() if threads is None else threads
        if self.panels is not None and x.dtype == np.float32 and x.ndim == 2 \
                and x.shape[0] >= PANEL_ROWS:
            _ext.linear_packed_into(x, self.panels, out, self.panel_bias, self.activate,
                                    self.slope, threads)
        else:
            _ext.linear_forward_into(x, self.weight, out, self.bias, self.activate,
                                     self.slope, threads)
        return out

    def step(self, x, out):
        """This layer as one dense step of a direct-conv chain (``Chain.set_dense``): it
        reads ``x`` (rows, in_features) and writes ``out`` (rows, out_features) with the
        packed float32 kernel (``PANEL_ROWS`` rows or more)."""
        return (x, self.panels, self.panel_bias, out, self.activate, self.slope)


def linear_forward(x, weight, bias=None, out=None, negative_slope=None, threads=None):
    """``act(x @ weight.T + bias)`` with the bias and activation fused into its kernel.

    Parameters
    ----------
    x : ndarray (N, in_features), float32 or float64
    weight : ndarray (out_features, in_features), same dtype
    bias : ndarray (out_features,) or None
    out : ndarray (N, out_features), optional, C-contiguous
    negative_slope : float, optional
        Apply ``v if v > 0 else negative_slope * v`` last (0: ReLU).
    threads : int, optional
        At most this many threads (default: ``fastdl.get_num_threads()``).

    Returns
    -------
    ndarray (N, out_features)

    A layer called more than once should be a ``LinearRunner``: this packs the
    weights on every call.
    """
    return LinearRunner(weight, bias, negative_slope)(x, out, threads)
