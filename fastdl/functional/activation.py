"""Differentiable activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax,
softmin, and dropout (elementwise, channel-wise).

``inplace=True`` is accepted wherever torch takes it: with nothing recorded the
result is written into the input (which is returned, as torch's); while
autograd records, the result is a new Tensor (same values and gradients).
"""
import numbers
import warnings

import numpy as np

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, data_of, finish_inplace
from fastdl.kernels import activation as kernels
from fastdl.random import as_numpy_generator
from fastdl.tensor_deferred import DeferredTensor, with_relu


class _FromOutput(Function):
    """Activations whose backward needs only their output (relu, sigmoid, tanh)."""

    @staticmethod
    def forward(ctx, x):
        output = ctx.kernels[0](x)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return ctx.kernels[1](grad, ctx.saved_tensors[0])


def _from_output(name, forward_kernel, backward_kernel):
    class Activation(_FromOutput):
        @staticmethod
        def forward(ctx, x):
            ctx.kernels = (forward_kernel, backward_kernel)
            return _FromOutput.forward(ctx, x)
    Activation.__name__ = Activation.__qualname__ = name
    return Activation


ReLU = _from_output("ReLU", kernels.relu_forward, kernels.relu_backward)
Sigmoid = _from_output("Sigmoid", kernels.sigmoid_forward, kernels.sigmoid_backward)
Tanh = _from_output("Tanh", kernels.tanh_forward, kernels.tanh_backward)


def relu(input, inplace=False):
    """``max(input, 0)``."""
    if type(input) is DeferredTensor:   # a conv's output: its activation
        fused = with_relu(input, inplace)
        if fused is not None:
            return fused
    check_float("relu", "input", input)
    return finish_inplace(input, ReLU.apply(as_tensor(input)), inplace)


def relu_(input):
    """``relu(input, inplace=True)``."""
    return relu(input, inplace=True)


def sigmoid(input):
    """Logistic sigmoid, stable for large ``|input|``."""
    check_float("sigmoid", "input", input)
    return Sigmoid.apply(as_tensor(input))


def tanh(input):
    """Hyperbolic tangent."""
    check_float("tanh", "input", input)
    return Tanh.apply(as_tensor(input))


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        return kernels.leaky_relu_forward(x, negative_slope)

    @staticmethod
    def backward(ctx, grad):
        return kernels.leaky_relu_backward(grad, ctx.saved_tensors[0], ctx.negative_slope), None


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``input if input > 0 else negative_slope * input``."""
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError("leaky_relu: negative_slope must be a number, got %r"
                        % (negative_slope,))
    if type(input) is DeferredTensor:   # a conv's output: its activation
        fused = with_relu(input, inplace, float(negative_slope))
        if fused is not None:
            return fused
    check_float("leaky_relu", "input", input)
    return finish_inplace(input, LeakyReLU.apply(as_tensor(input), float(negative_slope)),
                          inplace)


def _softmax_dim(op, input, dim):
    """``dim`` checked; None picks torch's legacy implicit dim (0 for 0-, 1- and 3-D)."""
    ndim = data_of(input).ndim
    if dim is None:
        warnings.warn("Implicit dimension choice for %s has been deprecated. Change the call "
                      "to include dim=X as an argument." % op, UserWarning, stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or \
            not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError("%s: dim must be an int in [%d, %d), got %r"
                         % (op, -max(ndim, 1), max(ndim, 1), dim))
    return int(dim)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim, log):
        squeeze = x.ndim == 0
        if squeeze:   # a 0-d input is one row of one element
            x = x.reshape(1)
        output = (kernels.log_softmax_forward if log else kernels.softmax_forward)(x, dim)
        ctx.save_for_backward(output)
        ctx.dim, ctx.log, ctx.squeeze = dim, log, squeeze
        return output.reshape(()) if squeeze else output

    @staticmethod
    def backward(ctx, grad):
        backward = kernels.log_softmax_backward if ctx.log else kernels.softmax_backward
        output = ctx.saved_tensors[0]
        grad_x = backward(grad.reshape(output.shape), output, ctx.dim)
        return (grad_x.reshape(()) if ctx.squeeze else grad_x), None, None


def _softmax(op, input, dim, dtype, log):
    if dtype is not None:
        input = as_tensor(input).astype(np.dtype(dtype))
    check_float(op, "input", input)
    dim = _softmax_dim(op, input, dim)
    return Softmax.apply(as_tensor(input), dim, log)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Softmax along ``dim`` (max-shifted, never overflows).

    Parameters
    ----------
    input : Tensor, float32 or float64
    dim : int
        None takes torch's deprecated implicit choice (with a warning).
    dtype : dtype, optional
        Cast the input to this dtype first.
    """
    return _softmax("softmax", input, dim, dtype, False)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """Log-softmax along ``dim``, via the log-sum-exp with max shift; see ``softmax``."""
    return _softmax("log_softmax", input, dim, dtype, True)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """``softmax(-input, dim)``."""
    if dtype is not None:
        input = as_tensor(input).astype(np.dtype(dtype))
    check_float("softmin", "input", input)
    return _softmax("softmin", -as_tensor(input), dim, None, False)


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


def _check_p(op, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError("%s: dropout probability has to be between 0 and 1, but got %r"
                         % (op, p))
    return float(p)


def _dropout(op, input, p, training, inplace, generator, mask_shape):
    x = check_float(op, "input", input)
    p = _check_p(op, p)
    if not training or p == 0:
        return as_tensor(input)
    mask = kernels.dropout_mask(mask_shape(x.shape), p, as_numpy_generator(generator),
                                x.dtype)
    return finish_inplace(input, Dropout.apply(as_tensor(input), mask), inplace)


def dropout(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Identity when ``training`` is False. The mask comes from ``generator`` or
    fastdl's global generator (``fastdl.manual_seed``).

    Raises
    ------
    ValueError
        ``p`` outside [0, 1].
    """
    return _dropout("dropout", input, p, training, inplace, generator, lambda shape: shape)


def _per_channel(shape):
    """Mask shape of channel dropout: one draw per (sample, channel)."""
    return tuple(shape[:2]) + (1,) * (len(shape) - 2)


def _per_channel_unbatched(shape):
    return (shape[0],) + (1,) * (len(shape) - 1)


def dropout1d(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Channel dropout of ``(N, C, L)`` (or one sample ``(C, L)``): each whole channel
    zeroed with probability ``p``, the others scaled by ``1 / (1 - p)``."""
    ndim = check_float("dropout1d", "input", input).ndim
    if ndim not in (2, 3):
        raise ValueError("dropout1d: Expected 2D or 3D input, but received a %dD input"
                         % ndim)
    return _dropout("dropout1d", input, p, training, inplace, generator,
                    _per_channel if ndim == 3 else _per_channel_unbatched)


def dropout2d(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Channel dropout of ``(N, C, H, W)``: each whole channel zeroed with probability ``p``,
    the others scaled by ``1 / (1 - p)``; identity when ``training`` is False.

    As torch, a 3-D input is taken as ``(N, C, L)`` (with a warning).
    """
    ndim = check_float("dropout2d", "input", input).ndim
    if ndim not in (3, 4):
        warnings.warn("dropout2d: Received a %d-D input to dropout2d, which is deprecated "
                      "and will result in an error in a future release." % ndim,
                      UserWarning, stacklevel=2)
    elif ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that "
                      "channel-wise 1D dropout behavior is desired - input is interpreted as "
                      "shape (N, C, L).", UserWarning, stacklevel=2)
    if ndim < 2:
        raise ValueError("dropout2d: expected an input with a batch and a channel "
                         "dimension, got shape %s" % (data_of(input).shape,))
    return _dropout("dropout2d", input, p, training, inplace, generator, _per_channel)
