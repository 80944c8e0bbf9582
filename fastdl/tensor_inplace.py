"""In-place Tensor updates as torch does them: ``+= -= *= /=``, ``add_``, ``sub_``,
``mul_``, ``div_``, ``zero_``, ``fill_``, ``copy_``, ``clamp_``, ``relu_``,
``normal_``, ``uniform_``, ``bernoulli_``, ``masked_fill_``, ``scatter_`` and
``t[index] = value``.

Every one goes through :func:`update_in_place`:

* A leaf that requires grad, with grad mode on: RuntimeError (as torch).
* Recording (grad mode on, and self or an operand requires grad): the result is
  computed by the op's ``Function`` from a snapshot of self's current value and
  self becomes that result (a non-leaf). The ops that consumed the old value
  keep differentiating through it (each node knows which version of an
  in-place-modified input it read). The result gets a new array, so arrays
  saved for backward are never overwritten.
* Otherwise (under ``no_grad()``, e.g. a manual SGD step ``w -= lr * g`` or
  ``p.grad.zero_()``, or when nothing requires grad): the update is written into
  self's array (an optimizer's flat buffer stays shared). Broadcasting may not
  change self's shape and the result must cast to self's dtype (same_kind).
"""
import numpy as np

from fastdl import (tensor_deferred, tensor_math, tensor_ops,  # by module: any import order
                    tensor_shape)
from fastdl.autograd import (Function, Tensor, _grad_mode, normalize_dim, tensor_method,
                             unbroadcast)
from fastdl.random import as_numpy_generator

LEAF_IN_PLACE = "a leaf Variable that requires grad is being used in an in-place operation."


class Overwrite(Function):
    """Self replaced by new values (``fill_``, ``normal_``, ...): the old values get a
    zero gradient; a tensor of values gets its (summed) gradient."""

    @staticmethod
    def forward(ctx, old, values):
        ctx.values_shape = np.shape(values)
        return np.array(np.broadcast_to(values, old.shape), dtype=old.dtype)

    @staticmethod
    def backward(ctx, grad):
        old_grad = np.zeros_like(grad) if ctx.needs_input_grad[0] else None
        values_grad = unbroadcast(grad, ctx.values_shape) if ctx.needs_input_grad[1] else None
        return old_grad, values_grad


def update_in_place(self, function, operands, write):
    """Apply ``function(self, *operands)`` to self in place (see the module docstring).

    Parameters
    ----------
    function : Function subclass
        The recorded op; ``self`` among ``operands`` stands for self's old value.
    operands : tuple
        Its other inputs.
    write : callable
        ``write(array)`` updates self's ndarray when nothing is recorded.

    Returns
    -------
    Tensor
        self.
    """
    if tensor_deferred.scope.live:   # no deferred conv may read an operand written after
        tensor_deferred.materialize_all()
    operand_grad = any(isinstance(o, Tensor) and o.requires_grad for o in operands)
    if _grad_mode.enabled and (self.requires_grad or operand_grad):
        if self._ctx is None and self.requires_grad:
            raise RuntimeError(LEAF_IN_PLACE)
        _record(self, function, operands)
        return self
    if not isinstance(self._data, np.ndarray):   # a NumPy scalar from a 0-d op
        self._data = np.array(self._data)
    try:
        write(self._data)
    except (ValueError, TypeError) as error:     # shape or dtype NumPy cannot write back
        raise RuntimeError("in-place operation on a tensor of shape %s and dtype %s: %s"
                           % (list(self._data.shape), self._data.dtype, error)) from None
    return self


def _viewed_base(self):
    """``(base, index)`` when self is a recorded ``base[index]`` with basic indexing
    (a NumPy view whose base is still current), else None."""
    ctx = self._ctx
    if ctx is None or ctx.function is not tensor_shape.GetItem or \
            not tensor_shape.is_basic_index(ctx.index):
        return None
    base = ctx.inputs[0]
    if not np.shares_memory(base._data, self._data):
        return None                   # the base was updated since: self is no longer its view
    return base, ctx.index


def _record(self, function, operands):
    packed = self._grad_storage is not None
    old = Tensor._wrap(self._data.copy() if packed else self._data, self._ctx, self._out_index)
    old.requires_grad = self.requires_grad
    result = function.apply(old, *(old if o is self else o for o in operands))
    view = _viewed_base(self)
    if view is not None:              # write through to the base, as torch's views do
        base, index = view
        base[index] = result
        result = tensor_shape.GetItem.apply(base, index)
    data = result._data
    if data.shape != self._data.shape:
        raise RuntimeError("output with shape %s doesn't match the broadcast shape %s"
                           % (list(self._data.shape), list(data.shape)))
    if data.dtype != self._data.dtype:
        if not np.can_cast(data.dtype, self._data.dtype, "same_kind"):
            raise RuntimeError("result type %s can't be cast to the desired output type %s"
                               % (data.dtype, self._data.dtype))
        result = tensor_ops.cast(result, self._data.dtype)
    entry = (result._ctx.seq, old)
    self._versions = [entry] if self._versions is None else self._versions + [entry]
    if packed:
        np.copyto(self._data, result._data)
    else:
        self._data = result._data
    self._ctx, self._out_index = result._ctx, result._out_index
    self.requires_grad = True


def _array(value):
    return value._data if isinstance(value, Tensor) else value


def _arithmetic(self, other, function, ufunc):
    def write(array):
        ufunc(array, _array(other), out=array)
    return update_in_place(self, function, (other,), write)


# ------------------------------------------------------------ arithmetic
@tensor_method
def __iadd__(self, other):
    if type(self) is tensor_deferred.DeferredTensor:   # a conv's output: its residual
        fused = tensor_deferred.with_residual(self, other, in_place=True)
        if fused is not None:
            return fused
    return _arithmetic(self, other, tensor_ops.Add, np.add)


@tensor_method
def __isub__(self, other):
    return _arithmetic(self, other, tensor_ops.Sub, np.subtract)


@tensor_method
def __imul__(self, other):
    return _arithmetic(self, other, tensor_ops.Mul, np.multiply)


@tensor_method
def __itruediv__(self, other):
    if self._data.dtype.kind != "f":
        raise RuntimeError("result type Float can't be cast to the desired output type %s"
                           % self._data.dtype)
    return _arithmetic(self, other, tensor_ops.Div, np.true_divide)


@tensor_method
def add_(self, other, alpha=1):
    """``self += alpha * other``."""
    return self.__iadd__(other if alpha == 1 else other * alpha)


@tensor_method
def sub_(self, other, alpha=1):
    """``self -= alpha * other``."""
    return self.__isub__(other if alpha == 1 else other * alpha)


@tensor_method
def mul_(self, other):
    return self.__imul__(other)


@tensor_method
def div_(self, other):
    return self.__itruediv__(other)


# ------------------------------------------------------------ overwrites
def _overwrite(self, values):
    """Self's values replaced by ``values`` (an array or a Tensor, broadcast)."""
    def write(array):
        np.copyto(array, np.broadcast_to(_array(values), array.shape), casting="unsafe")
    return update_in_place(self, Overwrite, (values,), write)


@tensor_method
def zero_(self):
    """Fill with zeros; returns self."""
    return _overwrite(self, np.zeros((), dtype=self._data.dtype))


@tensor_method
def fill_(self, value):
    """Fill with ``value`` (a number or a one-element tensor); returns self."""
    if isinstance(value, Tensor):
        if value._data.size != 1:
            raise RuntimeError("fill_ only supports 0-dimension value tensor but got tensor "
                               "with %d dimensions" % value._data.ndim)
        return _overwrite(self, value if value.requires_grad else value._data.reshape(()))
    return _overwrite(self, np.asarray(value).astype(self._data.dtype))


@tensor_method
def copy_(self, src, non_blocking=False):
    """Copy ``src`` (broadcast to self's shape, cast to self's dtype) into self.

    Raises
    ------
    RuntimeError
        If ``src`` does not broadcast to self's shape.
    """
    shape = np.shape(_array(src))
    try:
        np.broadcast_shapes(shape, self._data.shape)
    except ValueError:
        raise RuntimeError("copy_: the size of src %s does not broadcast to self's size %s"
                           % (list(shape), list(self._data.shape))) from None
    if np.broadcast_shapes(shape, self._data.shape) != self._data.shape:
        raise RuntimeError("copy_: the size of src %s does not broadcast to self's size %s"
                           % (list(shape), list(self._data.shape)))
    if isinstance(src, Tensor) and src.requires_grad and src._data.dtype != self._data.dtype:
        src = tensor_ops.cast(src, self._data.dtype)
    return _overwrite(self, src if isinstance(src, Tensor) else np.asarray(src))


def _random_fill(self, op, draw, generator):
    if self._data.dtype.kind != "f":
        raise TypeError("%s expects a floating-point tensor, got %s" % (op, self._data.dtype))
    generator = as_numpy_generator(generator)
    values = draw(generator).astype(self._data.dtype, copy=False)
    return _overwrite(self, values)


@tensor_method
def normal_(self, mean=0.0, std=1.0, generator=None):
    """Fill with draws from N(mean, std²) from fastdl's generator (``fastdl.manual_seed``)."""
    if std < 0:
        raise RuntimeError("normal_ expects std >= 0.0, but found std %r" % (std,))
    shape = self._data.shape
    return _random_fill(self, "normal_", lambda g: g.normal(mean, std, size=shape), generator)


@tensor_method
def uniform_(self, a=0.0, b=1.0, generator=None):   # noqa: A002 (torch's names)
    """Fill with draws from U[a, b) from fastdl's generator."""
    if a > b:
        raise RuntimeError("uniform_ expects to return a [from, to) range, but found from=%r "
                           "> to=%r" % (a, b))
    shape = self._data.shape
    return _random_fill(self, "uniform_", lambda g: g.uniform(a, b, size=shape), generator)


@tensor_method
def bernoulli_(self, p=0.5, generator=None):
    """Fill with 1 (probability ``p``, a number or a tensor of probabilities) or 0."""
    probability = np.asarray(p._data if isinstance(p, Tensor) else p, dtype=np.float64)
    if np.any((probability < 0) | (probability > 1)):
        raise RuntimeError("bernoulli_ expects p to be in [0, 1], but got p=%r" % (p,))
    shape = self._data.shape
    generator = as_numpy_generator(generator)
    return _overwrite(self, (generator.random(shape) < probability).astype(self._data.dtype))


@tensor_method
def bernoulli(self, generator=None):
    """Draws of 1 with the probabilities in self (outside the graph)."""
    return Tensor._wrap(np.zeros_like(self._data)).bernoulli_(self, generator)


# ------------------------------------------------------------- clamps, masks
@tensor_method
def clamp_(self, min=None, max=None):   # noqa: A002
    """Clamp in place to ``[min, max]``."""
    if min is None and max is None:
        raise RuntimeError("clamp_: at least one of 'min' or 'max' must not be None")

    def write(array):
        np.clip(array, _array(min), _array(max), out=array)
    return update_in_place(self, tensor_math.Clamp, (_array(min), _array(max)), write)


clip_ = tensor_method(name="clip_")(clamp_)


@tensor_method
def relu_(self):
    """``max(self, 0)`` in place."""
    return self.clamp_(min=0)


@tensor_method
def masked_fill_(self, mask, value):
    """Write ``value`` wherever ``mask`` (bool, broadcast to self) is true."""
    mask = np.asarray(_array(mask))
    if mask.dtype != np.bool_:
        raise RuntimeError("masked_fill_ only supports boolean masks, but got mask with dtype "
                           "%s" % mask.dtype)
    try:
        mask = np.broadcast_to(mask, self._data.shape)
    except ValueError:
        raise RuntimeError("masked_fill_: the mask's shape %s does not broadcast to %s"
                           % (list(mask.shape), list(self._data.shape))) from None
    self[mask] = value
    return self


# ------------------------------------------------------------- item writes
@tensor_method
def __setitem__(self, index, value):
    """``self[index] = value`` (value broadcast and cast to self's dtype), recorded."""
    index = tensor_shape.normalize_index(index)
    if isinstance(value, Tensor) and not value.requires_grad:
        value = value._data
    elif not isinstance(value, Tensor):
        value = np.asarray(value)

    def write(array):
        array[index] = _array(value)
    update_in_place(self, tensor_shape.SetItem, (value, index), write)


@tensor_method
def scatter_(self, dim, index, src=None, value=None):
    """Write ``src[i][j][k]`` (or the number ``value``) to ``self[index[i][j][k]][j][k]``
    (for dim 0, and so on), as torch."""
    dim = normalize_dim(dim, self._data.ndim, "scatter_")
    positions = tensor_shape.gather_index("scatter_", self._data.shape, dim, index)
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter_: give src or value")
    if isinstance(src, Tensor) or isinstance(src, np.ndarray):
        index_shape = np.shape(positions[dim])
        src = src[tuple(slice(0, n) for n in index_shape)]
    self[positions] = src
    return self


@tensor_method
def scatter(self, dim, index, src=None, value=None):
    """Out-of-place :meth:`scatter_` (differentiable)."""
    return self.clone().scatter_(dim, index, src, value)
