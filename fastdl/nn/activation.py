"""Activation layers, as torch's, each calling its ``fastdl.functional`` op.

Constructor arguments, attribute names and ``repr`` follow ``torch.nn``
(``ReLU(inplace=True)``, ``GELU(approximate='tanh')``, ``ReLU6`` a
``Hardtanh``); ``inplace`` is honoured as the functional ops honour it.
"""
import numbers

import numpy as np

from fastdl import functional as F
from fastdl._checks import positive_int
from fastdl.nn._factory import parameter_dtype
from fastdl.nn.module import Module
from fastdl.nn.parameter import Parameter

__all__ = ["CELU", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "LeakyReLU",
           "LogSigmoid", "LogSoftmax", "Mish", "PReLU", "ReLU", "ReLU6", "SELU", "SiLU",
           "Sigmoid", "Softmax", "Softmax2d", "Softmin", "Softplus", "Tanh"]


def _number(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s: %s must be a number, got %r" % (layer, name, value))
    return value


class _Inplace(Module):
    """An activation with only torch's ``inplace`` flag: ``_function(input, inplace)``."""

    _function = None

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, input):
        return type(self)._function(input, inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Inplace):
    """``max(x, 0)``."""

    _function = staticmethod(F.relu)

    @property
    def _plain_relu(self):
        # only this class's own forward may be folded into the layer before it
        return type(self).forward is _Inplace.forward


class SiLU(_Inplace):
    """``x * sigmoid(x)``."""

    _function = staticmethod(F.silu)


class Mish(_Inplace):
    """``x * tanh(softplus(x))``."""

    _function = staticmethod(F.mish)


class Hardswish(_Inplace):
    """``x * relu6(x + 3) / 6``."""

    _function = staticmethod(F.hardswish)


class Hardsigmoid(_Inplace):
    """``relu6(x + 3) / 6``."""

    _function = staticmethod(F.hardsigmoid)


class SELU(_Inplace):
    """``scale * elu(x, alpha)`` with SELU's constants."""

    _function = staticmethod(F.selu)


class _Stateless(Module):
    """An activation without arguments."""

    _function = None

    def forward(self, input):
        return type(self)._function(input)


class Sigmoid(_Stateless):
    """``1 / (1 + exp(-x))``."""

    _function = staticmethod(F.sigmoid)


class Tanh(_Stateless):
    """``tanh(x)``."""

    _function = staticmethod(F.tanh)


class LogSigmoid(_Stateless):
    """``log(sigmoid(x))``."""

    _function = staticmethod(F.logsigmoid)


class LeakyReLU(Module):
    """``x if x > 0 else negative_slope * x``."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = _number("LeakyReLU", "negative_slope", negative_slope)
        self.inplace = bool(inplace)

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return "negative_slope={}{}".format(self.negative_slope,
                                            ", inplace=True" if self.inplace else "")


class Hardtanh(Module):
    """``clamp(x, min_val, max_val)``."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        self.min_val = _number(type(self).__name__, "min_val", min_val)
        self.max_val = _number(type(self).__name__, "max_val", max_val)
        if self.max_val <= self.min_val:
            raise ValueError("%s: max_val must be larger than min_val, got min_val=%r, "
                             "max_val=%r" % (type(self).__name__, min_val, max_val))
        self.inplace = bool(inplace)

    def forward(self, input):
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return "min_val={}, max_val={}{}".format(self.min_val, self.max_val,
                                                 ", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """``min(max(x, 0), 6)``."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ELU(Module):
    """``x if x > 0 else alpha * (exp(x) - 1)``."""

    _function = staticmethod(F.elu)

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = _number(type(self).__name__, "alpha", alpha)
        self.inplace = bool(inplace)

    def forward(self, input):
        return type(self)._function(input, self.alpha, self.inplace)

    def extra_repr(self):
        return "alpha={}{}".format(self.alpha, ", inplace=True" if self.inplace else "")


class CELU(ELU):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""

    _function = staticmethod(F.celu)


class GELU(Module):
    """Gaussian error linear unit; ``approximate='tanh'`` for the tanh form."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError("GELU: approximate must be 'none' or 'tanh', got %r"
                             % (approximate,))
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return "approximate={!r}".format(self.approximate)


class Softplus(Module):
    """``log(1 + exp(beta x)) / beta``, linear above ``threshold``."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = _number("Softplus", "beta", beta)
        self.threshold = _number("Softplus", "threshold", threshold)

    def forward(self, input):
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return "beta={}, threshold={}".format(self.beta, self.threshold)


class _AlongDim(Module):
    """Softmax-type layers: one ``dim`` (None: torch's legacy implicit choice)."""

    _function = None

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return type(self)._function(input, self.dim, _stacklevel=5)

    def extra_repr(self):
        return "dim={}".format(self.dim)


class Softmax(_AlongDim):
    """Softmax along ``dim``."""

    _function = staticmethod(F.softmax)


class LogSoftmax(_AlongDim):
    """Log-softmax along ``dim``."""

    _function = staticmethod(F.log_softmax)


class Softmin(_AlongDim):
    """``softmax(-x)`` along ``dim``."""

    _function = staticmethod(F.softmin)


class Softmax2d(Module):
    """Softmax over the channels of ``(N, C, H, W)`` or ``(C, H, W)`` (dim -3)."""

    def forward(self, input):
        if input.ndim not in (3, 4):
            raise ValueError("Softmax2d: expected input with 3 or 4 dimensions, got shape %s"
                             % (tuple(input.shape),))
        return F.softmax(input, -3)


class PReLU(Module):
    """``x if x > 0 else a * x`` with a learnt slope ``a`` (one, or one per channel).

    Parameters
    ----------
    num_parameters : int
        1, or the number of channels (dim 1 of the input).
    init : float
        Initial slope.
    """

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = positive_int("PReLU", "num_parameters", num_parameters)
        self.init = _number("PReLU", "init", init)
        dtype = parameter_dtype("PReLU", device, dtype)
        self.weight = Parameter(np.full(self.num_parameters, self.init, dtype=dtype))

    def reset_parameters(self):
        self.weight.array[...] = self.init

    def forward(self, input):
        return F.prelu(input, self.weight)

    def extra_repr(self):
        return "num_parameters={}".format(self.num_parameters)
