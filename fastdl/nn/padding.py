"""Padding layers, as torch's: Zero, Constant, Reflection, Replication and Circular
padding in 1-D and 2-D, each ``F.pad`` with a stored ``padding`` tuple."""
from fastdl import functional as F
from fastdl._checks import is_int
from fastdl.nn.module import Module

__all__ = ["CircularPad1d", "CircularPad2d", "ConstantPad1d", "ConstantPad2d",
           "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d",
           "ZeroPad1d", "ZeroPad2d"]


def _widths(layer, padding, dims):
    """``padding`` (an int, or ``2 * dims`` ints: left, right, top, bottom) as a tuple."""
    if is_int(padding):
        return (int(padding),) * (2 * dims)
    if isinstance(padding, (tuple, list)) and len(padding) == 2 * dims and all(
            is_int(p) for p in padding):
        return tuple(int(p) for p in padding)
    raise TypeError("%s: padding must be an int or a %d-tuple of ints, got %r"
                    % (layer, 2 * dims, padding))


class _PadNd(Module):
    _dims = 2
    _mode = "constant"

    def __init__(self, padding):
        super().__init__()
        self.padding = _widths(type(self).__name__, padding, self._dims)

    def forward(self, input):
        return F.pad(input, self.padding, self._mode)

    def extra_repr(self):
        return "{}".format(self.padding)


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return "padding={}, value={}".format(self.padding, self.value)


class ConstantPad1d(_ConstantPadNd):
    """Pad the last dimension with ``value`` (negative widths crop)."""

    _dims = 1


class ConstantPad2d(_ConstantPadNd):
    """Pad the last two dimensions with ``value`` (negative widths crop)."""


class ZeroPad1d(ConstantPad1d):
    """Pad the last dimension with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return "{}".format(self.padding)


class ZeroPad2d(ConstantPad2d):
    """Pad the last two dimensions with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return "{}".format(self.padding)


class ReflectionPad1d(_PadNd):
    """Mirror the last dimension without repeating its edge."""

    _dims, _mode = 1, "reflect"


class ReflectionPad2d(_PadNd):
    """Mirror the last two dimensions without repeating their edges."""

    _mode = "reflect"


class ReplicationPad1d(_PadNd):
    """Repeat the edge values of the last dimension."""

    _dims, _mode = 1, "replicate"


class ReplicationPad2d(_PadNd):
    """Repeat the edge values of the last two dimensions."""

    _mode = "replicate"


class CircularPad1d(_PadNd):
    """Wrap the last dimension around."""

    _dims, _mode = 1, "circular"


class CircularPad2d(_PadNd):
    """Wrap the last two dimensions around."""

    _mode = "circular"
