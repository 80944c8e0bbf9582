"""Differentiable elementwise activations on ``kernels.elementwise``: gelu, silu, mish,
elu, selu, celu, softplus, hardtanh, relu6, hardsigmoid, hardswish, logsigmoid, prelu.

Signatures and defaults as ``torch.nn.functional``; ``inplace`` as in
``functional.activation``.
"""
import numbers

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, finish_inplace
from fastdl.kernels import elementwise as kernels

__all__ = ["celu", "elu", "gelu", "hardsigmoid", "hardswish", "hardtanh", "logsigmoid", "mish",
           "prelu", "relu6", "selu", "silu", "softplus"]

# SELU's constants (Klambauer et al. 2017), as torch's
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Elementwise(Function):
    """One activation of ``kernels.elementwise``; backward from the saved input."""

    @staticmethod
    def forward(ctx, x, name, a, b):
        ctx.save_for_backward(x)
        ctx.constants = (name, a, b)
        return kernels.activation_forward(x, name, a, b)

    @staticmethod
    def backward(ctx, grad):
        grad_x = kernels.activation_backward(grad, ctx.saved_tensors[0], *ctx.constants)
        return grad_x, None, None, None


def _number(op, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s: %s must be a number, got %r" % (op, name, value))
    return float(value)


def _apply(op, input, name, a=0.0, b=0.0, inplace=False):
    check_float(op, "input", input)
    return finish_inplace(input, Elementwise.apply(as_tensor(input), name, a, b), inplace)


def gelu(input, approximate="none"):
    """Gaussian error linear unit: ``x * Phi(x)``; ``approximate='tanh'`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    if approximate not in ("none", "tanh"):
        raise ValueError("gelu: approximate must be 'none' or 'tanh', got %r" % (approximate,))
    return _apply("gelu", input, "gelu" if approximate == "none" else "gelu_tanh")


def silu(input, inplace=False):
    """``x * sigmoid(x)`` (swish)."""
    return _apply("silu", input, "silu", inplace=inplace)


def mish(input, inplace=False):
    """``x * tanh(softplus(x))``."""
    return _apply("mish", input, "mish", inplace=inplace)


def elu(input, alpha=1.0, inplace=False):
    """``x if x > 0 else alpha * (exp(x) - 1)``."""
    alpha = _number("elu", "alpha", alpha)
    return _apply("elu", input, "elu", alpha, 1.0, inplace)


def selu(input, inplace=False):
    """``scale * elu(x, alpha)`` with SELU's fixed ``alpha`` and ``scale``."""
    return _apply("selu", input, "elu", SELU_ALPHA, SELU_SCALE, inplace)


def celu(input, alpha=1.0, inplace=False):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``, i.e. ``alpha * elu(x / alpha)``."""
    alpha = _number("celu", "alpha", alpha)
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0")
    check_float("celu", "input", input)
    out = Elementwise.apply(as_tensor(input) * (1.0 / alpha), "elu", 1.0, 1.0) * alpha
    return finish_inplace(input, out, inplace)


def softplus(input, beta=1.0, threshold=20.0):
    """``log(1 + exp(beta x)) / beta``, linear where ``beta * x > threshold``."""
    beta = _number("softplus", "beta", beta)
    threshold = _number("softplus", "threshold", threshold)
    return _apply("softplus", input, "softplus", beta, threshold)


def logsigmoid(input):
    """``log(sigmoid(x)) = -softplus(-x)``, without overflow."""
    check_float("logsigmoid", "input", input)
    return -Elementwise.apply(-as_tensor(input), "softplus", 1.0, float("inf"))


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """``clamp(x, min_val, max_val)``; no gradient at or beyond the bounds."""
    min_val = _number("hardtanh", "min_val", min_val)
    max_val = _number("hardtanh", "max_val", max_val)
    if min_val > max_val:
        raise ValueError("hardtanh: min_val cannot be greater than max_val, got %r > %r"
                         % (min_val, max_val))
    return _apply("hardtanh", input, "hardtanh", min_val, max_val, inplace)


def relu6(input, inplace=False):
    """``min(max(x, 0), 6)``."""
    return _apply("relu6", input, "hardtanh", 0.0, 6.0, inplace)


def hardsigmoid(input, inplace=False):
    """``relu6(x + 3) / 6``."""
    return _apply("hardsigmoid", input, "hardsigmoid", inplace=inplace)


def hardswish(input, inplace=False):
    """``x * relu6(x + 3) / 6``."""
    return _apply("hardswish", input, "hardswish", inplace=inplace)


class PReLU(Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return kernels.prelu_forward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = kernels.prelu_backward(grad, x, weight, ctx.needs_input_grad[1])
        return grad_x, grad_weight


def prelu(input, weight):
    """``x if x > 0 else weight * x``, ``weight`` one number or one per channel (dim 1).

    Parameters
    ----------
    input : Tensor (N, C, *) or (C,)
    weight : Tensor (1,) or (C,)

    Raises
    ------
    ValueError
        ``weight`` has neither 1 nor C elements.
    """
    x = check_float("prelu", "input", input)
    w = check_float("prelu", "weight", weight)
    channels = x.shape[1] if x.ndim >= 2 else (x.shape[0] if x.ndim == 1 else 1)
    if w.size not in (1, channels):
        raise ValueError("prelu: Mismatch of parameter numbers and input channel size. Found "
                         "parameter numbers = %d and channel size = %d." % (w.size, channels))
    if w.dtype != x.dtype:
        raise TypeError("prelu: input %s and weight %s dtypes differ" % (x.dtype, w.dtype))
    return PReLU.apply(as_tensor(input), as_tensor(weight))

