# cython: language_level=3
"""One direct conv of a chain, checked and laid out (``Layer``, ``_fill_layer``).

``direct.pyx`` runs the layers; here each chain entry is validated (shapes, dtypes,
the stored layouts of x, residual and out, Winograd's conditions) and its grid,
work items, tap offsets and scratch sizes are worked out, once, when the chain is
built.
"""
from libc.stdlib cimport calloc

cimport numpy as cnp

cnp.import_array()

from fastdl_ext._arrays cimport _data, _dims
from fastdl_ext._blocks cimport MAX_LANES
from fastdl_ext._phases cimport (Phases, _check_output, _phases, _phases_size, _tap_offsets,
                                 _view)

CALLER = "direct_forward_into"   # the name errors are reported under
NO_BORDERS = ((0, 0, 1, 1),) * 3   # x, residual and out as plain arrays (``_layouts``)
cdef enum:
    MAX_LANES_BYTES = 512 * 1024   # 8 padded images on image lanes, per thread
BLOCK_SHAPES = ((4, 24), (6, 16), (3, 24))   # (output channels, positions) per block


cdef int _bands(int n_images, int co_blocks, int out_h, int num_threads) noexcept nogil:
    """Row bands per image: enough work items for the team to share when the batch is
    smaller than it (batch 1), one band otherwise."""
    if n_images >= num_threads or num_threads == 1:
        return 1
    return max(1, min(out_h, (4 * num_threads + n_images * co_blocks - 1)
                      // (n_images * co_blocks)))


cpdef bint reads_in_place(int out_width, tuple padding, tuple stride, tuple layout) except -1:
    """Whether a direct conv of ``padding`` and ``stride`` with output rows of ``out_width``
    reads its input x where it is stored as ``layout``, with no padded copy per thread:
    ``(rows, cols)``, x inside a zero border, or ``(rows, cols, stride_h, stride_w)``, also
    split into the phase planes of that stride (``View``).

    So it does on a dense grid (output rows of whole 8-lane vectors: the wide grid's reads
    run past the padded image), where x is stored with the conv's own stride and a border
    of at least its padding (the taps then shifted by the difference). x stored in phase
    planes is read only so. The one statement of this rule: the chain applies it to each
    conv (``_fill_layer``), and ``fastdl.kernels.direct.reads_in_place`` is this function.
    """
    if len(layout) == 2:
        layout = layout + (1, 1)
    return (out_width > 0 and out_width % 8 == 0 and layout[2:] == tuple(stride)
            and layout[0] >= padding[0] and layout[1] >= padding[1])


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
    layer.in_place = reads_in_place(out_w, padding, stride, borders[0])
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
