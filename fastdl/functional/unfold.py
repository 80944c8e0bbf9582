"""Differentiable ``unfold`` (im2col) and ``fold`` (col2im), as torch's: each one's
backward is the other (``kernels.unfold``)."""
from fastdl._checks import pair
from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float
from fastdl.kernels import unfold as kernels

__all__ = ["fold", "unfold"]


class Unfold(Function):
    @staticmethod
    def forward(ctx, x, kernel, dilation, padding, stride):
        ctx.arguments = (x.shape[-2:], kernel, dilation, padding, stride)
        return kernels.unfold_forward(x, kernel, dilation, padding, stride)

    @staticmethod
    def backward(ctx, grad):
        return kernels.fold_forward(grad, *ctx.arguments), None, None, None, None


class Fold(Function):
    @staticmethod
    def forward(ctx, columns, output_size, kernel, dilation, padding, stride):
        ctx.arguments = (kernel, dilation, padding, stride)
        return kernels.fold_forward(columns, output_size, kernel, dilation, padding, stride)

    @staticmethod
    def backward(ctx, grad):
        return kernels.unfold_forward(grad, *ctx.arguments), None, None, None, None, None


def _window(op, kernel_size, dilation, padding, stride):
    values = [pair(v, name, op) for v, name in ((kernel_size, "kernel_size"),
                                                (dilation, "dilation"), (padding, "padding"),
                                                (stride, "stride"))]
    kernel, dilation, padding, stride = values
    if min(kernel + dilation + stride) < 1 or min(padding) < 0:
        raise ValueError("%s: kernel_size, dilation and stride must be positive and padding "
                         "non-negative, got %s" % (op, tuple(values)))
    return kernel, dilation, padding, stride


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Every sliding window of ``input (N, C, H, W)`` as a column:
    ``(N, C * kh * kw, L)``, ``L`` the number of window positions.

    Raises
    ------
    ValueError
        A non-4-D input, or windows that do not fit the padded input.
    """
    x = check_float("unfold", "input", input)
    if x.ndim != 4:
        raise ValueError("unfold: Input Error: Only 4D input Tensors are supported (got %dD)"
                         % x.ndim)
    window = _window("unfold", kernel_size, dilation, padding, stride)
    grid = [kernels.grid_size(x.shape[2 + a], window[0][a], window[1][a], window[2][a],
                              window[3][a]) for a in (0, 1)]
    if min(grid) < 1:
        raise ValueError("unfold: the %s window does not fit the padded input of shape %s"
                         % (window[0], x.shape))
    return Unfold.apply(as_tensor(input), *window)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum columns ``(N, C * kh * kw, L)`` into images ``(N, C, *output_size)``, the
    adjoint of ``unfold``.

    Raises
    ------
    ValueError
        Columns that do not match ``kernel_size`` or the number of windows.
    """
    columns = check_float("fold", "input", input)
    output_size = pair(output_size, "output_size", "fold")
    window = _window("fold", kernel_size, dilation, padding, stride)
    taps = window[0][0] * window[0][1]
    grid = [kernels.grid_size(output_size[a], window[0][a], window[1][a], window[2][a],
                              window[3][a]) for a in (0, 1)]
    if columns.ndim != 3 or columns.shape[1] % taps or columns.shape[2] != grid[0] * grid[1]:
        raise ValueError("fold: expected input of shape (N, C * %d, %d), got %s"
                         % (taps, grid[0] * grid[1], columns.shape))
    return Fold.apply(as_tensor(input), output_size, *window)
