"""Normalisation layers: BatchNorm1d/2d, LayerNorm, GroupNorm, InstanceNorm2d."""
import numbers

import numpy as np

from fastdl import functional as F
from fastdl._checks import check_ndim, non_negative_float, positive_int
from fastdl.functional._util import data_of
from fastdl.nn.module import Module
from fastdl.nn.parameter import Parameter


def _affine(module, shape, affine):
    if affine:
        module.weight = Parameter(np.ones(shape, dtype=np.float32))
        module.bias = Parameter(np.zeros(shape, dtype=np.float32))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class _BatchNorm(Module):
    _allowed_ndim = (2, 3, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        self.eps = non_negative_float(name, "eps", eps)
        if momentum is not None:
            momentum = non_negative_float(name, "momentum", momentum)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _affine(self, (self.num_features,), self.affine)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        name = type(self).__name__
        array = data_of(x)
        check_ndim(name, array, self._allowed_ndim)
        if array.shape[1] != self.num_features:
            raise ValueError("%s: expected %d channels, input has shape %s"
                             % (name, self.num_features, array.shape))
        use_batch_stats = self.training or self.running_mean is None
        batches = None
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            batches = int(self.num_batches_tracked)
        track = self.training and self.track_running_stats
        return F.batch_norm(x, self.running_mean if track or not self.training else None,
                            self.running_var if track or not self.training else None,
                            self.weight, self.bias, use_batch_stats, self.momentum, self.eps,
                            batches)

    def extra_repr(self):
        return "%d, eps=%g, momentum=%s, affine=%s, track_running_stats=%s" % (
            self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs."""

    _allowed_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` inputs, statistics per channel."""

    _allowed_ndim = (4,)


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(positive_int("LayerNorm", "normalized_shape", n)
                                      for n in normalized_shape)
        self.eps = non_negative_float("LayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        _affine(self, self.normalized_shape, self.elementwise_affine)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return "%s, eps=%g, elementwise_affine=%s" % (self.normalized_shape, self.eps,
                                                     self.elementwise_affine)


class GroupNorm(Module):
    """Group normalisation; ``num_channels`` must be divisible by ``num_groups``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError("GroupNorm: num_channels must be divisible by num_groups, got "
                             "num_channels=%d, num_groups=%d" % (num_channels, num_groups))
        self.eps = non_negative_float("GroupNorm", "eps", eps)
        self.affine = bool(affine)
        _affine(self, (self.num_channels,), self.affine)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return "%d, %d, eps=%g, affine=%s" % (self.num_groups, self.num_channels, self.eps,
                                             self.affine)


class InstanceNorm2d(Module):
    """Instance normalisation of ``(N, C, H, W)``; torch's defaults (no affine, no stats)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False):
        super().__init__()
        self.num_features = positive_int("InstanceNorm2d", "num_features", num_features)
        self.eps = non_negative_float("InstanceNorm2d", "eps", eps)
        self.momentum = non_negative_float("InstanceNorm2d", "momentum", momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _affine(self, (self.num_features,), self.affine)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
            self.register_buffer("running_var", np.ones(self.num_features, np.float32))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def forward(self, x):
        array = data_of(x)
        check_ndim("InstanceNorm2d", array, (4,))
        use_input_stats = self.training or not self.track_running_stats
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_input_stats, self.momentum, self.eps)
