"""Differentiable pooling: max (dilated, with indices), average, adaptive average and
adaptive max, in 2-D and (through the 2-D kernels with H = 1) in 1-D.

Inputs are ``(N, C, H, W)`` or one sample ``(C, H, W)`` (``(N, C, L)`` or
``(C, L)`` in 1-D), as torch's. Indices (``return_indices``) are flat
``h * W + w`` within each plane, int64, as torch's.
"""
from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, contiguous
from fastdl.kernels import pool as kernels, pool_window

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
           "adaptive_max_pool2d", "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d",
           "max_pool2d_with_indices"]


def _check_input(op, input, ndims=(3, 4)):
    x = check_float(op, "input", input)
    if x.ndim not in ndims:
        raise ValueError("%s: expected %s input, got shape %s"
                         % (op, " or ".join("%d-D" % n for n in ndims), x.shape))
    return x


class MaxPool2d(Function):
    """Max pooling by any kernel of ``kernels.pool``/``pool_window`` (``ctx.pool``)."""

    new_grads = True   # the backward kernels allocate grad_x

    @staticmethod
    def forward(ctx, x, pool, arguments):
        out, indices = pool(contiguous(x), *arguments)
        ctx.save_for_backward(indices)
        ctx.input_shape = x.shape
        return out, indices

    @staticmethod
    def backward(ctx, grads):
        grad = grads[0]   # (grad of out, grad of indices: always None)
        if grad is None:
            return None, None, None
        (indices,) = ctx.saved_tensors
        return kernels.max_pool2d_backward(contiguous(grad), indices, ctx.input_shape), None, None


def _with_indices(outputs, return_indices):
    out, indices = outputs
    indices.requires_grad = False   # integer positions: never differentiated
    return (out, indices) if return_indices else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d`` (ties: first maximum).

    Output size ``floor((H + 2p - d(k-1) - 1) / s) + 1`` (``ceil`` with ``ceil_mode``).

    Returns
    -------
    Tensor, or ``(Tensor, indices)`` with ``return_indices``.
    """
    _check_input("max_pool2d", input)
    if dilation == 1 or dilation == (1, 1) or dilation == [1, 1]:
        pool, arguments = kernels.max_pool2d_forward, (kernel_size, stride, padding, ceil_mode)
    else:
        pool, arguments = pool_window.max_pool2d_dilated_forward, (
            kernel_size, stride, padding, dilation, ceil_mode)
    return _with_indices(MaxPool2d.apply(as_tensor(input), pool, arguments), return_indices)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    """``max_pool2d(..., return_indices=True)``."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Adaptive max pooling to ``output_size`` (an int or a pair; None keeps that size),
    torch's bins ``[floor(i H / out), ceil((i + 1) H / out))``."""
    _check_input("adaptive_max_pool2d", input)
    return _with_indices(MaxPool2d.apply(as_tensor(input),
                                         pool_window.adaptive_max_pool2d_forward,
                                         (output_size,)), return_indices)


class AvgPool2d(Function):
    new_grads = True   # the backward kernels allocate grad_x

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        ctx.arguments = (x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)
        return kernels.avg_pool2d_forward(contiguous(x), kernel_size, stride, padding,
                                          ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def backward(ctx, grad):
        return kernels.avg_pool2d_backward(contiguous(grad), *ctx.arguments)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    ``divisor_override`` divides every window's sum by that number instead of
    the window size.
    """
    _check_input("avg_pool2d", input)
    return AvgPool2d.apply(as_tensor(input), kernel_size, stride, padding, ceil_mode,
                           count_include_pad, divisor_override)


class AdaptiveAvgPool2d(Function):
    new_grads = True   # the backward kernels allocate grad_x

    @staticmethod
    def forward(ctx, x, output_size):
        ctx.input_shape = x.shape
        return kernels.adaptive_avg_pool2d_forward(contiguous(x), output_size)

    @staticmethod
    def backward(ctx, grad):
        return kernels.adaptive_avg_pool2d_backward(contiguous(grad), ctx.input_shape)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling to ``output_size`` (an int or a pair; None keeps that
    size; 1: global average pooling)."""
    _check_input("adaptive_avg_pool2d", input)
    return AdaptiveAvgPool2d.apply(as_tensor(input), output_size)


# ----------------------------------------------------------------------------- 1-D
def _single(op, name, value):
    """A 1-D pooling argument (an int or a 1-tuple) as an int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise TypeError("%s: %s must be an int or a 1-tuple, got %r" % (op, name, value))
        value = value[0]
    return value


def _as_2d(op, input):
    """``(N, C, L)`` / ``(C, L)`` as ``(..., 1, L)``; the undo reshapes back."""
    x = _check_input(op, input, (2, 3))
    tensor = as_tensor(input)
    planar = tensor.reshape(x.shape[:-1] + (1, x.shape[-1]))

    def undo(result):
        return result.reshape(result.shape[:-2] + (result.shape[-1],))
    return planar, undo


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D max pooling of ``(N, C, L)``, as torch's (indices index L)."""
    planar, undo = _as_2d("max_pool1d", input)
    stride = None if stride is None or stride in ((), []) else _single("max_pool1d", "stride",
                                                                        stride)
    out, indices = max_pool2d(planar, (1, _single("max_pool1d", "kernel_size", kernel_size)),
                              None if stride is None else (1, stride),
                              (0, _single("max_pool1d", "padding", padding)),
                              (1, _single("max_pool1d", "dilation", dilation)), ceil_mode,
                              True)
    return (undo(out), undo(indices)) if return_indices else undo(out)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """1-D average pooling of ``(N, C, L)``, as torch's."""
    planar, undo = _as_2d("avg_pool1d", input)
    stride = None if stride is None or stride in ((), []) else _single("avg_pool1d", "stride",
                                                                        stride)
    return undo(avg_pool2d(planar, (1, _single("avg_pool1d", "kernel_size", kernel_size)),
                           None if stride is None else (1, stride),
                           (0, _single("avg_pool1d", "padding", padding)), ceil_mode,
                           count_include_pad))


def adaptive_avg_pool1d(input, output_size):
    """1-D adaptive average pooling of ``(N, C, L)`` to ``output_size``."""
    planar, undo = _as_2d("adaptive_avg_pool1d", input)
    return undo(adaptive_avg_pool2d(planar, (1, _single("adaptive_avg_pool1d", "output_size",
                                                        output_size))))


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """1-D adaptive max pooling of ``(N, C, L)`` to ``output_size``."""
    planar, undo = _as_2d("adaptive_max_pool1d", input)
    out, indices = adaptive_max_pool2d(planar, (1, _single("adaptive_max_pool1d",
                                                           "output_size", output_size)), True)
    return (undo(out), undo(indices)) if return_indices else undo(out)
