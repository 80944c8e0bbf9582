"""Depthwise convolution: groups == input channels, as direct vector loops.

A depthwise conv has one input channel per group, so im2col + GEMM would run a
(1 x K²) by (K² x positions) product per group: all unfolding and no GEMM. The
compiled loops in ``fastdl_ext/depthwise.pyx`` (C in
``include/fastdl_depthwise.h``) instead copy each (image, channel) plane once into a
zero-bordered buffer (a stride-2 conv's even and odd columns as two phase planes)
and sum its K² taps over whole vectors of output columns:

- forward: one output plane per step, with the conv epilogue fused (bias, residual,
  leaky ReLU);
- input gradient: grad_out spread out by the stride and padded by ``K - 1 -
  padding``, correlated with the flipped kernel (the transposed conv), one input
  plane per step (summing its ``M`` output channels);
- weight gradient (and bias gradient): one output channel per step, summed over all
  images by one thread in per-lane sums reduced in lane order.

Work is split by whole planes or channels, so every result is bitwise the same for
any thread count. Applies to 3x3 and 5x5 kernels, dilation 1, strides 1 and 2 (each
axis), any padding, channel multiplier ``M = C_out / C_in`` >= 1, float32 and float64.
"""
import numpy as np

from fastdl.shapes import conv_output_size
from fastdl_ext import depthwise as _ext

__all__ = ["applies", "forward_runner", "grad_input", "grad_weight"]

KERNEL_SIZES = (3, 5)


def applies(weight_shape, stride, padding, dilation, groups, input_shape, output_shape=None):
    """Whether the depthwise loops run this conv (pairs normalised).

    ``groups`` must be the input channels (more than one: a one-channel input is an
    ordinary conv, which the direct loops serve); ``output_shape``, when given (an
    input gradient), must be the conv's output for ``input_shape`` exactly.
    """
    c_out, per_group, kh, kw = weight_shape
    channels = input_shape[1]
    if (groups != channels or groups < 2 or per_group != 1 or kh != kw
            or kh not in KERNEL_SIZES or tuple(dilation) != (1, 1)
            or stride[0] not in (1, 2) or stride[1] not in (1, 2)):
        return False
    return output_shape is None or tuple(output_shape[2:]) == _output_size(
        input_shape, kh, stride, padding)


def _output_size(input_shape, kernel, stride, padding):
    return tuple(conv_output_size(input_shape[2 + axis], kernel, stride[axis],
                                  padding[axis], 1) for axis in (0, 1))


def forward_runner(input_shape, weight, bias, stride, padding, threads, negative_slope=None):
    """A prepared ``run(x, out=None, residual=None)``: out = act(conv(x) + bias + residual).

    Parameters
    ----------
    input_shape : tuple (N, C_in, H, W)
    weight : ndarray (C_in * M, 1, K, K), C-contiguous, x's dtype
    bias : ndarray (C_in * M,) or None
    stride, padding : pairs of ints
    threads : int
    negative_slope : float or None
        ``v if v > 0 else negative_slope * v`` last (0: ReLU); None: no activation.
    """
    weight = np.ascontiguousarray(weight)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=weight.dtype)
    n = input_shape[0]
    out_shape = (n, weight.shape[0]) + _output_size(input_shape, weight.shape[2], stride,
                                                    padding)
    activate = negative_slope is not None
    slope = 0.0 if negative_slope is None else float(negative_slope)
    stride, padding = tuple(stride), tuple(padding)

    def run(x, out=None, residual=None):
        if out is None:
            out = np.empty(out_shape, dtype=x.dtype)
        _ext.depthwise_forward_into(x, weight, out, stride, padding, bias, residual,
                                    activate, slope, threads)
        return out
    return run


def grad_input(grad_out, weight, input_shape, stride, padding, threads):
    """The input gradient ``input_shape`` (N, C_in, H, W) from grad_out (N, C_out, OH, OW)."""
    grad = np.empty(tuple(input_shape), dtype=grad_out.dtype)
    _ext.depthwise_grad_input_into(grad_out, weight, grad, tuple(stride), tuple(padding),
                                   threads)
    return grad


def grad_weight(x, grad_out, weight_shape, stride, padding, threads, with_bias=False):
    """The weight gradient ``weight_shape``, and the bias gradient (C_out,) with
    ``with_bias`` (then a pair), summed in the same pass over grad_out."""
    grad = np.empty(tuple(weight_shape), dtype=x.dtype)
    grad_bias = np.empty(weight_shape[0], dtype=x.dtype) if with_bias else None
    _ext.depthwise_grad_weight_into(x, grad_out, grad, grad_bias, tuple(stride),
                                    tuple(padding), threads)
    return (grad, grad_bias) if with_bias else grad
