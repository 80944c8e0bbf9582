# cython: language_level=3
"""One direct conv of a chain: described (``ConvStep``), checked and laid out (``Layer``).

A caller describes each conv of a chain by a ``ConvStep``: its arrays, geometry,
epilogue and how its arrays are stored. ``direct.pyx`` checks each step against the
chain (shapes, dtypes, the stored layouts of x, residual and out, Winograd's
conditions) and lays it out once, when the chain is built (``_fill_layer``): its grid,
work items, tap offsets and scratch sizes. Whether a conv reads its input in place is
one rule, ``reads_in_place``.
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


cdef class ConvStep:
    """One direct conv of a chain: out = act(conv(x) + bias + residual), dilation 1, one
    group, or with ``pool`` the 2x2 max pool of that (``direct.direct_chain_into``).

    Checked here for its own sake (pairs of ints, three layouts); its arrays are checked
    against the chain when the chain is built. Read-only once made.

    Attributes
    ----------
    x : ndarray (N, C_in, H, W), stored as ``layouts[0]``
        The input; a chain's later conv may read an earlier one's ``out``.
    packed : ndarray
        Weights packed as ``(co_blocks, C_in * kH * kW, co_block)`` (``co_block`` one
        of ``BLOCK_SHAPES``' channel counts), or with ``winograd_items`` Winograd's
        ``(16 * co_blocks, C_in, co_block)``, one packing per transformed position.
    out : ndarray (N, C_out, OH, OW), writable, stored as ``layouts[2]``
        Overwritten (its interior only: a border zeroed once stays zero); with
        ``pool`` (N, C_out, OH / 2, OW / 2).
    kernel_size, padding, stride : (int, int)
        The conv's ``(kH, kW)``, zero padding and stride.
    bias : ndarray (C_out,) or None
    residual : ndarray like the conv's output, or None
        Added before the activation; stored as ``layouts[1]``, never in phase planes.
    activate : bool
    slope : float
        With ``activate``, ``v if v > 0 else slope * v`` last (0: ReLU).
    pool : bool
        ``out`` takes the 2x2 max pool of the conv's output (no residual, no borders,
        ``slope >= 0``: the max commutes with the rest).
    layouts : three (rows, cols, stride_h, stride_w)
        How x, residual and out are stored (``View``): inside a zero border ``(rows,
        cols)``, and (x and out) split into the phase planes of a stride; given as
        ``(rows, cols)`` or the four values, or None for plain arrays.
    winograd_items : (bands, group) or None
        Run by Winograd's F(2x2, 3x3) on ``packed`` transformed weights, in work items
        of a band of tile rows x ``group`` channel blocks: a 3x3 stride-1 conv with
        padding 1 that reads x in place (``reads_in_place``), its output even.
    """

    def __init__(self, x, packed, out, *, kernel_size, padding, stride, bias=None,
                 residual=None, bint activate=False, double slope=0.0, bint pool=False,
                 layouts=None, winograd_items=None):
        self.x, self.packed, self.out, self.bias, self.residual = x, packed, out, bias, residual
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.padding = _pair("padding", padding, 0)
        self.stride = _pair("stride", stride, 1)
        self.activate, self.slope, self.pool = activate, slope, pool
        self.layouts = _layouts(layouts)
        self.winograd_items = (None if winograd_items is None
                               else _pair("winograd_items", winograd_items, 1))

    def __repr__(self):
        return ("ConvStep(x=%s, out=%s, kernel_size=%r, padding=%r, stride=%r, pool=%r, "
                "layouts=%r, winograd_items=%r)"
                % (getattr(self.x, "shape", None), getattr(self.out, "shape", None),
                   self.kernel_size, self.padding, self.stride, self.pool, self.layouts,
                   self.winograd_items))


cdef tuple _pair(str name, object value, int minimum):
    """``value`` as a tuple of two ints of at least ``minimum``; else a ValueError."""
    cdef int first, second
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError("ConvStep: %s must be two ints, got %r" % (name, value)) from None
    if first < minimum or second < minimum:
        raise ValueError("ConvStep: %s must be at least %d, got %r" % (name, minimum, value))
    return (first, second)


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


cdef tuple _layouts(object layouts):
    """A step's ``layouts`` as three (bh, bw, sh, sw) layouts (``View``): each given as a
    border (bh, bw), or a border and the stride of the phase planes (bh, bw, sh, sw)."""
    if layouts is None:
        return NO_BORDERS
    if len(layouts) != 3 or any(len(layout) not in (2, 4) for layout in layouts):
        raise ValueError("ConvStep: layouts must be 3 layouts, (rows, cols) or "
                         "(rows, cols, stride_h, stride_w), for x, residual and out, got %r"
                         % (layouts,))
    return tuple(tuple(int(n) for n in layout) + ((1, 1) if len(layout) == 2 else ())
                 for layout in layouts)


cdef int _fill_layer(Layer* layer, ConvStep step, int num_threads, int typenum) except -1:
    """Check ``step`` against the chain (of dtype ``typenum``) and lay it out in ``layer``
    (its offsets and counters malloc'ed, for the chain to free)."""
    cdef cnp.npy_intp* x = _dims(CALLER, step.x, "x", 4, typenum, False)
    cdef cnp.npy_intp* out = _dims(CALLER, step.out, "out", 4, typenum, True)
    cdef int channels, height, width, out_channels, out_rows, out_cols
    _view(&layer.x_view, CALLER, x, step.layouts[0], "x", &channels, &height, &width)
    _view(&layer.out_view, CALLER, out, step.layouts[2], "out", &out_channels, &out_rows,
          &out_cols)
    layer.phases = _phases(channels, height, width, step.padding[0], step.padding[1],
                           step.stride[0], step.stride[1], step.kernel_size[0],
                           step.kernel_size[1])
    layer.kernel_h, layer.kernel_w = step.kernel_size
    layer.out_channels, layer.n_images = out_channels, x[0]
    _check_packed(layer, step, typenum)
    _check_output_size(layer, step, out_rows, out_cols)
    _fill_addends(layer, step, typenum, out)
    if out[0] != x[0]:
        raise ValueError("direct_forward_into: out has %d images, x %d: out must match the "
                         "conv's output" % (out[0], x[0]))
    _fill_grid(layer, step, typenum)
    _fill_items(layer, step, num_threads)
    layer.x, layer.packed, layer.out = _data(step.x), _data(step.packed), _data(step.out)
    layer.activate, layer.slope = step.activate, step.slope
    _fill_offsets(layer, step)
    if layer.winograd:
        _winograd_layout(layer, channels)
    return 0


cdef int _check_packed(Layer* layer, ConvStep step, int typenum) except -1:
    """The register block shape of ``step.packed`` and the taps and channels it covers;
    Winograd's weights are 16 packings (one per transformed position) of C_in taps."""
    cdef cnp.npy_intp* packed = _dims(CALLER, step.packed, "packed", 3, typenum, False)
    cdef bint winograd = step.winograd_items is not None
    cdef int b, lanes = 0
    for b, lanes in BLOCK_SHAPES:
        if b == packed[2]:
            break
    else:
        raise ValueError("direct_forward_into: packed weights have blocks of %d channels, "
                         "expected one of %s" % (packed[2], BLOCK_SHAPES))
    layer.co_blocks = packed[0] // 16 if winograd else packed[0]
    layer.co_block, layer.lanes = packed[2], lanes
    layer.taps = layer.phases.channels * (1 if winograd else layer.kernel_h * layer.kernel_w)
    if (packed[1] != layer.taps or layer.co_blocks * packed[2] < layer.out_channels
            or winograd and packed[0] % 16):
        raise ValueError("direct_forward_into: packed weights of shape %s do not cover %d "
                         "channels x %d taps%s" % ((packed[0], packed[1], packed[2]),
                                                   layer.out_channels, layer.taps,
                                                   " (x 16 transformed)" if winograd else ""))
    return 0


cdef int _check_output_size(Layer* layer, ConvStep step, int out_rows,
                            int out_cols) except -1:
    """The conv's output size, and ``out``'s: the conv's, or with ``pool`` half of it."""
    cdef Phases p = layer.phases
    layer.out_h = (p.height + 2 * p.pad_h - p.kernel_h) // p.stride_h + 1
    layer.out_w = (p.width + 2 * p.pad_w - p.kernel_w) // p.stride_w + 1
    layer.pool = step.pool
    if not step.pool:
        _check_output("direct_forward_into: out", p.height, p.width, out_rows, out_cols,
                      p.kernel_h, p.kernel_w, step.padding, step.stride)
    elif (out_rows * 2 != layer.out_h or out_cols * 2 != layer.out_w
            or step.residual is not None or (step.activate and step.slope < 0)
            or step.layouts != NO_BORDERS):
        # the max commutes with the shift and with an activation that never decreases
        raise ValueError("direct_forward_into: a pooled conv needs an even output "
                         "(%d x %d), out of half its size (got %d x %d), no residual, "
                         "no borders and a slope >= 0"
                         % (layer.out_h, layer.out_w, out_rows, out_cols))
    return 0


cdef int _fill_addends(Layer* layer, ConvStep step, int typenum,
                       cnp.npy_intp* out) except -1:
    """The bias and the residual, checked against the conv's output."""
    cdef cnp.npy_intp* shape
    cdef int channels, rows, cols
    layer.bias = layer.residual = NULL
    if step.bias is not None:
        shape = _dims(CALLER, step.bias, "bias", 1, typenum, False)
        if shape[0] not in (0, layer.out_channels):
            raise ValueError("direct_forward_into: bias has %d values for %d channels"
                             % (shape[0], layer.out_channels))
        layer.bias = _data(step.bias) if shape[0] else NULL
    if step.residual is not None:
        shape = _dims(CALLER, step.residual, "residual", 4, typenum, False)
        _view(&layer.residual_view, CALLER, shape, step.layouts[1], "residual", &channels,
              &rows, &cols)
        if step.layouts[1][2:] != (1, 1):
            raise ValueError("direct_forward_into: a residual cannot be stored in phase planes")
        if (shape[0] != out[0] or channels != layer.out_channels
                or rows != layer.out_h >> layer.pool or cols != layer.out_w >> layer.pool):
            raise ValueError("direct_forward_into: residual must match the conv's output")
        layer.residual = _data(step.residual)
    return 0


cdef int _fill_grid(Layer* layer, ConvStep step, int typenum) except -1:
    """The grid the conv is computed on (wide, dense or on image lanes), whether it reads
    x in place (``reads_in_place``; x in phase planes must be) or runs Winograd's
    F(2x2, 3x3), and the sizes of its scratch and output."""
    cdef Phases phases = layer.phases
    cdef tuple layout = step.layouts[0]
    cdef Py_ssize_t grid
    cdef bint bordered = step.layouts != NO_BORDERS
    # the grid rounded up to whole blocks; on the wide grid reads of the last block run
    # past the phase planes by up to MAX_LANES + kW elements, into zeroed slack
    layer.image_lanes = not bordered and _image_lanes(layer.n_images, layer.out_w, phases, 8 * (
        _phases_size(phases) + MAX_LANES + layer.kernel_w) * (
            4 if typenum == cnp.NPY_FLOAT32 else 8))
    layer.grid_row = _grid_row(layer.out_w, phases.cols)
    grid = <Py_ssize_t>layer.out_h * layer.grid_row
    layer.grid.row_vectors = layer.out_w // 8 if layer.out_w % 8 == 0 else 0
    layer.grid.cols = phases.cols
    layer.grid.vectors = (grid + 7) // 8
    layer.padded_size = _phases_size(phases) + MAX_LANES + layer.kernel_w
    layer.in_place = reads_in_place(layer.out_w, step.padding, step.stride, layout)
    if layout[2:] != (1, 1) and not layer.in_place:
        raise ValueError("direct_forward_into: x stored in phase planes of stride %r is read "
                         "in place only, by a conv of that stride, padding at most %r and an "
                         "output row of whole vectors (got stride %r, padding %r, %d columns)"
                         % (layout[2:], layout[:2], step.stride, step.padding, layer.out_w))
    layer.winograd = step.winograd_items is not None
    if layer.winograd and not (
            step.kernel_size == (3, 3) and step.stride == (1, 1) and step.padding == (1, 1)
            and layer.in_place and layer.out_h % 2 == 0 and layer.out_w % 2 == 0
            and not step.pool):
        raise ValueError("direct_forward_into: transformed (Winograd) weights take a 3x3 "
                         "stride-1 conv with padding 1, an even output of whole vectors a row "
                         "and x stored inside a border of at least 1 (got padding %r, stride "
                         "%r, output %d x %d, x's layout %r)"
                         % (step.padding, step.stride, layer.out_h, layer.out_w, layout))
    layer.phased_out = step.layouts[2][2:] != (1, 1)
    if layer.image_lanes:
        # positions of 8 values (one per image): the dense grid's reads, with every
        # position a vector of its own, and 8 times the padded planes
        grid = <Py_ssize_t>layer.out_h * layer.out_w * 8
        layer.grid.row_vectors, layer.grid.cols = layer.out_w, phases.cols * 8
        layer.grid.vectors = <Py_ssize_t>layer.out_h * layer.out_w
        layer.padded_size = layer.padded_size * 8
        layer.grid_row = layer.out_w * 8
    layer.wide_stride = (grid + layer.lanes - 1) // layer.lanes * layer.lanes
    layer.image_in = layer.x_view.image
    # of the output written
    layer.plane = <Py_ssize_t>(layer.out_h >> layer.pool) * (layer.out_w >> layer.pool)
    return 0


cdef int _fill_items(Layer* layer, ConvStep step, int num_threads) except -1:
    """The work items (an image, or 8 on image lanes, x a band of rows x a group of
    channel blocks) and how the team shares them."""
    cdef int units = (layer.n_images + 7) // 8 if layer.image_lanes else layer.n_images
    cdef int out_rows = layer.out_h >> layer.pool
    # image lanes write whole planes: one band
    layer.group, layer.groups = 1, layer.co_blocks
    if layer.winograd:
        layer.bands, layer.group = step.winograd_items
        if not (1 <= layer.bands <= max(1, out_rows // 2)
                and 1 <= layer.group <= layer.co_blocks):
            raise ValueError("direct_forward_into: Winograd's work items of %r (bands, channel "
                             "blocks) do not fit %d tile rows and %d blocks"
                             % (step.winograd_items, out_rows // 2, layer.co_blocks))
        layer.groups = (layer.co_blocks + layer.group - 1) // layer.group
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
    return 0


cdef int _fill_offsets(Layer* layer, ConvStep step) except -1:
    """The taps' offsets: into the padded image, or into x where it is read in place
    (shifted by its border beyond the padding); 8 apart on image lanes."""
    cdef Phases phases = layer.phases, reading
    cdef tuple layout = step.layouts[0]
    cdef int t
    if layer.in_place:
        reading = _phases(phases.channels, phases.height, phases.width, layout[0], layout[1],
                          phases.stride_h, phases.stride_w, phases.kernel_h, phases.kernel_w)
        layer.grid.cols, layer.padded_size = reading.cols, 0
        layer.offsets = _tap_offsets(reading, layer.kernel_h, layer.kernel_w, 0,
                                     reading.pad_h - phases.pad_h, reading.pad_w - phases.pad_w)
    else:
        layer.offsets = _tap_offsets(phases, layer.kernel_h, layer.kernel_w)
    if layer.image_lanes:
        for t in range(layer.taps):
            layer.offsets[t] *= 8
    return 0


cdef int _bands(int n_images, int co_blocks, int out_h, int num_threads) noexcept nogil:
    """Row bands per image: enough work items for the team to share when the batch is
    smaller than it (batch 1), one band otherwise."""
    if n_images >= num_threads or num_threads == 1:
        return 1
    return max(1, min(out_h, (4 * num_threads + n_images * co_blocks - 1)
                      // (n_images * co_blocks)))


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
