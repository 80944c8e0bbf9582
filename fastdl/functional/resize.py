"""Differentiable upsampling (``interpolate``) by integer scale factors."""
import numbers

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, contiguous
from fastdl.kernels import resize as kernels


class Upsample(Function):
    @staticmethod
    def forward(ctx, x, scale, mode):
        ctx.scale, ctx.mode, ctx.input_shape = scale, mode, x.shape
        if mode == "nearest":
            return kernels.upsample_nearest2d_forward(x, scale)
        return kernels.upsample_bilinear2d_forward(x, scale)

    @staticmethod
    def backward(ctx, grad):
        grad = contiguous(grad)
        if ctx.mode == "nearest":
            return kernels.upsample_nearest2d_backward(grad, ctx.scale), None, None
        return kernels.upsample_bilinear2d_backward(grad, ctx.input_shape, ctx.scale), None, None


def _integer_scale(scale_factor):
    values = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
    scale = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 1 or \
                int(value) != value:
            raise ValueError("interpolate: scale_factor must be a positive integer (or a pair), "
                             "got %r" % (scale_factor,))
        scale.append(int(value))
    if len(scale) != 2:
        raise ValueError("interpolate: scale_factor must be a number or a pair, got %r"
                         % (scale_factor,))
    return tuple(scale)


def interpolate(input, scale_factor, mode="nearest"):
    """Upsample ``input (N, C, H, W)`` by an integer ``scale_factor``.

    Parameters
    ----------
    mode : {'nearest', 'bilinear'}
        ``'bilinear'`` uses torch's ``align_corners=False`` convention.

    Returns
    -------
    Tensor (N, C, H*sh, W*sw)
    """
    x = check_float("interpolate", "input", input)
    if x.ndim != 4:
        raise ValueError("interpolate: input must be (N, C, H, W), got shape %s" % (x.shape,))
    if mode not in ("nearest", "bilinear"):
        raise ValueError("interpolate: mode must be 'nearest' or 'bilinear', got %r" % (mode,))
    return Upsample.apply(as_tensor(input), _integer_scale(scale_factor), mode)
