"""Elementwise activation kernels, forward and backward: gelu (exact and tanh), silu,
mish, elu/selu/celu, softplus, hardtanh/relu6, hardsigmoid, hardswish; prelu.

Design
------
* Each activation is a pair of scalar functions side by side: its value and
  its derivative, both of the *input* ``x`` (the backward saves the input, so
  no activation needs its output kept alive). Two parameters ``a, b`` carry
  the constants (ELU's ``alpha, scale``, softplus's ``beta, threshold``,
  hardtanh's ``min_val, max_val``).
* One flat loop per direction calls ``_value``/``_derivative`` with the
  activation's code; the code is loop-invariant, so LLVM hoists the branch
  (unswitching) and each activation runs its own straight loop, while the
  package compiles four kernels (serial and parallel, each direction) rather
  than four per activation.
* Formulas and branch points follow torch's CPU kernels, e.g. hardswish's
  derivative is ``x / 3 + 1/2`` on ``(-3, 3)``, 0 at -3 and 1 at 3, hardtanh passes no
  gradient at its bounds, softplus is linear where ``beta * x > threshold``;
  ELU uses ``expm1`` (exact near 0). Float32 inputs are evaluated in float64
  and rounded once.
* Below ``_PARALLEL_MIN`` elements the serial binding runs (waking the thread
  pool costs more than the work, as in ``kernels.activation``).
"""
import math

import numpy as np

from fastdl.kernels._jit import jit, prange

__all__ = ["CODES", "activation_forward", "activation_backward", "prelu_forward",
           "prelu_backward"]

GELU, GELU_TANH, SILU, MISH, ELU, SOFTPLUS, HARDTANH, HARDSIGMOID, HARDSWISH = range(9)
CODES = {"gelu": GELU, "gelu_tanh": GELU_TANH, "silu": SILU, "mish": MISH, "elu": ELU,
         "softplus": SOFTPLUS, "hardtanh": HARDTANH, "hardsigmoid": HARDSIGMOID,
         "hardswish": HARDSWISH}

_PARALLEL_MIN = 1 << 15
_SQRT_HALF = 0.7071067811865476          # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327       # 1 / sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2 / pi), GELU's tanh form
_GELU_CUBIC = 0.044715                   # Hendrycks & Gimpel 2016


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)                      # exp(-x) would overflow for x < -709
    return e / (1.0 + e)


def _softplus(x):
    # log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _value(code, x, a, b):
    """Activation ``code`` at ``x`` with constants ``a, b`` (see CODES)."""
    if code == GELU:
        return 0.5 * x * (1.0 + math.erf(x * _SQRT_HALF))
    if code == GELU_TANH:
        return 0.5 * x * (1.0 + math.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)))
    if code == SILU:
        return x * _sigmoid(x)
    if code == MISH:
        return x * math.tanh(_softplus(x))
    if code == ELU:                      # a = alpha, b = scale (SELU: both fixed)
        return b * x if x > 0 else b * a * math.expm1(x)
    if code == SOFTPLUS:                 # a = beta, b = threshold
        return x if x * a > b else _softplus(x * a) / a
    if code == HARDTANH:                 # a = min_val, b = max_val; NaN passes
        return a if x < a else (b if x > b else x)
    if code == HARDSIGMOID:
        return 0.0 if x <= -3.0 else (1.0 if x >= 3.0 else x / 6.0 + 0.5)
    # HARDSWISH
    return 0.0 if x <= -3.0 else (x if x >= 3.0 else x * (x + 3.0) / 6.0)


def _derivative(code, x, a, b):
    """d(activation)/dx at ``x``, torch's choice at the kinks."""
    if code == GELU:
        return 0.5 * (1.0 + math.erf(x * _SQRT_HALF)) + x * _INV_SQRT_2PI * math.exp(
            -0.5 * x * x)
    if code == GELU_TANH:
        t = math.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
        inner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x * x)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * inner
    if code == SILU:
        s = _sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    if code == MISH:
        t = math.tanh(_softplus(x))
        return t + x * _sigmoid(x) * (1.0 - t * t)
    if code == ELU:
        return b if x > 0 else b * a * math.exp(x)
    if code == SOFTPLUS:
        return 1.0 if x * a > b else _sigmoid(x * a)
    if code == HARDTANH:
        return 0.0 if (x <= a or x >= b) else 1.0
    if code == HARDSIGMOID:
        return 1.0 / 6.0 if -3.0 < x < 3.0 else 0.0
    # HARDSWISH
    return 0.0 if x <= -3.0 else (x / 3.0 + 0.5 if x < 3.0 else 1.0)


_sigmoid = jit(_sigmoid, inline="always")
_softplus = jit(_softplus, inline="always")
_value_kernel = jit(_value, inline="always")
_derivative_kernel = jit(_derivative, inline="always")


def _forward_flat(x, code, a, b, out):
    for i in prange(x.size):
        out[i] = _value_kernel(code, np.float64(x[i]), a, b)


def _backward_flat(grad, x, code, a, b, out):
    for i in prange(x.size):
        out[i] = grad[i] * _derivative_kernel(code, np.float64(x[i]), a, b)


_FORWARD = (jit(_forward_flat), jit(_forward_flat, parallel=True))
_BACKWARD = (jit(_backward_flat), jit(_backward_flat, parallel=True))


def _flat(array):
    return np.ascontiguousarray(array).reshape(-1)


def activation_forward(x, name, a=0.0, b=0.0):
    """Activation ``name`` (a key of CODES) of ``x``, elementwise.

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64
    name : str
    a, b : float
        The activation's constants (ELU: alpha, scale; softplus: beta, threshold;
        hardtanh: min_val, max_val).

    Returns
    -------
    ndarray, shape and dtype of ``x``, C-contiguous
    """
    flat = _flat(x)
    out = np.empty_like(flat)
    _FORWARD[flat.size >= _PARALLEL_MIN](flat, CODES[name], float(a), float(b), out)
    return out.reshape(x.shape)


def activation_backward(grad_out, x, name, a=0.0, b=0.0):
    """Gradient of ``activation_forward(x, name, a, b)``: ``grad_out * f'(x)``.

    Parameters
    ----------
    grad_out : ndarray, shape of ``x``
    x : ndarray, the forward's input

    Returns
    -------
    ndarray, shape of ``x``, dtype of ``grad_out``
    """
    grad_flat = _flat(grad_out)
    x_flat = _flat(x).astype(grad_flat.dtype, copy=False)
    out = np.empty_like(grad_flat)
    _BACKWARD[x_flat.size >= _PARALLEL_MIN](grad_flat, x_flat, CODES[name], float(a),
                                            float(b), out)
    return out.reshape(x.shape)


def _channel_view(weight, x):
    """PReLU's weight broadcast over ``x``: per channel (dim 1; dim 0 of a 1-D x)."""
    if weight.size == 1:
        return weight.reshape(())
    shape = [1] * x.ndim
    shape[1 if x.ndim >= 2 else 0] = weight.size
    return weight.reshape(shape)


def prelu_forward(x, weight):
    """``x if x > 0 else weight[c] * x``, with one weight or one per channel.

    Parameters
    ----------
    x : ndarray (N, C, *) (or (C,)), float32 or float64
    weight : ndarray (1,) or (C,), dtype of ``x``
    """
    return np.where(x > 0, x, _channel_view(weight, x) * x)


def prelu_backward(grad_out, x, weight, needs_grad_weight=True):
    """Gradients of ``prelu_forward``: ``(grad_x, grad_weight or None)``.

    ``grad_weight`` sums ``grad_out * x`` over the non-positive inputs of each
    channel (all of them for a single weight), in float64, rounded once.
    """
    negative = ~(x > 0)
    grad_x = np.where(negative, _channel_view(weight, x) * grad_out, grad_out)
    if not needs_grad_weight:
        return grad_x, None
    product = np.where(negative, grad_out.astype(np.float64) * x, 0.0)
    if weight.size == 1:
        grad_weight = np.array([product.sum()])
    else:
        axis = 1 if x.ndim >= 2 else 0
        grad_weight = product.sum(axis=tuple(i for i in range(x.ndim) if i != axis))
    return grad_x, grad_weight.astype(weight.dtype).reshape(weight.shape)
