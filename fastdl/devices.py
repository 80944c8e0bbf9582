"""``fastdl.device``: where a tensor lives, which is always the CPU.

Any device torch names can be *described* (``device("cuda")`` constructs, as
code often builds it before asking ``fastdl.cuda.is_available()``), but asking
for a tensor or a module on anything other than the CPU raises a RuntimeError
naming the device. :func:`parse_to_arguments` reads the arguments of
``Tensor.to`` and ``Module.to`` the way torch does.
"""
import builtins

import numpy as np

from fastdl.dtypes import resolve_dtype

__all__ = ["device", "CPU", "as_device", "check_cpu", "parse_to_arguments"]

# torch's device types, in its error message's order
_DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip",
                 "ve", "fpga", "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia",
                 "privateuseone")


def _check_index(index):
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError("device: index must be an int, got %s" % type(index).__name__)
    if index < 0:
        raise RuntimeError("Device index must not be negative")
    return int(index)


def _parse(text):
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", None)``."""
    kind, colon, index_text = text.partition(":")
    if kind not in _DEVICE_TYPES:
        raise RuntimeError("Expected one of %s device type at start of device string: %s"
                           % (", ".join(_DEVICE_TYPES), text))
    if not colon:
        return kind, None
    if not index_text.isdigit() or (len(index_text) > 1 and index_text[0] == "0"):
        raise RuntimeError("Invalid device string: %r" % text)
    return kind, int(index_text)


class device:
    """A device, as ``torch.device``: ``device("cpu")``, ``device("cpu:0")``,
    ``device("cpu", 0)``, ``device(type="cpu")``.

    Parameters
    ----------
    type : str or device
        ``"cpu"``, optionally with ``":index"``; other torch device types
        construct but cannot hold tensors.
    index : int, optional

    Raises
    ------
    RuntimeError
        An unknown device type, a malformed string, a negative index, or an
        int alone (torch's accelerator index: there is none).
    """

    __slots__ = ("_type", "_index")

    def __init__(self, type, index=None):   # noqa: A002 (torch's keyword)
        if isinstance(type, device):
            if index is not None:
                raise TypeError("device: index cannot be given with a device")
            kind, parsed_index = type.type, type.index
        elif isinstance(type, (int, np.integer)) and not isinstance(type, bool):
            raise RuntimeError("Cannot access accelerator device when none is available.")
        elif isinstance(type, str):
            kind, parsed_index = _parse(type)
        else:
            raise TypeError("device: expected a device string such as 'cpu', got %s"
                            % builtins.type(type).__name__)
        if index is not None:
            if parsed_index is not None:
                raise RuntimeError("type (string) must not include an index because index "
                                   "was passed explicitly: %s" % type)
            parsed_index = _check_index(index)
        self._type = kind
        self._index = parsed_index

    @property
    def type(self):
        """The device type, e.g. ``"cpu"``."""
        return self._type

    @property
    def index(self):
        """The device index, or None when not given."""
        return self._index

    def __str__(self):
        return self._type if self._index is None else "%s:%d" % (self._type, self._index)

    def __repr__(self):
        if self._index is None:
            return "device(type=%r)" % self._type
        return "device(type=%r, index=%d)" % (self._type, self._index)

    def __eq__(self, other):
        if not isinstance(other, device):
            return NotImplemented
        return self._type == other._type and self._index == other._index

    def __hash__(self):
        return hash((self._type, self._index))

    def __reduce__(self):
        return device, (self._type, self._index)


CPU = device("cpu")


def as_device(value, op="device"):
    """``value`` (a device, a device string) as a :class:`device`."""
    if isinstance(value, device):
        return value
    if isinstance(value, str):
        return device(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return device(value)
    raise TypeError("%s: expected a device or a device string such as 'cpu', got %s"
                    % (op, type(value).__name__))


def check_cpu(value, op):
    """Return the CPU device if ``value`` (a device, a string or None) names it.

    Raises
    ------
    RuntimeError
        If ``value`` names any other device ("cuda", "mps", "cuda:0", ...).
    """
    if value is None:
        return CPU
    resolved = as_device(value, op)
    if resolved.type != "cpu":
        raise RuntimeError("%s: device %r is not available: fastdl runs on the CPU only "
                           "(fastdl.cuda.is_available() is False)" % (op, str(resolved)))
    return resolved


def _is_device_like(value):
    return isinstance(value, (device, str)) or (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool))


def _is_tensor_like(value):
    return hasattr(value, "dtype") and hasattr(value, "shape") and \
        not isinstance(value, (np.dtype, type))


def parse_to_arguments(op, args, kwargs):
    """Read ``to(device=None, dtype=None, non_blocking=False, copy=False)``,
    ``to(dtype, non_blocking=False, copy=False)`` or ``to(tensor, ...)``.

    Returns
    -------
    dtype : numpy.dtype or None
    copy : bool
    non_blocking : bool

    Raises
    ------
    RuntimeError
        The device is not the CPU.
    TypeError
        Arguments that fit none of the three forms.
    """
    kwargs = dict(kwargs)
    kwargs.pop("memory_format", None)        # one memory format: C-contiguous NumPy arrays
    args = list(args)
    target_device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    if args and _is_device_like(args[0]):
        if target_device is not None:
            raise TypeError("%s: device given twice" % op)
        target_device = args.pop(0)
        if args and not isinstance(args[0], bool):
            dtype = args.pop(0) if dtype is None else _twice(op, "dtype")
    elif args and _is_tensor_like(args[0]):
        other = args.pop(0)
        target_device = getattr(other, "device", None)
        dtype = other.dtype if dtype is None else _twice(op, "dtype")
    elif args and not isinstance(args[0], bool):
        dtype = args.pop(0) if dtype is None else _twice(op, "dtype")
    flags = {"non_blocking": False, "copy": False}
    for name, value in zip(("non_blocking", "copy"), args):
        flags[name] = value
    if len(args) > 2:
        raise TypeError("%s: too many positional arguments" % op)
    for name in list(kwargs):
        if name not in flags:
            raise TypeError("%s() got an unexpected keyword argument %r" % (op, name))
        flags[name] = kwargs.pop(name)
    check_cpu(target_device, op)
    if dtype is not None:
        dtype = resolve_dtype(dtype, op)
    return dtype, bool(flags["copy"]), bool(flags["non_blocking"])


def _twice(op, name):
    raise TypeError("%s: %s given twice" % (op, name))
