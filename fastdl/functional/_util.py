"""Argument handling shared by the functional wrappers."""
import numpy as np

from fastdl import tensor_deferred
from fastdl._checks import check_reduction  # noqa: F401  (re-exported)
from fastdl.autograd import Tensor
from fastdl.tensor_convert import data_of  # noqa: F401  (re-exported)


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


def finish_inplace(input, output, inplace):
    """torch's ``inplace=True``: the result written into ``input``'s array, and ``input``
    returned, when autograd records nothing; while it records (``output`` requires
    grad), the result stays a new Tensor so saved arrays are never overwritten."""
    if not inplace or output.requires_grad:
        return output
    if tensor_deferred.scope.live:   # no deferred conv may read an operand written after
        tensor_deferred.materialize_all()
    target = data_of(input)
    if target is not output.array:
        np.copyto(target, output.array)
    return input if isinstance(input, Tensor) else output
