"""Differentiable pooling: max, average and adaptive average."""
from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, contiguous
from fastdl.kernels import pool as kernels


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode):
        out, indices = kernels.max_pool2d_forward(contiguous(x), kernel_size, stride, padding,
                                                  ceil_mode)
        ctx.save_for_backward(indices)
        ctx.input_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        return kernels.max_pool2d_backward(contiguous(grad), indices, ctx.input_shape)


def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d`` (ties: first maximum).

    Output size ``floor((H + 2p - k) / s) + 1`` (``ceil`` with ``ceil_mode``).
    """
    check_float("max_pool2d", "input", input)
    return MaxPool2d.apply(as_tensor(input), kernel_size, stride, padding, ceil_mode)


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad):
        ctx.arguments = (x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
        return kernels.avg_pool2d_forward(contiguous(x), kernel_size, stride, padding,
                                          ceil_mode, count_include_pad)

    @staticmethod
    def backward(ctx, grad):
        return kernels.avg_pool2d_backward(contiguous(grad), *ctx.arguments)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``."""
    check_float("avg_pool2d", "input", input)
    return AvgPool2d.apply(as_tensor(input), kernel_size, stride, padding, ceil_mode,
                           count_include_pad)


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, output_size):
        ctx.input_shape = x.shape
        return kernels.adaptive_avg_pool2d_forward(contiguous(x), output_size)

    @staticmethod
    def backward(ctx, grad):
        return kernels.adaptive_avg_pool2d_backward(contiguous(grad), ctx.input_shape)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling to ``output_size`` (1: global average pooling)."""
    check_float("adaptive_avg_pool2d", "input", input)
    return AdaptiveAvgPool2d.apply(as_tensor(input), output_size)
