# cython: language_level=3, boundscheck=False, wraparound=False
"""Pointwise and depthwise convs run one after another in one parallel region.

The C is in ``include/fastdl_pointwise.h`` (see there for the tiles and the items).
A ``Chain`` is prepared once on its arrays (``PointwiseStep``s and ``DepthwiseStep``s,
a later one may read an earlier one's output) and ``run(x)`` wakes the team once for
all of them: at batch 1 a MobileNet layer takes a few to tens of microseconds, about
what waking a sleeping team costs. The results are bitwise the same for any thread
count.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free
from libc.string cimport memset

cimport numpy as cnp

cnp.import_array()

from fastdl_ext._arrays cimport _data, _dims, _float_type
from fastdl_ext._blas cimport floating
from fastdl_ext._phases cimport _scratch, _whole_lines

cdef extern from "fastdl_pointwise.h":
    ctypedef struct Shape "fastdl_dw_shape":
        Py_ssize_t images, channels, multiplier, height, width, out_h, out_w
        int kernel, stride_h, stride_w, pad_h, pad_w
    ctypedef struct Taps "fastdl_pw_taps":
        pass
    Taps* _new_taps "fastdl_pw_new_taps"() noexcept nogil
    void* _aligned "fastdl_pw_aligned"(size_t size) noexcept nogil
    int _build_taps_float "fastdl_pw_build_taps_float"(const Shape* d, Taps* taps) noexcept nogil
    int _build_taps_double "fastdl_pw_build_taps_double"(const Shape* d,
                                                          Taps* taps) noexcept nogil
    void _flat_columns_float "fastdl_pw_flat_columns_float"(const Shape* d,
                                                             int* columns) noexcept nogil
    void _flat_columns_double "fastdl_pw_flat_columns_double"(const Shape* d,
                                                               long long* columns) noexcept nogil
    int FLAT_VALUES "FASTDL_PW_FLAT_VALUES"
    int FLAT_WIDTH "FASTDL_PW_FLAT_WIDTH"
    int ROW_VECTORS "FASTDL_PW_ROW_VECTORS"
    int PERMUTES "FASTDL_PW_PERMUTES"
    ctypedef struct Step "fastdl_pw_step":
        int kind
        Py_ssize_t images, in_channels, out_channels, positions
        Py_ssize_t row_block, col_block, row_blocks, col_blocks
        Shape dw
        const void* x
        const void* weight
        const void* bias
        const void* residual
        void* out
        int activate, pack
        double slope
        Py_ssize_t items, planes, scratch_offset
        const Taps* taps
        const void* columns
        int rows
        const Step* then
        int fused
        int* taken
        int done, sleepers
    int POINTWISE "FASTDL_PW_POINTWISE"
    int DEPTHWISE "FASTDL_PW_DEPTHWISE"
    int MEAN "FASTDL_PW_MEAN"
    int ROWS "FASTDL_PW_ROWS"
    int _wide "fastdl_pw_wide"() noexcept nogil
    Py_ssize_t _dw_scratch_float "fastdl_dw_scratch_size_float"(const Shape* s) noexcept nogil
    Py_ssize_t _dw_scratch_double "fastdl_dw_scratch_size_double"(
        const Shape* s) noexcept nogil
    void _run_steps "fastdl_pw_run"(Step* steps, int count, int thread, int threads,
                                    char* scratch, int wide, int is_float,
                                    Py_ssize_t images, int split, int* next, int* done,
                                    int* sleepers) noexcept nogil

# bytes of one vector of positions (the tiles' lanes)
DEF VECTOR_BYTES = 64
# Images per thread from which the threads take whole images through every step
# rather than share each step (``fastdl_pw_run``): a thread that the machine's other
# work delays then leaves few images to wait for.
DEF IMAGES_PER_THREAD = 4
# Positions from which a pointwise step copies the columns of its tiles (their rows,
# of 256 positions and more, lie whole kilobytes apart in x, on few L1 sets), where
# they take at most PACK_BYTES and PACK_PANELS row panels or more read them. Batch 32,
# one thread: 24 -> 144 channels at 32x32 (18 panels), 4.8 -> 4.1 ms; 32 -> 192 at
# 16x16, 1.47 -> 1.37 ms; but 144 -> 24 (3 panels) and 192 -> 32 lost 0-15 %.
DEF PACK_POSITIONS = 256
DEF PACK_PANELS = 16
DEF PACK_BYTES = 256 * 1024
# Depthwise planes per item, at least: a plane of a small map is a few hundred
# multiply-adds, less than taking an item costs.
DEF DEPTHWISE_PLANE_VALUES = 1024

WIDE = _wide()
# rows of a weight panel (``pack``)
PANEL_ROWS = ROWS
# whether pointwise steps on large maps copy their tiles' columns (PACK_POSITIONS);
# read when a chain is made
PACK = True


def pack_into(const floating[:, ::1] rows, floating[:, :, ::1] packed,
              const floating[::1] scale=None, int num_threads=1):
    """packed[b, k, r] = rows[b * PANEL_ROWS + r, k] (times ``scale[row]`` where given: a
    batch norm folded in), zero past the rows (M, K): the weights of a pointwise conv in
    panels (``kernels.pointwise.pack``), in one pass (NumPy's transposing copy of 8-value
    runs took 0.4 ms for 1280 x 320 weights), the panels shared among ``num_threads``."""
    cdef Py_ssize_t m = rows.shape[0], k = rows.shape[1], panels = packed.shape[0]
    cdef Py_ssize_t panel, row, column, r
    if packed.shape[1] != k or packed.shape[2] != ROWS or panels * ROWS < m \
            or (panels - 1) * ROWS >= max(m, 1):
        raise ValueError("pack_into: packed must be (ceil(M / %d), K, %d) for rows (M, K), "
                         "got (%d, %d, %d) for (%d, %d)" % (ROWS, ROWS, packed.shape[0],
                                                            packed.shape[1], packed.shape[2],
                                                            m, k))
    if scale is not None and scale.shape[0] != m:
        raise ValueError("pack_into: scale must have %d values, got %d" % (m, scale.shape[0]))
    with nogil:
        # written in order, read as ROWS streams of rows
        for panel in prange(panels, num_threads=max(num_threads, 1), schedule="static"):
            if scale is None:
                for column in range(k):
                    for r in range(ROWS):
                        row = panel * ROWS + r
                        packed[panel, column, r] = rows[row, column] if row < m else 0
            else:
                for column in range(k):
                    for r in range(ROWS):
                        row = panel * ROWS + r
                        packed[panel, column, r] = (rows[row, column] * scale[row] if row < m
                                                    else 0)


cdef class PointwiseStep:
    """out = act(W @ x + bias + residual) per image: x (N, K, H, W), ``packed`` the
    weights of ``channels`` (M) rows in panels (ceil(M / ROWS), K, ROWS), out and
    residual (N, M, H, W); items of ``row_block`` rows (a multiple of ROWS) by
    ``col_block`` positions (0: all)."""
    cdef readonly object x, packed, bias, residual, out
    cdef readonly bint activate
    cdef readonly double slope
    cdef readonly Py_ssize_t channels, row_block, col_block

    def __init__(self, x, packed, Py_ssize_t channels, out, bias=None, residual=None,
                 bint activate=False, double slope=0.0, Py_ssize_t row_block=ROWS,
                 Py_ssize_t col_block=0):
        self.x, self.packed, self.out, self.bias, self.residual = x, packed, out, bias, residual
        self.channels, self.activate, self.slope = channels, activate, slope
        self.row_block, self.col_block = row_block, col_block


cdef class DepthwiseStep:
    """The depthwise conv of ``depthwise.pyx``: out = act(conv(x) + bias + residual)."""
    cdef readonly object x, weight, bias, residual, out
    cdef readonly tuple stride, padding
    cdef readonly bint activate
    cdef readonly double slope

    def __init__(self, x, weight, out, tuple stride, tuple padding, bias=None, residual=None,
                 bint activate=False, double slope=0.0):
        self.x, self.weight, self.out, self.bias, self.residual = x, weight, out, bias, residual
        self.stride, self.padding = stride, padding
        self.activate, self.slope = activate, slope


cdef class MeanStep:
    """out (N, C, 1, 1) = the mean of each plane of x (N, C, H, W): a global average pool,
    as ``pool.pyx``'s ``global_mean_into`` sums it."""
    cdef readonly object x, out
    cdef readonly object residual

    def __init__(self, x, out):
        self.x, self.out, self.residual = x, out, None


cdef class Chain:
    """Steps run in one parallel region by ``threads`` threads; ``run(x)`` reads ``x`` in
    place of the first step's input (and wherever a step reads that array), which must
    match it in shape and dtype. A chain serves one caller at a time.

    ``by_images``: the threads take whole images through the steps up to the first
    pointwise step whose weights outweigh an image's input, and share each of the others
    (default: from IMAGES_PER_THREAD images a thread), instead of sharing every step;
    the results are the same either way."""
    cdef Step* steps
    cdef int count, threads, typenum, wide, next_image, images_done, image_sleepers
    cdef int split
    cdef Py_ssize_t images
    cdef int* taken
    cdef char* scratch
    cdef void* allocated
    cdef size_t per_thread
    cdef list arrays
    cdef object first
    cdef bint running
    cdef public bint by_images
    cdef list reads_first     # (step, 0 for x / 1 for residual) that read the first input

    def __cinit__(self, list steps, int threads):
        cdef int k
        cdef Step* s
        cdef size_t depthwise_bytes = 0, spill = 0
        self.count = len(steps)
        self.threads = max(1, threads)
        self.wide = WIDE
        if not steps:
            raise ValueError("pointwise chain: no steps")
        self.first = steps[0].x
        self.images = steps[0].x.shape[0]
        self.by_images = self.images >= IMAGES_PER_THREAD * self.threads
        self.typenum = _float_type("pointwise chain", self.first)
        self.steps = <Step*>calloc(self.count, sizeof(Step))
        self.taken = <int*>calloc(<size_t>self.count * self.threads, sizeof(int))
        if self.steps == NULL or self.taken == NULL:
            raise MemoryError()
        self.arrays = []
        self.reads_first = []
        for k in range(self.count):
            s = &self.steps[k]
            s.taken = self.taken + k * self.threads
            step = steps[k]
            if isinstance(step, PointwiseStep):
                spill = max(spill, self._pointwise(s, step))
            elif isinstance(step, DepthwiseStep):
                s.scratch_offset = depthwise_bytes
                depthwise_bytes += self._depthwise(s, step)
            elif isinstance(step, MeanStep):
                self._mean(s, step)
            else:
                raise TypeError("pointwise chain: a step must be a PointwiseStep, "
                                "DepthwiseStep or MeanStep, got %s" % type(step).__name__)
            if step.x.shape[0] != self.images:
                raise ValueError("pointwise chain: every step must take %d images, step %d "
                                 "takes %d" % (self.images, k, step.x.shape[0]))
            if step.x is self.first:
                self.reads_first.append((k, 0))
            if step.residual is not None and step.residual is self.first:
                self.reads_first.append((k, 1))
        for k in range(self.count - 1):
            self._fuse(&self.steps[k], &self.steps[k + 1])
        # the steps run image by image: up to the first pointwise step whose weights
        # outweigh an image's input (more output channels than positions)
        self.split = 0
        while self.split < self.count and not (
                self.steps[self.split].kind == POINTWISE
                and self.steps[self.split].out_channels > self.steps[self.split].positions):
            self.split += 1
        # each thread: the depthwise steps' scratch (zeroed once), then the spill
        for k in range(self.count):
            if self.steps[k].kind == POINTWISE:
                self.steps[k].scratch_offset = depthwise_bytes
        self.per_thread = _whole_lines(depthwise_bytes + spill)
        self.scratch = _scratch(self.threads, self.per_thread, True, &self.allocated)

    def __dealloc__(self):
        cdef int k
        if self.steps != NULL:
            for k in range(self.count):
                free(<void*>self.steps[k].taps)
                free(<void*>self.steps[k].columns)
        free(self.allocated)
        free(self.taken)
        free(self.steps)

    cdef size_t _itemsize(self):
        return sizeof(float) if self.typenum == cnp.NPY_FLOAT32 else sizeof(double)

    cdef size_t _pointwise(self, Step* s, PointwiseStep step) except *:
        """Fill ``s`` from ``step``; returns the spill bytes it needs."""
        cdef cnp.npy_intp* dims = _dims("pointwise chain", step.x, "input", 4, self.typenum,
                                       False)
        cdef cnp.npy_intp* packed = _dims("pointwise chain", step.packed, "weight", 3,
                                         self.typenum, False)
        cdef cnp.npy_intp* out = _dims("pointwise chain", step.out, "out", 4, self.typenum,
                                      True)
        cdef Py_ssize_t lanes = VECTOR_BYTES // self._itemsize()
        s.kind = POINTWISE
        s.images, s.in_channels, s.positions = dims[0], dims[1], dims[2] * dims[3]
        s.out_channels = out[1]
        if (out[0] != dims[0] or out[2] != dims[2] or out[3] != dims[3] or packed[1] != dims[1]
                or out[1] != step.channels
                or packed[2] != ROWS or packed[0] != (out[1] + ROWS - 1) // ROWS
                or step.row_block < 1 or step.row_block % ROWS):
            raise ValueError("pointwise chain: input %s, weight %s and output %s do not fit"
                             % (step.x.shape, step.packed.shape, step.out.shape))
        self._epilogue(s, step.bias, step.residual, step.out, step.activate, step.slope)
        s.x, s.weight, s.out = _data(step.x), _data(step.packed), _data(step.out)
        s.row_block = step.row_block
        s.col_block = step.col_block if 0 < step.col_block < s.positions else s.positions
        s.row_blocks = (s.out_channels + s.row_block - 1) // s.row_block
        s.col_blocks = (s.positions + s.col_block - 1) // s.col_block
        s.items = s.images * s.row_blocks * s.col_blocks
        self.arrays.append(step)
        s.pack = (PACK and s.positions >= PACK_POSITIONS and s.row_block >= PACK_PANELS * ROWS
                  and s.in_channels * VECTOR_BYTES * self.wide <= PACK_BYTES)
        if s.pack:
            return <size_t>s.in_channels * VECTOR_BYTES * self.wide
        return <size_t>s.in_channels * VECTOR_BYTES if s.positions % lanes else 0

    cdef size_t _depthwise(self, Step* s, DepthwiseStep step) except *:
        """Fill ``s`` from ``step``; returns the scratch bytes it needs."""
        cdef cnp.npy_intp* dims = _dims("pointwise chain", step.x, "input", 4, self.typenum,
                                       False)
        cdef cnp.npy_intp* taps = _dims("pointwise chain", step.weight, "weight", 4,
                                       self.typenum, False)
        cdef cnp.npy_intp* out = _dims("pointwise chain", step.out, "out", 4, self.typenum,
                                      True)
        cdef Shape* d = &s.dw
        s.kind = DEPTHWISE
        s.images = dims[0]
        d.images, d.channels, d.height, d.width = dims[0], dims[1], dims[2], dims[3]
        d.out_h, d.out_w = out[2], out[3]
        d.kernel = taps[2]
        d.stride_h, d.stride_w = step.stride
        d.pad_h, d.pad_w = step.padding
        d.multiplier = taps[0] // max(d.channels, 1)
        # the checks of depthwise.pyx's _shape: the loops size everything from these
        if (taps[1] != 1 or taps[2] != taps[3] or taps[2] not in (3, 5)
                or taps[0] != d.channels * d.multiplier or d.multiplier < 1
                or out[0] != d.images or out[1] != taps[0]
                or d.stride_h not in (1, 2) or d.stride_w not in (1, 2)
                or d.pad_h < 0 or d.pad_w < 0
                or (d.out_h - 1) * d.stride_h + d.kernel > d.height + 2 * d.pad_h
                or (d.out_w - 1) * d.stride_w + d.kernel > d.width + 2 * d.pad_w
                or d.out_h * d.stride_h + d.kernel <= d.height + 2 * d.pad_h
                or d.out_w * d.stride_w + d.kernel <= d.width + 2 * d.pad_w):
            raise ValueError("pointwise chain: not a depthwise 3x3/5x5 conv at stride 1 or 2: "
                             "input %s, weight %s, output %s, stride %s, padding %s"
                             % (step.x.shape, step.weight.shape, step.out.shape, step.stride,
                                step.padding))
        self._epilogue(s, step.bias, step.residual, step.out, step.activate, step.slope)
        s.x, s.weight, s.out = _data(step.x), _data(step.weight), _data(step.out)
        s.planes = d.images * d.channels * d.multiplier
        # the tap table's permutes and the row loops' shifts are single instructions;
        # 3x3 stride-1 convs of 4x4 and 8x8 maps take the flat loops' columns (their
        # planes held in registers), the tap tables' other small maps
        if self.wide > 1 and not self._rows(s) and not (
                self._in_registers(s) and self._flat(s)) and not self._small(s):
            self._flat(s)
        s.items = max(1, min(s.planes, s.planes * d.out_h * d.out_w // DEPTHWISE_PLANE_VALUES))
        self.arrays.append(step)
        if self.typenum == cnp.NPY_FLOAT32:
            return _whole_lines(sizeof(float) * _dw_scratch_float(d))
        return _whole_lines(sizeof(double) * _dw_scratch_double(d))

    cdef int _mean(self, Step* s, MeanStep step) except -1:
        """Fill ``s`` from ``step``."""
        cdef cnp.npy_intp* dims = _dims("pointwise chain", step.x, "input", 4, self.typenum,
                                       False)
        cdef cnp.npy_intp* out = _dims("pointwise chain", step.out, "out", 4, self.typenum,
                                      True)
        if (out[0] != dims[0] or out[1] != dims[1] or out[2] != 1 or out[3] != 1
                or dims[2] * dims[3] == 0):
            raise ValueError("pointwise chain: the mean of %s must be (N, C, 1, 1), got %s"
                             % (step.x.shape, step.out.shape))
        s.kind = MEAN
        s.images, s.positions = dims[0], dims[2] * dims[3]
        s.planes = dims[0] * dims[1]
        s.items = max(1, min(s.planes, s.planes * s.positions // DEPTHWISE_PLANE_VALUES))
        s.x, s.out = _data(step.x), _data(step.out)
        self.arrays.append(step)
        return 0

    cdef void _fuse(self, Step* s, Step* after) noexcept:
        """Run the depthwise step ``after`` in the items of the pointwise step ``s`` where
        it reads ``s``'s output alone, one plane per output channel, and ``s``'s items
        are whole maps (``fastdl_pw_step.then``)."""
        if (s.kind == POINTWISE and after.kind == DEPTHWISE and after.x == s.out
                and after.residual != s.out and after.dw.multiplier == 1
                and s.col_blocks == 1):
            s.then = after
            after.fused = 1

    cdef bint _rows(self, Step* s) noexcept:
        """Run the depthwise step ``s`` by the row loops where they apply (3x3, padding 1;
        at stride 1 the output the input's size, rows of one to ROW_VECTORS whole vectors,
        ahead of the flat loops: one thread, 192 planes of 16x16, 19.5 against 30.5 us;
        at stride 2 output rows of one whole vector, half the input's: one thread, 144
        planes of 32x32, 17 against 29-33 us in the depthwise loops); whether it does.
        ``s.rows``: the vectors of an output row."""
        cdef Shape* d = &s.dw
        cdef Py_ssize_t lanes = VECTOR_BYTES // self._itemsize()
        if not (PERMUTES and d.kernel == 3 and d.stride_h == d.stride_w
                and d.pad_h == d.pad_w == 1 and d.out_w % lanes == 0):
            return False
        if d.stride_h == 1 and (d.out_h != d.height or d.out_w != d.width
                                or d.width // lanes > ROW_VECTORS):
            return False
        if d.stride_h == 2 and (d.width != 2 * d.out_w or d.out_h != (d.height + 1) // 2
                                or d.out_w != lanes):
            return False
        s.rows = <int>(d.out_w // lanes)
        return True

    cdef bint _in_registers(self, Step* s) noexcept:
        """Whether the flat loops of the depthwise step ``s`` hold its planes in registers
        (3x3, stride 1, padding 1, a 4x4 or 8x8 map: fastdl_pointwise_body.h; one
        thread, 960 planes of 4x4 with the tap tables: 21 us, 384 of 8x8 in the flat
        loops: 18 us)."""
        cdef Shape* d = &s.dw
        return (PERMUTES and d.kernel == 3 and d.stride_h == d.stride_w == 1
                and d.pad_h == d.pad_w == 1 and d.height == d.width == d.out_h == d.out_w
                and d.height in (4, 8))

    cdef bint _flat(self, Step* s) except -1:
        """Give the depthwise step ``s`` its output columns where it runs the flat loops
        (stride 1, the output the input's size, a plane of at most FLAT_VALUES values in
        rows of at most FLAT_WIDTH); whether it does."""
        cdef Shape* d = &s.dw
        cdef Py_ssize_t lanes = VECTOR_BYTES // self._itemsize()
        cdef Py_ssize_t padded = (d.out_h * d.out_w + lanes - 1) // lanes * lanes
        cdef void* columns
        if not (d.stride_h == d.stride_w == 1 and d.pad_h == d.pad_w == (d.kernel - 1) // 2
                and d.out_h == d.height and d.out_w == d.width
                and d.height * d.width <= FLAT_VALUES and d.width <= FLAT_WIDTH):
            return False
        columns = _aligned(padded * d.kernel * self._itemsize())
        if columns == NULL:
            raise MemoryError()
        if self.typenum == cnp.NPY_FLOAT32:
            _flat_columns_float(d, <int*>columns)
        else:
            _flat_columns_double(d, <long long*>columns)
        s.columns = columns
        return True

    cdef bint _small(self, Step* s) except -1:
        """Give the depthwise step ``s`` a tap table where its maps are small enough;
        whether it has one."""
        cdef Taps* taps = _new_taps()
        cdef int built
        if taps == NULL:
            raise MemoryError()
        if self.typenum == cnp.NPY_FLOAT32:
            built = _build_taps_float(&s.dw, taps)
        else:
            built = _build_taps_double(&s.dw, taps)
        if built:
            s.taps = taps
        else:
            free(taps)
        return built

    cdef int _epilogue(self, Step* s, bias, residual, out, bint activate,
                       double slope) except -1:
        if bias is not None:
            _dims("pointwise chain", bias.reshape(1, 1, 1, -1), "bias", 4, self.typenum, False)
            if bias.shape[0] != out.shape[1]:
                raise ValueError("pointwise chain: bias must have %d values, got %d"
                                 % (out.shape[1], bias.shape[0]))
            s.bias = _data(bias)
        if residual is not None:
            _dims("pointwise chain", residual, "residual", 4, self.typenum, False)
            if residual.shape != out.shape:
                raise ValueError("pointwise chain: residual must be %s, got %s"
                                 % (out.shape, residual.shape))
            s.residual = _data(residual)
        s.activate, s.slope = activate, slope
        return 0

    @property
    def tables(self):
        """How many depthwise steps run the small-map loops (a tap table each)."""
        return sum(self.steps[k].taps != NULL for k in range(self.count))

    @property
    def fused(self):
        """How many depthwise steps run in the items of the pointwise step before."""
        return sum(self.steps[k].fused for k in range(self.count))

    @property
    def rows(self):
        """How many depthwise steps run the row loops (3x3, whole-vector output rows)."""
        return sum(self.steps[k].rows != 0 for k in range(self.count))

    @property
    def flat(self):
        """How many depthwise steps run the flat loops (stride 1, same size)."""
        return sum(self.steps[k].columns != NULL for k in range(self.count))

    def run(self, x):
        """Run the steps on ``x`` in place of the first input."""
        cdef int k, thread
        cdef Py_ssize_t images
        cdef Step* s
        if self.running:   # checked and set under the GIL
            raise RuntimeError("pointwise chain: already running in another thread; a "
                               "chain serves one caller at a time")
        _dims("pointwise chain", x, "input", 4, self.typenum, False)
        if x.shape != self.first.shape:
            raise ValueError("pointwise chain: expected input %s, got %s"
                             % (self.first.shape, x.shape))
        self.running = True
        try:
            for k, role in self.reads_first:
                if role == 0:
                    self.steps[k].x = _data(x)
                else:
                    self.steps[k].residual = _data(x)
            for k in range(self.count):
                self.steps[k].done = self.steps[k].sleepers = 0
            memset(self.taken, 0, sizeof(int) * self.count * self.threads)
            self.next_image = self.images_done = self.image_sleepers = 0
            images = self.images if self.by_images and self.split > 0 else 0
            with nogil:
                if self.threads == 1:
                    _run_steps(self.steps, self.count, 0, 1, self.scratch, self.wide,
                               self.typenum == cnp.NPY_FLOAT32, images, self.split,
                               &self.next_image, &self.images_done, &self.image_sleepers)
                else:
                    with parallel(num_threads=self.threads):
                        thread = threadid()
                        _run_steps(self.steps, self.count, thread, self.threads,
                                   self.scratch + thread * self.per_thread, self.wide,
                                   self.typenum == cnp.NPY_FLOAT32, images, self.split,
                                   &self.next_image, &self.images_done,
                                   &self.image_sleepers)
        finally:
            self.running = False
