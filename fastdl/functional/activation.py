"""Differentiable activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax,
dropout."""
import numbers

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, data_of
from fastdl.kernels import activation as kernels
from fastdl.random import default_generator


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


def relu(input):
    """``max(input, 0)``."""
    check_float("relu", "input", input)
    return ReLU.apply(as_tensor(input))


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


def leaky_relu(input, negative_slope=0.01):
    """``input if input > 0 else negative_slope * input``."""
    check_float("leaky_relu", "input", input)
    if not isinstance(negative_slope, numbers.Real):
        raise TypeError("leaky_relu: negative_slope must be a number, got %r"
                        % (negative_slope,))
    return LeakyReLU.apply(as_tensor(input), float(negative_slope))


def _check_dim(op, input, dim):
    ndim = data_of(input).ndim
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or \
            not -ndim <= dim < max(ndim, 1):
        raise ValueError("%s: dim must be an int in [%d, %d), got %r" % (op, -ndim, ndim, dim))


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim, log):
        output = (kernels.log_softmax_forward if log else kernels.softmax_forward)(x, dim)
        ctx.save_for_backward(output)
        ctx.dim, ctx.log = dim, log
        return output

    @staticmethod
    def backward(ctx, grad):
        backward = kernels.log_softmax_backward if ctx.log else kernels.softmax_backward
        return backward(grad, ctx.saved_tensors[0], ctx.dim), None, None


def softmax(input, dim):
    """Softmax along ``dim`` (max-shifted, never overflows)."""
    check_float("softmax", "input", input)
    _check_dim("softmax", input, dim)
    return Softmax.apply(as_tensor(input), dim, False)


def log_softmax(input, dim):
    """Log-softmax along ``dim``, via the log-sum-exp with max shift."""
    check_float("log_softmax", "input", input)
    _check_dim("log_softmax", input, dim)
    return Softmax.apply(as_tensor(input), dim, True)


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


def dropout(input, p=0.5, training=True, generator=None):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Identity when ``training`` is False. The mask comes from ``generator`` or
    fastdl's global generator (``fastdl.manual_seed``).
    """
    x = check_float("dropout", "input", input)
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError("dropout: p must be a probability in [0, 1], got %r" % (p,))
    if not training or p == 0:
        return as_tensor(input)
    mask = kernels.dropout_mask(x.shape, float(p), generator or default_generator(), x.dtype)
    return Dropout.apply(as_tensor(input), mask)
