"""The Tensor's own differentiable operations: arithmetic with NumPy broadcasting,
matmul, reshapes, indexing, reductions, exp/log/sqrt/abs/clamp, casts and concatenation.

Each op is a ``Function`` whose backward reduces its gradient back to the
operand's shape (``_unbroadcast``), so broadcasting works in both directions.
"""
from collections import namedtuple

import numpy as np

from fastdl.autograd import Function, Tensor

# What ``Tensor.max(dim)`` / ``min(dim)`` return, as torch.return_types.max / min.
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])

def _unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape`` (the inverse of NumPy broadcasting)."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _shape(value):
    return np.shape(value)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return (_unbroadcast(grad, a_shape) if ctx.needs_input_grad[0] else None,
                _unbroadcast(grad, b_shape) if ctx.needs_input_grad[1] else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return (_unbroadcast(grad, a_shape) if ctx.needs_input_grad[0] else None,
                _unbroadcast(-grad, b_shape) if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (_unbroadcast(grad * b, _shape(a)) if ctx.needs_input_grad[0] else None,
                _unbroadcast(grad * a, _shape(b)) if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.true_divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = _unbroadcast(grad / b, _shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = (_unbroadcast(-grad * a / (b * b), _shape(b))
                  if ctx.needs_input_grad[1] else None)
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return np.power(a, exponent)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * ctx.exponent * np.power(a, ctx.exponent - 1), None


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        # Promote 1-D operands to matrices as matmul does, then undo it.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        grad2 = grad
        if a.ndim == 1:
            grad2 = np.expand_dims(grad2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            grad2 = np.expand_dims(grad2, -1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _unbroadcast(np.matmul(grad2, np.swapaxes(b2, -1, -2)), a2.shape)
            grad_a = grad_a.reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = _unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), grad2), b2.shape)
            grad_b = grad_b.reshape(b.shape)
        return grad_a, grad_b


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.input_shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, np.argsort(ctx.dims)), None


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.index = index
        ctx.input_shape = a.shape
        ctx.dtype = a.dtype
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.input_shape, dtype=ctx.dtype)
        np.add.at(full, ctx.index, grad)  # repeated integer indices accumulate
        return full, None


def _expand_reduced(grad, shape, dim, keepdim):
    if dim is not None and not keepdim:
        grad = np.expand_dims(grad, dim)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        return np.asarray(np.sum(a, axis=dim, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        return _expand_reduced(grad, ctx.shape, ctx.dim, ctx.keepdim).copy(), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        ctx.count = a.size // max(np.asarray(np.sum(a, axis=dim, keepdims=keepdim)).size, 1) \
            if a.size else 1
        if a.dtype.kind != "f":   # bool/integer (e.g. a comparison): float32, the default
            return np.asarray(np.mean(a, axis=dim, keepdims=keepdim, dtype=np.float64),
                              dtype=np.float32)
        return np.asarray(np.mean(a, axis=dim, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        expanded = _expand_reduced(grad, ctx.shape, ctx.dim, ctx.keepdim)
        return expanded / np.asarray(ctx.count, dtype=grad.dtype), None, None


class ExtremumAll(Function):
    """The maximum (or minimum) of all elements; as torch, tied extrema share the
    gradient evenly (all NaNs share it when the result is NaN)."""

    @staticmethod
    def forward(ctx, a, largest):
        value = np.asarray(np.max(a) if largest else np.min(a))
        ctx.save_for_backward(a, value)
        return value

    @staticmethod
    def backward(ctx, grad):
        a, value = ctx.saved_tensors
        mask = np.isnan(a) if np.isnan(value) else a == value
        share = grad / np.asarray(np.count_nonzero(mask), dtype=grad.dtype)
        return np.where(mask, share, np.zeros((), dtype=a.dtype)).astype(a.dtype), None


class TakeAlongDim(Function):
    """``a``'s values at ``index`` (shape of ``a`` with size 1 along ``dim``); the
    gradient goes back to those positions only."""

    @staticmethod
    def forward(ctx, a, index, dim, keepdim):
        ctx.shape, ctx.dtype, ctx.index, ctx.dim, ctx.keepdim = a.shape, a.dtype, index, dim, \
            keepdim
        values = np.take_along_axis(a, index, axis=dim)
        return values if keepdim else np.squeeze(values, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.shape, dtype=ctx.dtype)
        values = grad if ctx.keepdim else np.expand_dims(grad, ctx.dim)
        np.put_along_axis(full, ctx.index, values, axis=ctx.dim)
        return full, None, None, None


def _check_dim(dim, ndim, name):
    if isinstance(dim, (bool, Tensor)) or not isinstance(dim, (int, np.integer)):
        raise TypeError("%s: dim must be an int, got %s" % (name, type(dim).__name__))
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError("%s: dimension out of range (expected to be in range of [%d, %d], "
                         "but got %d)" % (name, -max(ndim, 1), max(ndim, 1) - 1, dim))
    return int(dim) % max(ndim, 1)


def extremum(tensor, dim, keepdim, largest):
    """``Tensor.max``/``min``: a 0-d Tensor without ``dim``; with it, ``(values,
    indices)`` where indices (int64) are the first extremum of each slice (NaN
    counts as the extremum, as in torch) and values are differentiable."""
    name = "max" if largest else "min"
    a = np.asarray(tensor._data)
    result = MaxResult if largest else MinResult
    if dim is None:
        if a.size == 0:
            raise RuntimeError("%s(): expected a non-empty tensor" % name)
        return ExtremumAll.apply(tensor, largest)
    dim = _check_dim(dim, a.ndim, name)
    if a.ndim == 0:   # torch allows dim 0 / -1 of a 0-d tensor: itself, index 0
        values = TakeAlongDim.apply(tensor.reshape(1), np.zeros(1, dtype=np.int64), 0, False)
        return result(values, Tensor._wrap(np.zeros((), dtype=np.int64)))
    if a.shape[dim] == 0:
        raise IndexError("%s(): expected reduction dim %d to have non-zero size" % (name, dim))
    index = np.expand_dims((np.argmax if largest else np.argmin)(a, axis=dim), dim)
    index = index.astype(np.int64, copy=False)
    values = TakeAlongDim.apply(tensor, index, dim, keepdim)
    indices = Tensor._wrap(index if keepdim else np.squeeze(index, axis=dim))
    return result(values, indices)


def arg_extremum(a, dim, keepdim, function):
    """int64 ``argmax``/``argmin`` of ``a`` along ``dim`` (flattened when None)."""
    if dim is not None:
        dim = _check_dim(dim, a.ndim, function.__name__)
        if a.ndim == 0:
            return np.zeros((), dtype=np.int64)
    elif a.size == 0:
        raise RuntimeError("%s(): expected a non-empty tensor" % function.__name__)
    return np.asarray(function(a, axis=dim, keepdims=keepdim), dtype=np.int64)


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
        return np.log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad / (2 * ctx.saved_tensors[0])


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, grad):
        return grad * np.sign(ctx.saved_tensors[0])  # sign(0) = 0: the subgradient 0


class Clamp(Function):
    @staticmethod
    def forward(ctx, a, low, high):
        ctx.save_for_backward(a)
        ctx.low, ctx.high = low, high
        return np.clip(a, low, high)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        inside = np.ones(a.shape, dtype=bool)
        if ctx.low is not None:
            inside &= a >= ctx.low
        if ctx.high is not None:
            inside &= a <= ctx.high
        return grad * inside, None, None


class _Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype), None


def cast(tensor, dtype):
    """``tensor`` as ``dtype`` (itself when it already is): differentiable to a
    floating dtype; a bool/integer result is outside the graph (as torch)."""
    if tensor._data.dtype == dtype:
        return tensor
    if np.dtype(dtype).kind != "f":
        return Tensor._wrap(np.asarray(tensor._data).astype(dtype))
    return _Cast.apply(tensor, dtype)


class Concatenate(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        splits = np.cumsum(ctx.sizes)[:-1]
        return (None,) + tuple(np.split(grad, splits, axis=ctx.dim))


def cat(tensors, dim=0):
    """Concatenate tensors along ``dim`` (differentiable, as ``torch.cat``).

    Raises
    ------
    ValueError
        If the list is empty or the shapes differ outside ``dim``.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    shapes = [np.shape(t._data if isinstance(t, Tensor) else t) for t in tensors]
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes) or not -ndim <= dim < ndim:
        raise ValueError("cat: all tensors need the same ndim and dim in range, got shapes %s "
                         "and dim=%d" % (shapes, dim))
    axis = dim % ndim
    reference = [n for i, n in enumerate(shapes[0]) if i != axis]
    for s in shapes[1:]:
        if [n for i, n in enumerate(s) if i != axis] != reference:
            raise ValueError("cat: shapes %s differ outside dim %d" % (shapes, dim))
    return Concatenate.apply(axis, *tensors)


def stack(tensors, dim=0):
    """Stack tensors along a new axis ``dim``."""
    tensors = list(tensors)
    expanded = [t.reshape(t.shape[:dim % (t.ndim + 1)] + (1,) + t.shape[dim % (t.ndim + 1):])
                if isinstance(t, Tensor) else np.expand_dims(t, dim) for t in tensors]
    return cat(expanded, dim)
