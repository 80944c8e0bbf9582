"""Activation kernels, forward and backward: relu, leaky_relu, sigmoid, tanh,
softmax, log_softmax, dropout.

Elementwise kernels run one flat ``prange`` loop; below a size set per kernel
(``_bind``) a serial binding is used, since waking the thread pool costs more
than the work. Softmax-type kernels work on
rows: the reduced axis is moved last (one copy when it is not already last)
and each row is max-shifted before ``exp`` so nothing overflows.
"""
import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "softmax_forward", "softmax_backward", "log_softmax_forward",
           "log_softmax_backward", "dropout_mask"]

# Elements from which a kernel's parallel version runs. Waking the worker team
# costs ~20 µs, so a loop that streams memory (ReLU: 0.17 ns an element on one
# core) breaks even only near 300k elements (measured: 102k, 18 µs serial vs
# 32 µs parallel; 301k, 52 vs 54 µs); loops that call exp pay off far sooner.
_PARALLEL_MIN = 1 << 15
_PARALLEL_MIN_STREAMING = 1 << 18


def _bind(function, parallel_min=_PARALLEL_MIN):
    """(serial, parallel, parallel_min): both compiled versions of one flat kernel."""
    return jit(function), jit(function, parallel=True), parallel_min


def _pick(kernels, size):
    return kernels[1] if size >= kernels[2] else kernels[0]


def _flat(array):
    return np.ascontiguousarray(array).reshape(-1)


def _leaky_relu_flat(x, slope, out):
    for i in prange(x.size):
        value = x[i]
        out[i] = value if value > 0 else value * slope + 0.0  # + 0.0 turns -0.0 into 0.0


def _leaky_relu_grad_flat(grad, x, slope, out):
    for i in prange(x.size):
        out[i] = grad[i] if x[i] > 0 else grad[i] * slope


def _sigmoid_flat(x, out):
    for i in prange(x.size):
        value = x[i]
        if value >= 0:
            out[i] = 1.0 / (1.0 + np.exp(-value))
        else:  # exp(value) cannot overflow for negative value
            e = np.exp(value)
            out[i] = e / (1.0 + e)


_LEAKY = _bind(_leaky_relu_flat, _PARALLEL_MIN_STREAMING)
_LEAKY_GRAD = _bind(_leaky_relu_grad_flat, _PARALLEL_MIN_STREAMING)
_SIGMOID = _bind(_sigmoid_flat)


def _elementwise(pair, x, *args):
    flat = _flat(x)
    out = np.empty_like(flat)
    _pick(pair, flat.size)(flat, *args, out)
    return out.reshape(np.shape(x))


def relu_forward(x):
    """``max(x, 0)``; x any shape, float32/float64."""
    return _elementwise(_LEAKY, x, x.dtype.type(0))


def relu_backward(grad_out, output):
    """Gradient of relu from its output: ``grad_out * (output > 0)``."""
    return _elementwise_grad(grad_out, output, 0.0)


def leaky_relu_forward(x, negative_slope=0.01):
    """``x if x > 0 else negative_slope * x``."""
    return _elementwise(_LEAKY, x, x.dtype.type(negative_slope))


def _elementwise_grad(grad_out, x, slope):
    grad_flat, x_flat = _flat(grad_out), _flat(x)
    out = np.empty_like(grad_flat)
    _pick(_LEAKY_GRAD, x_flat.size)(grad_flat, x_flat, grad_flat.dtype.type(slope), out)
    return out.reshape(np.shape(x))


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    """Gradient of leaky_relu from its input ``x`` (or output: same sign)."""
    return _elementwise_grad(grad_out, x, negative_slope)


def sigmoid_forward(x):
    """``1 / (1 + exp(-x))``, evaluated so that no ``exp`` overflows."""
    return _elementwise(_SIGMOID, x)


def sigmoid_backward(grad_out, output):
    """Gradient of sigmoid from its output: ``grad_out * y * (1 - y)``."""
    return grad_out * output * (1 - output)


def tanh_forward(x):
    """``tanh(x)``."""
    return np.tanh(x)


def tanh_backward(grad_out, output):
    """Gradient of tanh from its output: ``grad_out * (1 - y**2)``."""
    return grad_out * (1 - output * output)


def _softmax_rows(x, out, log):
    for row in prange(x.shape[0]):
        peak, peak_index = row_peak(x[row])
        # log(sum exp) = peak + log1p(sum of the others): exact for the dominant entry
        rest = 0.0
        for j in range(x.shape[1]):
            if j != peak_index:
                rest += np.exp(x[row, j] - peak)
        if log:
            log_rest = np.log1p(rest)
            for j in range(x.shape[1]):
                out[row, j] = (x[row, j] - peak) - log_rest  # peak + tiny would round
        else:
            inverse = 1.0 / (1.0 + rest)
            for j in range(x.shape[1]):
                out[row, j] = np.exp(x[row, j] - peak) * inverse


def _row_peak(values):
    """Maximum of a 1-D row and its first index."""
    peak = values[0]
    index = 0
    for j in range(1, values.shape[0]):
        if values[j] > peak:
            peak = values[j]
            index = j
    return peak, index


row_peak = jit(_row_peak, inline="always")
_SOFTMAX = _bind(_softmax_rows)


def _rows(x, dim):
    """``x`` with axis ``dim`` last, as a C-contiguous (rows, size) matrix, and the undo."""
    dim = dim % x.ndim
    moved = np.moveaxis(x, dim, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, x.shape[dim])

    def restore(matrix):
        return np.moveaxis(matrix.reshape(moved.shape), -1, dim)
    return rows, restore


def _softmax(x, dim, log):
    rows, restore = _rows(x, dim)
    out = np.empty_like(rows)
    if rows.size:
        _pick(_SOFTMAX, rows.size)(rows, out, log)
    return np.ascontiguousarray(restore(out))


def softmax_forward(x, dim):
    """Softmax along ``dim`` (max-shifted)."""
    return _softmax(x, dim, False)


def log_softmax_forward(x, dim):
    """Log-softmax along ``dim``: ``x - max - log(sum(exp(x - max)))``."""
    return _softmax(x, dim, True)


def softmax_backward(grad_out, output, dim):
    """Gradient of softmax from its output: ``y * (g - sum(g * y, dim))``."""
    return output * (grad_out - np.sum(grad_out * output, axis=dim, keepdims=True))


def log_softmax_backward(grad_out, output, dim):
    """Gradient of log_softmax from its output: ``g - exp(y) * sum(g, dim)``."""
    return grad_out - np.exp(output) * np.sum(grad_out, axis=dim, keepdims=True)


def dropout_mask(shape, p, generator, dtype):
    """Inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``.

    Parameters
    ----------
    shape : tuple
    p : float in [0, 1]
    generator : numpy.random.Generator
    dtype : numpy dtype
    """
    if p == 0:
        return np.ones(shape, dtype=dtype)
    if p == 1:
        return np.zeros(shape, dtype=dtype)
    keep = generator.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))
