"""The ``device=`` and ``dtype=`` arguments every torch layer constructor takes."""
import numpy as np

from fastdl.nn.parameter import Parameter

__all__ = ["empty_parameter", "parameter_dtype"]


def parameter_dtype(layer, device=None, dtype=None):
    """The dtype of ``layer``'s new parameters: ``dtype`` (float32 or float64) or float32.

    Raises
    ------
    RuntimeError
        ``device`` is not the CPU.
    TypeError
        ``dtype`` is not float32 or float64.
    """
    if device is not None:
        kind = str(getattr(device, "type", device)).split(":")[0]
        if kind != "cpu":
            raise RuntimeError("%s: device %r is not available; fastdl runs on the CPU"
                               % (layer, str(device)))
    if dtype is None:
        return np.dtype(np.float32)
    resolved = np.dtype(dtype)
    if resolved not in (np.float32, np.float64):
        raise TypeError("%s: dtype must be float32 or float64, got %s" % (layer, resolved))
    return resolved


def empty_parameter(shape, dtype):
    """An uninitialised Parameter of ``shape`` (the layer initialises it next)."""
    return Parameter(np.empty(shape, dtype=dtype))
