"""Parameter initialisers, as ``torch.nn.init``, drawing from fastdl's global generator."""
import math

import numpy as np

from fastdl.random import default_generator


def _fill(tensor, values):
    target = tensor.data
    target[...] = values.astype(target.dtype, copy=False)
    return tensor


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight ``(out, in, *kernel)``."""
    shape = tensor.data.shape
    if len(shape) < 2:
        raise ValueError("calculate_fan_in_and_fan_out: needs at least 2 dimensions, got %s"
                         % (shape,))
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with U(a, b)."""
    return _fill(tensor, default_generator().uniform(a, b, size=tensor.data.shape))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with N(mean, std²)."""
    return _fill(tensor, default_generator().normal(mean, std, size=tensor.data.shape))


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor


def ones_(tensor):
    tensor.data[...] = 1
    return tensor


def kaiming_uniform_(tensor, a=0.0, nonlinearity="leaky_relu"):
    """He-uniform init: U(-b, b), ``b = gain * sqrt(3 / fan_in)``, gain for leaky_relu(a)."""
    fan_in, _ = calculate_fan_in_and_fan_out(tensor)
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    bound = gain * math.sqrt(3.0 / fan_in) if fan_in else 0.0
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, nonlinearity="leaky_relu"):
    fan_in, _ = calculate_fan_in_and_fan_out(tensor)
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    return normal_(tensor, 0.0, gain / math.sqrt(fan_in) if fan_in else 0.0)


def default_layer_init(weight, bias, fan_in_weight=None):
    """torch's default for Linear/Conv: kaiming_uniform_(a=√5), bias U(±1/√fan_in)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(fan_in_weight or weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        uniform_(bias, -bound, bound)
