"""Differentiable resizing: ``interpolate`` (nearest, nearest-exact, linear, bilinear,
bicubic, area) and ``pixel_shuffle`` / ``pixel_unshuffle``.

``interpolate`` follows ``torch.nn.functional.interpolate``: ``size`` or
``scale_factor`` (output ``floor(in * factor)``), ``align_corners`` for the
linear modes, ``recompute_scale_factor``. Integer upsampling factors in
nearest and bilinear (no corner alignment) run ``kernels.resize``'s loops;
every other size runs the tap tables of ``kernels.resample``.
"""
import math
import numbers

from fastdl.autograd import Function
from fastdl.functional._util import as_tensor, check_float, contiguous
from fastdl.functional.pooling import adaptive_avg_pool1d, adaptive_avg_pool2d
from fastdl.kernels import resample, resize as kernels

__all__ = ["INTERPOLATE_MODES", "channel_shuffle", "interpolate", "pixel_shuffle",
           "pixel_unshuffle", "upsample", "upsample_bilinear", "upsample_nearest"]

# mode -> the input ranks it takes (torch: linear 3-D, bilinear/bicubic 4-D)
INTERPOLATE_MODES = {"nearest": (3, 4), "nearest-exact": (3, 4), "linear": (3,),
                     "bilinear": (4,), "bicubic": (4,), "area": (3, 4), "trilinear": (5,)}
_ALIGNING = ("linear", "bilinear", "bicubic", "trilinear")


class Upsample(Function):
    """Integer upsampling factors (``kernels.resize``)."""

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


class Resample(Function):
    """Any output size by per-axis tap tables (``kernels.resample``)."""

    @staticmethod
    def forward(ctx, x, rows, cols):
        ctx.tables, ctx.input_shape = (rows, cols), x.shape
        return resample.resample2d_forward(x, rows, cols)

    @staticmethod
    def backward(ctx, grad):
        return resample.resample2d_backward(grad, ctx.input_shape, *ctx.tables), None, None


def _output_sizes(input_shape, size, scale_factor, recompute_scale_factor):
    """(output sizes, scale factors used for coordinates or None), as torch computes them."""
    spatial = len(input_shape) - 2
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is not None:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * spatial
        if len(sizes) != spatial or not all(isinstance(s, numbers.Integral) and
                                            not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError("interpolate: size must be a positive int or %d of them for an "
                             "input of shape %s, got %r" % (spatial, tuple(input_shape), size))
        return tuple(int(s) for s in sizes), (None,) * spatial
    if scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    factors = (tuple(scale_factor) if isinstance(scale_factor, (tuple, list))
               else (scale_factor,) * spatial)
    if len(factors) != spatial or not all(isinstance(f, numbers.Real) and
                                          not isinstance(f, bool) and f > 0 for f in factors):
        raise ValueError("interpolate: scale_factor must be a positive number or %d of them "
                         "for an input of shape %s, got %r"
                         % (spatial, tuple(input_shape), scale_factor))
    sizes = tuple(int(math.floor(n * float(f))) for n, f in zip(input_shape[2:], factors))
    if min(sizes) < 1:
        raise ValueError("interpolate: scale_factor %r gives an empty output for input shape "
                         "%s" % (scale_factor, tuple(input_shape)))
    used = (None,) * spatial if recompute_scale_factor else tuple(float(f) for f in factors)
    return sizes, used


def _check_mode(x, mode, align_corners):
    if mode not in INTERPOLATE_MODES:
        raise ValueError("interpolate: mode must be one of %s, got %r"
                         % (", ".join(repr(m) for m in INTERPOLATE_MODES), mode))
    if mode not in _ALIGNING and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if x.ndim not in INTERPOLATE_MODES[mode]:
        raise ValueError("interpolate: got %dD input, but %s mode needs %s input"
                         % (x.ndim, mode,
                            " or ".join("%dD" % n for n in INTERPOLATE_MODES[mode])))
    if mode == "trilinear":
        raise NotImplementedError("interpolate: mode 'trilinear' (5-D input) is not supported")


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize ``input (N, C, L)`` or ``(N, C, H, W)`` to ``size`` or by ``scale_factor``.

    Parameters
    ----------
    size : int or tuple of int, optional
    scale_factor : float or tuple of float, optional
        Output ``floor(in * scale_factor)``; coordinates use the factor itself
        unless ``recompute_scale_factor``.
    mode : {'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic', 'area'}
    align_corners : bool, optional
        Linear modes only (default False).

    Returns
    -------
    Tensor (N, C, *size)

    Raises
    ------
    ValueError
        Both or neither of ``size`` and ``scale_factor``, an unknown mode, a mode
        that does not fit the input rank, ``align_corners`` with a non-linear mode.
    """
    x = check_float("interpolate", "input", input)
    _check_mode(x, mode, align_corners)
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    sizes, scales = _output_sizes(x.shape, size, scale_factor, recompute_scale_factor)
    if mode == "area":
        return (adaptive_avg_pool1d if x.ndim == 3 else adaptive_avg_pool2d)(input, sizes)
    align = bool(align_corners)
    if x.ndim == 4 and mode in ("nearest", "bilinear") and not align:
        factors = resample.integer_factors(x.shape, sizes, scales)
        if factors is not None:
            return Upsample.apply(as_tensor(input), factors, mode)
    tensor = as_tensor(input)
    if x.ndim == 3:   # (N, C, L) as (N, C, 1, L)
        planar = tensor.reshape(x.shape[:2] + (1, x.shape[2]))
        rows = resample.nearest_taps(1, 1)
        cols = resample.mode_taps(mode, x.shape[2], sizes[0], align, scales[0])
        out = Resample.apply(planar, rows, cols)
        return out.reshape(x.shape[:2] + (sizes[0],))
    rows = resample.mode_taps(mode, x.shape[2], sizes[0], align, scales[0])
    cols = resample.mode_taps(mode, x.shape[3], sizes[1], align, scales[1])
    return Resample.apply(tensor, rows, cols)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated alias of ``interpolate``, as torch's."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """``interpolate(..., mode='nearest')``."""
    return interpolate(input, size, scale_factor, "nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """``interpolate(..., mode='bilinear', align_corners=True)``, as torch's."""
    return interpolate(input, size, scale_factor, "bilinear", True)


def _check_factor(op, name, factor):
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise ValueError("%s: %s must be a positive int, got %r" % (op, name, factor))
    return int(factor)


def pixel_shuffle(input, upscale_factor):
    """``(*, C r^2, H, W) -> (*, C, H r, W r)``: depth to space, as torch's.

    Raises
    ------
    ValueError
        Fewer than 3 dimensions, or channels not divisible by ``upscale_factor**2``.
    """
    x = check_float("pixel_shuffle", "input", input)
    r = _check_factor("pixel_shuffle", "upscale_factor", upscale_factor)
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise ValueError("pixel_shuffle expects its input's 'channel' dimension to be "
                         "divisible by the square of upscale_factor, but input.size(-3)=%s is "
                         "not divisible by %d" % (x.shape[-3] if x.ndim >= 3 else None, r * r))
    batch, (channels, height, width) = x.shape[:-3], x.shape[-3:]
    out = as_tensor(input).reshape(batch + (channels // (r * r), r, r, height, width))
    k = len(batch)
    out = out.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return out.reshape(batch + (channels // (r * r), height * r, width * r))


def pixel_unshuffle(input, downscale_factor):
    """``(*, C, H r, W r) -> (*, C r^2, H, W)``: space to depth, the inverse of
    ``pixel_shuffle``."""
    x = check_float("pixel_unshuffle", "input", input)
    r = _check_factor("pixel_unshuffle", "downscale_factor", downscale_factor)
    if x.ndim < 3 or x.shape[-2] % r or x.shape[-1] % r:
        raise ValueError("pixel_unshuffle expects height and width to be divisible by "
                         "downscale_factor=%d, got shape %s" % (r, x.shape))
    batch, (channels, height, width) = x.shape[:-3], x.shape[-3:]
    out = as_tensor(input).reshape(batch + (channels, height // r, r, width // r, r))
    k = len(batch)
    out = out.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return out.reshape(batch + (channels * r * r, height // r, width // r))


def channel_shuffle(input, groups):
    """``(N, C, *) -> (N, C, *)`` with channels regrouped: ``(g, C/g)`` read as ``(C/g, g)``
    (ShuffleNet's shuffle), as torch's.

    Raises
    ------
    ValueError
        Fewer than 3 dimensions, or C not divisible by ``groups``.
    """
    x = check_float("channel_shuffle", "input", input)
    groups = _check_factor("channel_shuffle", "groups", groups)
    if x.ndim < 3 or x.shape[1] % groups:
        raise ValueError("channel_shuffle: Number of channels must be divisible by groups and "
                         "the input at least 3-D, got shape %s and groups=%d"
                         % (x.shape, groups))
    n, c, rest = x.shape[0], x.shape[1], x.shape[2:]
    grouped = as_tensor(input).reshape((n, groups, c // groups) + rest)
    order = (0, 2, 1) + tuple(range(3, grouped.ndim))
    return grouped.permute(*order).reshape(x.shape)
