"""Direct convolution: weight packing, when it applies, and prepared runs and chains.

The compiled loops live in ``fastdl_ext/direct.pyx`` (forward) and
``direct_grad.pyx`` (weight gradient): a register block of output channels ×
positions per step over a padded image in cache. They replace im2col + GEMM (and
Winograd) where the GEMMs would be too thin to pay for unfolding and packing:
dilation 1, one group, at most ``MAX_OUT_CHANNELS`` output channels (any number on
small maps or at a stride, which reads the image as phase planes) and a kernel
larger than 1×1 at stride 1. The forward serves conv2d's forward and, with flipped
weights, the input gradient of stride-1 "same" convs; ``grad_weight`` has rules of
its own (``grad_weight_applies``). In a chain, a float32 3x3 stride-1 conv with padding
1 and at least ``MIN_WINOGRAD_CHANNELS`` input channels that reads its input in place
runs Winograd's F(2x2, 3x3) on the same register blocks (``pack_transformed``).

Runners and chains
------------------
``forward_runner(input_shape, weight, bias, padding, threads, negative_slope, stride)``
packs the weights once for one input shape (N, C_in, H, W) and dtype. Its ``run(x,
out=None, residual=None)`` takes a C-contiguous x of that shape and returns out =
act(conv(x) + bias + residual) (N, C_out, OH, OW) (``out_shape``), written into
``out`` when given; bitwise the same for any thread count.

``run_chain(steps, threads)`` runs ``(runner, x, out, residual[, layouts])`` steps in
order in one parallel region (one wake-up of the team): a step may read an earlier
step's ``out`` as its x or residual, and every ``out`` is bitwise what the runners give
one by one. ``prepare_chain`` checks and lays the steps out once and returns a
``Chain`` whose ``run(x)`` reruns them with a new first input; it keeps the other
arrays alive and serves one caller at a time. ``layouts`` lets a chain keep an array
inside a zero border, or split into the phase planes of a stride, so that the convs
reading it need no padded copy: a conv writes only an ``out``'s interior (a border
zeroed once stays zero), and reads an x in place where ``reads_in_place`` says so
(``ForwardRunner.in_place`` gives the least such layout; a pooled runner, ``pooled()``,
takes plain arrays only). Each step reaches the compiled chain as a ``ConvStep``
(``ForwardRunner.step``), which names every argument of one conv.
"""
import copy

import numpy as np

from fastdl.kernels import winograd
from fastdl.shapes import conv_output_size
from fastdl_ext import direct as _ext, direct_grad as _grad_ext

__all__ = ["applies", "grad_weight_applies", "block_channels", "pack_weight",
           "pack_transformed", "forward_runner", "ForwardRunner", "reads_in_place",
           "run_chain", "prepare_chain", "grad_weight"]

# the forward's register blocks as (output channels, positions); the weight
# gradient's block of CO_BLOCK channels x GRAD_TAPS taps
BLOCK_SHAPES, _ = _ext.kernel_shapes()
CO_BLOCK, GRAD_TAPS = _grad_ext.kernel_shapes()
# Beyond this Winograd's and im2col's GEMMs are wide enough to win the forward
# (measured at batch 32: 32 -> 32 at 16², direct 1.5 vs Winograd 2.1 ms; 64 -> 64,
# 5.7 vs 5.2 ms).
MAX_OUT_CHANNELS = 32
# The weight gradient's passes re-read the image for every 4 channels x 3 taps:
# beyond 32 output channels the GEMMs win (batch 32, 64 -> 64 at 8²: 5.4 vs 1.7 ms;
# 32 -> 32 at 16² is about even, 2.1-2.3 vs 1.6-2.4 ms).
GRAD_WEIGHT_MAX_OUT_CHANNELS = 32
# Taps per output channel beyond which the weight block and the rows a block reads
# leave L1.
MAX_TAPS = 512
# Wide-grid positions per image below which each pass's fixed cost (its setup and
# the update of its per-lane sums) outweighs the pass (LeNet-5's second conv,
# 10 x 14 = 140, still wins; 16 -> 16 at 8², 80 positions: 0.34 vs 0.22 ms).
MIN_GRAD_GRID = 128
# Strided 3x3 convs, direct vs im2col at 2 threads, pad 1, stride 2: batch 32,
# 16 -> 32 at 32², 1.05 vs 1.84 ms; 32 -> 64 at 16², 1.11 vs 1.38; 64 -> 128 at 8²,
# 1.27 vs 1.33; batch 1, 16 -> 32 at 32², 95 vs 122 µs; 32 -> 64 at 16², 48 vs 97.
# Winograd's tiles (2 x 2 outputs, all images) below which its 16 GEMMs are too thin
# to share between threads, whatever the channel count: at batch 1 and 2 threads,
# 64 -> 64 at 8² (16 tiles) 78 µs vs direct 46; 128 -> 128 at 4², 113 vs 59; at 16²
# (64 tiles) about even, 146 vs 139.
MIN_WINOGRAD_TILES = 64
# Below MIN_WINOGRAD_TILES Winograd still wins where it has this many tile-channels (its
# tiles times the fewer of its channels) on ``MIN_FEW_TILES`` tiles or more: its products
# then stream the transformed weights for enough tiles, where the direct loops' work grows
# with every image. Prepared runners, 2 threads, interleaved (direct vs Winograd, ms):
# 512 -> 512 at 4², batch 2 (8 tiles), 1.62 vs 0.96; 256 -> 256 at 8², batch 1 (16),
# 0.35 vs 0.29, batch 2, 0.70 vs 0.27; 128 -> 128 at 4², batch 4, 0.14 vs 0.10; 64 -> 64
# at 8², batch 2, 0.049 vs 0.036. Direct kept: 512 -> 512 at 4², batch 1 (4 tiles), 0.64
# vs 0.75; 128 -> 128 at 4², batch 2, 0.073 vs 0.093; 256 -> 256 at 4², batch 1, 0.14
# vs 0.24 (at 8 tiles 256 -> 256 is even, 0.26 vs 0.27).
MIN_WINOGRAD_TILE_CHANNELS = 2048
MIN_FEW_TILES = 8
# A thread keeps one padded image and its output planes on the wide grid: about L2.
MAX_IMAGE_BYTES = 256 * 1024
# Input channels from which a chained 3x3 stride-1 conv that reads its input in place
# runs Winograd's F(2x2, 3x3) on the register blocks (16 multiplies per tile and
# channel pair instead of 36, plus the transforms): ResNet-20's first stage too, 0.95
# of the plan's time at batch 1 and 2 threads against Winograd from 32 channels.
MIN_WINOGRAD_CHANNELS = 16
# Fewest tiles of one of Winograd's bands where bands split a batch-1 image between
# threads (each thread then transforms only its band's input): 32 against 96 (16 x 16
# maps in two bands) 0.97; 8 (8 x 8 maps too, half of each register block idle) 1.10.
WINOGRAD_BAND_TILES = 32
# Work items per thread and band at batch 1 (groups of channel blocks): one measured
# 0.97-0.98 of the time of two.
WINOGRAD_ITEMS = 1


def reads_in_place(out_width, padding, stride, layout):
    """Whether a chained direct conv of ``padding`` and ``stride`` whose output rows hold
    ``out_width`` values reads its input where it is stored as ``layout``, with no padded
    copy per thread: ``(rows, cols)``, inside a zero border, or ``(rows, cols,
    stride_h, stride_w)``, also split into the phase planes of that stride.

    It does on a dense grid (``out_width`` a multiple of 8), where x is stored with the
    conv's own stride and a border of at least its padding; an input in phase planes
    must be read so. The one statement of the rule, applied by the compiled chain too.
    """
    return _ext.reads_in_place(int(out_width), tuple(padding), tuple(stride), tuple(layout))


def _fits_cache(c_in, input_shape, padding, itemsize):
    padded = (input_shape[2] + 2 * padding[0]) * (input_shape[3] + 2 * padding[1])
    return (c_in + CO_BLOCK) * padded * itemsize <= MAX_IMAGE_BYTES


def _reads_phase_planes(weight_shape, stride, dilation, groups):
    """The loops' own limits: one group, no dilation, and a kernel larger than 1x1 at
    stride 1 (there pointwise GEMMs need no unfolding). Strided 1x1 convs (ResNet's
    shortcuts) qualify: batch 32, 16 -> 32 at 32², 0.18 vs 0.26 ms through im2col;
    64 -> 128 at 16², even; at batch 1 they join the direct convs' chain."""
    _, _, kh, kw = weight_shape
    return dilation == (1, 1) and groups == 1 and (kh * kw > 1 or stride != (1, 1))


def applies(weight_shape, stride, dilation, groups, input_shape=None, padding=(0, 0),
            itemsize=4):
    """Whether a conv with these (normalised) hyper-parameters takes the direct path.

    With ``input_shape`` (N, C_in, H, W) the padded image must also fit a thread's
    cache budget (large images go through im2col's bounded tiles instead). Any
    channel count takes the direct path at a stride above 1 and where Winograd
    would have fewer than ``MIN_WINOGRAD_TILES`` tiles, unless those tiles are many
    enough for its channels (``MIN_WINOGRAD_TILE_CHANNELS``).

    float32 only (``itemsize`` 4): the register blocks' 8-lane vectors of doubles
    span two AVX2 registers, and GCC keeps them on the stack; float64 convs ran
    30-60x slower than float32 here and take Winograd or im2col + BLAS instead
    (1.5-2.5x). The loops still compute float64 correctly when called directly.
    """
    c_out, c_in, kh, kw = weight_shape
    if itemsize != 4 or not _reads_phase_planes(weight_shape, stride, dilation, groups):
        return False
    few_channels = c_out <= MAX_OUT_CHANNELS and c_in * kh * kw <= MAX_TAPS
    if input_shape is None:
        return few_channels
    out_h = conv_output_size(input_shape[2], kh, stride[0], padding[0], 1)
    out_w = conv_output_size(input_shape[3], kw, stride[1], padding[1], 1)
    tiles = input_shape[0] * -(-out_h // 2) * -(-out_w // 2)
    few_tiles = tiles < MIN_WINOGRAD_TILES and (
        tiles < MIN_FEW_TILES or tiles * min(c_in, c_out) < MIN_WINOGRAD_TILE_CHANNELS)
    # strided convs compete with im2col only (no Winograd), and win at any channel count
    return (few_channels or few_tiles or stride != (1, 1)) and _fits_cache(
        c_in, input_shape, padding, itemsize)


def grad_weight_applies(weight_shape, stride, dilation, groups, input_shape, padding,
                        itemsize=4):
    """Whether ``grad_weight`` beats im2col/Winograd for this conv (measured rules).

    Its passes run over one image's whole wide grid and end in horizontal sums,
    so the grid must not be short (``MIN_GRAD_GRID``); beyond
    ``GRAD_WEIGHT_MAX_OUT_CHANNELS`` the GEMMs win, unless the taps are few (C3 -> 32;
    twice as many channels then, which also bounds the per-thread gradient grid).
    float32 only, as ``applies`` (float64: 6.2 vs 1.8 ms through the GEMMs at batch
    8, 16 -> 16 at 32²).
    """
    c_out, c_in, kh, kw = weight_shape
    if itemsize != 4 or not _reads_phase_planes(weight_shape, stride, dilation, groups):
        return False
    out_h = conv_output_size(input_shape[2], kh, stride[0], padding[0], 1)
    grid = out_h * -(-(input_shape[3] + 2 * padding[1]) // stride[1])
    taps = c_in * kh * kw
    max_out_channels = GRAD_WEIGHT_MAX_OUT_CHANNELS * (2 if taps <= 64 else 1)
    return (grid >= MIN_GRAD_GRID and c_out <= max_out_channels and taps <= MAX_TAPS
            and _fits_cache(c_in, input_shape, padding, itemsize))


def block_channels(out_channels, grid):
    """Channels per register block for ``out_channels`` over a wide grid of ``grid``
    positions: the block shape that computes the fewest padded channels and grid
    positions (the first listed on ties)."""
    def computed(shape):
        channels, lanes = shape
        return -(-out_channels // channels) * channels * (-(-grid // lanes) * lanes)
    return min(BLOCK_SHAPES, key=computed)[0]


def pack_weight(weight, co_block=CO_BLOCK):
    """(C_out, C_in, kH, kW) weights as (co_blocks, C_in*kH*kW, co_block), zero-filled."""
    c_out = weight.shape[0]
    taps = weight.size // c_out
    blocks = -(-c_out // co_block)
    full = c_out // co_block
    packed = np.zeros((blocks, taps, co_block), dtype=weight.dtype)
    # written through a (blocks, co_block, taps) view: one strided copy, which
    # matters in training, where the weights are packed again every step
    by_channel = packed.transpose(0, 2, 1)
    rows = weight.reshape(c_out, taps)
    by_channel[:full] = rows[:full * co_block].reshape(full, co_block, taps)
    if full < blocks:
        by_channel[full, :c_out - full * co_block] = rows[full * co_block:]
    return packed


def pack_transformed(weight, co_block):
    """(C_out, C_in, 3, 3) weights as Winograd's ``U = G g Gᵀ`` packed for the register
    blocks, one packing per transformed position ξ (a 1x1 conv over the tiles each):
    (16 * co_blocks, C_in, co_block), rows ``ξ * co_blocks + block``, zero-filled."""
    c_out, c_in = weight.shape[:2]
    transformed = winograd.transform_weight(weight)[:, :c_out * c_in]
    return np.concatenate([pack_weight(plane.reshape(c_out, c_in, 1, 1), co_block)
                           for plane in transformed])


class ForwardRunner:
    """A prepared ``run(x, out=None, residual=None)`` with the weights packed once.

    ``step(x, out, residual, layouts)`` describes the conv for a chain (a ``ConvStep``),
    so that consecutive direct convs can run as one (``run_chain``).
    """

    def __init__(self, input_shape, weight, bias, padding, threads, negative_slope=None,
                 stride=(1, 1)):
        n, _, height, width = input_shape
        c_out, _, kh, kw = weight.shape
        self.out_shape = (n, c_out, conv_output_size(height, kh, stride[0], padding[0], 1),
                          conv_output_size(width, kw, stride[1], padding[1], 1))
        # the grid's rows: whole output rows of vectors, or the phase planes' rows
        grid = self.out_shape[2] * _ext.grid_row(
            self.out_shape[3], -(-(width + 2 * padding[1]) // stride[1]))
        self.threads = threads
        self._packed = pack_weight(weight, block_channels(c_out, grid))
        self._kernel_size, self._padding, self._stride = (kh, kw), tuple(padding), tuple(stride)
        self._bias = bias
        self._activate = negative_slope is not None
        self._slope = 0.0 if negative_slope is None else float(negative_slope)
        self._pool = False
        # read in place, a 3x3 stride-1 conv with padding 1 may run Winograd's
        # F(2x2, 3x3) (``step``); its weights are transformed when first needed
        self._weight = (weight if (kh, kw) == (3, 3) and self._stride == (1, 1)
                        and self._padding == (1, 1) and weight.dtype == np.float32
                        and weight.shape[1] >= MIN_WINOGRAD_CHANNELS
                        and self.out_shape[2] % 2 == 0 and self.in_place is not None
                        else None)
        self._transformed = None

    def reads_in_place(self, layout):
        """Whether this conv, chained, reads an input stored as ``layout`` in place
        (``reads_in_place``); a pooled conv reads plain arrays only."""
        return not self._pool and reads_in_place(self.out_shape[3], self._padding,
                                                 self._stride, layout)

    @property
    def in_place(self):
        """``(padding, stride)`` where this conv reads in place an input stored with that
        stride and a border of at least that padding (``reads_in_place``), else None."""
        least = (self._padding, self._stride)
        return least if self.reads_in_place(self._padding + self._stride) else None

    def _transform(self):
        """Winograd's packed weights and work items ``(bands, group)``: bands of whole
        tile rows, at batch 1 one a thread where each keeps 32 tiles or more (each
        thread then transforms only its band's input), times groups of channel blocks,
        ``WINOGRAD_ITEMS`` items a thread (each transformed position's input tiles serve
        every block of a group while they are in L1); the block shape that wastes the
        least on the band's tiles."""
        n, c_out, out_h, out_w = self.out_shape
        tiles_y, tiles = out_h // 2, out_h // 2 * (out_w // 2)
        bands = (max(1, min(tiles_y, self.threads, tiles // WINOGRAD_BAND_TILES))
                 if n < self.threads else 1)
        co_block = block_channels(c_out, tiles // bands)
        co_blocks = -(-c_out // co_block)
        wanted = 1 if self.threads == 1 else -(-WINOGRAD_ITEMS * self.threads // bands)
        return pack_transformed(self._weight, co_block), (bands, -(-co_blocks // wanted))

    def pooled(self):
        """This conv followed by a 2x2 max pool (stride 2) as one runner, the pool
        computed in the conv's epilogue so that the conv's output is never written;
        None where that cannot be (an odd output, or an activation with a negative
        slope, which does not commute with the max). No residual may be passed."""
        n, c_out, out_h, out_w = self.out_shape
        if self._pool or out_h % 2 or out_w % 2 or self._slope < 0:
            return None
        pooled = copy.copy(self)
        pooled.out_shape, pooled._pool = (n, c_out, out_h // 2, out_w // 2), True
        return pooled

    def step(self, x, out, residual=None, layouts=None):
        """This conv as one step of a chain (a ``ConvStep``); ``layouts``: how x, residual
        and out are stored, each inside a zero border ``(rows, cols)`` or, x and out,
        also as the phase planes of a stride ``(rows, cols, stride_h, stride_w)``
        (plain by default). Reading x in place it runs Winograd's F(2x2, 3x3) where
        that applies."""
        packed, items = self._packed, None
        if (self._weight is not None and layouts is not None
                and self.reads_in_place(tuple(layouts[0]))):
            if self._transformed is None:
                self._transformed = self._transform()
            packed, items = self._transformed
        return _ext.ConvStep(x, packed, out, kernel_size=self._kernel_size,
                             padding=self._padding, stride=self._stride, bias=self._bias,
                             residual=residual, activate=self._activate, slope=self._slope,
                             pool=self._pool, layouts=layouts, winograd_items=items)

    def __call__(self, x, out=None, residual=None):
        if out is None:
            out = np.empty(self.out_shape, dtype=x.dtype)
        _ext.direct_chain_into([self.step(x, out, residual)], self.threads)
        return out


def forward_runner(input_shape, weight, bias, padding, threads, negative_slope=None,
                   stride=(1, 1)):
    """A prepared ``run(x, out=None, residual=None)`` (a ``ForwardRunner``)."""
    return ForwardRunner(input_shape, weight, bias, padding, threads, negative_slope, stride)


def run_chain(steps, threads):
    """Run ``(runner, x, out, residual[, layouts])`` steps of ForwardRunners in order, in
    one parallel region; a later step may read an earlier one's ``out``. ``layouts``
    as ``ForwardRunner.step`` takes them."""
    _ext.direct_chain_into([runner.step(*step) for runner, *step in steps], threads)


def prepare_chain(steps, threads):
    """``run_chain``'s steps checked and laid out once: a ``Chain`` whose ``run(x)`` runs
    them with ``x`` in place of the first step's input (wherever the steps read it)."""
    return _ext.Chain([runner.step(*step) for runner, *step in steps], threads)


def grad_weight(x, grad_out, weight_shape, padding, threads, with_bias=False,
                stride=(1, 1)):
    """Weight gradient (C_out, C_in, kH, kW) of the conv ``forward_runner`` runs.

    Threads sum their images into their own 8-lane partial sums; threads and lanes
    are added in a fixed order after. ``with_bias``: return ``(grad_weight,
    grad_bias)``, the bias gradient computed as the gradient of one more tap that
    reads ones.
    """
    c_out = weight_shape[0]
    taps = weight_shape[1] * weight_shape[2] * weight_shape[3]
    blocks, tap_groups = -(-c_out // CO_BLOCK), -(-(taps + with_bias) // GRAD_TAPS)
    partial = np.zeros((threads, blocks, tap_groups, CO_BLOCK * GRAD_TAPS * 8), dtype=x.dtype)
    _grad_ext.direct_grad_weight_into(x, grad_out, partial, weight_shape[2],
                                      weight_shape[3], tuple(padding), tuple(stride),
                                      threads, with_bias)
    sums = partial.reshape(threads, blocks, tap_groups, CO_BLOCK, GRAD_TAPS, 8).sum(axis=(0, 5))
    # (blocks, tap_groups, CO_BLOCK, GRAD_TAPS) -> (channels, taps), padding dropped
    by_channel = sums.transpose(0, 2, 1, 3).reshape(blocks * CO_BLOCK, tap_groups * GRAD_TAPS)
    weight_grad = np.ascontiguousarray(by_channel[:c_out, :taps]).reshape(weight_shape)
    return (weight_grad, by_channel[:c_out, taps].copy()) if with_bias else weight_grad
