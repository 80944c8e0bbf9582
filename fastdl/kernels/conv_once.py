"""Forward paths for a conv run once (eager: nothing prepared for its weights outlives
the call), chosen by ``conv.conv2d_runner`` with ``once``.

- Few output positions in all (ResNet's 8x8 and 4x4 stages at batch 1): register tiles
  over output channels on the weights read in place (``fastdl_ext/conv_channels.pyx``),
  after a compiled unfold of every image.
- Depthwise convs, and pointwise convs that widen or narrow the channels: a chain of one
  step of the plans' pointwise kernels (``kernels.pointwise``), the weights packed for
  the call.

Each path gives the same bits for any thread count.
"""
import numpy as np

from fastdl.kernels import pointwise
from fastdl_ext import conv as _conv_ext, conv_channels as _channels_ext

__all__ = ["is_pointwise", "by_channels", "channels_runner", "by_panels", "chain_runner",
           "unfold"]

# Output positions of all images together up to which a conv run once (eager: its
# weights serve one call) multiplies its weights, read in place, by the column matrix of
# all its images in register tiles shared out by output channels
# (``fastdl_ext.conv_channels``): the direct loops pack the weights for each call,
# Winograd transforms them, and tiles of positions give every thread all the weights.
# Batch 1, 2 threads, eager forward, interleaved: 512 -> 512 at 4², 0.54 ms against
# Winograd's 3.27; 256 -> 256 at 8², 0.60 against 1.00; 256 -> 512 stride 2 from 8²,
# 0.28 against 1.68; 128 -> 256 1x1 stride 2 from 16², 0.048 against 0.081. At 128
# positions or more, stride 1, Winograd and the image GEMMs win (128 -> 128 at 16²: 0.73
# against 0.40; batch 8, 64 -> 64 at 4²: 0.16 against 0.12), but a single image's 3x3
# stride-2 conv takes the tiles up to ``THIN_STRIDED_COLUMNS`` (64 -> 128 from 32²:
# 0.31 against the direct loops' 0.50).
THIN_COLUMNS = 64
THIN_STRIDED_COLUMNS = 256
# A pointwise conv on 16 positions or fewer in all (MobileNetV2's 4x4 stage at batch 1)
# takes the tiles too where its weights are many (``THIN_POINTWISE_WEIGHTS``): they are
# then read once, in place, where im2col's tile packs them (192 -> 1024, 92 -> 55 µs;
# 960 -> 160, 78 -> 62; MobileNetV2 forward at batch 1, 5.76 -> 5.45 ms, interleaved).
# Small ones lose to the unfold and the team (96 -> 96, 14 -> 19 µs). At 64 positions
# the GEMM tiles are as fast or faster (576 -> 96 at 8²: 0.068 against 0.095 ms).
THIN_POINTWISE_COLUMNS = 16
THIN_POINTWISE_WEIGHTS = 65536
# Fewest output channels: with fewer the other paths are as fast (32 -> 32 at 8²).
THIN_MIN_CHANNELS = 64
# Pointwise convs run once that take the pointwise kernels (``kernels.pointwise``, the
# plans' chains), their weights packed for the call, over im2col's GEMM tiles: the
# widening and narrowing convs of inverted residuals, whose weights are far from square
# (channels changed ``PANEL_ASPECT``-fold or more), where the GEMM tiles fall behind.
# Timed in MobileNetV2 forwards, interleaved, 2 threads, batch 32: its pointwise convs
# 38.2 -> 32.9 ms in all (144 -> 24 at 32², 3.06 -> 1.94; 576 -> 96 at 8², 2.66 ->
# 2.17). The limits, each where the packed tiles stopped winning:
# - positions in all (``PANEL_COLUMNS``): on fewer the weights outweigh the values and
#   packing them reads them twice (batch 1, 160 -> 960 at 4², 0.47 -> 0.59 ms);
# - input channels (``PANEL_MIN_CHANNELS``): fewer make short tiles (16 -> 96 at 32²,
#   batch 32, 1.05 -> 1.96);
# - channels kept about the same: the GEMM tiles are as fast (ShuffleNetV2's 48 -> 48
#   and 96 -> 96, batch 32, 0.19 -> 0.21 and 0.20 -> 0.21 ms);
# - positions an image (``PANEL_MIN_POSITIONS``): a dense layer's batch of 64 on 1x1
#   maps, 0.027 -> 0.060;
# - work worth a second thread (``PANEL_MIN_WORK``, twice ``conv._WORK_PER_THREAD``):
#   below, setting up the chain costs more than it saves (ShuffleNetV2 0.5x at batch
#   1, 3.56 -> 3.90 ms a forward).
PANEL_MIN_POSITIONS = 16
PANEL_MIN_CHANNELS = 32
PANEL_COLUMNS = 512
PANEL_ASPECT = 2
PANEL_MIN_WORK = 2_000_000


def is_pointwise(kernel_size, stride, padding):
    """A 1x1 kernel, stride 1, no padding: the input is its own column matrix."""
    return tuple(kernel_size) == (1, 1) and tuple(stride) == (1, 1) and \
        tuple(padding) == (0, 0)


def by_panels(n_images, positions, weight_shape, stride, padding, groups):
    """Whether a pointwise conv run once takes the pointwise kernels' register tiles on
    weights packed in panels (``kernels.pointwise``): one group, enough positions an
    image (``PANEL_MIN_POSITIONS``) and in all (``PANEL_COLUMNS``), enough input
    channels (``PANEL_MIN_CHANNELS``), channels widened or narrowed by
    ``PANEL_ASPECT`` or more, and ``PANEL_MIN_WORK`` multiply-adds. The rule reads the
    shapes only, never the thread count: the paths round differently, and a conv gives
    the same bits on any number of threads."""
    out_channels, in_channels = weight_shape[:2]
    multiply_adds = n_images * positions * out_channels * in_channels
    return (multiply_adds >= PANEL_MIN_WORK and groups == 1
            and is_pointwise(weight_shape[2:], stride, padding)
            and positions >= PANEL_MIN_POSITIONS and in_channels >= PANEL_MIN_CHANNELS
            and n_images * positions >= PANEL_COLUMNS
            and max(out_channels, in_channels) >= PANEL_ASPECT * min(out_channels,
                                                                     in_channels))


def chain_runner(layer, threads):
    """``run(x, out=None, residual=None)``: a one-step chain of ``kernels.pointwise``'s
    ``layer`` (its weights packed once, here). A depthwise conv run once takes it: the
    chain's loops for small maps and whole-vector rows beat the depthwise loops' (batch
    32, 2 threads, MobileNetV2's ten depthwise shapes, 6.0 -> 3.3 ms in all; batch 1,
    0.44 -> 0.17), and where the CPU lacks AVX-512 the chain runs those same loops."""
    def run(x, out=None, residual=None):
        if out is None:
            out = np.empty(layer.out_shape, dtype=x.dtype)
        pointwise.prepare_chain([layer.step(x, out, residual)], threads).run(x)
        return out
    run.layer = layer
    return run


def by_channels(n_images, positions, weight_shape, stride, padding, groups):
    """Whether a conv run once takes the register tiles over output channels: one group,
    ``THIN_MIN_CHANNELS`` or more, and few positions in all (``THIN_COLUMNS``;
    ``THIN_STRIDED_COLUMNS`` for one image's strided conv whose kernel is over 1x1;
    ``THIN_POINTWISE_COLUMNS`` for a pointwise conv with many weights)."""
    if groups != 1 or weight_shape[0] < THIN_MIN_CHANNELS:
        return False
    if is_pointwise(weight_shape[2:], stride, padding):
        return (n_images * positions <= THIN_POINTWISE_COLUMNS
                and weight_shape[0] * weight_shape[1] >= THIN_POINTWISE_WEIGHTS)
    if n_images * positions <= THIN_COLUMNS:
        return True
    return (n_images == 1 and positions <= THIN_STRIDED_COLUMNS and tuple(stride) != (1, 1)
            and weight_shape[2] * weight_shape[3] > 1)


def unfold(x, kernel_size, stride, padding, dilation, out_size, width, threads):
    """The (C*kH*kW, width) column matrix of ``x`` (one group): the images' positions
    side by side, then zeros up to ``width``."""
    cols = np.empty((x.shape[1] * kernel_size[0] * kernel_size[1], width), dtype=x.dtype)
    _conv_ext.unfold_into(x, cols, tuple(kernel_size), stride, padding, dilation, *out_size,
                          threads)
    return cols


def channels_runner(out_shape, weight, bias, stride, padding, dilation, threads,
                    negative_slope):
    """``run(x, out=None, residual=None)`` through ``conv2d_channels_into``."""
    n, c_out = out_shape[:2]
    rows = weight.reshape(c_out, -1)
    block = _channels_ext.COLUMN_BLOCK
    width = -(-n * out_shape[2] * out_shape[3] // block) * block
    activate = negative_slope is not None
    slope = 0.0 if negative_slope is None else float(negative_slope)

    def run(x, out=None, residual=None):
        if out is None:
            out = np.empty(out_shape, dtype=x.dtype)
        cols = unfold(x, weight.shape[2:], stride, padding, dilation, out_shape[2:], width,
                      threads)
        _channels_ext.conv2d_channels_into(
            cols, rows, out.reshape(n, c_out, -1), threads, bias,
            None if residual is None else residual.reshape(n, c_out, -1), activate, slope)
        return out
    return run
