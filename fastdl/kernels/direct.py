"""Direct convolution for few output channels: weight packing and when it applies.

The compiled loop lives in ``fastdl_ext/direct.pyx`` (a register block of output
channels × positions per step over a padded image in L1). It replaces im2col +
GEMM's forward where the GEMM would be too thin to pay for unfolding and packing:
stride 1, dilation 1, one group, at most ``MAX_OUT_CHANNELS`` output channels and a
kernel larger than 1×1.
"""
import numpy as np

from fastdl.kernels._runner import fused_runner
from fastdl.shapes import conv_output_size
from fastdl_ext import direct as _ext

__all__ = ["applies", "pack_weight", "forward_runner"]

LANES, CO_BLOCK = _ext.lanes_and_block()
# Beyond this the GEMM's M is wide enough for im2col + GEMM to win (measured on
# LeNet-5's and the C3->32 shapes).
MAX_OUT_CHANNELS = 16
# Taps per output channel beyond which the weight block and the rows a block reads
# leave L1.
MAX_TAPS = 512
# A thread keeps one padded image and its output planes on the wide grid: about L2.
MAX_IMAGE_BYTES = 256 * 1024


def applies(weight_shape, stride, dilation, groups, input_shape=None, padding=(0, 0),
            itemsize=4):
    """Whether a conv with these (normalised) hyper-parameters takes the direct path.

    With ``input_shape`` (N, C_in, H, W) the padded image must also fit a thread's
    cache budget (large images go through im2col's bounded tiles instead).
    """
    c_out, c_in, kh, kw = weight_shape
    if not (stride == (1, 1) and dilation == (1, 1) and groups == 1 and kh * kw > 1
            and c_out <= MAX_OUT_CHANNELS and c_in * kh * kw <= MAX_TAPS):
        return False
    if input_shape is None:
        return True
    padded = (input_shape[2] + 2 * padding[0]) * (input_shape[3] + 2 * padding[1])
    return (c_in + CO_BLOCK) * padded * itemsize <= MAX_IMAGE_BYTES


def pack_weight(weight):
    """(C_out, C_in, kH, kW) weights as (co_blocks, C_in*kH*kW, CO_BLOCK), zero-filled."""
    c_out = weight.shape[0]
    blocks = -(-c_out // CO_BLOCK)
    padded = np.zeros((blocks * CO_BLOCK, int(np.prod(weight.shape[1:]))), dtype=weight.dtype)
    padded[:c_out] = weight.reshape(c_out, -1)
    return np.ascontiguousarray(padded.reshape(blocks, CO_BLOCK, -1).transpose(0, 2, 1))


def forward_runner(input_shape, weight, bias, padding, threads, negative_slope=None):
    """A prepared ``run(x, out=None, residual=None)`` with the weights packed once."""
    n, _, height, width = input_shape
    c_out, _, kh, kw = weight.shape
    out_shape = (n, c_out, conv_output_size(height, kh, 1, padding[0], 1),
                 conv_output_size(width, kw, 1, padding[1], 1))
    return fused_runner(_ext.direct_forward_into, out_shape, pack_weight(weight),
                        (kh, kw, padding, threads), bias, negative_slope)
