"""Elementwise Tensor math: ``exp``, ``log``, ``sqrt``, ``rsqrt``, ``abs``, ``sign``,
``reciprocal``, ``clamp``, ``sigmoid``, ``tanh``, ``relu``, ``softmax``,
``log_softmax``, ``where``, ``maximum``/``minimum``, rounding, and the
bool tests ``isnan``/``isinf``/``isfinite``.

Integer and bool inputs are computed in the default float dtype (as torch's
``torch.arange(3).exp()``). Sigmoid, tanh and the softmaxes call the
activation kernels (imported on first use, so that importing the autograd
does not load Numba). Rounding and ``sign`` have zero gradients, as in torch.
"""
import numbers

import numpy as np

from fastdl import tensor_deferred, tensor_ops  # by module: any import order
from fastdl.autograd import Function, Tensor, normalize_dim, tensor_method, unbroadcast
from fastdl.dtypes import get_default_dtype

__all__ = ["where", "maximum", "minimum"]


def _activation_kernels():
    from fastdl.kernels import activation
    return activation


def _as_floating(tensor):
    """``tensor`` itself when floating, else its values in the default float dtype."""
    if tensor._data.dtype.kind == "f":
        return tensor
    return Tensor._wrap(np.asarray(tensor._data, dtype=get_default_dtype()))


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with np.errstate(divide="ignore", invalid="ignore"):   # -inf and nan, as torch
            return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved_tensors[0]


class Log1p(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log1p(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / (1 + ctx.saved_tensors[0])


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        with np.errstate(invalid="ignore"):
            out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        with np.errstate(divide="ignore"):
            return grad / (2 * ctx.saved_tensors[0])


class Rsqrt(Function):
    @staticmethod
    def forward(ctx, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 1 / np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * (-0.5) * out * out * out


class Reciprocal(Function):
    @staticmethod
    def forward(ctx, a):
        with np.errstate(divide="ignore"):
            out = 1 / a
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return -grad * out * out


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, grad):
        return grad * np.sign(ctx.saved_tensors[0])  # sign(0) = 0: the subgradient 0


class ZeroGradient(Function):
    """A piecewise-constant ufunc (sign, floor, round, ...): its gradient is zero."""

    @staticmethod
    def forward(ctx, a, ufunc):
        return np.asarray(ufunc(a))

    @staticmethod
    def backward(ctx, grad):
        return np.zeros_like(grad), None


class Clamp(Function):
    @staticmethod
    def forward(ctx, a, low, high):
        ctx.save_for_backward(a)
        ctx.low, ctx.high = low, high
        return np.asarray(np.clip(a, low, high))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        inside = np.ones(a.shape, dtype=bool)
        if ctx.low is not None:
            inside &= a >= ctx.low
        if ctx.high is not None:
            inside &= a <= ctx.high
        return grad * inside, None, None


class FromOutput(Function):
    """Activations whose gradient needs only the output: ``ctx.gradient(grad, output)``."""

    @staticmethod
    def forward(ctx, a, function, gradient):
        out = function(a)
        ctx.save_for_backward(out)
        ctx.gradient = gradient
        return out

    @staticmethod
    def backward(ctx, grad):
        return ctx.gradient(grad, ctx.saved_tensors[0]), None, None


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, dim, log):
        kernels = _activation_kernels()
        source = a.reshape(1) if a.ndim == 0 else a
        out = (kernels.log_softmax_forward if log else kernels.softmax_forward)(source, dim)
        out = out.reshape(a.shape)
        ctx.save_for_backward(out)
        ctx.dim, ctx.log = dim, log
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        if ctx.log:
            return grad - np.exp(out) * np.sum(grad, axis=ctx.dim, keepdims=True), None, None
        return out * (grad - np.sum(grad * out, axis=ctx.dim, keepdims=True)), None, None


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition, ctx.shapes = condition, (np.shape(a), np.shape(b))
        return np.asarray(np.where(condition, a, b))

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        zero = np.zeros((), dtype=grad.dtype)
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = unbroadcast(np.where(ctx.condition, grad, zero), a_shape)
        if ctx.needs_input_grad[2]:
            grad_b = unbroadcast(np.where(ctx.condition, zero, grad), b_shape)
        return None, grad_a, grad_b


class Extremum2(Function):
    """Elementwise maximum (or minimum) of two tensors; ties split the gradient."""

    @staticmethod
    def forward(ctx, a, b, largest):
        ctx.save_for_backward(a, b)
        ctx.largest = largest
        return np.asarray((np.maximum if largest else np.minimum)(a, b))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        wins = (a > b) if ctx.largest else (a < b)
        share = np.where(a == b, 0.5, wins.astype(grad.dtype)).astype(grad.dtype)
        grad_a = unbroadcast(grad * share, np.shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * (1 - share), np.shape(b)) if ctx.needs_input_grad[1] \
            else None
        return grad_a, grad_b, None


# ------------------------------------------------------------------- methods
def _unary(function):
    def method(self):
        return function.apply(_as_floating(self))
    return method


for _name, _function in (("exp", Exp), ("log", Log), ("log1p", Log1p), ("sqrt", Sqrt),
                         ("rsqrt", Rsqrt), ("reciprocal", Reciprocal)):
    _method = _unary(_function)
    _method.__name__ = _method.__qualname__ = _name
    _method.__doc__ = "Elementwise %s (integer inputs in the default float dtype)." % _name
    tensor_method(_method)


@tensor_method(name="abs")
def tensor_abs(self):
    """Elementwise absolute value (gradient ``sign(x)``, 0 at 0)."""
    return Abs.apply(self)


Tensor.__abs__ = tensor_abs


@tensor_method
def neg(self):
    return -self


@tensor_method
def square(self):
    return self * self


def _zero_gradient(name, ufunc, doc):
    def method(self):
        if self._data.dtype.kind != "f" and name != "sign":
            return self
        return ZeroGradient.apply(self, ufunc)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return tensor_method(method)


_zero_gradient("sign", np.sign, "-1, 0 or 1 by the sign of each element (zero gradient).")
_zero_gradient("floor", np.floor, "Round down (zero gradient).")
_zero_gradient("ceil", np.ceil, "Round up (zero gradient).")
_zero_gradient("trunc", np.trunc, "Round towards zero (zero gradient).")


@tensor_method(name="round")
def tensor_round(self, decimals=0):
    """Round half to even, as torch (zero gradient)."""
    if self._data.dtype.kind != "f":
        return self
    return ZeroGradient.apply(self, lambda a: np.round(a, decimals))


def _bound(op, value):
    if value is None or isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    if isinstance(value, Tensor):
        return value._data
    if isinstance(value, np.ndarray):
        return value
    raise TypeError("%s: min and max must be numbers or Tensors, got %s"
                    % (op, type(value).__name__))


@tensor_method
def clamp(self, min=None, max=None):   # noqa: A002 (torch's keywords)
    """Values limited to ``[min, max]`` (either may be None, not both)."""
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    low, high = _bound("clamp", min), _bound("clamp", max)
    source = self
    if self._data.dtype.kind != "f" and any(isinstance(v, float) for v in (low, high)):
        source = _as_floating(self)     # an integer tensor clamped to a float bound: float
    return Clamp.apply(source, low, high)


clip = tensor_method(name="clip")(clamp)


@tensor_method
def relu(self):
    """``max(x, 0)``."""
    if type(self) is tensor_deferred.DeferredTensor:   # a conv's output: its activation
        fused = tensor_deferred.with_relu(self)
        if fused is not None:
            return fused
    return Clamp.apply(self, 0, None)


@tensor_method
def sigmoid(self):
    """``1 / (1 + exp(-x))``, computed without overflow."""
    kernels = _activation_kernels()
    return FromOutput.apply(_as_floating(self), kernels.sigmoid_forward,
                            kernels.sigmoid_backward)


@tensor_method
def tanh(self):
    """The hyperbolic tangent."""
    kernels = _activation_kernels()
    return FromOutput.apply(_as_floating(self), kernels.tanh_forward, kernels.tanh_backward)


def _softmax(self, dim, dtype, log):
    name = "log_softmax" if log else "softmax"
    if dim is None:
        raise TypeError("%s() missing required argument 'dim'" % name)
    source = self.to(dtype) if dtype is not None else _as_floating(self)
    return Softmax.apply(source, normalize_dim(dim, source._data.ndim, name), log)


@tensor_method
def softmax(self, dim=None, dtype=None):
    """``exp(x) / sum(exp(x), dim)``, max-shifted so nothing overflows."""
    return _softmax(self, dim, dtype, log=False)


@tensor_method
def log_softmax(self, dim=None, dtype=None):
    """``x - logsumexp(x, dim)``."""
    return _softmax(self, dim, dtype, log=True)


def where(condition, input, other):   # noqa: A002 (torch's argument names)
    """Elements of ``input`` where ``condition`` is true, else of ``other`` (both
    differentiable; scalars allowed; torch's type promotion)."""
    condition = condition._data if isinstance(condition, Tensor) else np.asarray(condition)
    if condition.dtype != np.bool_:
        if condition.dtype.kind not in "biu":
            raise RuntimeError("where expected condition to be a boolean tensor, but got a "
                               "tensor with dtype %s" % condition.dtype)
        condition = condition.astype(bool)
    input, other = tensor_ops.promote(input, other)
    return Where.apply(condition, input, other)


@tensor_method(name="where")
def tensor_where(self, condition, other):
    """``where(condition, self, other)``."""
    return where(condition, self, other)


@tensor_method
def masked_fill(self, mask, value):
    """A copy with ``value`` wherever ``mask`` (broadcast to this shape) is true."""
    mask = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.dtype != np.bool_:
        raise RuntimeError("masked_fill only supports boolean masks, but got mask with dtype "
                           "%s" % mask.dtype)
    if isinstance(value, Tensor) and value.requires_grad:
        return Where.apply(mask, value.to(self.dtype), self)
    fill = np.asarray(value._data if isinstance(value, Tensor) else value, dtype=self.dtype)
    return Where.apply(mask, fill, self)


def _pairwise_extremum(a, b, largest):
    a, b = tensor_ops.promote(a, b)
    return Extremum2.apply(a, b, largest)


def maximum(input, other):   # noqa: A002
    """The elementwise maximum (NaN propagates; ties share the gradient)."""
    return _pairwise_extremum(input, other, True)


def minimum(input, other):   # noqa: A002
    """The elementwise minimum."""
    return _pairwise_extremum(input, other, False)


Tensor.maximum = maximum
Tensor.minimum = minimum


@tensor_method
def isnan(self):
    return Tensor._wrap(np.asarray(np.isnan(self._data)))


@tensor_method
def isinf(self):
    return Tensor._wrap(np.asarray(np.isinf(self._data)))


@tensor_method
def isfinite(self):
    return Tensor._wrap(np.asarray(np.isfinite(self._data)))
