"""2-D convolution and transposed convolution, forward and backward (fastdl_ext + BLAS).

The compiled loops live in ``fastdl_ext/conv.pyx`` (tiled im2col/col2im with
OpenMP, single-threaded GEMM from SciPy's BLAS per tile, or per several whole images
where one image's map is small: ``_images_per_item``); 3×3 stride-1 convs
with enough channels take Winograd's F(2×2, 3×3) instead (``winograd.py``), and
depthwise convs (groups == input channels, 3×3 or 5×5) direct loops of their own
(``depthwise.py``), forward and both gradients. A conv run once (eager, ``once``)
may take other forwards, whose weights need no preparing kept for later calls: on
few positions, register tiles over output channels on the weights in place
(``fastdl_ext/conv_channels.pyx``); depthwise convs, and the widening and
narrowing pointwise convs, a one-step chain of the plans' pointwise kernels
(``pointwise.py``): see ``conv_once``. This module chooses the path and the
tile size, allocates outputs, and expresses the transposed convolution through the
same three kernels: conv_transpose's forward *is* conv's grad_input, and vice versa.

Shapes: ``x (N, C_in, H, W)``, ``weight (C_out, C_in/groups, kH, kW)``,
output ``(N, C_out, OH, OW)`` with
``OH = floor((H + 2*pad_h - dil_h*(kH - 1) - 1) / stride_h) + 1`` (likewise OW).
"""

import functools

import numpy as np

from fastdl import runtime
from fastdl._checks import is_int, pair
from fastdl.kernels import conv_once, depthwise, direct, pointwise, winograd
from fastdl.kernels._runner import fused_runner
from fastdl.kernels.conv_once import is_pointwise as _is_pointwise
from fastdl.shapes import conv_output_size, conv_transpose_output_size
from fastdl_ext import conv as _ext

__all__ = ["conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias",
           "conv_transpose2d_forward", "conv_transpose2d_grad_input",
           "conv_transpose2d_grad_weight", "conv2d_runner", "check_conv2d_args", "pair",
           "conv2d_forward_unchecked", "conv2d_grad_input_unchecked",
           "conv2d_grad_weight_unchecked"]

# Bytes of one thread's column tile: fits in L2 with room for the weights.
_TILE_BYTES = 256 * 1024
# Multiply-adds below which a second thread costs more to wake (~20 µs once it has
# stopped spinning and sleeps) than it saves: a LeNet-5 conv at batch 1 is ~0.1 M;
# ResNet-20's 2.4 M convs at batch 1 gain 8-25 % from a second thread. Winograd
# counts the 4/9 of the direct multiply-adds it performs.
_WORK_PER_THREAD = 1_000_000


# Whole images per im2col work item, their column matrices side by side, where one
# image's columns take at most this many bytes: each GEMM is then as wide as their
# positions together (a tile of one image is a thin GEMM on small maps), and a stride-2
# conv unfolds whole images through each row's even and odd pixels. Batch 32, 3x3
# stride 2, 2 threads, against tiles within an image: 64 -> 128 at 16² (4 images an
# item), input gradient 2.11 -> 1.58 ms, weight gradient 1.89 -> 1.65; 128 -> 256 at 8²,
# 3.07 -> 1.65 and 2.26 -> 1.87; 64 -> 128 at 32² (one image an item), 8.7 -> 5.6 and
# 6.7 -> 5.3.
_IMAGES_BYTES = 1024 * 1024
_THIN_POSITIONS = 256
# Output channels from which a stride-2 conv (kernel over 1x1) runs its forward as
# whole-image GEMMs rather than the direct loops (whose 8-lane vectors bound them below
# the GEMMs' at many channels): batch 32, 2 threads, 64 -> 128 at 16², 1.77 vs 1.85 ms;
# 128 -> 256 at 8², 1.80 vs 2.58; 64 -> 128 at 32², 6.0 vs 7.2; but 32 -> 64 at 16²,
# 0.74 vs 0.55.
_GEMM_FORWARD_CHANNELS = 128
# The image items' forward multiplies the columns by weights packed in panels with the
# pointwise convs' register tiles (``_images_runner``), where OpenBLAS packed both
# operands on every call: batch 32, stride 2, 2 threads, interleaved, 64 -> 128 from
# 16², 2.42-2.50 -> 2.02-2.11 ms; 128 -> 256 from 8², 2.49 -> 2.12; 256 -> 512 from 8²,
# 7.9-8.1 -> 6.1-6.5. On an image's output of fewer positions than a vector (16 float32)
# most lanes would be empty (256 -> 512 from 4², 2.3 -> 6.3 ms): those keep OpenBLAS. (The
# input gradient's GEMM by the same tiles, on the turned weights, measured even: 64 ->
# 128 from 16², 1.95-2.03 against 2.07-2.11 ms; 256 -> 512 from 8², 8.9 against 8.1-9.5
# before packing its 1.2 M weights.)
# Packing 256 -> 512's 1.2 M weights takes 0.5 ms, paid back from about 200 positions in
# all: a conv run once packs from ``_PANEL_COLUMNS``.
_PANEL_MIN_POSITIONS = 16
_PANEL_COLUMNS = 512


def _threads_for(multiply_adds):
    return max(1, min(runtime.get_num_threads(), multiply_adds // _WORK_PER_THREAD))


def _images_per_item(n_images, k, positions, itemsize, threads, pointwise=False,
                     halves=False):
    """Whole images per im2col work item, or 0 for tiles within one image.

    Images are taken whole where an image has fewer than ``_THIN_POSITIONS``
    positions (its tile is a thin GEMM) or the conv unfolds by halves (stride 2,
    ``halves``), its columns fit ``_IMAGES_BYTES`` and every thread gets an item;
    not for a pointwise conv, whose input is its column matrix. (On larger maps at
    stride 1 the tiles read grad_out in place, where whole images gather it: batch
    32, 3 -> 32 at 32², 1.86 vs 2.03 ms a training step.) The count is the one from 4
    (or the most allowed) up to the budget that gives the busiest thread the fewest
    images, the larger on ties.
    """
    image_bytes = k * positions * itemsize
    if (pointwise or image_bytes > _IMAGES_BYTES or n_images < threads
            or (positions >= _THIN_POSITIONS and not halves)):
        return 0
    most = max(1, min(n_images // threads, _IMAGES_BYTES // image_bytes))

    def busiest(images):
        items = -(-n_images // images)
        return -(-items // threads) * images
    return min(range(most, min(4, most) - 1, -1), key=busiest)


def _image_items(n_images, weight_shape, positions, itemsize, threads, stride, padding,
                 dilation):
    """``_images_per_item`` for a conv of these hyper-parameters."""
    return _images_per_item(n_images, weight_shape[1] * weight_shape[2] * weight_shape[3],
                            positions, itemsize, threads,
                            _is_pointwise(weight_shape[2:], stride, padding),
                            tuple(stride) == (2, 2) and tuple(dilation) == (1, 1))


def _tile_size(k, positions, itemsize, n_images, threads):
    tile = max(16, _TILE_BYTES // (k * itemsize))
    if n_images < threads:  # batch smaller than the team: split each image further
        per_image = -(-threads // max(n_images, 1))
        tile = min(tile, max(16, -(-positions // per_image)))
    return int(min(tile, max(positions, 1)))


def _contiguous(array):
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, out=None,
                   residual=None, negative_slope=None):
    """Cross-correlation of ``x`` with ``weight`` (PyTorch's conv2d), with a fused epilogue.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W), float32 or float64
    weight : ndarray (C_out, C_in/groups, kH, kW), same dtype
    bias : ndarray (C_out,) or None
    stride, padding, dilation : int or pair of ints
    groups : int
    out : ndarray (N, C_out, OH, OW), optional
        C-contiguous buffer of the right dtype to write into.
    residual : ndarray like the output, optional
        Added after the bias (a residual connection).
    negative_slope : float, optional
        Apply ``v if v > 0 else negative_slope * v`` last (0: ReLU).

    Returns
    -------
    ndarray (N, C_out, OH, OW)
    """
    stride, padding, dilation, _ = check_conv2d_args("conv2d_forward", x, weight, bias, stride,
                                                     padding, dilation, groups)
    return conv2d_forward_unchecked(x, weight, bias, stride, padding, dilation, groups, out,
                                    residual, negative_slope)


def conv2d_forward_unchecked(x, weight, bias, stride, padding, dilation, groups, out=None,
                             residual=None, negative_slope=None):
    """conv2d_forward for callers that ran ``check_conv2d_args`` (normalised pairs).

    The autograd layer checks once at the call and then runs this, and the
    backward ``*_unchecked`` kernels, with no second pass over the arguments.
    """
    x, weight = _contiguous(x), _contiguous(weight)
    n, _, height, width = x.shape
    c_out, c_in_group, kh, kw = weight.shape
    out_shape = (n, c_out, conv_output_size(height, kh, stride[0], padding[0], dilation[0]),
                 conv_output_size(width, kw, stride[1], padding[1], dilation[1]))
    for name, array in (("out", out), ("residual", residual)):
        # the compiled loops write and read these whole: a wrong shape would run off them
        if array is not None and (array.shape != out_shape or array.dtype != x.dtype
                                  or not array.flags.c_contiguous):
            raise ValueError("conv2d_forward: %s must be a C-contiguous %s array of shape %s, "
                             "got %s %s" % (name, x.dtype, out_shape, array.dtype, array.shape))
    if out is None:
        out = np.empty(out_shape, dtype=x.dtype)
    if bias is not None:
        bias = _contiguous(bias.astype(x.dtype, copy=False))
    if residual is not None:
        residual = _contiguous(residual)
    run = conv2d_runner(x.shape, weight, bias, stride, padding, dilation, groups,
                        negative_slope, once=True)
    return run(x, out, residual)


def conv2d_runner(input_shape, weight, bias=None, stride=(1, 1), padding=(0, 0),
                  dilation=(1, 1), groups=1, negative_slope=None, once=False):
    """A prepared ``run(x, out=None, residual=None)`` for one input shape (no re-checks).

    Tile size, thread count and output shape are computed once, so inference
    plans call the compiled loop with almost no Python in between. The caller
    guarantees (as ``check_conv2d_args`` does) that the shapes fit. ``once``: the
    runner serves a single call (an eager conv), so preparing the weights (the direct
    loops' packing) counts against it, and ``conv_once``'s paths apply.
    """
    n, _, height, width = input_shape
    c_out, c_in_group, kh, kw = weight.shape
    out_shape = (n, c_out, conv_output_size(height, kh, stride[0], padding[0], dilation[0]),
                 conv_output_size(width, kw, stride[1], padding[1], dilation[1]))
    positions = out_shape[2] * out_shape[3]
    multiply_adds = n * c_out * positions * c_in_group * kh * kw
    threads = _threads_for(multiply_adds)
    if depthwise.applies(weight.shape, stride, padding, dilation, groups, input_shape):
        if once:
            layer = pointwise.DepthwiseLayer(input_shape, weight, bias, stride, padding,
                                             negative_slope)
            return conv_once.chain_runner(layer, threads)
        return depthwise.forward_runner(input_shape, weight, bias, stride, padding, threads,
                                        negative_slope)
    if once and conv_once.by_panels(n, positions, weight.shape, stride, padding, groups):
        layer = pointwise.PointwiseLayer(input_shape, weight, bias, negative_slope, threads)
        return conv_once.chain_runner(layer, threads)
    if once and conv_once.by_channels(n, positions, weight.shape, stride, padding, groups):
        return conv_once.channels_runner(out_shape, weight, bias, stride, padding,
                                         dilation, threads, negative_slope)
    k = c_in_group * kh * kw
    images = _image_items(n, weight.shape, positions, weight.itemsize, threads, stride,
                          padding, dilation)
    if (images and stride == (2, 2) and dilation == (1, 1) and kh * kw > 1
            and c_out >= _GEMM_FORWARD_CHANNELS):
        return _images_runner(out_shape, weight, bias, stride, padding, dilation, groups,
                              images, threads, negative_slope, once)
    # direct before Winograd: up to 32 output channels Winograd's 16 GEMMs are too
    # thin (ResNet's first stage, 16 -> 16 at 32²: 1.5 vs 3.3 ms at batch 32)
    if direct.applies(weight.shape, stride, dilation, groups, input_shape, padding,
                      weight.itemsize):
        return direct.forward_runner(input_shape, weight, bias, padding, threads,
                                     negative_slope, stride)
    if winograd.applies(weight.shape, stride, dilation, groups):
        return winograd.forward_runner(input_shape, weight, bias, padding,
                                       _threads_for(multiply_adds * 4 // 9), negative_slope)
    if images:
        return _images_runner(out_shape, weight, bias, stride, padding, dilation, groups,
                              images, threads, negative_slope, once)
    tile = _tile_size(k, positions, weight.itemsize, n, threads)
    return fused_runner(_ext.conv2d_forward_into, out_shape, weight,
                        (stride, padding, dilation, groups, tile, threads), bias, negative_slope)


def _by_panels(n_images, positions, groups, once):
    """Whether the image items' GEMM runs on weights packed in panels (``_images_runner``):
    one group, a vector of positions an image, and where the weights are packed for one
    call, ``_PANEL_COLUMNS`` positions in all."""
    return (groups == 1 and positions >= _PANEL_MIN_POSITIONS
            and (not once or n_images * positions >= _PANEL_COLUMNS))


def _images_runner(out_shape, weight, bias, stride, padding, dilation, groups, images,
                   threads, negative_slope, once):
    """The forward by work items of whole images: their columns times the weights packed
    in panels by the pointwise convs' register tiles (``conv2d_forward_images_into``'s
    ``packed``) where ``_by_panels`` says so, else OpenBLAS's GEMM."""
    n, c_out = out_shape[:2]
    if _by_panels(n, out_shape[2] * out_shape[3], groups, once):
        forward = functools.partial(_ext.conv2d_forward_images_into,
                                    packed=pointwise.pack(weight.reshape(c_out, -1, 1, 1)))
    else:
        forward = _ext.conv2d_forward_images_into
    return fused_runner(forward, out_shape, weight,
                        (stride, padding, dilation, groups, images, threads), bias,
                        negative_slope)


def conv2d_grad_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1,
                      groups=1):
    """Gradient of conv2d with respect to its input (the transposed convolution).

    Parameters
    ----------
    grad_out : ndarray (N, C_out, OH, OW)
    weight : ndarray (C_out, C_in/groups, kH, kW)
    input_shape : tuple (N, C_in, H, W)

    Returns
    -------
    ndarray ``input_shape``
    """
    stride, padding, dilation = _check_grad_out("conv2d_grad_input", grad_out, input_shape,
                                                weight.shape, weight.dtype, stride, padding,
                                                dilation, groups)
    return conv2d_grad_input_unchecked(grad_out, weight, input_shape, stride, padding,
                                       dilation, groups)


def _check_grad_out(op, grad_out, input_shape, weight_shape, dtype, stride, padding, dilation,
                    groups):
    """Validate a backward call (as ``check_conv2d_args`` the forward); return the pairs.

    ``grad_out`` must be the forward's output shape exactly: the loops size their
    grids from it and read the input through them.
    """
    if not isinstance(grad_out, np.ndarray):
        raise TypeError("%s: grad_out must be a numpy.ndarray, got %s"
                        % (op, type(grad_out).__name__))
    # zero-stride stand-ins carry the shapes and dtype without allocating
    stand_in = np.zeros((), dtype=dtype if dtype in (np.float32, np.float64) else np.int8)
    stride, padding, dilation, _ = check_conv2d_args(
        op, np.broadcast_to(stand_in, tuple(input_shape)),
        np.broadcast_to(stand_in, tuple(weight_shape)), None, stride, padding, dilation, groups)
    expected = (input_shape[0], weight_shape[0],
                conv_output_size(input_shape[2], weight_shape[2], stride[0], padding[0],
                                 dilation[0]),
                conv_output_size(input_shape[3], weight_shape[3], stride[1], padding[1],
                                 dilation[1]))
    if grad_out.dtype != dtype or tuple(grad_out.shape) != expected:
        raise ValueError("%s: grad_out must be %s of shape %s, got %s of shape %s"
                         % (op, dtype, expected, grad_out.dtype, grad_out.shape))
    return stride, padding, dilation


def conv2d_grad_input_unchecked(grad_out, weight, input_shape, stride, padding, dilation, groups):
    """conv2d_grad_input on checked arguments (normalised pairs)."""
    grad_out, weight = _contiguous(grad_out), _contiguous(weight)
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    positions = grad_out.shape[2] * grad_out.shape[3]
    multiply_adds = grad_out.shape[0] * weight.shape[0] * positions * k
    if depthwise.applies(weight.shape, stride, padding, dilation, groups, input_shape,
                         grad_out.shape):
        threads = _threads_for(multiply_adds)
        if _depthwise_grad_input_by_forward(weight.shape, stride, padding, input_shape,
                                            multiply_adds):
            # the forward's chain loops on the turned filters (its own correlation)
            turned = np.ascontiguousarray(weight[:, :, ::-1, ::-1])
            layer = pointwise.DepthwiseLayer(grad_out.shape, turned, None, stride, padding,
                                             None)
            return conv_once.chain_runner(layer, threads)(grad_out)
        return depthwise.grad_input(grad_out, weight, input_shape, stride, padding, threads)
    forward_runner = _grad_input_as_forward(grad_out.shape, weight, stride, padding, dilation,
                                            groups, multiply_adds)
    if forward_runner is not None:
        return forward_runner(grad_out)
    if winograd.applies(weight.shape, stride, dilation, groups):
        return winograd.grad_input(grad_out, weight,
                                   np.zeros(tuple(input_shape), dtype=grad_out.dtype), padding,
                                   _threads_for(multiply_adds * 4 // 9))
    threads = _threads_for(multiply_adds)
    images = _image_items(grad_out.shape[0], weight.shape, positions, grad_out.itemsize,
                          threads, stride, padding, dilation)
    if images:   # its work items zero their own images
        grad_input = np.empty(tuple(input_shape), dtype=grad_out.dtype)
        _ext.conv2d_grad_input_images_into(grad_out, weight, grad_input, stride, padding,
                                           dilation, groups, images, threads)
        return grad_input
    # a pointwise conv's GEMMs write every value (their tiles are the gradient's own
    # disjoint columns); the tiled path adds into it
    allocate = np.empty if _is_pointwise(weight.shape[2:], stride, padding) else np.zeros
    grad_input = allocate(tuple(input_shape), dtype=grad_out.dtype)
    tile = _tile_size(k, positions, grad_out.itemsize, grad_out.shape[0], threads)
    if grad_out.shape[0] < threads <= weight.shape[1]:
        # Threads split the channels of each tile and meet at a barrier per tile:
        # few large tiles keep the barriers rare.
        tile = max(tile, -(-positions // 4))
    _ext.conv2d_grad_input_into(grad_out, weight, grad_input, stride, padding, dilation,
                                groups, tile, threads)
    return grad_input


# Where a depthwise input gradient runs as the forward chain (below): from this batch, or
# on maps of at most _DEPTHWISE_SMALL_MAP positions from _DEPTHWISE_SMALL_WORK
# multiply-adds. Preparing the one-step chain costs ~20 us, which the input-gradient loops
# beat on one image of 8x8 and larger maps (576 at 8², 26 vs 37 us; 144 at 56², 90 vs
# 123), while on 4x4 maps the chain's in-register loops win from one image on (960 at
# 4²: 31 vs 44 us; at batch 32, 140 vs 707) and from batch 8 it is even or ahead.
_DEPTHWISE_CHAIN_BATCH = 8
_DEPTHWISE_SMALL_MAP = 16
_DEPTHWISE_SMALL_WORK = 1 << 17


def _depthwise_grad_input_by_forward(weight_shape, stride, padding, input_shape,
                                     multiply_adds):
    """Whether a depthwise conv's input gradient runs as the forward chain's loops on the
    turned filters: where it is itself a "same" depthwise conv (stride 1, one filter per
    channel, ``k - 1 - padding == padding``) and the work pays for the chain (above). At
    batch 32, MobileNetV2's input gradients took 14.0 ms in all through the
    input-gradient loops (2-7x the forwards'), 6.0 this way (960 at 4², 1.18 -> 0.19)."""
    kernel = weight_shape[2]
    same = (tuple(stride) == (1, 1) and weight_shape[0] == input_shape[1] and kernel % 2 == 1
            and tuple(padding) == ((kernel - 1) // 2,) * 2)
    small_map = input_shape[2] * input_shape[3] <= _DEPTHWISE_SMALL_MAP
    return same and (input_shape[0] >= _DEPTHWISE_CHAIN_BATCH
                     or (small_map and multiply_adds >= _DEPTHWISE_SMALL_WORK))


def _grad_input_as_forward(grad_out_shape, weight, stride, padding, dilation, groups,
                           multiply_adds):
    """grad_input as a forward conv (pointwise, direct or Winograd), or None where none
    applies.

    At stride 1 the input gradient is the correlation of ``grad_out`` with the
    flipped, channel-swapped weights and padding ``k - 1 - padding`` ("valid" convs
    pad fully; padding beyond ``k - 1`` would crop, and takes the other paths). The
    forward loops beat the scatter-style ones, same or valid padding. Direct, at
    batch 32: ResNet's 16 -> 16 at 32², 2.0 vs 3.5-3.9 ms; 32 -> 32 valid at 16²,
    1.5 vs 2.6 ms; LeNet-5's 6 -> 16 at batch 64, 0.48 vs 0.79 ms. Winograd's
    forward vs its own input-gradient loop: 64 -> 64 at 16², 7.3 vs 8.3 ms;
    128 -> 128 at 8², 4.5 vs 6.1 ms.
    """
    kh, kw = weight.shape[2:]
    full_padding = (kh - 1 - padding[0], kw - 1 - padding[1])
    if min(full_padding) < 0 or stride != (1, 1) or dilation != (1, 1) or groups != 1:
        return None
    flipped_shape = (weight.shape[1], weight.shape[0], kh, kw)
    threads = _threads_for(multiply_adds)
    if conv_once.by_panels(grad_out_shape[0], grad_out_shape[2] * grad_out_shape[3],
                           flipped_shape, stride, padding, groups):
        # a 1x1 filter turned is itself: the pointwise conv of the swapped channels
        swapped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))
        layer = pointwise.PointwiseLayer(grad_out_shape, swapped, None, None, threads)
        return conv_once.chain_runner(layer, threads)
    if direct.applies(flipped_shape, stride, dilation, groups, grad_out_shape, full_padding,
                      weight.itemsize):
        flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return direct.forward_runner(grad_out_shape, flipped, None, full_padding, threads)
    if winograd.applies(flipped_shape, stride, dilation, groups):
        # the transform reads the weights turned and swapped: no flipped copy
        return winograd.forward_runner(grad_out_shape, weight, None, full_padding,
                                       _threads_for(multiply_adds * 4 // 9), flipped=True)
    return None


def conv2d_grad_weight(x, grad_out, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of conv2d with respect to its weight.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W)
    grad_out : ndarray (N, C_out, OH, OW)
    weight_shape : tuple (C_out, C_in/groups, kH, kW)

    Returns
    -------
    ndarray ``weight_shape``
    """
    if not isinstance(x, np.ndarray):
        raise TypeError("conv2d_grad_weight: input must be a numpy.ndarray, got %s"
                        % type(x).__name__)
    stride, padding, dilation = _check_grad_out("conv2d_grad_weight", grad_out, x.shape,
                                                weight_shape, x.dtype, stride, padding,
                                                dilation, groups)
    return conv2d_grad_weight_unchecked(x, grad_out, weight_shape, stride, padding, dilation,
                                        groups)


def conv2d_grad_weight_unchecked(x, grad_out, weight_shape, stride, padding, dilation, groups,
                                 with_bias=False):
    """conv2d_grad_weight on checked arguments (normalised pairs).

    ``with_bias``: return ``(grad_weight, grad_bias)``; the direct path sums the
    bias gradient while it copies grad_out, the others call ``conv2d_grad_bias``.
    """
    x, grad_out = _contiguous(x), _contiguous(grad_out)
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    positions = grad_out.shape[2] * grad_out.shape[3]
    multiply_adds = x.shape[0] * weight_shape[0] * positions * k
    if depthwise.applies(tuple(weight_shape), stride, padding, dilation, groups, x.shape,
                         grad_out.shape):
        return depthwise.grad_weight(x, grad_out, weight_shape, stride, padding,
                                     _threads_for(multiply_adds), with_bias)
    if direct.grad_weight_applies(tuple(weight_shape), stride, dilation, groups, x.shape,
                                  padding, x.itemsize):
        return direct.grad_weight(x, grad_out, weight_shape, padding,
                                  _threads_for(multiply_adds), with_bias, stride)
    weight_grad = _grad_weight_gemm(x, grad_out, weight_shape, stride, padding, dilation,
                                    groups, multiply_adds)
    return (weight_grad, conv2d_grad_bias(grad_out)) if with_bias else weight_grad


def _grad_weight_gemm(x, grad_out, weight_shape, stride, padding, dilation, groups,
                      multiply_adds):
    """The weight gradient through Winograd or im2col + GEMM."""
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    positions = grad_out.shape[2] * grad_out.shape[3]
    if winograd.applies(tuple(weight_shape), stride, dilation, groups):
        return winograd.grad_weight(x, grad_out, weight_shape, padding,
                                    _threads_for(multiply_adds * 4 // 9))
    threads = _threads_for(multiply_adds)
    out_per_group = weight_shape[0] // groups
    partial = np.zeros((threads, groups, k, out_per_group), dtype=x.dtype)
    images = _image_items(x.shape[0], weight_shape, positions, x.itemsize, threads, stride,
                          padding, dilation)
    if images:
        _ext.conv2d_grad_weight_images_into(x, grad_out, partial, tuple(weight_shape), stride,
                                            padding, dilation, groups, images, threads)
    else:
        tile = _tile_size(k, positions, x.itemsize, x.shape[0], threads)
        _ext.conv2d_grad_weight_into(x, grad_out, partial, tuple(weight_shape), stride,
                                     padding, dilation, groups, tile, threads)
    grad_weight = np.empty((groups, out_per_group, k), dtype=x.dtype)
    _ext.weight_from_parts_into(partial, grad_weight, threads)   # summed and turned
    return grad_weight.reshape(tuple(weight_shape))


def conv2d_grad_bias(grad_out):
    """Gradient of conv2d with respect to its bias: ``grad_out`` summed over N, OH, OW."""
    return grad_out.sum(axis=(0, 2, 3))


def _transposed_output_shape(x_shape, weight_shape, stride, padding, output_padding, groups,
                             dilation):
    n, _, height, width = x_shape
    out_h = conv_transpose_output_size(height, weight_shape[2], stride[0], padding[0],
                                       output_padding[0], dilation[0])
    out_w = conv_transpose_output_size(width, weight_shape[3], stride[1], padding[1],
                                       output_padding[1], dilation[1])
    return n, weight_shape[1] * groups, out_h, out_w


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                             groups=1, dilation=1):
    """Transposed convolution (PyTorch's conv_transpose2d): conv2d's grad_input.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W)
    weight : ndarray (C_in, C_out/groups, kH, kW)
    bias : ndarray (C_out,) or None

    Returns
    -------
    ndarray (N, C_out, OH, OW),
    ``OH = (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1``.
    """
    stride, padding = pair(stride, "stride", "conv_transpose2d"), pair(padding, "padding")
    output_padding, dilation = pair(output_padding, "output_padding"), pair(dilation,
                                                                            "dilation")
    shape = _transposed_output_shape(x.shape, weight.shape, stride, padding, output_padding,
                                     groups, dilation)
    # unchecked: with dilation > stride an output_padding the conv could not produce
    # is valid here (the arguments are the functional layer's to check)
    out = conv2d_grad_input_unchecked(_contiguous(x), weight, shape, stride, padding, dilation,
                                      groups)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1).astype(out.dtype, copy=False)
    return out


def conv_transpose2d_grad_input(grad_out, weight, stride=1, padding=0, groups=1, dilation=1):
    """Gradient of conv_transpose2d with respect to its input: conv2d of ``grad_out``."""
    return conv2d_forward(grad_out, weight, None, stride, padding, dilation, groups)


def conv_transpose2d_grad_weight(x, grad_out, weight_shape, stride=1, padding=0, groups=1,
                                 dilation=1):
    """Gradient of conv_transpose2d with respect to its weight ``(C_in, C_out/groups, kH, kW)``."""
    return conv2d_grad_weight_unchecked(grad_out, x, weight_shape, pair(stride, "stride"),
                        pair(padding, "padding"), pair(dilation, "dilation"), groups)


def check_conv2d_args(op, x, weight, bias, stride, padding, dilation, groups,
                      transposed=False, output_padding=0):
    """Validate conv arguments at the API boundary; return the normalised pairs.

    Raises
    ------
    TypeError
        Non-float or mismatched dtypes, non-integer hyper-parameters.
    ValueError
        Wrong ndim, channel mismatch, channels not divisible by groups,
        non-positive stride/dilation, negative padding, kernel larger than
        the padded input.
    """
    stride, padding = pair(stride, "stride", op), pair(padding, "padding", op)
    dilation = pair(dilation, "dilation", op)
    output_padding = pair(output_padding, "output_padding", op)
    if x.ndim != 4:
        raise ValueError("%s: input must be 4-D (N, C, H, W), got shape %s" % (op, x.shape))
    if weight.ndim != 4:
        raise ValueError("%s: weight must be 4-D, got shape %s" % (op, weight.shape))
    for name, array in (("input", x), ("weight", weight)) + ((("bias", bias),) if bias
                                                            is not None else ()):
        if array.dtype not in (np.float32, np.float64):
            raise TypeError("%s: %s must be float32 or float64, got %s" % (op, name, array.dtype))
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError("%s: input, weight and bias must share one dtype, got %s, %s, %s"
                        % (op, x.dtype, weight.dtype, None if bias is None else bias.dtype))
    if not is_int(groups) or groups < 1:
        raise ValueError("%s: groups must be a positive int, got %r" % (op, groups))
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError("%s: stride and dilation must be >= 1, got stride=%s dilation=%s"
                         % (op, stride, dilation))
    if min(padding) < 0 or min(output_padding) < 0:
        raise ValueError("%s: padding must be >= 0, got %s" % (op, padding))
    channels = x.shape[1]
    if channels % groups:
        raise ValueError("%s: input channels (%d) must be divisible by groups (%d)"
                         % (op, channels, groups))
    if transposed:
        if weight.shape[0] != channels:
            raise ValueError("%s: weight has %d input channels but input has %d channels"
                             % (op, weight.shape[0], channels))
        out_channels = weight.shape[1] * groups
        if output_padding[0] >= max(stride[0], dilation[0]) or \
                output_padding[1] >= max(stride[1], dilation[1]):
            raise ValueError("%s: output_padding %s must be smaller than stride or dilation"
                             % (op, output_padding))
    else:
        if weight.shape[1] * groups != channels:
            raise ValueError("%s: weight has %d input channels per group but input has %d "
                             "channels (groups=%d)" % (op, weight.shape[1], channels, groups))
        if weight.shape[0] % groups:
            raise ValueError("%s: output channels (%d) must be divisible by groups (%d)"
                             % (op, weight.shape[0], groups))
        out_channels = weight.shape[0]
        for axis, name in ((0, "height"), (1, "width")):
            span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
            if x.shape[2 + axis] + 2 * padding[axis] < span:
                raise ValueError("%s: kernel %s %d (dilated) is larger than the padded input "
                                 "%s %d" % (op, name, span, name,
                                            x.shape[2 + axis] + 2 * padding[axis]))
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError("%s: bias must have shape (%d,), got %s" % (op, out_channels,
                                                                     bias.shape))
    return stride, padding, dilation, output_padding
