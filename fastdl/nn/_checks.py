"""Constructor argument checks shared by the layers."""
import numbers


def positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError("%s: %s must be a positive int, got %r" % (layer, name, value))
    return int(value)


def non_negative_float(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError("%s: %s must be a number >= 0, got %r" % (layer, name, value))
    return float(value)


def check_ndim(layer, x, allowed):
    ndim = x.ndim
    if ndim not in allowed:
        raise ValueError("%s: expected input with %s dimensions, got shape %s"
                         % (layer, " or ".join(str(a) for a in allowed), tuple(x.shape)))
