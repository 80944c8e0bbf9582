"""The checks every op of an inference plan shares: bounded ints, finite numbers, flags and
weight tensors, each failing with a ValueError that starts "invalid inference plan".

Kept apart from ``_opgraph`` so that the modules of the ops (``_opgraph`` for the layers,
``_graph_ops`` for the graph ops) both build on them without importing each other.
"""
import math
import numbers

from fastdl.shapes import is_int

#: The largest int a plan may give for a size, channel count, stride, padding, dilation,
#: window or value id (the kernels' C ints then never overflow).
MAX_INT = 1 << 24
# the most elements one value may have at batch 1: the kernels index planes with C ints
MAX_ELEMENTS = 2 ** 31 - 1
#: The most ops a plan may hold (ResNet-152 has about 160), and the most outputs.
MAX_OPS = 4096
#: The most axes a value may have, its batch axis included (NumPy's limit is 32; an
#: image model's values have 2 to 6).
MAX_NDIM = 8


def fail(message):
    raise ValueError("invalid inference plan: " + message)


def bounded_int(value, low, high=MAX_INT):
    """Whether ``value`` is an int (not a bool) in ``[low, high]``."""
    return is_int(value) and low <= value <= high


def bounded_ints(value, count, what, low):
    """``value``, a list of ``count`` ints in ``[low, MAX_INT]``, as a tuple."""
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
            bounded_int(v, low) for v in value):
        fail("%s must be a list of %d ints in [%d, %d], got %r" % (what, count, low, MAX_INT,
                                                                   value))
    return tuple(int(v) for v in value)


def finite(value):
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(
        value)


def flag(op, key, index):
    """Fail unless ``op[key]`` is a bool."""
    if not isinstance(op[key], bool):
        fail("op %d (%s): %s must be true or false, got %r" % (index, op["op"], key, op[key]))


def axis(op, key, index, ndim):
    """``op[key]``, an axis in ``[1, ndim)`` (no op touches the batch axis 0)."""
    value = op[key]
    if not bounded_int(value, 1, ndim - 1):
        fail("op %d (%s): %s must be an int in [1, %d] for a %d-D input, got %r"
             % (index, op["op"], key, ndim - 1, ndim, value))
    return int(value)


def weight(tensors, op, role, index, ndim):
    """The tensor op ``index`` names for ``role`` (``ndim``-D, not empty), or None."""
    name = op.get("weights", {}).get(role)
    if name is None:
        return None
    array = tensors[name]   # names are checked in _opgraph._check_fields
    if array.ndim != ndim or 0 in array.shape:
        fail("op %d (%s): its %s, tensor %r, must be %d-D and not empty, got shape %s"
             % (index, op["op"], role, name, ndim, array.shape))
    return array
