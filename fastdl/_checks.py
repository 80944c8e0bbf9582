"""Argument checks shared by every layer of fastdl, from the kernels up.

Plain Python and NumPy only, so the compute kernels, the differentiable ops,
the layers and the plan loader all validate with the same rules and the same
messages (``"<op>: <argument> must be ..., got <value>"``). Checks that need a
``Tensor`` live with the functional wrappers (``fastdl/functional/_util.py``).
"""
import numbers

__all__ = ["check_ndim", "check_reduction", "is_int", "is_real", "non_negative_float", "pair",
           "positive_int"]


def is_int(value):
    """Whether ``value`` is an integer (Python or NumPy) and not a bool.

    Python ints take a fast path: the ``numbers.Integral`` ABC check is slow,
    and shape checks run it dozens of times per layer call.
    """
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, bool))


def is_real(value):
    """Whether ``value`` is a real number (Python floats first; bools count, as in NumPy)."""
    return type(value) is float or isinstance(value, numbers.Real)


def pair(value, name, op="conv2d"):
    """``value`` as a pair of ints (``3`` → ``(3, 3)``), with a clear error otherwise.

    Raises
    ------
    TypeError
        ``"<op>: <name> must be an int or a pair of ints, got <value>"``.
    """
    if is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and is_int(value[0]) and is_int(
            value[1]):
        return int(value[0]), int(value[1])
    raise TypeError("%s: %s must be an int or a pair of ints, got %r" % (op, name, value))


def positive_int(layer, name, value):
    """``value`` as an int >= 1, else ``ValueError`` naming ``layer`` and ``name``."""
    if not is_int(value) or value < 1:
        raise ValueError("%s: %s must be a positive int, got %r" % (layer, name, value))
    return int(value)


def non_negative_float(layer, name, value):
    """``value`` as a float >= 0 (bools refused), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError("%s: %s must be a number >= 0, got %r" % (layer, name, value))
    return float(value)


def check_ndim(layer, x, allowed):
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``allowed``."""
    ndim = x.ndim
    if ndim not in allowed:
        raise ValueError("%s: expected input with %s dimensions, got shape %s"
                         % (layer, " or ".join(str(a) for a in allowed), tuple(x.shape)))


def check_reduction(op, reduction):
    """Raise ``ValueError`` unless ``reduction`` is ``'mean'``, ``'sum'`` or ``'none'``."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError("%s: reduction must be 'mean', 'sum' or 'none', got %r"
                         % (op, reduction))
