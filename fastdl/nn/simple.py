"""Parameter-free layers: pooling, activations, dropout, flatten, upsample, identity."""
import numbers

from fastdl import functional as F
from fastdl._checks import is_int
from fastdl.nn.module import Module


class _Wrap(Module):
    """A layer that calls one functional op with fixed keyword arguments."""

    _function = None
    _arguments = ()

    def __init__(self, **kwargs):
        super().__init__()
        for name, value in kwargs.items():
            object.__setattr__(self, name, value)

    def forward(self, x):
        return type(self)._function(x, **{name: getattr(self, name)
                                          for name in self._arguments})

    def extra_repr(self):
        return ", ".join("%s=%r" % (name, getattr(self, name)) for name in self._arguments)


def _check_kernel(layer, kernel_size):
    values = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,)
    if not all(is_int(v) and v > 0 for v in values):
        raise ValueError("%s: kernel_size must be positive ints, got %r" % (layer, kernel_size))


class MaxPool2d(_Wrap):
    """2-D max pooling (``stride`` defaults to ``kernel_size``)."""

    _function = staticmethod(F.max_pool2d)
    _arguments = ("kernel_size", "stride", "padding", "ceil_mode")

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        _check_kernel("MaxPool2d", kernel_size)
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding,
                         ceil_mode=ceil_mode)


class AvgPool2d(_Wrap):
    """2-D average pooling."""

    _function = staticmethod(F.avg_pool2d)
    _arguments = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        _check_kernel("AvgPool2d", kernel_size)
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad)


class AdaptiveAvgPool2d(_Wrap):
    """Adaptive average pooling to ``output_size``."""

    _function = staticmethod(F.adaptive_avg_pool2d)
    _arguments = ("output_size",)

    def __init__(self, output_size):
        super().__init__(output_size=output_size)


class ReLU(_Wrap):
    _function = staticmethod(F.relu)

    @property
    def _plain_relu(self):
        # only this class's own forward may be folded into the layer before it
        return type(self).forward is _Wrap.forward


class Sigmoid(_Wrap):
    _function = staticmethod(F.sigmoid)


class Tanh(_Wrap):
    _function = staticmethod(F.tanh)


class LeakyReLU(_Wrap):
    _function = staticmethod(F.leaky_relu)
    _arguments = ("negative_slope",)

    def __init__(self, negative_slope=0.01):
        if not isinstance(negative_slope, numbers.Real):
            raise TypeError("LeakyReLU: negative_slope must be a number, got %r"
                            % (negative_slope,))
        super().__init__(negative_slope=float(negative_slope))


class Softmax(_Wrap):
    _function = staticmethod(F.softmax)
    _arguments = ("dim",)

    def __init__(self, dim):
        super().__init__(dim=dim)


class Dropout(Module):
    """Inverted dropout with probability ``p``; identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError("Dropout: p must be a probability in [0, 1], got %r" % (p,))
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return "p=%g" % self.p


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` (default: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Identity(Module):
    """Returns its input."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Upsample(_Wrap):
    """Upsampling by an integer ``scale_factor`` (``'nearest'`` or ``'bilinear'``)."""

    _function = staticmethod(F.interpolate)
    _arguments = ("scale_factor", "mode")

    def __init__(self, scale_factor, mode="nearest"):
        if mode not in ("nearest", "bilinear"):
            raise ValueError("Upsample: mode must be 'nearest' or 'bilinear', got %r" % (mode,))
        super().__init__(scale_factor=scale_factor, mode=mode)
