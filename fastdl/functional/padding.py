"""Differentiable padding: ``pad(input, pad, mode, value)`` as ``torch.nn.functional.pad``."""
import numbers

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, data_of
from fastdl.kernels import pad as kernels

__all__ = ["pad"]

_MODES = ("constant", "reflect", "replicate", "circular")


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, mode, value):
        ctx.input_shape, ctx.widths, ctx.mode = x.shape, widths, mode
        return kernels.pad_forward(x, widths, mode, value)

    @staticmethod
    def backward(ctx, grad):
        return kernels.pad_backward(grad, ctx.input_shape, ctx.widths, ctx.mode), None, None, None


def _widths(pad, ndim):
    """torch's flat ``pad`` (last dimension first) as (before, after) pairs, first axis
    first."""
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or not all(
            isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pad):
        raise ValueError("pad: pad must be a tuple of ints of even length, got %r" % (pad,))
    if len(pad) // 2 > ndim:
        raise ValueError("Padding length should be less than or equal to two times the input "
                         "dimension but got padding length %d and input of dimension %d"
                         % (len(pad), ndim))
    pairs = [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)]
    return tuple(reversed(pairs))


def _check_mode(x, widths, mode):
    if mode not in _MODES:
        raise NotImplementedError("pad: mode must be one of %s, got %r"
                                  % (", ".join(repr(m) for m in _MODES), mode))
    if mode == "constant":
        return
    if len(widths) > 3 or x.ndim not in (len(widths) + 1, len(widths) + 2):
        raise NotImplementedError("pad: %s padding of %d dimensions needs a %d-D or %d-D input, "
                                  "got shape %s" % (mode, len(widths), len(widths) + 1,
                                                    len(widths) + 2, x.shape))
    for (before, after), size in zip(widths, x.shape[x.ndim - len(widths):]):
        if min(before, after) < 0:
            raise ValueError("pad: %s padding must be non-negative, got %s"
                             % (mode, (before, after)))
        limit = size if mode == "reflect" else (size + 1 if mode == "circular" else None)
        if mode == "replicate" and size == 0 and (before or after):
            raise ValueError("pad: replicate padding of an empty dimension")
        if limit is not None and max(before, after) >= limit:
            raise ValueError("pad: Padding size should be less than the corresponding input "
                             "dimension, but got: padding (%d, %d) at dimension of size %d "
                             "(mode %s)" % (before, after, size, mode))


def pad(input, pad, mode="constant", value=None):
    """Pad the trailing dimensions of ``input``.

    Parameters
    ----------
    input : Tensor
    pad : tuple of int, even length
        ``(left, right)`` for the last dimension, then ``(top, bottom)`` for the
        one before, and so on. Constant padding may be negative (crops).
    mode : {'constant', 'reflect', 'replicate', 'circular'}
        The non-constant modes pad the last 1-3 dimensions of an input with one
        or two leading (batch, channel) dimensions, as torch's.
    value : float, optional
        Fill of constant padding (default 0).

    Raises
    ------
    ValueError
        Odd or over-long ``pad``, reflect padding not smaller than the dimension,
        circular padding larger than it, ``value`` with a non-constant mode.
    NotImplementedError
        An unknown mode, or a non-constant mode on an input of the wrong rank.
    """
    x = data_of(input)
    widths = _widths(pad, x.ndim)
    _check_mode(x, widths, mode)
    if mode != "constant" and value not in (None, 0, 0.0):
        raise ValueError("Padding mode \"%s\" doesn't take in value argument" % mode)
    if value is not None and not isinstance(value, numbers.Real):
        raise TypeError("pad: value must be a number, got %r" % (value,))
    return Pad.apply(as_tensor(input), widths, mode, 0.0 if value is None else value)
