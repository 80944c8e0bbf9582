"""Tensor operations as functions of the ``fastdl`` namespace, as in ``torch``:
``fastdl.sum(x, dim=1)`` is ``x.sum(dim=1)``, ``fastdl.max(x, 1)`` is
``x.max(1)``, ``fastdl.cat([a, b])``, ``fastdl.where(c, a, b)``, ...

Each function takes its input first and calls the Tensor method of the same
name; an ndarray or a number is accepted where torch takes a tensor (wrapped
without copying).
"""
import numpy as np

from fastdl.autograd import Tensor, tensor
from fastdl.grad_mode import (enable_grad, inference_mode, is_grad_enabled, no_grad,
                              set_grad_enabled)
from fastdl.tensor_math import maximum, minimum, where
from fastdl.tensor_shape import cat, stack

# The Tensor methods offered as functions of their input (``fastdl.<name>(input, ...)``).
METHOD_FUNCTIONS = (
    # reductions and sorting
    "sum", "mean", "std", "var", "prod", "norm", "logsumexp", "cumsum", "max", "min", "amax",
    "amin", "argmax", "argmin", "all", "any", "sort", "argsort", "topk",
    # shapes and indexing
    "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
    "split", "chunk", "unbind", "gather", "index_select", "narrow", "select", "flip",
    "masked_fill", "scatter", "bernoulli",
    # elementwise math and activations
    "exp", "log", "log1p", "sqrt", "rsqrt", "abs", "sign", "neg", "reciprocal", "square",
    "floor", "ceil", "round", "trunc", "clamp", "clip", "sigmoid", "tanh", "relu",
    "softmax", "log_softmax", "isnan", "isinf", "isfinite",
    # arithmetic and products
    "add", "sub", "mul", "div", "pow", "matmul", "mm", "bmm",
    # comparisons and copies
    "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or", "equal",
    "allclose", "clone", "detach",
)

__all__ = list(METHOD_FUNCTIONS) + [
    "cat", "concat", "concatenate", "stack", "where", "maximum", "minimum", "isclose", "numel",
    "is_tensor", "is_floating_point", "no_grad", "enable_grad", "set_grad_enabled",
    "inference_mode", "is_grad_enabled",
]


def as_input(value, op):
    """``value`` as a Tensor: a Tensor itself; an ndarray or number wrapped.

    Raises
    ------
    TypeError
        For values that are not numbers or arrays of numbers.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, bool, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return Tensor._wrap(array) if isinstance(value, np.ndarray) else tensor(value)
    raise TypeError("%s(): argument 'input' must be a Tensor, not %s"
                    % (op, type(value).__name__))


def _calls_method(name):
    def function(input, *args, **kwargs):   # noqa: A002 (torch's argument name)
        return getattr(as_input(input, name), name)(*args, **kwargs)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = "``input.%s(...)``: see ``Tensor.%s``." % (name, name)
    return function


globals().update({name: _calls_method(name) for name in METHOD_FUNCTIONS})

concat = concatenate = cat


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):   # noqa: A002
    """Elementwise :func:`allclose`: a bool Tensor."""
    return Tensor._wrap(np.asarray(np.isclose(as_input(input, "isclose")._data,
                                              as_input(other, "isclose")._data, rtol=rtol,
                                              atol=atol, equal_nan=equal_nan)))


def numel(input):   # noqa: A002
    """The number of elements."""
    return as_input(input, "numel").numel()


def is_tensor(obj):
    """Whether ``obj`` is a fastdl Tensor (a Parameter is one)."""
    return isinstance(obj, Tensor)


def is_floating_point(input):   # noqa: A002
    return as_input(input, "is_floating_point").is_floating_point()

