"""Tensor dtypes under torch's names, and the default floating dtype.

fastdl's dtypes are NumPy's: ``fastdl.float32 is numpy.dtype("float32")``, so
``x.dtype == fastdl.float32`` and ``fastdl.zeros(3, dtype=fastdl.long)`` read
as in torch while arrays stay plain NumPy. The aliases follow torch:
``float`` is float32, ``double`` float64, ``half`` float16, ``long`` int64,
``int`` int32, ``short`` int16.
"""
import builtins

import numpy as np

__all__ = ["get_default_dtype", "set_default_dtype", "resolve_dtype", "is_floating_dtype",
           "DTYPES"]

# torch's dtype names -> NumPy dtypes (exported as fastdl.<name>)
DTYPES = {
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
    "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}
_SUPPORTED_KINDS = "biuf"

_default_dtype = DTYPES["float32"]


def get_default_dtype():
    """The dtype of tensors made from Python floats and of floating factories (float32)."""
    return _default_dtype


def set_default_dtype(dtype):
    """Set the default floating dtype: float32 (the default) or float64.

    Raises
    ------
    TypeError
        For any other dtype.
    """
    global _default_dtype
    resolved = resolve_dtype(dtype, "set_default_dtype")
    if resolved not in (DTYPES["float32"], DTYPES["float64"]):
        raise TypeError("set_default_dtype: only float32 and float64 are supported as the "
                        "default dtype, got %s" % resolved)
    _default_dtype = resolved


def resolve_dtype(dtype, op="dtype"):
    """``dtype`` as a NumPy dtype fastdl tensors can hold.

    Parameters
    ----------
    dtype : numpy dtype, NumPy scalar type, str or Python type
        ``float`` means float64 and ``int`` int64 (as in ``torch.zeros(2,
        dtype=float)``); strings may be NumPy's or torch's (``"float32"``,
        ``"torch.long"``).
    op : str
        The caller's name, for the error message.

    Raises
    ------
    TypeError
        If ``dtype`` names no dtype, or one a tensor cannot hold (strings, objects).
    """
    if dtype is None:
        raise TypeError("%s: dtype must be given, got None" % op)
    if isinstance(dtype, np.dtype):
        resolved = dtype
    elif dtype is builtins.float:
        return DTYPES["float64"]
    elif dtype is builtins.int:
        return DTYPES["int64"]
    elif dtype is builtins.bool:
        return DTYPES["bool"]
    elif isinstance(dtype, str) and dtype.replace("torch.", "", 1) in DTYPES:
        return DTYPES[dtype.replace("torch.", "", 1)]
    else:
        try:
            resolved = np.dtype(dtype)
        except TypeError:
            raise TypeError("%s: %r is not a dtype (use fastdl.float32, fastdl.int64, ...)"
                            % (op, dtype)) from None
    if resolved.kind not in _SUPPORTED_KINDS:
        raise TypeError("%s: tensors cannot hold dtype %s" % (op, resolved))
    return resolved


def is_floating_dtype(dtype):
    """Whether ``dtype`` (a NumPy dtype) is a floating-point type."""
    return dtype.kind == "f"
