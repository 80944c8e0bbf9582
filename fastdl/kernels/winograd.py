"""3×3 stride-1 convolution by Winograd F(2×2, 3×3): weight transforms and block sizing.

The compiled loops live in ``fastdl_ext/winograd.pyx``; this module maps
weights to and from the 4×4 transformed domain (``U = G g Gᵀ`` and, for the
weight gradient, ``Gᵀ dU G``), chooses the block of tile rows each thread
works on, and decides when the algorithm applies: kernel 3×3, stride 1,
dilation 1, one group, and enough channels on both sides for the 16 GEMMs to
beat im2col (2.25× fewer multiplies, plus cheap transforms).
"""
import numpy as np

from fastdl import runtime
from fastdl.kernels import pointwise
from fastdl.kernels._runner import fused_runner
from fastdl.shapes import conv_output_size
from fastdl_ext import winograd as _ext

__all__ = ["applies", "transform_weight", "forward", "grad_input", "grad_weight",
           "forward_runner"]

# Below this many channels on either side the GEMMs are too thin to pay for the transforms.
MIN_CHANNELS = 16
# Bytes of one thread's two block buffers (16 transformed planes in and out): about L2.
_BLOCK_BYTES = 1024 * 1024
# The forward's budget: its GEMMs write M (beta 0) for the output transform to read
# back, and half of L2 keeps both in it. Batch 32, 2 threads, 128 -> 128 at 16², 32
# tiles a block against 64: 5.96 vs 7.21 ms (fastest of 25 interleaved); 64 -> 64 at
# 32², 64 against 128 tiles, 6.76 vs 6.79. The weight gradient keeps the whole budget
# (128 -> 128 at 16²: 13.6 ms at 64 tiles, 14.4 at 32, on a busy host).
_FORWARD_BLOCK_BYTES = 512 * 1024
_MAX_BLOCK_TILES = 256
# Filters from which the weight transform wakes the other threads: 64 x 64 takes ~20 µs
# on one (a batch-1 64 -> 64 forward at 32², 0.31-0.35 ms, was slower with the wake-up);
# 512 x 512, 1.7-2.0 ms on one thread, 1.0 on two.
_THREADED_FILTERS = 256 * 256
# Fewest tiles a block takes where the transformed weights (16 C_out x C_in matrices) do
# not fit in L2: each block's 16 GEMMs stream them from memory once, so a block must do
# enough work per byte of them. Batch 32, 2 threads, 512 -> 512 at 4² (16 MiB of them),
# 16 tiles a block against 64: forward 19.6 vs 14.9 ms, input gradient 54.7 vs 28.3,
# weight gradient 26.3 vs 18.5 (fastest of repeated runs on a busy host); 256 -> 256
# at 8², 32 vs 64 tiles, even (15.0 vs 14.6, 26.8 vs 25.8, 18.0 vs 18.2).
_MIN_STREAMED_TILES = 64
# Transformed weights beyond which a forward of at most _MAX_SHARED_TILES tiles runs as
# one block whose steps the threads share (``winograd_forward_shared_into``: each
# thread reads the weights of its 8 of the 16 GEMMs once, where blocks each read all).
# 2 threads, fastest of 15 interleaved: 512 -> 512 at 4², batch 32, 7.77 vs 7.43 ms;
# batch 8, 2.79 vs 2.36; 256 -> 256 at 8² (4 MiB of them) even, 7.22 vs 7.39 and 1.73
# vs 1.71; 128 -> 128 at 16², 6.07 vs 8.67. Up to 64 tiles: with the products on the
# register tiles (OpenBLAS pinned to Haswell, interleaved), 512 -> 512 at 4², batch 8,
# shared 2.6 vs blocks 2.9 ms; batch 16 even (4.2-4.5 vs 4.0-4.5); batch 32, 6.4-7.0 vs
# 5.7-6.2 (OpenBLAS unpinned, shared on its GEMM: 7.8 vs 7.3).
_SHARED_WEIGHT_BYTES = 4 * 1024 * 1024
_MAX_SHARED_TILES = 64
# Channels (in and out) from which the forward by blocks multiplies its 16 products by
# the pointwise convs' register tiles, on weights transformed straight into their panels
# (``transform_weight(packed=True)``), instead of OpenBLAS's GEMM, which packs both
# operands on every call. Batch 32, 2 threads, interleaved, forward: 256 -> 256 at 8²,
# 8.7-8.8 -> 6.9-7.7 ms (the input gradient, the same forward on the turned weights,
# 7.3 -> 6.2-6.6); 128 -> 128 at 16², 6.7-7.0 -> 6.6; but 64 -> 64 at 32², 7.45 ->
# 7.68 (a GEMM of depth 64 stores as often as it adds).
_PANEL_CHANNELS = 128


def _panel_channels():
    """``_PANEL_CHANNELS``; every Winograd conv (``MIN_CHANNELS``) where the register tiles
    are AVX-512 and the OpenBLAS kernel is not (``OPENBLAS_CORETYPE=Haswell`` on an
    AVX-512 CPU), whose GEMMs then lose at every size. Pinned, batch 32, 2 threads,
    interleaved: 64 -> 64 at 32², 11.0-11.2 -> 7.8-8.0 ms; at 16², 2.7-2.8 -> 1.9-2.0;
    128 -> 128 at 16², 8.5-8.7 -> 6.3-6.4; batch 1, 64 -> 64 at 32², 0.41 -> 0.29."""
    if pointwise.WIDE > 1 and not runtime.blas_runs_avx512():
        return MIN_CHANNELS
    return _PANEL_CHANNELS


def applies(weight_shape, stride, dilation, groups):
    """Whether a conv with these (normalised) hyper-parameters takes the Winograd path."""
    c_out, c_in, kh, kw = weight_shape
    return (kh == 3 and kw == 3 and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and min(c_in, c_out) >= MIN_CHANNELS)


_PLANE_GAP = 16




def _planes(leading, rows, cols, dtype, zeros=True):
    """Zeros of shape ``leading + (16, rows * cols + _PLANE_GAP)``: 16 row-major (rows,
    cols) matrices whose starts sit ``_PLANE_GAP`` elements further apart than their
    size. Element-wise transforms touch all 16 at once, and a power-of-two stride would
    send those 16 accesses to one cache set. ``zeros=False``: only the gaps zeroed, for a
    caller that writes every matrix element (the 16 MiB of a 512 x 512 transform were
    zeroed only to be overwritten: a third of its time)."""
    shape = tuple(leading) + (16, rows * cols + _PLANE_GAP)
    if zeros:
        return np.zeros(shape, dtype=dtype)
    planes = np.empty(shape, dtype=dtype)
    planes[..., rows * cols:] = 0
    return planes


def transform_weight(weight, threads=1, flipped=False, packed=False):
    """``U[ξ] = (G g Gᵀ)[ξ]`` of (C_out, C_in, 3, 3) weights, as 16 padded (C_out, C_in)
    matrices (``_planes``), same dtype, computed by ``threads`` threads (the same values
    for any count). ``flipped``: those of the filters turned by 180 degrees with the
    channels swapped (the input gradient's forward conv), (C_in, C_out) matrices.
    ``packed``: each matrix in panels of ``pointwise.ROWS`` rows, as ``pointwise.pack``
    lays out a pointwise conv's weights (the forward's register tiles read them so)."""
    weight = np.ascontiguousarray(weight)
    rows, depth = weight.shape[:2][::-1] if flipped else weight.shape[:2]
    if packed:
        rows = -(-rows // pointwise.ROWS) * pointwise.ROWS
    u = _planes((), rows, depth, weight.dtype, zeros=False)
    filters = weight.shape[0] * weight.shape[1]
    _ext.transform_weight_into(weight, u, threads if filters >= _THREADED_FILTERS else 1,
                               flipped, packed)
    return u


def _rows_per_block(n_images, out_h, out_w, c_in, c_out, itemsize, threads, row_step=1,
                    budget=_BLOCK_BYTES):
    """Tile rows per work item: about ``budget`` bytes of tiles (at least half of it, so
    the GEMMs stay large; at least ``_MIN_STREAMED_TILES`` where the transformed weights
    exceed L2), enough items for every thread, and even shares. Blocks are
    shared statically, so the busiest thread takes ``ceil(blocks / threads)`` of them:
    the largest block whose busiest thread has the fewest tile rows wins (64 -> 64 at
    56², batch 1, 2 threads: 2 rows a block and 14 blocks, not 4 rows and 7 blocks
    with one thread doing 4 of them)."""
    tiles_x = (out_w + 1) // 2
    per_tile = 16 * (c_in + c_out) * itemsize
    streamed = 16 * c_in * c_out * itemsize > _BLOCK_BYTES
    target = min(_MAX_BLOCK_TILES, max(tiles_x, budget // per_tile,
                                       _MIN_STREAMED_TILES if streamed else 0))
    units = n_images * -(-((out_h + 1) // 2) // row_step)
    most = int(max(1, min(target // max(tiles_x, 1), -(-units // threads))))

    def busiest(rows):
        return -(-(-(-units // rows)) // threads) * rows
    return min(range(most, (most - 1) // 2, -1), key=busiest)


def forward_runner(input_shape, weight, bias, padding, threads, negative_slope=None,
                   flipped=False):
    """A prepared ``run(x, out, residual)`` with the weight transformed once; ``flipped``:
    the conv of weight's filters turned by 180 degrees with the channels swapped (the
    input gradient of the conv with ``weight``, read in place of a flipped copy)."""
    n, c_in, height, width = input_shape
    c_out = weight.shape[1] if flipped else weight.shape[0]
    out_h = conv_output_size(height, 3, 1, padding[0], 1)
    out_w = conv_output_size(width, 3, 1, padding[1], 1)
    out_shape = (n, c_out, out_h, out_w)
    packed = min(c_in, c_out) >= _panel_channels()
    if _shares_one_block(n, out_h, out_w, c_in, c_out, weight.itemsize):
        return fused_runner(_ext.winograd_forward_shared_into, out_shape,
                            transform_weight(weight, threads, flipped, packed),
                            (padding, threads, packed), bias, negative_slope)
    rows = _rows_per_block(n, out_h, out_w, c_in, c_out, weight.itemsize, threads,
                           budget=_FORWARD_BLOCK_BYTES)
    return fused_runner(_ext.winograd_forward_into, out_shape,
                        transform_weight(weight, threads, flipped, packed),
                        (padding, rows, threads, packed), bias, negative_slope)


def _shares_one_block(n_images, out_h, out_w, c_in, c_out, itemsize):
    """Whether a forward runs as one block of all tiles with its steps shared
    (``_SHARED_WEIGHT_BYTES``); the same answer for any thread count."""
    tiles = n_images * ((out_h + 1) // 2) * ((out_w + 1) // 2)
    return (16 * c_in * c_out * itemsize > _SHARED_WEIGHT_BYTES
            and tiles <= _MAX_SHARED_TILES)


def forward(x, weight, out, padding, threads, bias=None, residual=None, negative_slope=None):
    """Write ``act(conv3x3(x, weight) + bias + residual)`` into ``out`` (N, C_out, OH, OW)."""
    return forward_runner(x.shape, weight, bias, padding, threads, negative_slope)(
        x, out, residual)


def grad_input(grad_out, weight, grad_in, padding, threads):
    """Accumulate conv3x3's input gradient into ``grad_in`` (zero on entry)."""
    rows = _rows_per_block(grad_in.shape[0], grad_out.shape[2], grad_out.shape[3],
                           weight.shape[1], weight.shape[0], weight.itemsize, threads,
                           row_step=2)
    _ext.winograd_grad_input_into(grad_out, transform_weight(weight, threads), grad_in,
                                  padding, rows, threads)
    return grad_in


def grad_weight(x, grad_out, weight_shape, padding, threads):
    """conv3x3's weight gradient, (C_out, C_in, 3, 3)."""
    c_out, c_in = weight_shape[:2]
    rows = _rows_per_block(x.shape[0], grad_out.shape[2], grad_out.shape[3], c_in, c_out,
                           x.itemsize, threads)
    partial = _planes((threads,), c_out, c_in, x.dtype, zeros=False)   # written, not added to
    _ext.winograd_grad_weight_into(x, grad_out, partial, padding, rows, threads)
    grad_w = np.empty(tuple(weight_shape), dtype=x.dtype)
    _ext.weight_from_transformed_into(partial, grad_w, threads)  # sums the parts, too
    return grad_w
