"""Normalisation layers, as torch's: BatchNorm1d/2d, LayerNorm, GroupNorm,
InstanceNorm1d/2d, LocalResponseNorm.

State-dict entries match torch's (``weight``, ``bias``, ``running_mean``,
``running_var``, ``num_batches_tracked``), so a torch checkpoint loads
strictly; a checkpoint without ``num_batches_tracked`` (older torch) loads too.
"""
import numbers

import numpy as np

from fastdl import functional as F
from fastdl._checks import check_ndim, non_negative_float, positive_int
from fastdl.autograd import Tensor
from fastdl.nn._factory import parameter_dtype
from fastdl.nn.module import Module
from fastdl.nn.parameter import Parameter
from fastdl.tensor_convert import data_of

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
           "LayerNorm", "LocalResponseNorm"]


def _affine(module, shape, weight, bias, dtype):
    """Register ``weight`` (ones) and ``bias`` (zeros) of ``shape``, or None for each."""
    module.register_parameter("weight", Parameter(np.ones(shape, dtype=dtype)) if weight
                              else None)
    module.register_parameter("bias", Parameter(np.zeros(shape, dtype=dtype)) if bias
                              else None)


def _momentum(name, momentum):
    return None if momentum is None else non_negative_float(name, "momentum", momentum)


class _NormBase(Module):
    """Batch and instance norm: features, eps, momentum, affine, running statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(name, "num_features", num_features)
        self.eps = non_negative_float(name, "eps", eps)
        self.momentum = _momentum(name, momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = parameter_dtype(name, device, dtype)
        _affine(self, (self.num_features,), self.affine, self.affine and bias, dtype)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        """Running mean 0, variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            self.weight.array[...] = 1
        if self.bias is not None:
            self.bias.array[...] = 0

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key not in state_dict:
            # checkpoints from before the counter existed (torch's rule)
            state_dict[key] = np.array(self.num_batches_tracked)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self):
        return ("{num_features}, eps={eps}, momentum={momentum}, affine={affine}, "
                "bias={use_bias}, track_running_stats={track_running_stats}".format(
                    use_bias=self.bias is not None, **self.__dict__))


class _BatchNorm(_NormBase):
    _allowed_ndim = (2, 3, 4)

    def forward(self, input):
        name = type(self).__name__
        # a Tensor's shape, not its values: a deferred conv output stays deferred for
        # F.batch_norm to fold into the conv
        array = input if isinstance(input, Tensor) else data_of(input)
        check_ndim(name, array, self._allowed_ndim)
        if array.shape[1] != self.num_features:
            raise ValueError("%s: expected %d channels, input has shape %s"
                             % (name, self.num_features, tuple(array.shape)))
        batches = None
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            batches = int(self.num_batches_tracked)
        # training, or no running statistics to use: normalise with the batch's
        use_batch_stats = self.training or self.running_mean is None
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep_stats else None,
                            self.running_var if keep_stats else None, self.weight, self.bias,
                            use_batch_stats, self.momentum, self.eps, batches)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs, statistics per channel.

    ``momentum=None`` keeps a cumulative average (factor ``1 / num_batches_tracked``).
    """

    _allowed_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` inputs, statistics per channel.

    ``momentum=None`` keeps a cumulative average (factor ``1 / num_batches_tracked``).
    """

    _allowed_ndim = (4,)


class _InstanceNorm(_NormBase):
    _batched_ndim = 4

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)

    def forward(self, input):
        name = type(self).__name__
        array = data_of(input)
        check_ndim(name, array, (self._batched_ndim - 1, self._batched_ndim))
        unbatched = array.ndim == self._batched_ndim - 1
        if unbatched:   # one sample, as torch takes it
            input = input.reshape((1,) + array.shape)
        if input.shape[1] != self.num_features:
            raise ValueError("%s: expected %d channels, input has shape %s"
                             % (name, self.num_features, array.shape))
        use_input_stats = self.training or not self.track_running_stats
        momentum = 0.1 if self.momentum is None else self.momentum
        out = F.instance_norm(input, self.running_mean, self.running_var, self.weight,
                              self.bias, use_input_stats, momentum, self.eps)
        return out.reshape(array.shape) if unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of ``(N, C, L)``; torch's defaults (no affine, no stats)."""

    _batched_ndim = 3


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of ``(N, C, H, W)``; torch's defaults (no affine, no stats)."""


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(positive_int("LayerNorm", "normalized_shape", n)
                                      for n in normalized_shape)
        self.eps = non_negative_float("LayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = parameter_dtype("LayerNorm", device, dtype)
        _affine(self, self.normalized_shape, self.elementwise_affine,
                self.elementwise_affine and bias, dtype)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return ("{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}, "
                "bias={use_bias}".format(use_bias=self.bias is not None, **self.__dict__))


class GroupNorm(Module):
    """Group normalisation; ``num_channels`` must be divisible by ``num_groups``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError("GroupNorm: num_channels must be divisible by num_groups, got "
                             "num_channels=%d, num_groups=%d" % (num_channels, num_groups))
        self.eps = non_negative_float("GroupNorm", "eps", eps)
        self.affine = bool(affine)
        dtype = parameter_dtype("GroupNorm", device, dtype)
        _affine(self, (self.num_channels,), self.affine, self.affine and bias, dtype)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return "{num_groups}, {num_channels}, eps={eps}, affine={affine}, bias={use_bias}".format(
            use_bias=self.bias is not None, **self.__dict__)


class LocalResponseNorm(Module):
    """Normalisation across ``size`` neighbouring channels (AlexNet's LRN)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return "{size}, alpha={alpha}, beta={beta}, k={k}".format(**self.__dict__)
