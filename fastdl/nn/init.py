"""Parameter initialisers, as ``torch.nn.init``, drawing from fastdl's global generator
(``fastdl.manual_seed``) unless given a ``numpy.random.Generator``.

Each fills its Tensor (or Parameter, or ndarray) in place and returns it. The
distributions, gains and fan rules are torch's; the random streams are not.
"""
import math
import warnings

import numpy as np

from fastdl.random import as_numpy_generator

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "constant_", "dirac_", "eye_",
           "kaiming_normal_", "kaiming_uniform_", "normal_", "ones_", "orthogonal_",
           "trunc_normal_", "uniform_", "xavier_normal_", "xavier_uniform_", "zeros_"]


def _array(tensor):
    return tensor if isinstance(tensor, np.ndarray) else tensor.array


def _fill(tensor, values):
    target = _array(tensor)
    target[...] = np.asarray(values).astype(target.dtype, copy=False)
    return tensor


def _rng(generator):
    return as_numpy_generator(generator)


def calculate_gain(nonlinearity, param=None):
    """torch's recommended gain for ``nonlinearity`` (``'relu'``: sqrt(2), ``'tanh'``: 5/3,
    ``'leaky_relu'``: sqrt(2 / (1 + slope^2)), ``'selu'``: 3/4, linear and conv: 1)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError("negative_slope %r not a valid number" % (param,))
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError("Unsupported nonlinearity %s" % (nonlinearity,))


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight ``(out, in, *kernel)``.

    Raises
    ------
    ValueError
        Fewer than 2 dimensions.
    """
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         "dimensions, got shape %s" % (shape,))
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


_calculate_fan_in_and_fan_out = calculate_fan_in_and_fan_out   # torch's private name


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    return _fill(tensor, _rng(generator).uniform(a, b, size=_array(tensor).shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    return _fill(tensor, _rng(generator).normal(mean, std, size=_array(tensor).shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill with N(mean, std^2) truncated to [a, b] (inverse-CDF sampling, as torch)."""
    from scipy.special import erf, erfinv
    low = (1 + erf((a - mean) / std / math.sqrt(2.0))) / 2
    high = (1 + erf((b - mean) / std / math.sqrt(2.0))) / 2
    uniform = _rng(generator).uniform(2 * low - 1, 2 * high - 1, size=_array(tensor).shape)
    values = np.clip(erfinv(uniform) * std * math.sqrt(2.0) + mean, a, b)
    return _fill(tensor, values)


def constant_(tensor, val):
    """Fill with ``val``."""
    _array(tensor)[...] = val
    return tensor


def zeros_(tensor):
    """Fill with 0."""
    return constant_(tensor, 0)


def ones_(tensor):
    """Fill with 1."""
    return constant_(tensor, 1)


def eye_(tensor):
    """The identity matrix (2-D tensors only)."""
    array = _array(tensor)
    if array.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported, got shape %s"
                         % (array.shape,))
    array[...] = np.eye(*array.shape)
    return tensor


def dirac_(tensor, groups=1):
    """Dirac delta kernels (3-5-D conv weights): convolution with them is the identity on
    the first ``min(out, in)`` channels of each group."""
    array = _array(tensor)
    if array.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if array.shape[0] % groups:
        raise ValueError("dim 0 must be divisible by groups")
    out_per_group = array.shape[0] // groups
    array[...] = 0
    center = tuple(n // 2 for n in array.shape[2:])
    for group in range(groups):
        for channel in range(min(out_per_group, array.shape[1])):
            array[(group * out_per_group + channel, channel) + center] = 1
    return tensor


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot-uniform: U(-b, b), ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot-normal: N(0, std^2), ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError("Mode %s not supported, please use one of fan_in, fan_out" % (mode,))
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        warnings.warn("Initializing zero-element tensors is a no-op")
        return None
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He-uniform: U(-b, b), ``b = gain * sqrt(3 / fan)``, gain of ``nonlinearity`` (slope
    ``a`` for leaky_relu), ``fan`` the fan_in or fan_out (``mode``)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He-normal: N(0, std^2), ``std = gain / sqrt(fan)``."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix over the flattened trailing dimensions, times ``gain``."""
    array = _array(tensor)
    if array.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    rows = array.shape[0]
    cols = array.size // rows if rows else 0
    flat = _rng(generator).normal(size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, gain * q.reshape(array.shape))


def default_layer_init(weight, bias, fan_in_weight=None):
    """torch's default for Linear/Conv: kaiming_uniform_(a=√5), bias U(±1/√fan_in)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(fan_in_weight or weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        uniform_(bias, -bound, bound)
