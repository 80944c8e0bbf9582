"""Tensor reductions over all elements or along ``dim`` (an int or a tuple) with
``keepdim``: ``sum``, ``mean``, ``var``/``std`` (Bessel's ``correction``),
``prod``, ``norm``, ``logsumexp``, ``max``/``min`` (with indices along a dim),
``argmax``/``argmin``, ``all``/``any``, ``cumsum``, and sorting (``sort``,
``argsort``, ``topk``).

Gradients follow torch: tied extrema of a full ``max()`` share the gradient
evenly, ``max(dim)`` sends it to the index it returns, and a zero norm has a
zero gradient. Bool and integer sums give int64; ``mean`` of them gives the
default float dtype (torch raises there).
"""
import math
import numbers

import numpy as np

from fastdl import tensor_shape  # by module: any import order
from fastdl.autograd import Function, Tensor, normalize_dim, tensor_method
from fastdl.dtypes import get_default_dtype, resolve_dtype

__all__ = ["reduction_dims", "expand_reduced"]


def reduction_dims(dim, ndim, op):
    """``dim`` (None, an int or a sequence of ints) as a sorted tuple of axes, or None.

    Raises
    ------
    RuntimeError
        A dim repeated.
    """
    if dim is None:
        return None
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if not dims:
        return None
    axes = tuple(normalize_dim(d, ndim, op) for d in dims)
    if len(set(axes)) != len(axes):
        raise RuntimeError("%s: dim %d appears multiple times in the list of dims"
                           % (op, next(a for a in axes if axes.count(a) > 1)))
    if ndim == 0:
        return None
    return tuple(sorted(axes))


def drop_reduced(reduced, axes, keepdim):
    """``reduced`` (computed with ``keepdims=True``) without the reduced ``axes`` unless
    ``keepdim``; all of them when ``axes`` is None."""
    if keepdim:
        return np.asarray(reduced)
    return np.asarray(np.squeeze(reduced, axis=axes) if axes is not None
                      else reduced.reshape(()))


def expand_reduced(grad, shape, axes, keepdim):
    """``grad`` of a reduction over ``axes`` broadcast back to the input's ``shape``."""
    if axes is not None and not keepdim:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return np.asarray(np.sum(a, axis=axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        return expand_reduced(grad, ctx.shape, ctx.axes, ctx.keepdim).copy(), None, None


def _count(shape, axes):
    if axes is None:
        return math.prod(shape)
    return math.prod(shape[a] for a in axes)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        ctx.count = max(_count(a.shape, axes), 1)
        if a.dtype.kind != "f":   # bool/integer (e.g. a comparison): the default float dtype
            return np.asarray(np.mean(a, axis=axes, keepdims=keepdim, dtype=np.float64),
                              dtype=get_default_dtype())
        return np.asarray(np.mean(a, axis=axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        expanded = expand_reduced(grad, ctx.shape, ctx.axes, ctx.keepdim)
        return expanded / np.asarray(ctx.count, dtype=grad.dtype), None, None


class Var(Function):
    """Variance with ``correction`` (1: Bessel's unbiased estimate, 0: the population)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, correction):
        centred = a - np.mean(a, axis=axes, keepdims=True)
        divisor = max(_count(a.shape, axes) - correction, 0)
        ctx.save_for_backward(centred)
        ctx.axes, ctx.keepdim, ctx.divisor = axes, keepdim, divisor
        with np.errstate(divide="ignore", invalid="ignore"):   # n <= correction: inf/nan
            squares = np.sum(centred * centred, axis=axes, keepdims=keepdim)
            return np.asarray(squares / np.asarray(divisor, dtype=a.dtype))

    @staticmethod
    def backward(ctx, grad):
        (centred,) = ctx.saved_tensors
        expanded = expand_reduced(grad, centred.shape, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.asarray(2.0 / ctx.divisor if ctx.divisor else np.inf, dtype=grad.dtype)
        return expanded * centred * scale, None, None, None


def _products_of_others(a, axis):
    """For each entry, the product of the other entries along ``axis`` (zeros allowed)."""
    ones = np.ones_like(np.take(a, [0], axis=axis))
    n = a.shape[axis]
    before = np.cumprod(np.concatenate([ones, np.take(a, range(n - 1), axis=axis)], axis),
                        axis=axis)
    after_reversed = np.flip(np.concatenate([np.take(a, range(1, n), axis=axis), ones], axis),
                             axis)
    after = np.flip(np.cumprod(after_reversed, axis=axis), axis)
    return before * after


class Prod(Function):
    @staticmethod
    def forward(ctx, a, axis, keepdim):
        ctx.save_for_backward(a)
        ctx.axis, ctx.keepdim = axis, keepdim
        return np.asarray(np.prod(a, axis=axis, keepdims=keepdim))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        if ctx.axis is None:
            others = _products_of_others(a.reshape(-1), 0).reshape(a.shape)
            return grad * others, None, None
        axes = (ctx.axis,)
        expanded = expand_reduced(grad, a.shape, axes, ctx.keepdim)
        return expanded * _products_of_others(a, ctx.axis), None, None


class Norm(Function):
    """The ``p``-norm (``p`` >= 1, or inf) over ``axes``; 0 gradient where the norm is 0."""

    @staticmethod
    def forward(ctx, a, p, axes, keepdim):
        magnitude = np.abs(a)
        if p == np.inf:
            norm = np.max(magnitude, axis=axes, keepdims=True) if a.size else np.zeros(())
        elif p == 2:
            norm = np.sqrt(np.sum(magnitude * magnitude, axis=axes, keepdims=True))
        else:
            norm = np.sum(magnitude ** p, axis=axes, keepdims=True) ** (1.0 / p)
        ctx.save_for_backward(a, norm)
        ctx.p, ctx.axes, ctx.keepdim = p, axes, keepdim
        return drop_reduced(norm, axes, keepdim)

    @staticmethod
    def backward(ctx, grad):
        a, norm = ctx.saved_tensors
        grad = expand_reduced(grad, a.shape, ctx.axes, ctx.keepdim)
        safe = np.where(norm == 0, 1, norm)
        if ctx.p == np.inf:
            ties = np.abs(a) == norm
            count = np.sum(ties, axis=ctx.axes, keepdims=True)
            local = np.sign(a) * ties / np.maximum(count, 1)
        elif ctx.p == 2:
            local = a / safe
        else:
            local = np.sign(a) * np.abs(a) ** (ctx.p - 1) / safe ** (ctx.p - 1)
        return (grad * np.where(norm == 0, 0, local)).astype(a.dtype, copy=False), None, \
            None, None


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


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        peak = np.max(a, axis=axes, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0)
        total = np.log(np.sum(np.exp(a - peak), axis=axes, keepdims=True)) + peak
        ctx.save_for_backward(a, total)
        ctx.axes, ctx.keepdim = axes, keepdim
        return drop_reduced(total, axes, keepdim)

    @staticmethod
    def backward(ctx, grad):
        a, total = ctx.saved_tensors
        expanded = expand_reduced(grad, a.shape, ctx.axes, ctx.keepdim)
        return expanded * np.exp(a - total), None, None


class CumSum(Function):
    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return np.cumsum(a, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return np.flip(np.cumsum(np.flip(grad, ctx.axis), axis=ctx.axis), ctx.axis), None


# ------------------------------------------------------------------- methods
def _summable(tensor, dtype, op):
    if dtype is not None:
        return tensor.to(resolve_dtype(dtype, op))
    return tensor


@tensor_method(name="sum")
def tensor_sum(self, dim=None, keepdim=False, dtype=None):
    """The sum over ``dim`` (an int or a tuple; all elements when None)."""
    source = _summable(self, dtype, "sum")
    axes = reduction_dims(dim, source._data.ndim, "sum")
    return Sum.apply(source, axes, bool(keepdim))


@tensor_method
def mean(self, dim=None, keepdim=False, dtype=None):
    """The mean over ``dim``; bool and integer tensors give the default float dtype."""
    source = _summable(self, dtype, "mean")
    axes = reduction_dims(dim, source._data.ndim, "mean")
    return Mean.apply(source, axes, bool(keepdim))


def _correction(op, unbiased, correction):
    if unbiased is not None and correction is not None:
        raise TypeError("%s: give unbiased or correction, not both" % op)
    if correction is None:
        return 1 if unbiased is None or unbiased else 0
    if isinstance(correction, bool) or not isinstance(correction, numbers.Real):
        raise TypeError("%s: correction must be a number, got %r" % (op, correction))
    return correction


def _floating(self, op):
    if self._data.dtype.kind != "f":
        raise RuntimeError("%s(): input dtype should be floating point, got %s"
                           % (op, self._data.dtype))
    return self


@tensor_method
def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over ``dim`` divided by ``n - correction`` (default 1, Bessel's).

    ``unbiased=False`` is ``correction=0``; as in torch a bool first argument is
    ``unbiased``.
    """
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    _floating(self, "var")
    axes = reduction_dims(dim, self._data.ndim, "var")
    return Var.apply(self, axes, bool(keepdim), _correction("var", unbiased, correction))


@tensor_method
def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """The square root of :meth:`var` (same arguments)."""
    return self.var(dim, unbiased, keepdim, correction=correction).sqrt()


@tensor_method
def prod(self, dim=None, keepdim=False, dtype=None):
    """The product of all elements, or along the single dim ``dim``."""
    source = _summable(self, dtype, "prod")
    axis = None if dim is None else normalize_dim(dim, source._data.ndim, "prod")
    if axis is not None and source._data.ndim == 0:
        axis = None
    return Prod.apply(source, axis, bool(keepdim))


@tensor_method
def norm(self, p="fro", dim=None, keepdim=False):
    """The ``p``-norm over ``dim`` (all elements when None): ``p`` = 2 or "fro"
    (the default), 1, any ``p`` >= 1, or ``inf``; ``p`` = 0 counts non-zeros."""
    _floating(self, "norm")
    if p in ("fro", None):
        p = 2
    if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ValueError("norm: p must be a number, 'fro' or inf, got %r" % (p,))
    axes = reduction_dims(dim, self._data.ndim, "norm")
    if p == 0:
        count = np.count_nonzero(self._data, axis=axes, keepdims=bool(keepdim))
        return Tensor._wrap(np.asarray(count, dtype=self._data.dtype))
    if p < 1 and p != -np.inf:
        raise ValueError("norm: p must be >= 1, 0 or inf, got %r" % (p,))
    if p == -np.inf:
        return self.abs().amin(dim, keepdim) if dim is not None else self.abs().min()
    return Norm.apply(self, float(p), axes, bool(keepdim))


@tensor_method
def logsumexp(self, dim, keepdim=False):
    """``log(sum(exp(self), dim))`` without overflow."""
    _floating(self, "logsumexp")
    axes = reduction_dims(dim, self._data.ndim, "logsumexp")
    return LogSumExp.apply(self, axes, bool(keepdim))


@tensor_method
def cumsum(self, dim, dtype=None):
    """Running sums along ``dim``."""
    source = _summable(self, dtype, "cumsum")
    if source._data.dtype.kind in "bu" or source._data.dtype == np.int32:
        source = source.long()
    return CumSum.apply(source, normalize_dim(dim, source._data.ndim, "cumsum"))


def _extremum(self, dim, keepdim, largest):
    """A 0-d Tensor without ``dim``; with it ``(values, indices)`` where indices (int64)
    are the first extremum of each slice (NaN counts as the extremum, as in torch)."""
    name = "max" if largest else "min"
    if isinstance(dim, Tensor):       # torch.max(input, other): elementwise
        return self.maximum(dim) if largest else self.minimum(dim)
    a = np.asarray(self._data)
    result = tensor_shape.ReturnTypes[name]
    if dim is None:
        if a.size == 0:
            raise RuntimeError("%s(): expected a non-empty tensor" % name)
        return ExtremumAll.apply(self, largest)
    dim = normalize_dim(dim, a.ndim, name)
    if a.ndim == 0:   # torch allows dim 0 / -1 of a 0-d tensor: itself, index 0
        first = np.zeros(1, dtype=np.int64)
        values = tensor_shape.TakeAlongDim.apply(self.reshape(1), first, 0, False)
        return result(values, Tensor._wrap(np.zeros((), dtype=np.int64)))
    if a.shape[dim] == 0:
        raise IndexError("%s(): expected reduction dim %d to have non-zero size" % (name, dim))
    index = np.expand_dims((np.argmax if largest else np.argmin)(a, axis=dim), dim)
    index = index.astype(np.int64, copy=False)
    values = tensor_shape.TakeAlongDim.apply(self, index, dim, bool(keepdim))
    indices = Tensor._wrap(index if keepdim else np.squeeze(index, axis=dim))
    return result(values, indices)


@tensor_method(name="max")
def tensor_max(self, dim=None, keepdim=False):
    """As ``torch.Tensor.max``: without ``dim`` a 0-d Tensor of the maximum (its
    gradient shared evenly by tied maxima); with ``dim`` a namedtuple
    ``(values, indices)`` (the first maximum of each slice, which gets the
    gradient); with a Tensor, the elementwise maximum."""
    return _extremum(self, dim, keepdim, largest=True)


@tensor_method(name="min")
def tensor_min(self, dim=None, keepdim=False):
    """As :meth:`max`, for the minimum."""
    return _extremum(self, dim, keepdim, largest=False)


@tensor_method
def amax(self, dim=(), keepdim=False):
    """The maximum over ``dim`` (all when empty), without indices."""
    return _extreme_values(self, dim, keepdim, largest=True)


@tensor_method
def amin(self, dim=(), keepdim=False):
    return _extreme_values(self, dim, keepdim, largest=False)


def _extreme_values(self, dim, keepdim, largest):
    axes = reduction_dims(dim, self._data.ndim, "amax" if largest else "amin")
    if axes is None:
        value = _extremum(self, None, False, largest)
        return value.reshape((1,) * self._data.ndim) if keepdim else value
    moved = self.permute([d for d in range(self._data.ndim) if d not in axes] + list(axes))
    kept_shape = moved.shape[:self._data.ndim - len(axes)]
    values = _extremum(moved.reshape(kept_shape + (-1,)), -1, False, largest).values
    if keepdim:
        values = values.reshape(tuple(1 if d in axes else n
                                      for d, n in enumerate(self._data.shape)))
    return values


def _arg_extremum(self, dim, keepdim, function):
    a = np.asarray(self._data)
    name = function.__name__
    if dim is not None:
        dim = normalize_dim(dim, a.ndim, name)
        if a.ndim == 0:
            return Tensor._wrap(np.zeros((), dtype=np.int64))
    elif a.size == 0:
        raise RuntimeError("%s(): expected a non-empty tensor" % name)
    return Tensor._wrap(np.asarray(function(a, axis=dim, keepdims=bool(keepdim)),
                                   dtype=np.int64))


@tensor_method
def argmax(self, dim=None, keepdim=False):
    """int64 indices of the (first) maxima along ``dim``, or into the flattened tensor."""
    return _arg_extremum(self, dim, keepdim, np.argmax)


@tensor_method
def argmin(self, dim=None, keepdim=False):
    return _arg_extremum(self, dim, keepdim, np.argmin)


@tensor_method(name="all")
def tensor_all(self, dim=None, keepdim=False):
    """Whether every element (along ``dim``) is non-zero: a bool Tensor."""
    axes = reduction_dims(dim, self._data.ndim, "all")
    return Tensor._wrap(np.asarray(np.all(self._data, axis=axes, keepdims=bool(keepdim))))


@tensor_method(name="any")
def tensor_any(self, dim=None, keepdim=False):
    """Whether some element (along ``dim``) is non-zero: a bool Tensor."""
    axes = reduction_dims(dim, self._data.ndim, "any")
    return Tensor._wrap(np.asarray(np.any(self._data, axis=axes, keepdims=bool(keepdim))))


# -------------------------------------------------------------------- sorting
def _sort_order(a, axis, descending):
    """Stable sorting indices along ``axis``; NaN counts as the largest value (torch)."""
    if not descending:
        return np.argsort(a, axis=axis, kind="stable")
    if a.dtype.kind != "f":
        return np.argsort(-a.astype(np.int64), axis=axis, kind="stable")
    moved = np.moveaxis(a, axis, -1)
    missing = np.isnan(moved)
    order = np.lexsort((-np.where(missing, 0, moved), ~missing), axis=-1)
    return np.moveaxis(order, -1, axis)


@tensor_method
def sort(self, dim=-1, descending=False, stable=False):
    """``(values, indices)`` sorted along ``dim`` (ascending unless ``descending``)."""
    if self._data.ndim == 0:
        return tensor_shape.ReturnTypes["sort"](self, Tensor._wrap(np.zeros((), dtype=np.int64)))
    dim = normalize_dim(dim, self._data.ndim, "sort")
    order = _sort_order(self._data, dim, descending).astype(np.int64, copy=False)
    values = tensor_shape.TakeAlongDim.apply(self, order, dim, True)
    return tensor_shape.ReturnTypes["sort"](values, Tensor._wrap(order))


@tensor_method
def argsort(self, dim=-1, descending=False, stable=False):
    """int64 indices that sort ``dim``."""
    return self.sort(dim, descending).indices


@tensor_method
def topk(self, k, dim=-1, largest=True, sorted=True):   # noqa: A002 (torch's keyword)
    """``(values, indices)`` of the ``k`` largest (or smallest) entries along ``dim``.

    Raises
    ------
    RuntimeError
        If ``k`` is negative or larger than the dimension.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError("topk: k must be an int, got %s" % type(k).__name__)
    source = self.reshape(1) if self._data.ndim == 0 else self
    dim = normalize_dim(dim, source._data.ndim, "topk")
    if not 0 <= k <= source._data.shape[dim]:
        raise RuntimeError("topk: selected index k out of range (k=%d, dimension size %d)"
                           % (k, source._data.shape[dim]))
    order = _sort_order(source._data, dim, descending=largest)
    order = np.take(order, np.arange(k), axis=dim).astype(np.int64, copy=False)
    values = tensor_shape.TakeAlongDim.apply(source, order, dim, True)
    if self._data.ndim == 0:
        indices = Tensor._wrap(order.reshape(()))
        return tensor_shape.ReturnTypes["topk"](values.reshape(()), indices)
    return tensor_shape.ReturnTypes["topk"](values, Tensor._wrap(order))
