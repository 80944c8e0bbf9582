"""Pointwise (1x1) and depthwise convs as steps of one parallel region (fastdl_ext).

A MobileNet is mostly inverted residual blocks: a pointwise conv that widens the
channels, a depthwise 3x3 conv, and a pointwise conv that narrows them again, with
a residual add. At batch 1 on small maps each of these layers is a few to tens of
microseconds of work, about what waking the thread team costs, and a 1x1 conv's
im2col path has a single GEMM tile for one thread to run. Here such layers are
prepared once (``layer``) and run as a ``Chain``: one parallel region for all of
them, the pointwise convs split into blocks of output channels and positions that
every thread takes from (``fastdl_ext/pointwise.pyx``), the depthwise convs over runs
of planes (where the CPU has AVX-512, on small maps and on 3x3 maps whose rows are
whole vectors, by loops of their own, else the depthwise loops of ``depthwise.py``), a
global average pool as a mean step (``mean_step``) and a classifier's linear layer as
a 1x1 conv (``linear_layer``). At
large batches the threads take whole images through the early steps, whose values
outweigh their weights.

Each pointwise output sums its K products in order in one accumulator, whatever the
blocking; so results do not depend on the thread count, and match the im2col path's
to rounding.
"""
import numpy as np

from fastdl import runtime
from fastdl.kernels import depthwise
from fastdl.shapes import conv_output_size
from fastdl_ext import pointwise as _ext

__all__ = ["ROWS", "WIDE", "PointwiseLayer", "DepthwiseLayer", "layer", "linear_layer",
           "mean_step", "pack", "prepare_chain", "threads_for"]

ROWS = _ext.PANEL_ROWS
# the vectors of positions a tile may take (1 without AVX-512, whose depthwise steps
# also keep to the depthwise loops)
WIDE = _ext.WIDE
# Items per thread a pointwise step is cut into, at least: a thread that the machine's
# other work delays leaves its share to the others.
_ITEMS_PER_THREAD = 8
# Bytes of the weights one item reads at most: a thread's items run through the images
# before the next block of rows, whose weights then stay in its L2 cache (batch 32,
# 320 -> 1280 channels at 4x4: 1.6 MB of weights had been read once per image).
_WEIGHT_BLOCK_BYTES = 128 * 1024
# Positions of one item at most: its columns (K x positions) stay in the L2 cache.
_ITEM_POSITIONS = 256
# Multiply-adds below which a second thread costs more to wake than it saves (the
# threshold of kernels.conv).
_WORK_PER_THREAD = 1_000_000


def threads_for(multiply_adds):
    """The threads worth waking for this much work (at most the runtime's count)."""
    return max(1, min(runtime.get_num_threads(), int(multiply_adds) // _WORK_PER_THREAD))


# Weights from which ``pack`` shares its panels among the threads: 512 x 2304 (a stride-2
# 256 -> 512 conv's, packed on every eager call) took 0.38 ms on one.
_THREADED_PACK = 256 * 1024


def pack(weight, scale=None):
    """The weights (M, K, 1, 1) of a pointwise conv in panels of ``ROWS`` rows, (ceil(M /
    ROWS), K, ROWS): ``packed[b, k, r] = weight[b * ROWS + r, k]``, zero past M; with
    ``scale`` (M,), each row times its factor rounded to the weights' dtype (a batch norm
    folded in, as ``weight * scale`` would)."""
    m, k = weight.shape[:2]
    packed = np.empty((-(-m // ROWS), k, ROWS), dtype=weight.dtype)
    if scale is not None:
        scale = np.ascontiguousarray(scale, dtype=weight.dtype)
    threads = runtime.get_num_threads() if m * k >= _THREADED_PACK else 1
    _ext.pack_into(np.ascontiguousarray(weight).reshape(m, k), packed, scale, threads)
    return packed


class PointwiseLayer:
    """A prepared 1x1 conv, stride 1, no padding, one group, on ``input_shape``.

    Parameters
    ----------
    input_shape : tuple (N, K, H, W)
    weight : ndarray (M, K, 1, 1)
    bias : ndarray (M,) or None
    negative_slope : float or None
        ``v if v > 0 else negative_slope * v`` last (0: ReLU); None: no activation.
    threads : int
        The team the chain will run on (sets the blocking only).
    scale : ndarray (M,), optional
        Each output channel's weights times this (a batch norm folded in while packing).
    """

    def __init__(self, input_shape, weight, bias, negative_slope, threads, scale=None):
        n, k, height, width = input_shape
        m = weight.shape[0]
        self.out_shape = (n, m, height, width)
        self.multiply_adds = n * m * k * height * width
        self.packed = pack(weight, scale)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=weight.dtype)
        self.activate = negative_slope is not None
        self.slope = 0.0 if negative_slope is None else float(negative_slope)
        positions = height * width
        self.col_block = min(positions, _ITEM_POSITIONS)
        col_blocks = -(-positions // self.col_block)
        row_blocks = max(1, -(-_ITEMS_PER_THREAD * max(threads, 1) // (n * col_blocks)),
                         -(-self.packed.nbytes // _WEIGHT_BLOCK_BYTES))
        self.row_block = -(-(-(-m // row_blocks)) // ROWS) * ROWS

    def step(self, x, out, residual=None):
        """The chain step reading ``x`` and ``residual`` and writing ``out``."""
        return _ext.PointwiseStep(x, self.packed, self.out_shape[1], out, self.bias, residual,
                                  self.activate, self.slope, self.row_block, self.col_block)


class DepthwiseLayer:
    """A prepared depthwise conv (``depthwise.applies``) on ``input_shape``; parameters
    as ``PointwiseLayer``'s, with the conv's ``stride`` and ``padding`` pairs."""

    def __init__(self, input_shape, weight, bias, stride, padding, negative_slope):
        self.weight = np.ascontiguousarray(weight)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=weight.dtype)
        self.stride, self.padding = tuple(stride), tuple(padding)
        n, _, height, width = input_shape
        out_h, out_w = (conv_output_size(size, weight.shape[2], self.stride[axis],
                                         self.padding[axis], 1)
                        for axis, size in enumerate((height, width)))
        self.out_shape = (n, weight.shape[0], out_h, out_w)
        self.multiply_adds = n * weight.shape[0] * out_h * out_w * weight.shape[2] ** 2
        self.activate = negative_slope is not None
        self.slope = 0.0 if negative_slope is None else float(negative_slope)

    def step(self, x, out, residual=None):
        """The chain step reading ``x`` and ``residual`` and writing ``out``."""
        return _ext.DepthwiseStep(x, self.weight, out, self.stride, self.padding, self.bias,
                                  residual, self.activate, self.slope)


def layer(input_shape, weight, bias, stride, padding, dilation, groups, negative_slope,
          threads=None, scale=None):
    """A ``PointwiseLayer`` or ``DepthwiseLayer`` for this conv (pairs normalised), or
    None where neither applies. ``threads``: the team's size (default the runtime's).
    ``scale`` (C_out,): each output channel's weights times it (a batch norm folded in;
    ``bias`` already includes its shift)."""
    if weight.dtype not in (np.float32, np.float64) or len(input_shape) != 4:
        return None
    if (tuple(weight.shape[2:]) == (1, 1) and tuple(stride) == (1, 1)
            and tuple(padding) == (0, 0) and groups == 1):
        return PointwiseLayer(input_shape, weight, bias, negative_slope,
                              runtime.get_num_threads() if threads is None else threads,
                              scale)
    if depthwise.applies(weight.shape, stride, padding, dilation, groups, input_shape):
        if scale is not None:
            weight = weight * np.asarray(scale, dtype=weight.dtype).reshape(-1, 1, 1, 1)
        return DepthwiseLayer(input_shape, weight, bias, stride, padding, negative_slope)
    return None


def mean_step(x, out):
    """The chain step ``out (N, C, 1, 1)`` = the mean of each plane of ``x (N, C, H, W)``
    (a global average pool, summed as ``pool.adaptive_avg_pool2d_runner`` sums it)."""
    return _ext.MeanStep(x, out)


def linear_layer(rows, weight, bias, negative_slope, threads=None):
    """A dense layer ``act(x @ weight.T + bias)`` on ``rows`` rows as a ``PointwiseLayer``
    (a 1x1 conv of a 1x1 map): its step reads x as (rows, in_features, 1, 1) and writes
    out as (rows, out_features, 1, 1), views of the (rows, features) arrays."""
    return PointwiseLayer((rows, weight.shape[1], 1, 1),
                          weight.reshape(weight.shape + (1, 1)), bias, negative_slope,
                          runtime.get_num_threads() if threads is None else threads)


def prepare_chain(steps, threads):
    """A ``Chain`` of steps (``layer(...).step(x, out, residual)``) on ``threads`` threads:
    ``chain.run(x)`` runs them in order, ``x`` in place of the first step's input."""
    return _ext.Chain(list(steps), threads)
