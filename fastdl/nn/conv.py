"""Convolution layers, as torch's: Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d.

Attributes and their meaning follow ``torch.nn.Conv2d``: ``kernel_size``,
``stride``, ``dilation``, ``output_padding`` are tuples; ``padding`` is a
tuple or the string ``'same'``/``'valid'``; ``padding_mode`` other than
``'zeros'`` pads the input first (``F.pad`` with
``_reversed_padding_repeated_twice``) and convolves without padding.
"""
from fastdl import functional as F
from fastdl._checks import is_int, positive_int
from fastdl.nn import init
from fastdl.nn._factory import empty_parameter, parameter_dtype
from fastdl.nn.module import Module

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(layer, name, value, dims):
    """``value`` (an int or ``dims`` ints) as a tuple of ``dims`` ints."""
    if is_int(value):
        return (int(value),) * dims
    if isinstance(value, (tuple, list)) and len(value) == dims and all(is_int(v)
                                                                        for v in value):
        return tuple(int(v) for v in value)
    raise TypeError("%s: %s must be an int or a tuple of %d ints, got %r"
                    % (layer, name, dims, value))


class _ConvNd(Module):
    """What every convolution layer shares: arguments, checks, parameters, repr."""

    _dims = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, padding_mode, output_padding=0, device=None, dtype=None):
        super().__init__()
        layer, dims = type(self).__name__, self._dims
        self.in_channels = positive_int(layer, "in_channels", in_channels)
        self.out_channels = positive_int(layer, "out_channels", out_channels)
        self.groups = positive_int(layer, "groups", groups)
        self.kernel_size = _tuple(layer, "kernel_size", kernel_size, dims)
        self.stride = _tuple(layer, "stride", stride, dims)
        self.dilation = _tuple(layer, "dilation", dilation, dims)
        self.output_padding = _tuple(layer, "output_padding", output_padding, dims)
        self.padding = self._check_padding(layer, padding)
        self._check_sizes(layer)
        if padding_mode not in _PADDING_MODES:
            raise ValueError("%s: padding_mode must be one of %s, but got padding_mode=%r"
                             % (layer, _PADDING_MODES, padding_mode))
        if self._transposed and padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for %s' % layer)
        self.padding_mode = padding_mode
        self.transposed = self._transposed
        self._reversed_padding_repeated_twice = self._reversed_padding()
        dtype = parameter_dtype(layer, device, dtype)
        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = empty_parameter(shape, dtype)
        self.register_parameter("bias", empty_parameter((self.out_channels,), dtype)
                                if bias else None)
        self.reset_parameters()

    def _check_padding(self, layer, padding):
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                raise ValueError("Invalid padding string %r, should be one of {'valid', "
                                 "'same'}" % (padding,))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            return padding
        return _tuple(layer, "padding", padding, self._dims)

    def _check_sizes(self, layer):
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or (
                not isinstance(self.padding, str) and min(self.padding) < 0):
            raise ValueError("%s: kernel_size, stride and dilation must be >= 1 and padding "
                             ">= 0, got kernel_size=%s stride=%s dilation=%s padding=%s"
                             % (layer, self.kernel_size, self.stride, self.dilation,
                                self.padding))
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise ValueError("%s: %s must be divisible by groups, got %s=%d, groups=%d"
                                 % (layer, name, name, getattr(self, name), self.groups))

    def _reversed_padding(self):
        """``F.pad``'s list (last dimension first) of this layer's padding."""
        pairs = []
        for axis in reversed(range(self._dims)):
            if self.padding == "same":
                total = self.dilation[axis] * (self.kernel_size[axis] - 1)
                pairs += [total // 2, total - total // 2]
            elif self.padding == "valid":
                pairs += [0, 0]
            else:
                pairs += [self.padding[axis]] * 2
        return tuple(pairs)

    def reset_parameters(self):
        """torch's default: kaiming_uniform_(a=sqrt(5)) weight, U(±1/sqrt(fan_in)) bias."""
        init.default_layer_init(self.weight, self.bias)

    def extra_repr(self):
        text = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * self._dims:
            text += ", padding={padding}"
        if self.dilation != (1,) * self._dims:
            text += ", dilation={dilation}"
        if self.output_padding != (0,) * self._dims:
            text += ", output_padding={output_padding}"
        if self.groups != 1:
            text += ", groups={groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += ", padding_mode={padding_mode}"
        return text.format(**self.__dict__)

    def _padded(self, input):
        """The input padded by ``padding_mode`` (non-zero modes), and the conv's padding."""
        if self.padding_mode == "zeros":
            return input, self.padding
        return (F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                (0,) * self._dims)


class _Conv(_ConvNd):
    """A (not transposed) convolution layer: ``_function``, ``F.conv1d`` or ``F.conv2d``,
    on the input padded by ``padding_mode``."""

    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device=device, dtype=dtype)

    def _conv_forward(self, input, weight, bias):
        input, padding = self._padded(input)
        return type(self)._function(input, weight, bias, self.stride, padding, self.dilation,
                                    self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_Conv):
    """1-D convolution layer, as ``torch.nn.Conv1d``.

    Shape: ``(N, C_in, L) → (N, C_out, L_out)``,
    ``L_out = floor((L + 2p - d(k-1) - 1) / s) + 1``.
    """

    _dims = 1
    _function = staticmethod(F.conv1d)


class Conv2d(_Conv):
    """2-D convolution layer, as ``torch.nn.Conv2d``.

    Shape: ``(N, C_in, H, W) → (N, C_out, OH, OW)``,
    ``OH = floor((H + 2p - d(k-1) - 1) / s) + 1``.
    """

    _function = staticmethod(F.conv2d)

    def _forward_then_relu(self):
        if type(self).forward is not Conv2d.forward or self.padding_mode != "zeros":
            return None   # a subclass's own forward is never bypassed
        return lambda x: F.conv2d_relu(x, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation, self.groups)


class ConvTranspose1d(_ConvNd):
    """1-D transposed convolution, as ``torch.nn.ConvTranspose1d``.

    Shape: ``L_out = (L-1)s - 2p + d(k-1) + output_padding + 1``.
    """

    _dims = 1
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)

    def forward(self, input, output_size=None):
        if output_size is not None:
            raise NotImplementedError("ConvTranspose1d: output_size is not supported; use "
                                      "output_padding")
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution, as ``torch.nn.ConvTranspose2d``.

    Shape: ``OH = (H-1)s - 2p + d(k-1) + output_padding + 1``.
    """

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)

    def forward(self, input, output_size=None):
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = self._output_padding(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)

    def _output_padding(self, input, output_size):
        """The output_padding that makes the output ``output_size`` (its last two sizes)."""
        size = tuple(output_size)[-2:]
        shape = input.shape[-2:]
        padding = []
        for axis in range(2):
            smallest = ((shape[axis] - 1) * self.stride[axis] - 2 * self.padding[axis]
                        + self.dilation[axis] * (self.kernel_size[axis] - 1) + 1)
            extra = size[axis] - smallest
            if not 0 <= extra < max(self.stride[axis], self.dilation[axis]):
                raise ValueError("ConvTranspose2d: requested an output size of %s, but valid "
                                 "sizes range from %s (for an input of %s)"
                                 % (size, smallest, tuple(shape)))
            padding.append(extra)
        return tuple(padding)
