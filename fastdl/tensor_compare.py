"""Tensor comparisons and logical operators: ``== != < <= > >=`` (and ``eq``,
``ne``, ``lt``, ``le``, ``gt``, ``ge``) compare elementwise with NumPy
broadcasting and return bool Tensors outside the graph, as in torch;
``& | ^ ~`` work on bool and integer tensors.

Hashing stays by identity (``Tensor.__hash__`` is ``object.__hash__``): Tensors
can be dict keys and set members; to look a Tensor up in a list, compare with
``is``.
"""
import numbers

import numpy as np

from fastdl.autograd import Tensor, tensor_method

_COMPARABLE = (np.ndarray, np.generic, numbers.Number, list, tuple)


def _array_of(value):
    return value._data if isinstance(value, Tensor) else value


def _compare(self, other, ufunc):
    """``ufunc(self, other)`` as a bool Tensor, or NotImplemented for other types."""
    if isinstance(other, Tensor):
        other = other._data
    elif not isinstance(other, _COMPARABLE):
        return NotImplemented
    return Tensor._wrap(np.asarray(ufunc(self._data, other)))


def _checked_compare(self, other, ufunc, name):
    result = _compare(self, other, ufunc)
    if result is NotImplemented:
        raise TypeError("%s: cannot compare a Tensor with %s" % (name, type(other).__name__))
    return result


def _add_comparison(ufunc, operator, name):
    def compare_operator(self, other):
        return _compare(self, other, ufunc)

    def compare_method(self, other):
        return _checked_compare(self, other, ufunc, name)
    for function, function_name in ((compare_operator, operator), (compare_method, name)):
        function.__name__ = function.__qualname__ = function_name
        function.__doc__ = "Elementwise ``%s`` (NumPy broadcasting): a bool Tensor." % name
        tensor_method(function)


for _ufunc, _operator, _name in ((np.equal, "__eq__", "eq"), (np.not_equal, "__ne__", "ne"),
                                 (np.less, "__lt__", "lt"), (np.less_equal, "__le__", "le"),
                                 (np.greater, "__gt__", "gt"),
                                 (np.greater_equal, "__ge__", "ge")):
    _add_comparison(_ufunc, _operator, _name)


def _logical(self, other, ufunc):
    other = _array_of(other)
    if self._data.dtype.kind == "f" or np.asarray(other).dtype.kind == "f":
        raise TypeError("bitwise/logical operators need bool or integer tensors, got %s"
                        % self._data.dtype)
    return Tensor._wrap(np.asarray(ufunc(self._data, other)))


@tensor_method
def __and__(self, other):
    return _logical(self, other, np.bitwise_and)


@tensor_method
def __or__(self, other):
    return _logical(self, other, np.bitwise_or)


@tensor_method
def __xor__(self, other):
    return _logical(self, other, np.bitwise_xor)


Tensor.__rand__, Tensor.__ror__, Tensor.__rxor__ = __and__, __or__, __xor__


@tensor_method
def __invert__(self):
    if self._data.dtype.kind == "f":
        raise TypeError("~ needs a bool or integer tensor, got %s" % self._data.dtype)
    return Tensor._wrap(np.asarray(np.invert(self._data)))


@tensor_method
def logical_not(self):
    return Tensor._wrap(np.asarray(np.logical_not(self._data)))


@tensor_method
def logical_and(self, other):
    return Tensor._wrap(np.asarray(np.logical_and(self._data, _array_of(other))))


@tensor_method
def logical_or(self, other):
    return Tensor._wrap(np.asarray(np.logical_or(self._data, _array_of(other))))


@tensor_method
def equal(self, other):
    """Whether ``other`` has the same shape and values (a Python bool)."""
    other = _array_of(other)
    return self._data.shape == np.shape(other) and bool(np.array_equal(self._data, other))


@tensor_method
def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether ``|self - other| <= atol + rtol * |other|`` everywhere (a Python bool)."""
    return bool(np.allclose(self._data, _array_of(other), rtol=rtol, atol=atol,
                            equal_nan=equal_nan))
