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
Each conv of a chain comes as a ``ConvStep``, checked and laid out once, when the chain
is built (``_layer.pyx``).
"""
from cython.parallel cimport parallel, threadid
from libc.stdlib cimport calloc, free
from libc.string cimport memset

cimport numpy as cnp
import numpy as np

cnp.import_array()

from fastdl_ext._epilogue cimport epilogue_rows, max_pairs, max_rows
from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._blocks cimport Grid, MAX_LANES, _blocks
from fastdl_ext._lanes cimport lanes_epilogue, pad_lanes
from fastdl_ext._layer cimport Layer, _fill_layer, _grid_row, _same_padding, _tile_band
from fastdl_ext._blas cimport floating
from fastdl_ext._dense cimport PANEL, PANEL_ROWS, packed_items
from fastdl_ext._head cimport pool_dense
from fastdl_ext._phases cimport (View, _at, _epilogue_phases, _pad_view, _scratch,
                                 _whole_lines)
from fastdl_ext._team cimport _items_done, _take_items, _wait_done
from fastdl_ext._winograd cimport band_input, band_output

from fastdl_ext._layer import BLOCK_SHAPES, CALLER, ConvStep, reads_in_place


def kernel_shapes():
    """``(BLOCK_SHAPES, MAX_LANES)``: the register blocks as (output channels, positions),
    and the most positions of one."""
    return BLOCK_SHAPES, MAX_LANES


def grid_row(int out_w, int cols):
    """Positions per output row on the grid a conv is computed on: ``out_w`` (a dense
    grid) where output rows are whole vectors, else the phase planes' row length
    ``cols`` (the wide grid, ``cols - out_w`` positions a row computed and dropped)."""
    return _grid_row(out_w, cols)


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


cdef void _winograd_input(const Layer* layer, const floating* image, int band,
                          floating* scratch) noexcept nogil:
    """The transformed input tiles of one band of ``image`` into the start of ``scratch``
    (``_winograd_layout`` in ``_layer.pyx``), read in place from x's border (padding 1)."""
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
    them still zero, as images only ever fill the interior. A layer that reads x in
    place resets ``zeroed``: it pads nothing (``padded_size`` 0, or a Winograd layer's
    tiles), so its grid ``wide`` starts where the padded image lay and overwrites its
    border."""
    cdef const floating* x = <const floating*>layer.x
    cdef const floating* bias = <const floating*>layer.bias
    cdef const floating* residual = <const floating*>layer.residual
    cdef floating* out = <floating*>layer.out
    cdef int cols = layer.grid_row, out_w = layer.out_w
    cdef int cached = -1, cached_band = -1
    cdef int item, last, taken, image, band, block, b, co, first_row, end_row
    cdef Py_ssize_t at
    if layer.in_place:
        zeroed[0] = NULL
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

    def __cinit__(self, list steps, int num_threads):
        cdef int k
        cdef cnp.npy_intp* shape
        cdef object first
        self.layers = NULL
        self.head = None
        self.dense, self.dense_count, self.dense_arrays = NULL, 0, []
        self.running = False
        self.count = len(steps)
        self.num_threads = num_threads
        self.per_thread = 0
        if self.count == 0:
            return
        for k in range(self.count):
            if not isinstance(steps[k], ConvStep):
                raise TypeError("direct chain: step %d must be a ConvStep, got %s"
                                % (k, type(steps[k]).__name__))
        first = steps[0].x
        self.typenum = _float_type(CALLER, first)
        shape = _dims(CALLER, first, "x", 4, self.typenum, False)
        for k in range(4):
            self.first_shape[k] = shape[k]
        self.keep = [array for step in steps for array in (
            step.x, step.packed, step.out, step.bias, step.residual) if array is not first]
        self.layers = <Layer*>calloc(self.count, sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        for k in range(self.count):
            _fill_layer(&self.layers[k], steps[k], num_threads, self.typenum)
            self.layers[k].reads_first = steps[k].x is first
            self.layers[k].adds_first = steps[k].residual is first
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


def direct_chain_into(list steps, int num_threads):
    """Run direct convs, each a ``ConvStep``, one after another in one parallel region.

    A later conv may read an earlier one's ``out`` (as ``x`` or ``residual``). Waking the
    team once instead of once per conv matters at batch 1, where a conv takes tens of
    microseconds.
    """
    if steps:
        Chain(steps, num_threads).run(steps[0].x)


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
    direct_chain_into([ConvStep(x, packed, out, kernel_size=(kernel_h, kernel_w),
                                padding=padding, stride=stride, bias=bias, residual=residual,
                                activate=activate, slope=slope)], num_threads)
