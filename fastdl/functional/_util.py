"""Argument handling shared by the functional wrappers."""
import numpy as np

from fastdl._checks import check_reduction  # noqa: F401  (re-exported)
from fastdl.autograd import Tensor


def data_of(value):
    """The ndarray behind a Tensor or array-like (None stays None)."""
    if value is None:
        return None
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def as_tensor(value):
    """``value`` as a Tensor (ndarrays are wrapped without copying)."""
    if value is None or isinstance(value, Tensor):
        return value
    return Tensor(np.asarray(value))


def contiguous(array):
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def check_float(op, name, value):
    array = data_of(value)
    if array.dtype not in (np.float32, np.float64):
        raise TypeError("%s: %s must be float32 or float64, got %s" % (op, name, array.dtype))
    return array
