"""Tensor arithmetic: ``+ - * / // % **``, matmul and dtype casts, with torch's type
promotion and NumPy broadcasting.

Each op is a ``Function`` whose backward reduces its gradient back to the
operand's shape (``unbroadcast``), so broadcasting works in both directions.
Operands are promoted as torch does before the op runs (:func:`promote`):
a float tensor keeps its dtype against integer tensors and Python or NumPy
scalars (``x * mask.long()`` stays float32, as does ``uint8_images / 255``),
and a 0-d tensor does not widen a dimensioned one; NumPy alone would make
all of these float64.
"""
import numbers

import numpy as np

from fastdl import tensor_deferred   # by module: it imports this one through autograd
from fastdl.autograd import Function, Tensor, tensor_method, unbroadcast
from fastdl.dtypes import get_default_dtype

__all__ = ["unbroadcast", "promote", "cast", "add", "sub", "mul", "div", "matmul", "mm",
           "bmm", "power"]


def _shape(value):
    return np.shape(value)


# ------------------------------------------------------------- type promotion
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _scalar_dtype(value):
    """The dtype torch gives a Python or NumPy scalar that decides a result's type."""
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(value, numbers.Integral):
        return np.dtype(np.int64)
    return get_default_dtype()


def _promote_types(dtypes):
    """torch.promote_types over ``dtypes``: NumPy's rule within a category, else the
    dtype of the highest category (float32 with int64 stays float32)."""
    result = dtypes[0]
    for dtype in dtypes[1:]:
        if _CATEGORY[dtype.kind] == _CATEGORY[result.kind]:
            result = np.promote_types(result, dtype)
        elif _CATEGORY[dtype.kind] > _CATEGORY[result.kind]:
            result = dtype
    return result


def _result_dtype(operands):
    """torch's result type: dimensioned tensors first, then 0-d tensors, then scalars,
    a later group counting only when its category (bool < int < float) is higher."""
    groups = ([], [], [])
    for value in operands:
        array = value._data if isinstance(value, Tensor) else value
        if isinstance(array, np.ndarray) and array.ndim:
            groups[0].append(array.dtype)
        elif isinstance(array, np.ndarray) or isinstance(value, Tensor):
            groups[1].append(array.dtype)      # a 0-d tensor (its data may be a NumPy scalar)
        else:
            groups[2].append(_scalar_dtype(value))
    result = None
    for dtypes in groups:
        if not dtypes:
            continue
        candidate = _promote_types(dtypes)
        if result is None:
            result = candidate
        elif _CATEGORY[candidate.kind] > _CATEGORY[result.kind]:
            result = candidate if dtypes is not groups[2] or candidate.kind != "f" \
                else get_default_dtype()
    return result


def _as_operand(value, dtype):
    if isinstance(value, Tensor):
        return cast(value, dtype)
    if isinstance(value, np.ndarray):
        return value if value.dtype == dtype else value.astype(dtype)
    return np.asarray(value, dtype=dtype)


def promote(a, b, true_division=False):
    """``a`` and ``b`` (Tensors, arrays or scalars) cast to torch's result dtype.

    With ``true_division`` an integer or bool result becomes the default float dtype.
    """
    a_data = a._data if isinstance(a, Tensor) else a
    b_data = b._data if isinstance(b, Tensor) else b
    a_dtype = getattr(a_data, "dtype", None)
    b_dtype = getattr(b_data, "dtype", None)
    if a_dtype is not None and a_dtype == b_dtype and (a_dtype.kind == "f" or not true_division):
        return a, b                                     # the common case: nothing to do
    if a_dtype is not None and a_dtype.kind == "f" and type(b_data) in (int, float):
        return a, b                     # a float tensor with a Python number (not np.float64)
    dtype = _result_dtype((a, b))
    if true_division and dtype.kind != "f":
        dtype = get_default_dtype()
    return _as_operand(a, dtype), _as_operand(b, dtype)


def _is_operand(value):
    return isinstance(value, (Tensor, np.ndarray, numbers.Number, np.generic))


# ---------------------------------------------------------------- the ops
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return (unbroadcast(grad, a_shape) if ctx.needs_input_grad[0] else None,
                unbroadcast(grad, b_shape) if ctx.needs_input_grad[1] else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        a_shape, b_shape = ctx.shapes
        return (unbroadcast(grad, a_shape) if ctx.needs_input_grad[0] else None,
                unbroadcast(-grad, b_shape) if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return (unbroadcast(grad * b, _shape(a)) if ctx.needs_input_grad[0] else None,
                unbroadcast(grad * a, _shape(b)) if ctx.needs_input_grad[1] else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.true_divide(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = unbroadcast(grad / b, _shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = (unbroadcast(-grad * a / (b * b), _shape(b))
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
    """``a ** exponent`` for a constant exponent."""

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return np.power(a, exponent)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        exponent = ctx.exponent
        if exponent == 0:
            return np.zeros_like(grad), None
        return grad * exponent * np.power(a, exponent - 1), None


class PowTensor(Function):
    """``base ** exponent`` where both may be tensors (and either a constant)."""

    @staticmethod
    def forward(ctx, base, exponent):
        out = np.power(base, exponent)
        ctx.save_for_backward(base, exponent, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        base, exponent, out = ctx.saved_tensors
        grad_base = grad_exponent = None
        if ctx.needs_input_grad[0]:
            local = np.where(exponent == 0, 0, exponent * np.power(base, exponent - 1))
            grad_base = unbroadcast(grad * local, _shape(base))
        if ctx.needs_input_grad[1]:
            # d(b^e)/de = b^e log b, taken as 0 where b = 0 (torch's convention)
            with np.errstate(divide="ignore", invalid="ignore"):
                local = np.where(base == 0, 0, out * np.log(np.where(base == 0, 1, base)))
            grad_exponent = unbroadcast(grad * local, _shape(exponent))
        return grad_base, grad_exponent


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
            grad_a = unbroadcast(np.matmul(grad2, np.swapaxes(b2, -1, -2)), a2.shape)
            grad_a = grad_a.reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), grad2), b2.shape)
            grad_b = grad_b.reshape(b.shape)
        return grad_a, grad_b


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
    if np.dtype(dtype).kind != "f" or not tensor.requires_grad:
        return Tensor._wrap(np.asarray(tensor._data).astype(dtype))
    return _Cast.apply(tensor, dtype)


# ------------------------------------------------------------- the operators
_PYTHON_NUMBERS = (int, float)


def _binary(function, a, b, true_division=False):
    """``function`` applied to ``a`` and ``b`` after torch's promotion (NotImplemented for
    operands that are not tensors, arrays or numbers)."""
    if isinstance(a, Tensor) and a._data.dtype.kind == "f":     # the common cases, fast
        if type(b) in _PYTHON_NUMBERS or isinstance(b, Tensor) and b._data.dtype == a._data.dtype:
            return function.apply(a, b)
    if not (_is_operand(a) and _is_operand(b)):
        return NotImplemented
    a, b = promote(a, b, true_division)
    return function.apply(a, b)


def _floor_operation(ufunc, a, b):
    """``//`` and ``%``: outside the graph (torch's floor division has no gradient)."""
    if not (_is_operand(a) and _is_operand(b)):
        return NotImplemented
    a, b = promote(a, b)
    a_data = a._data if isinstance(a, Tensor) else a
    b_data = b._data if isinstance(b, Tensor) else b
    if np.asarray(b_data).dtype.kind in "biu" and np.any(np.asarray(b_data) == 0):
        raise RuntimeError("ZeroDivisionError: integer division by zero")
    return Tensor._wrap(np.asarray(ufunc(a_data, b_data)))


@tensor_method
def __add__(self, other):
    deferred = tensor_deferred.DeferredTensor
    if type(self) is deferred or type(other) is deferred:   # a conv's output: its residual
        fused = tensor_deferred.with_residual(self, other)
        if fused is None:
            fused = tensor_deferred.with_residual(other, self)
        if fused is not None:
            return fused
    return _binary(Add, self, other)


@tensor_method
def __radd__(self, other):
    return _binary(Add, other, self)


@tensor_method
def __sub__(self, other):
    if self._data.dtype == np.bool_ and getattr(other, "dtype", None) == np.bool_:
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not "
                           "supported. Use the `^` or `logical_xor()` operator instead.")
    return _binary(Sub, self, other)


@tensor_method
def __rsub__(self, other):
    return _binary(Sub, other, self)


@tensor_method
def __mul__(self, other):
    return _binary(Mul, self, other)


@tensor_method
def __rmul__(self, other):
    return _binary(Mul, other, self)


@tensor_method
def __truediv__(self, other):
    return _binary(Div, self, other, true_division=True)


@tensor_method
def __rtruediv__(self, other):
    return _binary(Div, other, self, true_division=True)


@tensor_method
def __floordiv__(self, other):
    return _floor_operation(np.floor_divide, self, other)


@tensor_method
def __rfloordiv__(self, other):
    return _floor_operation(np.floor_divide, other, self)


@tensor_method
def __mod__(self, other):
    return _floor_operation(np.remainder, self, other)


@tensor_method
def __rmod__(self, other):
    return _floor_operation(np.remainder, other, self)


@tensor_method
def __neg__(self):
    if self._data.dtype == np.bool_:
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                           "Use the `~` or `logical_not()` operator instead.")
    return Neg.apply(self)


@tensor_method
def __pos__(self):
    return self


@tensor_method
def __pow__(self, exponent):
    if isinstance(exponent, (Tensor, np.ndarray)):
        return _binary(PowTensor, self, exponent)
    if not isinstance(exponent, (numbers.Number, np.generic)):
        return NotImplemented
    if self._data.dtype.kind in "iu" and isinstance(exponent, numbers.Integral) \
            and exponent < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    base, exponent = promote(self, exponent)
    return Pow.apply(base, exponent._data if isinstance(exponent, Tensor) else exponent)


@tensor_method
def __rpow__(self, base):
    return _binary(PowTensor, base, self)


@tensor_method
def __matmul__(self, other):
    return matmul(self, other)


@tensor_method
def __rmatmul__(self, other):
    return matmul(other, self)


# ------------------------------------------------------------- named methods
@tensor_method
def add(self, other, alpha=1):
    """``self + alpha * other``."""
    return self + (other if alpha == 1 else other * alpha)


@tensor_method
def sub(self, other, alpha=1):
    """``self - alpha * other``."""
    return self - (other if alpha == 1 else other * alpha)


@tensor_method
def mul(self, other):
    return self * other


@tensor_method
def div(self, other, rounding_mode=None):
    """``self / other``; ``rounding_mode`` "floor" or "trunc" rounds (outside the graph)."""
    if rounding_mode is None:
        return self / other
    if rounding_mode == "floor":
        return self // other
    if rounding_mode == "trunc":
        quotient = np.trunc((self / other)._data)
        dtype = _result_dtype((self, other))
        return Tensor._wrap(np.asarray(quotient.astype(dtype, copy=False)))
    raise RuntimeError("div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                       "but found %r" % (rounding_mode,))


@tensor_method(name="pow")
def power(self, exponent):
    return self ** exponent


def _check_matmul(name, a, b, expected_ndim=None):
    for label, value in (("input", a), ("other", b)):
        if not isinstance(value, (Tensor, np.ndarray)):
            raise TypeError("%s: %s must be a Tensor, got %s"
                            % (name, label, type(value).__name__))
        ndim = np.ndim(value._data if isinstance(value, Tensor) else value)
        if expected_ndim is not None and ndim != expected_ndim:
            raise RuntimeError("%s: %s must be a %dD tensor, got %dD" % (name, label,
                                                                          expected_ndim, ndim))
        if ndim == 0:
            raise RuntimeError("%s: both arguments need at least 1 dimension, got 0D" % name)
    a_shape, b_shape = np.shape(_data_of(a)), np.shape(_data_of(b))
    inner_a = a_shape[-1]
    inner_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if inner_a != inner_b:
        raise RuntimeError("%s: shapes %s and %s cannot be multiplied (%d != %d)"
                           % (name, list(a_shape), list(b_shape), inner_a, inner_b))


def _data_of(value):
    return value._data if isinstance(value, Tensor) else value


@tensor_method
def matmul(self, other):
    """Matrix product with NumPy/torch broadcasting of batch dimensions.

    Raises
    ------
    RuntimeError
        For 0-d operands or inner sizes that differ.
    """
    _check_matmul("matmul", self, other)
    return _binary(MatMul, self, other)


@tensor_method
def mm(self, mat2):
    """The product of two matrices (2-D only)."""
    _check_matmul("mm", self, mat2, expected_ndim=2)
    return _binary(MatMul, self, mat2)


@tensor_method
def bmm(self, mat2):
    """Batched matrix product of ``(b, n, m)`` and ``(b, m, p)`` tensors."""
    _check_matmul("bmm", self, mat2, expected_ndim=3)
    if np.shape(_data_of(self))[0] != np.shape(_data_of(mat2))[0]:
        raise RuntimeError("bmm: batch sizes differ: %d and %d"
                           % (np.shape(_data_of(self))[0], np.shape(_data_of(mat2))[0]))
    return _binary(MatMul, self, mat2)
