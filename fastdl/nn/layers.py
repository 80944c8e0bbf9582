"""Parameterised layers: Linear, Conv2d, ConvTranspose2d."""
import numpy as np

from fastdl import functional as F
from fastdl._checks import pair, positive_int
from fastdl.nn import init
from fastdl.nn.module import Module
from fastdl.nn.parameter import Parameter


def _empty(*shape):
    return Parameter(np.empty(shape, dtype=np.float32))


class Linear(Module):
    """``y = x W^T + b`` with ``W (out_features, in_features)``; torch's default init."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        self.weight = _empty(self.out_features, self.in_features)
        self.register_parameter("bias", _empty(self.out_features) if bias else None)
        init.default_layer_init(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return "in_features=%d, out_features=%d, bias=%s" % (
            self.in_features, self.out_features, self.bias is not None)


class _ConvNd(Module):
    def __init__(self, layer, in_channels, out_channels, kernel_size, stride, padding,
                 dilation, groups, bias, padding_mode, transposed):
        super().__init__()
        self.in_channels = positive_int(layer, "in_channels", in_channels)
        self.out_channels = positive_int(layer, "out_channels", out_channels)
        self.groups = positive_int(layer, "groups", groups)
        self.kernel_size = pair(kernel_size, "kernel_size", layer)
        self.stride = pair(stride, "stride", layer)
        self.padding = pair(padding, "padding", layer)
        self.dilation = pair(dilation, "dilation", layer)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 \
                or min(self.padding) < 0:
            raise ValueError("%s: kernel_size, stride and dilation must be >= 1 and padding "
                             ">= 0, got kernel_size=%s stride=%s dilation=%s padding=%s"
                             % (layer, self.kernel_size, self.stride, self.dilation,
                                self.padding))
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise ValueError("%s: %s must be divisible by groups, got %s=%d, groups=%d"
                                 % (layer, name, name, getattr(self, name), self.groups))
        if padding_mode != "zeros":
            raise ValueError("%s: only padding_mode='zeros' is supported, got %r"
                             % (layer, padding_mode))
        if transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = _empty(*shape)
        self.register_parameter("bias", _empty(self.out_channels) if bias else None)
        init.default_layer_init(self.weight, self.bias)

    def extra_repr(self):
        text = "%d, %d, kernel_size=%s, stride=%s" % (self.in_channels, self.out_channels,
                                                      self.kernel_size, self.stride)
        if self.padding != (0, 0):
            text += ", padding=%s" % (self.padding,)
        if self.dilation != (1, 1):
            text += ", dilation=%s" % (self.dilation,)
        if self.groups != 1:
            text += ", groups=%d" % self.groups
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution layer, as ``torch.nn.Conv2d``.

    Shape: ``(N, C_in, H, W) → (N, C_out, OH, OW)``,
    ``OH = floor((H + 2p - d(k-1) - 1) / s) + 1``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__("Conv2d", in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, transposed=False)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def _forward_then_relu(self):
        if type(self).forward is not Conv2d.forward:
            return None   # a subclass's own forward is never bypassed
        return lambda x: F.conv2d_relu(x, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution, as ``torch.nn.ConvTranspose2d``.

    Shape: ``OH = (H-1)s - 2p + d(k-1) + output_padding + 1``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"):
        super().__init__("ConvTranspose2d", in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode, transposed=True)
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d")

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
