# cython: language_level=3
"""Direct convolution forward (dilation 1, one group), alone or as a chain of convs.

With few output channels (LeNet's 6 and 16, ResNet's 16 and 32), small maps or a
stride, im2col + GEMM spends its time unfolding and packing, not multiplying, and
Winograd's 16 GEMMs are as thin. Here each padded image is kept in cache and the
output is computed on a *wide grid*: with the padded row length ``Wp``, output
position ``q = oy * Wp + ox`` of tap ``(c, i, j)`` reads ``padded[c, oy + i, ox + j]
= padded_flat[q + offset(c, i, j)]``, one linear offset per tap (a stride reads
phase planes instead, ``_phases.pxd``). A block of consecutive ``q`` times output
channels (24 x 4, 16 x 6 or 24 x 3: ``BLOCK_SHAPES``) lives in registers over all
taps; grid columns ``ox >= OW`` are computed and dropped (``(kW - 1) / Wp`` extra
work: a quarter at 8 x 8). Where output rows are whole vectors (``OW`` a multiple of
8) the grid is dense instead: each 8-lane vector is a run of one output row and
reads from that row, and nothing is dropped (``fastdl_grid``). A batch of 8 or more
whose rows are not whole vectors runs on *image lanes*: a vector holds one position
of 8 images (``FASTDL_LANES``), read from padded planes of 8 values a position, so
no position is dropped either. Weights come packed as ``(co_blocks, taps,
co_block)``, zero beyond C_out.

A chain runs several convs in one parallel region; the weight gradient is in
``direct_grad.pyx``. Each thread first takes the items of its own share (the same
rows or images layer after layer, so that it reads what it wrote from its own
cache), then those left of the others'. Arrays may be stored inside zero borders
(``View``): a stride-1 conv on a dense grid reads an input bordered by its padding in
place, instead of copying it into a padded image per thread (ResNet-20 at batch 1:
0.95-0.98 of the time at 2 threads, 0.94 at 1, in one process); an array may also be
stored as the phase planes of a stride, which a conv writes in its epilogue and the
strided convs after it read in place (ResNet's stage transitions: 0.97-0.99). A 3x3
stride-1 conv that reads its input in place may run Winograd's F(2x2, 3x3) instead
(``packed`` then holds the transformed weights): per transformed position a 1x1 conv
over the tiles on the same register blocks, 16 multiplies per tile and channel pair
instead of 36, between the vectorised transforms of ``_winograd.pxd`` (ResNet-20 at
batch 1: 0.82-0.86 of the time at 1 thread, 0.87-0.95 at 2). After its convs a
chain may run a classifier in the same call: at batch 1-3 a global pool and a dense
layer on the calling thread (``set_head``), from 4 images on dense layers in the
parallel region (``set_dense``: LeNet-5 at batch 64, 0.95 of the time at 2 threads).
"""
from cython.parallel cimport parallel, threadid
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memset

cimport numpy as cnp
import numpy as np

cnp.import_array()

from fastdl_ext._activation cimport epilogue_rows, max_pairs, max_rows
from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._blocks cimport Grid, MAX_LANES, _blocks
from fastdl_ext._lanes cimport lanes_epilogue, pad_lanes
from fastdl_ext._blas cimport floating
from fastdl_ext._dense cimport PANEL, PANEL_ROWS, packed_items
from fastdl_ext._head cimport pool_dense
from fastdl_ext._phases cimport (Phases, View, _at, _check_output, _epilogue_phases,
                                 _pad_view, _phases, _phases_size, _scratch, _tap_offsets,
                                 _view, _whole_lines)
from fastdl_ext._team cimport _items_done, _take_items, _wait_done
from fastdl_ext._winograd cimport band_input, band_output


CALLER = "direct_forward_into"   # the name errors are reported under
NO_BORDERS = ((0, 0, 1, 1),) * 3   # x, residual and out as plain arrays (``_layouts``)
cdef enum:
    MAX_LANES_BYTES = 512 * 1024   # 8 padded images on image lanes, per thread
BLOCK_SHAPES = ((4, 24), (6, 16), (3, 24))   # (output channels, positions) per block


def kernel_shapes():
    """``(BLOCK_SHAPES, MAX_LANES)``: the register blocks as (output channels, positions),
    and the most positions of one."""
    return BLOCK_SHAPES, MAX_LANES


cdef inline int _grid_row(int out_w, int cols) noexcept nogil:
    return out_w if out_w % 8 == 0 else cols   # as ``row_vectors`` in ``_fill_layer``


def grid_row(int out_w, int cols):
    """Positions per output row on the grid a conv is computed on: ``out_w`` (a dense
    grid) where output rows are whole vectors, else the phase planes' row length
    ``cols`` (the wide grid, ``cols - out_w`` positions a row computed and dropped)."""
    return _grid_row(out_w, cols)


cdef int _bands(int n_images, int co_blocks, int out_h, int num_threads) noexcept nogil:
    """Row bands per image: enough work items for the team to share when the batch is
    smaller than it (batch 1), one band otherwise."""
    if n_images >= num_threads or num_threads == 1:
        return 1
    return max(1, min(out_h, (4 * num_threads + n_images * co_blocks - 1)
                      // (n_images * co_blocks)))


cdef struct Layer:
    # One direct conv of a chain, checked and laid out; pointers are to arrays the
    # caller keeps alive, of the chain's dtype.
    Phases phases
    int kernel_h, kernel_w, taps, co_blocks, co_block, lanes, grid_row
    int group, groups   # register blocks of channels per work item, and items per band
    Grid grid
    int n_images, out_channels, out_h, out_w
    int bands, per_image, chunk, total, threads, done_items, sleepers
    int* taken   # per thread, of its share of the items (``_take_items``)
    Py_ssize_t padded_size, wide_stride, image_in, plane
    View x_view, out_view, residual_view
    const void* x
    const void* packed
    const void* bias
    const void* residual
    void* out
    Py_ssize_t* offsets
    bint activate, pool, image_lanes
    bint in_place   # x is stored as (a superset of) this conv's padded planes: read there
    bint winograd   # by F(2x2, 3x3), ``packed`` the transformed weights (``_winograd_layout``)
    int tiles_x, tiles_y
    Py_ssize_t band_tiles, input_plane, product_plane
    bint phased_out   # out is stored in phase planes (``_epilogue_phases``)
    bint reads_first, adds_first   # x / residual is the chain's first input
    double slope


cdef tuple _layouts(object borders):
    """A chain entry's ``borders`` as three (bh, bw, sh, sw) layouts (``View``): each given
    as a border (bh, bw), or a border and the stride of the phase planes (bh, bw, sh,
    sw)."""
    if borders is None:
        return NO_BORDERS
    if len(borders) != 3 or any(len(layout) not in (2, 4) for layout in borders):
        raise ValueError("direct_forward_into: borders must be 3 layouts, (rows, cols) or "
                         "(rows, cols, stride_h, stride_w), for x, residual and out, got %r"
                         % (borders,))
    return tuple(tuple(int(n) for n in layout) + ((1, 1) if len(layout) == 2 else ())
                 for layout in borders)


cdef int _fill_layer(Layer* layer, tuple spec, int num_threads, int typenum) except -1:
    """Check one chain entry ``(x, packed, out, kernel_h, kernel_w, padding, stride, bias,
    residual, activate, slope, pool[, borders])`` and lay it out in ``layer`` (its
    offsets malloc'ed). ``pool``: ``out`` takes the 2x2 max pool of the conv's output.
    ``borders``: how x, residual and out are stored (``_layouts``, ``View``): plain by
    default, or inside a zero border, or (x and out) also split into the phase planes
    of a stride; the conv writes out's interior only, so a border zeroed once stays
    zero. A conv on a dense grid (``OW`` a multiple of 8) whose x is stored with its
    own stride and at least its padding as border reads x in place, with no copy (x in
    phase planes must be read so)."""
    cdef object bias = spec[7], residual = spec[8]
    cdef tuple borders = _layouts(spec[12] if len(spec) > 12 else None)
    cdef cnp.npy_intp* x = _dims(CALLER, spec[0], "x", 4, typenum, False)
    cdef cnp.npy_intp* packed = _dims(CALLER, spec[1], "packed", 3, typenum, False)
    cdef cnp.npy_intp* out = _dims(CALLER, spec[2], "out", 4, typenum, True)
    cdef cnp.npy_intp* shape
    cdef int kernel_h = spec[3], kernel_w = spec[4]
    cdef tuple padding = spec[5], stride = spec[6]
    cdef int b, t, units, lanes = 0, channels, height, width, out_channels, out_rows, out_cols
    cdef int rows, cols
    cdef Py_ssize_t grid
    _view(&layer.x_view, CALLER, x, borders[0], "x", &channels, &height, &width)
    _view(&layer.out_view, CALLER, out, borders[2], "out", &out_channels, &out_rows, &out_cols)
    cdef bint bordered = borders != NO_BORDERS
    cdef Phases phases = _phases(channels, height, width, padding[0], padding[1], stride[0],
                                 stride[1], kernel_h, kernel_w)
    cdef Phases reading
    for b, lanes in BLOCK_SHAPES:
        if b == packed[2]:
            break
    else:
        raise ValueError("direct_forward_into: packed weights have blocks of %d channels, "
                         "expected one of %s" % (packed[2], BLOCK_SHAPES))
    # Winograd's weights are 16 packings (one per transformed position) of C_in taps
    cdef object items = spec[13] if len(spec) > 13 else None
    cdef bint winograd = items is not None
    cdef int co_blocks = packed[0] // 16 if winograd else packed[0]
    layer.taps = channels if winograd else channels * kernel_h * kernel_w
    layer.out_channels = out_channels
    if (packed[1] != layer.taps or co_blocks * packed[2] < out_channels
            or winograd and packed[0] % 16):
        raise ValueError("direct_forward_into: packed weights of shape %s do not cover %d "
                         "channels x %d taps%s" % ((packed[0], packed[1], packed[2]),
                                                   out_channels, layer.taps,
                                                   " (x 16 transformed)" if winograd else ""))
    cdef bint pool = spec[11]
    cdef int out_h = (height + 2 * <int>padding[0] - kernel_h) // <int>stride[0] + 1
    cdef int out_w = (width + 2 * <int>padding[1] - kernel_w) // <int>stride[1] + 1
    if pool:
        # the max commutes with the shift and with an activation that never decreases
        if out_rows * 2 != out_h or out_cols * 2 != out_w or residual is not None or (
                spec[9] and spec[10] < 0) or bordered:
            raise ValueError("direct_forward_into: a pooled conv needs an even output "
                             "(%d x %d), out of half its size (got %d x %d), no residual, "
                             "no borders and a slope >= 0" % (out_h, out_w, out_rows, out_cols))
    else:
        _check_output("direct_forward_into: out", height, width, out_rows, out_cols, kernel_h,
                      kernel_w, padding, stride)
    layer.bias = layer.residual = NULL
    if bias is not None:
        shape = _dims(CALLER, bias, "bias", 1, typenum, False)
        if shape[0] not in (0, out_channels):
            raise ValueError("direct_forward_into: bias has %d values for %d channels"
                             % (shape[0], out_channels))
        layer.bias = _data(bias) if shape[0] else NULL
    if residual is not None:
        shape = _dims(CALLER, residual, "residual", 4, typenum, False)
        _view(&layer.residual_view, CALLER, shape, borders[1], "residual", &t, &rows, &cols)
        if borders[1][2:] != (1, 1):
            raise ValueError("direct_forward_into: a residual cannot be stored in phase planes")
        if shape[0] != out[0] or t != out_channels or rows != out_rows or cols != out_cols:
            raise ValueError("direct_forward_into: residual must match the conv's output")
        layer.residual = _data(residual)
    if out[0] != x[0]:
        raise ValueError("direct_forward_into: out has %d images, x %d: out must match the "
                         "conv's output" % (out[0], x[0]))
    layer.phases = phases
    layer.kernel_h, layer.kernel_w = kernel_h, kernel_w
    layer.co_blocks, layer.co_block, layer.lanes = co_blocks, packed[2], lanes
    layer.n_images, layer.out_h, layer.out_w, layer.pool = x[0], out_h, out_w, pool
    # the grid rounded up to whole blocks; on the wide grid reads of the last block run
    # past the phase planes by up to MAX_LANES + kW elements, into zeroed slack
    layer.image_lanes = not bordered and _image_lanes(layer.n_images, out_w, phases, 8 * (
        _phases_size(phases) + MAX_LANES + kernel_w) * (4 if typenum == cnp.NPY_FLOAT32 else 8))
    layer.grid_row = _grid_row(layer.out_w, phases.cols)
    grid = <Py_ssize_t>layer.out_h * layer.grid_row
    layer.grid.row_vectors = layer.out_w // 8 if layer.out_w % 8 == 0 else 0
    layer.grid.cols = phases.cols
    layer.grid.vectors = (grid + 7) // 8
    layer.padded_size = _phases_size(phases) + MAX_LANES + kernel_w
    # the dense grid's reads stay inside the padded image (the wide grid's run past it):
    # an x stored with the conv's stride and a border of at least its padding is read
    # where it lies, the taps shifted by the difference
    layer.in_place = (layer.grid.row_vectors != 0 and not layer.image_lanes
                      and borders[0][2:] == tuple(stride) and borders[0][0] >= phases.pad_h
                      and borders[0][1] >= phases.pad_w)
    if borders[0][2:] != (1, 1) and not layer.in_place:
        raise ValueError("direct_forward_into: x stored in phase planes of stride %r is read "
                         "in place only, by a conv of that stride, padding at most %r and an "
                         "output row of whole vectors (got stride %r, padding %r, %d columns)"
                         % (borders[0][2:], borders[0][:2], stride, padding, out_w))
    layer.winograd = winograd
    if winograd and not (kernel_h == kernel_w == 3 and tuple(stride) == (1, 1)
                         and tuple(padding) == (1, 1) and layer.in_place and out_h % 2 == 0
                         and out_w % 2 == 0 and not pool):
        raise ValueError("direct_forward_into: transformed (Winograd) weights take a 3x3 "
                         "stride-1 conv with padding 1, an even output of whole vectors a row "
                         "and x stored inside a border of at least 1 (got padding %r, stride "
                         "%r, output %d x %d, x's layout %r)"
                         % (padding, stride, out_h, out_w, borders[0]))
    layer.phased_out = borders[2][2:] != (1, 1)
    units = layer.n_images
    if layer.image_lanes:
        # positions of 8 values (one per image): the dense grid's reads, with every
        # position a vector of its own, and 8 times the padded planes
        grid = <Py_ssize_t>layer.out_h * layer.out_w * 8
        layer.grid.row_vectors, layer.grid.cols = layer.out_w, phases.cols * 8
        layer.grid.vectors = <Py_ssize_t>layer.out_h * layer.out_w
        layer.padded_size = layer.padded_size * 8
        layer.grid_row = layer.out_w * 8
        units = (layer.n_images + 7) // 8
    layer.wide_stride = (grid + lanes - 1) // lanes * lanes
    layer.image_in = layer.x_view.image
    layer.plane = <Py_ssize_t>out_rows * out_cols      # of the output written

    # image lanes write whole planes: one band
    layer.group, layer.groups = 1, layer.co_blocks
    if winograd:
        layer.bands, layer.group = items
        if not (1 <= layer.bands <= max(1, out_rows // 2) and 1 <= layer.group <= co_blocks):
            raise ValueError("direct_forward_into: Winograd's work items of %r (bands, channel "
                             "blocks) do not fit %d tile rows and %d blocks"
                             % (items, out_rows // 2, co_blocks))
        layer.groups = (co_blocks + layer.group - 1) // layer.group
    else:
        layer.bands = 1 if layer.image_lanes else _bands(units, layer.co_blocks, out_rows,
                                                          num_threads)
    layer.per_image = layer.bands * layer.groups
    # a small batch is shared item by item: the thread that starts first takes more
    # while the others wake (~20 µs here); a large one image by image, so that each
    # image is padded once
    layer.chunk = 1 if units < num_threads else layer.per_image
    layer.total = units * layer.per_image if layer.plane else 0
    layer.done_items = layer.sleepers = 0
    layer.threads = max(num_threads, 1)
    layer.taken = <int*>calloc(layer.threads, sizeof(int))
    if layer.taken == NULL:
        raise MemoryError()
    layer.x, layer.packed, layer.out = _data(spec[0]), _data(spec[1]), _data(spec[2])
    layer.activate, layer.slope = spec[9], spec[10]
    if layer.in_place:
        reading = _phases(channels, height, width, borders[0][0], borders[0][1], stride[0],
                          stride[1], kernel_h, kernel_w)
        layer.grid.cols, layer.padded_size = reading.cols, 0
        layer.offsets = _tap_offsets(reading, kernel_h, kernel_w, 0,
                                     reading.pad_h - phases.pad_h, reading.pad_w - phases.pad_w)
    else:
        layer.offsets = _tap_offsets(phases, kernel_h, kernel_w)
    if layer.image_lanes:
        for t in range(layer.taps):
            layer.offsets[t] *= 8
    if winograd:
        _winograd_layout(layer, channels)
    return 0


cdef int _winograd_layout(Layer* layer, int channels) except -1:
    """Lay out a Winograd layer's scratch (``_winograd_products``): per transformed
    position ξ, the input tiles of a band (C_in rows of ``band_tiles``, a band's tiles
    rounded up to whole register blocks) and their products with a group of channel
    blocks (a row a channel), then the input transform's column half (``band_input``);
    the offsets become the products', a tap per input channel."""
    cdef int c
    cdef Py_ssize_t tiles
    layer.tiles_x, layer.tiles_y = layer.out_w // 2, layer.out_h // 2
    tiles = <Py_ssize_t>((layer.tiles_y + layer.bands - 1) // layer.bands) * layer.tiles_x
    layer.band_tiles = (tiles + layer.lanes - 1) // layer.lanes * layer.lanes
    # 16 more than the planes: a power-of-two distance would map the 16 streams of a
    # transform onto the same cache sets
    layer.input_plane = channels * layer.band_tiles + 16
    layer.product_plane = layer.group * layer.co_block * layer.band_tiles + 16
    layer.padded_size = 16 * (layer.input_plane + layer.product_plane) + 8 * (
        tiles + layer.tiles_x)
    for c in range(channels):
        layer.offsets[c] = c * layer.band_tiles
    return 0


cdef inline bint _image_lanes(int n_images, int out_w, Phases phases,
                              Py_ssize_t lanes_bytes) noexcept nogil:
    """Whether a conv is computed on image lanes: 8 images or more at stride 1, where
    the output rows are not whole vectors (the wide grid would drop (kW - 1) of every
    row of W + 2 pW columns: two fifths of LeNet-5's second conv) and 8 padded images
    (``lanes_bytes``) stay within a thread's L2. LeNet-5 at batch 64, 2 threads:
    first conv 234 -> 192 us, second 520 -> 288 us, bitwise the same outputs."""
    return (n_images >= 8 and out_w % 8 != 0 and phases.stride_h == 1
            and phases.stride_w == 1 and lanes_bytes <= MAX_LANES_BYTES)


cdef inline void _pad_lanes(const floating* x, const Layer* layer, int group,
                            floating* padded) noexcept nogil:
    """Images 8 group .. 8 group + 7 into the padded planes on image lanes."""
    pad_lanes(x + <Py_ssize_t>8 * group * layer.image_in, layer.image_in,
              min(8, layer.n_images - 8 * group), layer.phases, padded)


cdef void _pooled_epilogue(Layer* layer, floating* wide, int first_row, int end_row,
                           floating* plane, int co) noexcept nogil:
    """plane[first_row / 2 : end_row / 2] = act(2x2 max of conv rows [first_row,
    end_row) on the grid ``wide`` + bias): the pooled output of one channel, written
    once (the conv's own output would be written and read back whole). The vertical
    maxima overwrite the grid's top rows."""
    cdef int cols = layer.grid_row, width = layer.out_w // 2, row
    cdef floating* top
    cdef floating* target = plane + <Py_ssize_t>(first_row // 2) * width
    for row in range(first_row, end_row, 2):
        top = wide + <Py_ssize_t>row * cols
        max_rows(top, top + cols, top, 2 * width)
        max_pairs(top, plane + <Py_ssize_t>(row // 2) * width, width)
    epilogue_rows(target, width, target, width, NULL, 0, (end_row - first_row) // 2, width,
                  <const floating*>layer.bias + co if layer.bias != NULL else NULL,
                  layer.activate, <floating>layer.slope)


cdef inline void _lanes_epilogue(Layer* layer, floating* grid, int group,
                                 int co) noexcept nogil:
    """Channel ``co`` of the group's images from the image-lane ``grid``."""
    cdef Py_ssize_t at = (<Py_ssize_t>8 * group * layer.out_channels + co) * layer.plane
    cdef const floating* bias = <const floating*>layer.bias
    cdef const floating* residual = <const floating*>layer.residual
    lanes_epilogue(grid, layer.out_h, layer.out_w, min(8, layer.n_images - 8 * group),
                   <floating*>layer.out + at, <Py_ssize_t>layer.out_channels * layer.plane,
                   residual + at if residual != NULL else NULL,
                   bias + co if bias != NULL else NULL, layer.activate,
                   <floating>layer.slope, layer.pool)


cdef inline bint _same_padding(const Layer* zeroed, const Layer* layer) noexcept nogil:
    """Whether ``layer`` pads its images into the layout ``zeroed`` left in the buffer."""
    return (zeroed != NULL and zeroed.image_lanes == layer.image_lanes
            and zeroed.padded_size == layer.padded_size
            and memcmp(&zeroed.phases, &layer.phases, sizeof(Phases)) == 0)


cdef void _direct_products(const Layer* layer, const floating* x, int image, int band,
                           int block, floating* padded, floating* wide, const Layer** zeroed,
                           int* cached, int* first_row, int* end_row) noexcept nogil:
    """Conv rows ``first_row`` .. ``end_row - 1`` (band ``band``, channel block ``block`` of
    ``image``) into ``wide``, by the register blocks that cover them; the image is read
    in place, or first padded into ``padded`` unless it is the one there (``cached``)."""
    cdef const floating* source = x + image * layer.image_in if layer.in_place else padded
    cdef int lanes = layer.lanes, cols = layer.grid_row
    cdef Py_ssize_t first, end
    if image != cached[0] and not layer.in_place:
        if cached[0] == -1 and not _same_padding(zeroed[0], layer):
            memset(padded, 0, sizeof(floating) * layer.padded_size)
            zeroed[0] = layer
        if layer.image_lanes:
            _pad_lanes(x, layer, image, padded)
        else:
            _pad_view(x + image * layer.image_in + layer.x_view.interior, layer.x_view.cols,
                      layer.x_view.plane, layer.phases, padded)
    cached[0] = image
    # the band's output rows (of the written output), and the conv rows and whole
    # register blocks that cover them
    first_row[0] = band * (layer.out_h >> layer.pool) // layer.bands << layer.pool
    end_row[0] = (band + 1) * (layer.out_h >> layer.pool) // layer.bands << layer.pool
    first = <Py_ssize_t>first_row[0] * cols // lanes * lanes
    end = min(layer.wide_stride, (<Py_ssize_t>end_row[0] * cols + lanes - 1) // lanes * lanes)
    _blocks(layer.co_block, source, layer.offsets, layer.taps,
            <const floating*>layer.packed + <Py_ssize_t>block * layer.taps * layer.co_block,
            wide, layer.wide_stride, first, (end - first) // lanes, layer.grid)


cdef inline void _tile_band(const Layer* layer, int band, int* first, int* end) noexcept nogil:
    """The tile rows [first, end) of a Winograd layer's band."""
    first[0] = band * layer.tiles_y // layer.bands
    end[0] = (band + 1) * layer.tiles_y // layer.bands


cdef void _winograd_input(const Layer* layer, const floating* image, int band,
                          floating* scratch) noexcept nogil:
    """The transformed input tiles of one band of ``image`` into the start of ``scratch``
    (``_winograd_layout``), read in place from x's border (padding 1)."""
    cdef int first, end
    _tile_band(layer, band, &first, &end)
    band_input(image + layer.x_view.interior + (2 * first - 1) * layer.x_view.cols - 1,
               layer.x_view.plane, layer.x_view.cols, layer.phases.channels, end - first,
               layer.tiles_x, scratch, layer.input_plane, layer.band_tiles,
               scratch + 16 * (layer.input_plane + layer.product_plane))


cdef bint _winograd_products(const Layer* layer, int image, int band, int group,
                             floating* scratch, floating* wide, int* first_row,
                             int* end_row) noexcept nogil:
    """Conv rows ``first_row`` .. ``end_row - 1`` (band ``band``, the channels of group
    ``group``) from the band's transformed tiles in ``scratch``: per transformed position
    the product with the weights, a 1x1 conv over the tiles on the register blocks (a
    tap per input channel), then each channel's output transform. F(2x2, 3x3) takes 16
    multiplies per tile and channel pair where the direct loop takes 36. The output
    transform writes out with the epilogue (True), or, for phase planes, the rows into
    ``wide`` for the epilogue of ``_layer_items`` (False)."""
    cdef int first, end, tiles, xi, b, co
    cdef Grid grid
    cdef const floating* packed = <const floating*>layer.packed
    cdef const floating* bias = <const floating*>layer.bias
    cdef const floating* residual = <const floating*>layer.residual
    cdef floating* products = scratch + 16 * layer.input_plane
    cdef Py_ssize_t at
    _tile_band(layer, band, &first, &end)
    tiles = (end - first) * layer.tiles_x
    # the tiles on the wide grid: whole register blocks, over zeroed lanes past the last
    grid.row_vectors, grid.cols, grid.vectors = 0, 0, (tiles + 7) // 8
    for xi in range(16):
        for b in range(group * layer.group, min(layer.co_blocks, (group + 1) * layer.group)):
            _blocks(layer.co_block, scratch + xi * layer.input_plane, layer.offsets, layer.taps,
                    packed + (<Py_ssize_t>xi * layer.co_blocks + b) * layer.taps
                    * layer.co_block, products + xi * layer.product_plane
                    + (b - group * layer.group) * layer.co_block * layer.band_tiles,
                    layer.band_tiles, 0, (tiles + layer.lanes - 1) // layer.lanes, grid)
    first_row[0], end_row[0] = 2 * first, 2 * end
    for b in range(min(layer.group * layer.co_block,
                       layer.out_channels - group * layer.group * layer.co_block)):
        if layer.phased_out:
            band_output(products + b * layer.band_tiles, layer.product_plane, tiles,
                        layer.tiles_x,
                        wide + b * layer.wide_stride + <Py_ssize_t>2 * first * layer.grid_row,
                        layer.grid_row, 0, NULL, 0, False, 0)
            continue
        co = group * layer.group * layer.co_block + b
        at = <Py_ssize_t>image * layer.out_channels + co
        band_output(products + b * layer.band_tiles, layer.product_plane, tiles,
                    layer.tiles_x, <floating*>layer.out + _at(&layer.out_view, at, 2 * first),
                    layer.out_view.cols, bias[co] if bias != NULL else 0,
                    residual + _at(&layer.residual_view, at, 2 * first)
                    if residual != NULL else NULL, layer.residual_view.cols, layer.activate,
                    <floating>layer.slope)
    return not layer.phased_out


cdef void _layer_items(Layer* layer, int thread, floating* padded, floating* wide,
                       const Layer** zeroed) noexcept nogil:
    """Take work items of ``layer`` until none are left: out = act(conv(x) + bias +
    residual) over one channel block (on Winograd, a group of them) and row band of one
    image per item. ``zeroed``: the last layer whose border and slack this thread
    zeroed in ``padded``; a layer of the same layout (the convs of a ResNet stage) finds
    them still zero, as images only ever fill the interior (a Winograd layer's tiles
    overwrite them: it resets ``zeroed``)."""
    cdef const floating* x = <const floating*>layer.x
    cdef const floating* bias = <const floating*>layer.bias
    cdef const floating* residual = <const floating*>layer.residual
    cdef floating* out = <floating*>layer.out
    cdef int cols = layer.grid_row, out_w = layer.out_w
    cdef int cached = -1, cached_band = -1
    cdef int item, last, taken, image, band, block, b, co, first_row, end_row
    cdef Py_ssize_t at
    while True:
        taken = _take_items(layer.taken, layer.threads, thread, layer.total, layer.chunk,
                            &item)
        if taken == 0:
            return
        last = item + taken
        while item < last:
            image = item // layer.per_image   # a group of 8 on image lanes
            band = item % layer.per_image // layer.groups
            block = item % layer.groups   # a channel block; on Winograd, a group of them
            if layer.winograd:
                if image != cached or band != cached_band:
                    _winograd_input(layer, x + image * layer.image_in, band, padded)
                    zeroed[0] = NULL   # the scratch holds tiles now, not a zeroed border
                    cached, cached_band = image, band
                if _winograd_products(layer, image, band, block, padded, wide, &first_row,
                                      &end_row):
                    item = item + 1   # written with the epilogue
                    continue
            else:
                _direct_products(layer, x, image, band, block, padded, wide, zeroed, &cached,
                                 &first_row, &end_row)
            for b in range(min(layer.group * layer.co_block,
                               layer.out_channels - block * layer.group * layer.co_block)):
                co = block * layer.group * layer.co_block + b
                if layer.image_lanes:
                    _lanes_epilogue(layer, wide + b * layer.wide_stride, image, co)
                    continue
                if layer.pool:
                    _pooled_epilogue(layer, wide + b * layer.wide_stride, first_row,
                                     end_row, out + (<Py_ssize_t>image * layer.out_channels
                                                     + co) * layer.plane, co)
                    continue
                at = <Py_ssize_t>image * layer.out_channels + co
                if layer.phased_out:
                    _epilogue_phases(out + image * layer.out_view.image, &layer.out_view, co,
                                     wide + b * layer.wide_stride + <Py_ssize_t>first_row * cols,
                                     cols, residual + _at(&layer.residual_view, at, first_row)
                                     if residual != NULL else NULL, layer.residual_view.cols,
                                     first_row, end_row - first_row, out_w,
                                     bias + co if bias != NULL else NULL, layer.activate,
                                     <floating>layer.slope)
                    continue
                epilogue_rows(out + _at(&layer.out_view, at, first_row), layer.out_view.cols,
                              wide + b * layer.wide_stride + <Py_ssize_t>first_row * cols, cols,
                              residual + _at(&layer.residual_view, at, first_row)
                              if residual != NULL else NULL, layer.residual_view.cols,
                              end_row - first_row, out_w, bias + co if bias != NULL else NULL,
                              layer.activate, <floating>layer.slope)
            item = item + 1
        _items_done(&layer.done_items, &layer.sleepers, taken, layer.total)


cdef struct Dense:
    # A dense layer run after the convs (``Chain.set_dense``): out (rows, features) =
    # act(x (rows, inputs) @ weight.T + bias) on packed panels, float32; its register
    # blocks are the work items.
    const float* x
    const float* panels
    const float* bias
    float* out
    int rows, features, inputs, total, done_items, sleepers
    int* taken
    bint activate
    float slope


cdef void _dense_items(Dense* dense, int thread, int threads) noexcept nogil:
    """Take register blocks of ``dense`` until none are left."""
    cdef int item, taken
    while True:
        taken = _take_items(dense.taken, threads, thread, dense.total, 1, &item)
        if taken == 0:
            return
        packed_items(dense.x, dense.panels, dense.bias, dense.out, dense.rows, dense.features,
                     dense.inputs, dense.activate, dense.slope, item, item + taken)
        _items_done(&dense.done_items, &dense.sleepers, taken, dense.total)


cdef void _run_layers(Layer* layers, int count, Dense* dense, int dense_count,
                      int num_threads, char* scratch, size_t per_thread,
                      floating* kind) noexcept nogil:
    """Run the layers, then the dense layers, in order in one parallel region, each
    thread moving on to a layer once every item of the one before is done (``kind``
    only selects the dtype)."""
    cdef int thread, k
    cdef floating* padded
    cdef const Layer* zeroed
    with parallel(num_threads=num_threads):
        thread = threadid()
        padded = <floating*>(scratch + thread * per_thread)
        zeroed = NULL
        for k in range(count):
            _layer_items(&layers[k], thread, padded, padded + layers[k].padded_size, &zeroed)
            if k + 1 < count or dense_count:
                _wait_done(&layers[k].done_items, &layers[k].sleepers, layers[k].total)
        for k in range(dense_count):
            _dense_items(&dense[k], thread, layers[0].threads)
            if k + 1 < dense_count:
                _wait_done(&dense[k].done_items, &dense[k].sleepers, dense[k].total)


cdef struct Head:
    # a chain's classifier head (``Chain.set_head``): pointers into its arrays
    void* means
    const void* weight
    const void* bias
    void* out
    Py_ssize_t features
    bint activate
    double slope


cdef inline void _run_head(const Layer* last, const Head* head, floating* kind) noexcept nogil:
    """The head, on the last conv's output (``kind`` only selects the dtype)."""
    pool_dense(<const floating*>last.out, last.n_images, last.out_channels, last.plane,
               <const floating*>head.weight, <const floating*>head.bias, head.features,
               <floating*>head.means, <floating*>head.out, head.activate, head.slope)


cdef class Chain:
    """Direct convs checked and laid out once, to run one after another in one parallel
    region, again and again (``direct_chain_into``).

    ``run(x)`` takes a new first input, of the first one's shape and dtype, wherever
    the chain read that (as a conv's input or residual); every other array stays as
    given. An inference plan keeps one per buffer set: checking and laying out
    ResNet-20's 21 convs took ~30 µs a call. One caller at a time: ``run`` resets
    the layers' shared counters, and a second concurrent call is refused.
    """
    cdef Layer* layers
    cdef bint running
    cdef int count, num_threads, typenum
    cdef size_t per_thread
    cdef cnp.npy_intp first_shape[4]
    cdef list keep          # the arrays the layers point into, the first input aside
    cdef tuple head         # the arrays of ``set_head``, or None
    cdef Head head_layout
    cdef list dense_arrays  # the arrays of ``set_dense``
    cdef Dense* dense
    cdef int dense_count

    def __cinit__(self, list specs, int num_threads):
        cdef int k
        cdef cnp.npy_intp* shape
        cdef object first
        self.layers = NULL
        self.head = None
        self.dense, self.dense_count, self.dense_arrays = NULL, 0, []
        self.running = False
        self.count = len(specs)
        self.num_threads = num_threads
        self.per_thread = 0
        if self.count == 0:
            return
        first = specs[0][0]
        self.typenum = _float_type(CALLER, first)
        shape = _dims(CALLER, first, "x", 4, self.typenum, False)
        for k in range(4):
            self.first_shape[k] = shape[k]
        self.keep = [array for spec in specs for array in (spec[0], spec[1], spec[2], spec[7],
                                                             spec[8]) if array is not first]
        self.layers = <Layer*>calloc(self.count, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        for k in range(self.count):
            _fill_layer(&self.layers[k], specs[k], num_threads, self.typenum)
            self.layers[k].reads_first = specs[k][0] is first
            self.layers[k].adds_first = specs[k][8] is first
            self.per_thread = max(self.per_thread, (
                self.layers[k].padded_size + <Py_ssize_t>self.layers[k].group
                * self.layers[k].co_block
                * self.layers[k].wide_stride) * (4 if self.typenum == cnp.NPY_FLOAT32 else 8))
        self.per_thread = _whole_lines(self.per_thread)   # (``_scratch``)

    def __dealloc__(self):
        cdef int k
        if self.layers != NULL:
            for k in range(self.count):
                free(self.layers[k].offsets)
                free(self.layers[k].taken)
            free(self.layers)
        self._free_dense()

    cdef void _free_dense(self) noexcept:
        cdef int k
        if self.dense != NULL:
            for k in range(self.dense_count):
                free(self.dense[k].taken)
            free(self.dense)
        self.dense, self.dense_count = NULL, 0

    def set_head(self, means, weight, bias, out, bint activate=False, double slope=0.0):
        """After the convs, also out (N, F) = act(means @ weight (F, C)ᵀ + bias), means
        (N, C) being the global average pool of the last conv's (unbordered) output:
        a classifier head, run without returning to Python (``_head.pxd``); ``bias``
        may be None."""
        cdef Layer* last = &self.layers[self.count - 1] if self.count else NULL
        cdef cnp.npy_intp* means_shape = _dims("Chain.set_head", means, "means", 2,
                                               self.typenum, True)
        cdef cnp.npy_intp* weight_shape = _dims("Chain.set_head", weight, "weight", 2,
                                                self.typenum, False)
        cdef cnp.npy_intp* out_shape = _dims("Chain.set_head", out, "out", 2, self.typenum,
                                             True)
        if (last == NULL or last.out_view.interior != 0 or last.out_view.plane != last.plane
                or last.phased_out):
            raise ValueError("Chain.set_head: the chain's last conv must write an unbordered "
                             "output")
        if self.dense_count:
            raise ValueError("Chain.set_head: the chain runs dense layers already")
        if (means_shape[0] != last.n_images or means_shape[1] != last.out_channels
                or weight_shape[1] != last.out_channels or out_shape[0] != last.n_images
                or out_shape[1] != weight_shape[0]):
            raise ValueError("Chain.set_head: means %s, weight %s and out %s do not fit the "
                             "last conv's output of %d images x %d channels"
                             % ((means_shape[0], means_shape[1]),
                                (weight_shape[0], weight_shape[1]),
                                (out_shape[0], out_shape[1]), last.n_images,
                                last.out_channels))
        if bias is not None and _dims("Chain.set_head", bias, "bias", 1, self.typenum,
                                      False)[0] != weight_shape[0]:
            raise ValueError("Chain.set_head: bias must have %d values" % weight_shape[0])
        self.head = (means, weight, bias, out)
        self.head_layout.means, self.head_layout.out = _data(means), _data(out)
        self.head_layout.weight = _data(weight)
        self.head_layout.bias = _data(bias) if bias is not None else NULL
        self.head_layout.features = weight_shape[0]
        self.head_layout.activate, self.head_layout.slope = activate, slope

    def set_dense(self, list layers):
        """After the convs, in the same parallel region, dense layers ``(x, panels, bias,
        out, activate, slope)`` in order: out (N, F) = act(x (N, K) @ weight.T + bias),
        the weights packed as ``dense.linear_packed_into`` takes them (panels (P, K,
        PANEL), bias (P * PANEL,) or None), float32. A layer may read the last conv's
        output (as (N, K)) or an earlier dense layer's ``out``: a network's classifier
        layers at batch 4 and up, without a return to Python and a new wake-up of the
        team for each. Replaces the dense layers set before; ``[]`` sets none."""
        cdef str caller = "Chain.set_dense"
        cdef cnp.npy_intp* x_shape
        cdef cnp.npy_intp* p_shape
        cdef cnp.npy_intp* out_shape
        cdef Dense* dense
        cdef int k
        if self.running:
            raise RuntimeError("Chain.set_dense: the chain is running")
        if layers and (self.count == 0 or self.typenum != cnp.NPY_FLOAT32
                       or self.head is not None):
            raise ValueError("Chain.set_dense: dense layers run after the convs of a float32 "
                             "chain with no head")
        self._free_dense()
        self.dense_arrays = []
        dense = <Dense*>calloc(max(len(layers), 1), sizeof(Dense))
        if dense == NULL:
            raise MemoryError()
        self.dense = dense
        try:
            for k, layer in enumerate(layers):
                if not isinstance(layer, tuple) or len(layer) != 6:
                    raise ValueError("%s: layer %d must be (x, panels, bias, out, activate, "
                                     "slope), got %r" % (caller, k, layer))
                x, panels, bias, out, activate, slope = layer
                x_shape = _dims(caller, x, "x", 2, cnp.NPY_FLOAT32, False)
                p_shape = _dims(caller, panels, "panels", 3, cnp.NPY_FLOAT32, False)
                out_shape = _dims(caller, out, "out", 2, cnp.NPY_FLOAT32, True)
                if (p_shape[1] != x_shape[1] or p_shape[2] != PANEL
                        or out_shape[0] != x_shape[0]
                        or p_shape[0] != (out_shape[1] + PANEL - 1) // PANEL):
                    raise ValueError("%s: layer %d's x %s, panels %s and out %s do not fit "
                                     "(panels of %d features)" % (
                                         caller, k, (x_shape[0], x_shape[1]),
                                         (p_shape[0], p_shape[1], p_shape[2]),
                                         (out_shape[0], out_shape[1]), PANEL))
                if bias is not None and _dims(caller, bias, "bias", 1, cnp.NPY_FLOAT32,
                                              False)[0] != p_shape[0] * PANEL:
                    raise ValueError("%s: layer %d's bias must have %d values (whole panels)"
                                     % (caller, k, p_shape[0] * PANEL))
                dense[k].taken = <int*>calloc(self.layers[0].threads, sizeof(int))
                if dense[k].taken == NULL:
                    raise MemoryError()
                self.dense_count = k + 1
                dense[k].x, dense[k].panels = <const float*>_data(x), <const float*>_data(panels)
                dense[k].bias = <const float*>_data(bias) if bias is not None else NULL
                dense[k].out = <float*>_data(out)
                dense[k].rows, dense[k].inputs = x_shape[0], x_shape[1]
                dense[k].features = out_shape[1]
                dense[k].total = ((x_shape[0] + PANEL_ROWS - 1) // PANEL_ROWS) * p_shape[0]
                dense[k].activate, dense[k].slope = activate, slope
                self.dense_arrays.append((x, panels, bias, out))
        except BaseException:
            self._free_dense()
            self.dense_arrays = []
            raise

    def run(self, x):
        """Run the chain with ``x`` (C-contiguous) as its first input (and the head or the
        dense layers, where set)."""
        cdef int k
        cdef cnp.npy_intp* shape
        cdef const void* data
        cdef Layer* layer
        cdef char* scratch
        cdef void* allocated
        if self.count == 0:
            return
        shape = _dims(CALLER, x, "x", 4, self.typenum, False)
        for k in range(4):
            if shape[k] != self.first_shape[k]:
                raise ValueError("direct chain: x must have the shape it was prepared for, %s, "
                                 "got %s" % (tuple(self.first_shape[j] for j in range(4)),
                                             tuple(shape[j] for j in range(4))))
        if self.running:   # checked and set under the GIL
            raise RuntimeError("direct chain: already running in another thread; a chain "
                               "serves one caller at a time")
        self.running = True
        data = _data(x)
        for k in range(self.count):
            layer = &self.layers[k]
            if layer.reads_first:
                layer.x = data
            if layer.adds_first:
                layer.residual = data
            layer.done_items = layer.sleepers = 0
            memset(layer.taken, 0, sizeof(int) * layer.threads)
        for k in range(self.dense_count):
            self.dense[k].done_items = self.dense[k].sleepers = 0
            memset(self.dense[k].taken, 0, sizeof(int) * self.layers[0].threads)
        try:
            scratch = _scratch(self.num_threads, self.per_thread, False, &allocated)
            with nogil:
                if self.typenum == cnp.NPY_FLOAT32:
                    _run_layers(self.layers, self.count, self.dense, self.dense_count,
                                self.num_threads, scratch, self.per_thread, <float*>NULL)
                    if self.head_layout.out != NULL:
                        _run_head(&self.layers[self.count - 1], &self.head_layout,
                                  <float*>NULL)
                else:
                    _run_layers(self.layers, self.count, self.dense, 0, self.num_threads,
                                scratch, self.per_thread, <double*>NULL)
                    if self.head_layout.out != NULL:
                        _run_head(&self.layers[self.count - 1], &self.head_layout,
                                  <double*>NULL)
            free(allocated)
        finally:
            self.running = False


def direct_chain_into(list specs, int num_threads):
    """Run direct convs one after another in one parallel region.

    Each spec is ``(x, packed, out, kernel_h, kernel_w, padding, stride, bias, residual,
    activate, slope, pool[, borders])`` (``pool``: out is the conv's 2x2 max pool;
    ``borders``: the zero borders x, residual and out are stored with; see
    ``_fill_layer``), the rest as ``direct_forward_into`` takes them; a later conv may
    read an earlier one's ``out`` (as ``x`` or ``residual``). Waking the team once instead
    of once per conv matters at batch 1, where a conv takes tens of microseconds.
    """
    if specs:
        Chain(specs, num_threads).run(specs[0][0])


def direct_forward_into(x, packed, out, int kernel_h, int kernel_w, tuple padding,
                        tuple stride, int num_threads, bias=None, residual=None,
                        bint activate=False, double slope=0.0):
    """out[n] = act(conv(x[n]) + bias + residual[n]), dilation 1, one group.

    A stride above 1 reads the image split into phase planes (``Phases``), on a
    wide grid of the planes' row length. ``x`` (N, C_in, H, W), ``packed``
    (co_blocks, C_in * kH * kW, co_block) with ``co_block`` one of BLOCK_SHAPES'
    channel counts, ``out`` (N, C_out, OH, OW), overwritten; float32 or float64,
    C-contiguous.
    """
    direct_chain_into([(x, packed, out, kernel_h, kernel_w, padding, stride, bias, residual,
                        activate, slope, False)], num_threads)
