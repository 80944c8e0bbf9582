# cython: language_level=3
"""Direct convolution for few output channels (stride 1, dilation 1, one group).

With few output channels (LeNet's 6 and 16, ResNet's 16 and 32) im2col + GEMM
spends its time unfolding and packing, not multiplying: the GEMM's M is 6 to 32,
and Winograd's 16 GEMMs are as thin. Here each padded image is kept in cache
and the output is computed on a *wide grid*: with
the padded row length ``Wp``, output position ``q = oy * Wp + ox`` of tap
``(c, i, j)`` reads ``padded[c, oy + i, ox + j] = padded_flat[q + offset(c, i,
j)]``, one linear offset per tap. A block of consecutive ``q`` times output
channels (24 x 4, 16 x 6 or 24 x 3: ``BLOCK_SHAPES``) lives in registers over all
taps; grid columns ``ox >= OW`` are computed and dropped (``(kW - 1) / Wp`` extra
work).

Weights come packed as ``(co_blocks, taps, co_block)``, zero beyond C_out. The
weight gradient runs on the same grids: per block of 4 channels and 3 taps, one
pass of 8-lane FMAs over the image's grid into per-lane partial sums.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memset
from openmp cimport omp_get_num_threads

cimport numpy as cnp
import numpy as np

cnp.import_array()

from fastdl_ext._activation cimport epilogue_rows
from fastdl_ext._blas cimport floating

cdef extern from *:
    """
    /* One register block: acc[b][v] = sum_t weights[t][b] * source[offsets[t] + v],
       compiled for x86-64-v3 and the baseline (FASTDL_CLONES, _activation.pxd). */
    /* The register block is CO output channels x VECTORS 8-lane vectors of positions:
       twelve accumulators, or nine for three channels (3 x 4 left one accumulator on
       the stack, a store-to-load chain through every tap); at least eight chains
       keep two FMA pipes busy through their latency. The shapes divide common
       channel counts without padding (4: 16, 32; 6: LeNet's 6; 3: the input
       gradient of RGB convs). */
    #define FASTDL_MAX_LANES 24
    /* Explicit vectors of 8 lanes (GCC/Clang vector extensions; lowered to what the
       target has): left to itself the vectoriser splats the sources instead. Loads and
       stores go through an unaligned, aliasing vector type rather than memcpy into
       the arrays: an array whose address is taken stays on the stack (measured 3.5x
       slower), one only indexed by unrolled constants lives in registers. */
    #define FASTDL_DIRECT_BLOCK(name, type, CO, VECTORS)                                \
        typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
        typedef type name##_unaligned __attribute__((vector_size(8 * sizeof(type)),     \
                                                     aligned(sizeof(type)), may_alias)); \
        FASTDL_CLONES static void name(const type *restrict source,                    \
                                       const Py_ssize_t *restrict offsets, int taps,   \
                                       const type *restrict weights,                   \
                                       type *restrict wide, Py_ssize_t wide_stride,    \
                                       Py_ssize_t blocks) {                            \
            /* all of a channel block's position blocks in one call: a call per block   \
               cost as much as 27 taps of work */                                       \
            for (Py_ssize_t q = 0; q < blocks * 8 * VECTORS; q += 8 * VECTORS) {        \
                const type *restrict at = source + q;                                   \
                name##_vector acc[CO][VECTORS];                                         \
                for (int b = 0; b < CO; b++)                                            \
                    for (int v = 0; v < VECTORS; v++)                                   \
                        acc[b][v] = (name##_vector){0};                                 \
                for (int t = 0; t < taps; t++) {                                        \
                    name##_vector x[VECTORS];                                           \
                    for (int v = 0; v < VECTORS; v++)                                   \
                        x[v] = *(const name##_unaligned *)(at + offsets[t] + 8 * v);    \
                    const type *restrict w = weights + (Py_ssize_t)t * CO;              \
                    for (int b = 0; b < CO; b++)                                        \
                        for (int v = 0; v < VECTORS; v++)                               \
                            acc[b][v] += w[b] * x[v];                                   \
                }                                                                       \
                for (int b = 0; b < CO; b++)                                            \
                    for (int v = 0; v < VECTORS; v++)                                   \
                        *(name##_unaligned *)(wide + b * wide_stride + q + 8 * v) =     \
                            acc[b][v];                                                  \
            }                                                                           \
        }
    FASTDL_DIRECT_BLOCK(fastdl_direct_block4_float, float, 4, 3)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block4_double, double, 4, 3)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block6_float, float, 6, 2)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block6_double, double, 6, 2)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block3_float, float, 3, 3)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block3_double, double, 3, 3)
    /* The block shape by its channel count (4, 6 or 3). */
    #define FASTDL_DIRECT_BLOCKS(type)                                                  \
        static void fastdl_direct_blocks_##type(int co_block, const type *source,       \
                                                const Py_ssize_t *offsets, int taps,    \
                                                const type *weights, type *wide,        \
                                                Py_ssize_t wide_stride,                 \
                                                Py_ssize_t blocks) {                    \
            if (co_block == 4)                                                          \
                fastdl_direct_block4_##type(source, offsets, taps, weights, wide,       \
                                            wide_stride, blocks);                       \
            else if (co_block == 6)                                                     \
                fastdl_direct_block6_##type(source, offsets, taps, weights, wide,       \
                                            wide_stride, blocks);                       \
            else                                                                        \
                fastdl_direct_block3_##type(source, offsets, taps, weights, wide,       \
                                            wide_stride, blocks);                       \
        }
    FASTDL_DIRECT_BLOCKS(float)
    FASTDL_DIRECT_BLOCKS(double)

    /* Weight gradient of one channel block and GRAD_TAPS taps over a whole wide grid:
       sums[g][b][k] += lanes of sum_q grad[b][q] * source[offsets[3g + k] + q], q < length (a
       multiple of 8; grid columns past the output width hold zero gradient). Twelve
       accumulators, as in the forward block; the three taps are unrolled by hand
       (kept in arrays, GCC spilled them: 3x slower). The sums stay 8-lane vectors,
       added to memory: horizontal sums per pass (a serial chain of 8 adds each)
       cost more than the pass on LeNet-sized grids; the caller reduces the lanes once. */
    #define FASTDL_GRAD_TAPS 3
    #define FASTDL_GRAD_CO_BLOCK 4
    #define FASTDL_GRAD_BLOCK(name, type)                                               \
        typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
        FASTDL_CLONES static void name(const type *restrict grad, Py_ssize_t grad_stride, \
                                       const type *restrict source,                     \
                                       const Py_ssize_t *restrict offsets, int groups,  \
                                       Py_ssize_t length, type *restrict sums) {        \
            /* all tap groups of a channel block in one call: on LeNet's 144-position   \
               grids a call per group cost a sixth of the step's weight gradient */      \
            for (int group = 0; group < groups; group++) {                              \
                name##_vector acc[FASTDL_GRAD_CO_BLOCK][FASTDL_GRAD_TAPS];              \
                for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++)                          \
                    for (int k = 0; k < FASTDL_GRAD_TAPS; k++)                          \
                        acc[b][k] = (name##_vector){0};                                 \
                const Py_ssize_t *restrict at_taps = offsets + FASTDL_GRAD_TAPS * group; \
                const type *restrict first = source + at_taps[0];                       \
                const type *restrict second = source + at_taps[1];                      \
                const type *restrict third = source + at_taps[2];                       \
                for (Py_ssize_t q = 0; q < length; q += 8) {                            \
                    name##_vector x0, x1, x2, g;                                        \
                    __builtin_memcpy(&x0, first + q, sizeof x0);                        \
                    __builtin_memcpy(&x1, second + q, sizeof x1);                       \
                    __builtin_memcpy(&x2, third + q, sizeof x2);                        \
                    for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++) {                    \
                        __builtin_memcpy(&g, grad + b * grad_stride + q, sizeof g);     \
                        acc[b][0] += g * x0;                                            \
                        acc[b][1] += g * x1;                                            \
                        acc[b][2] += g * x2;                                            \
                    }                                                                   \
                }                                                                       \
                type *restrict group_sums =                                             \
                    sums + (Py_ssize_t)group * FASTDL_GRAD_CO_BLOCK * FASTDL_GRAD_TAPS * 8; \
                for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++)                          \
                    for (int k = 0; k < FASTDL_GRAD_TAPS; k++) {                        \
                        name##_vector total;                                            \
                        type *restrict at = group_sums + (FASTDL_GRAD_TAPS * b + k) * 8; \
                        __builtin_memcpy(&total, at, sizeof total);                     \
                        total += acc[b][k];                                             \
                        __builtin_memcpy(at, &total, sizeof total);                     \
                    }                                                                   \
            }                                                                           \
        }
    FASTDL_GRAD_BLOCK(fastdl_direct_grad_float, float)
    FASTDL_GRAD_BLOCK(fastdl_direct_grad_double, double)

    /* Work sharing and a barrier for a chain of convs in one parallel region. OpenMP's
       own barrier sleeps at once under the passive wait policy the package sets (so
       that idle workers never steal cores); here the team spins for a while first, as
       a chain's threads arrive within microseconds of each other, and then yields. */
    #include <sched.h>
    #define FASTDL_BARRIER_SPINS 4000
    typedef struct { int arrived; int generation; } fastdl_barrier;
    static inline int fastdl_next_items(int *counter, int count) {
        return __atomic_fetch_add(counter, count, __ATOMIC_RELAXED);
    }
    static void fastdl_barrier_wait(fastdl_barrier *barrier, int team) {
        int generation = __atomic_load_n(&barrier->generation, __ATOMIC_ACQUIRE);
        if (__atomic_add_fetch(&barrier->arrived, 1, __ATOMIC_ACQ_REL) == team) {
            __atomic_store_n(&barrier->arrived, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&barrier->generation, generation + 1, __ATOMIC_RELEASE);
            return;
        }
        for (long spins = 0;
             __atomic_load_n(&barrier->generation, __ATOMIC_ACQUIRE) == generation; spins++) {
            if (spins < FASTDL_BARRIER_SPINS) {
    #if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
    #endif
            } else {
                sched_yield();
            }
        }
    }
    """
    enum:
        MAX_LANES "FASTDL_MAX_LANES"  # output positions of the widest register block
    void _blocks_float "fastdl_direct_blocks_float"(
        int co_block, const float* source, const Py_ssize_t* offsets, int taps,
        const float* weights, float* wide, Py_ssize_t wide_stride,
        Py_ssize_t blocks) noexcept nogil
    void _blocks_double "fastdl_direct_blocks_double"(
        int co_block, const double* source, const Py_ssize_t* offsets, int taps,
        const double* weights, double* wide, Py_ssize_t wide_stride,
        Py_ssize_t blocks) noexcept nogil

    ctypedef struct Barrier "fastdl_barrier":
        int arrived
        int generation
    int _next_items "fastdl_next_items"(int* counter, int count) noexcept nogil
    void _barrier_wait "fastdl_barrier_wait"(Barrier* barrier, int team) noexcept nogil

    enum:
        GRAD_TAPS "FASTDL_GRAD_TAPS"  # taps per weight-gradient pass
        CO_BLOCK "FASTDL_GRAD_CO_BLOCK"  # output channels per weight-gradient pass
    void _grad_float "fastdl_direct_grad_float"(
        const float* grad, Py_ssize_t grad_stride, const float* source,
        const Py_ssize_t* offsets, int groups, Py_ssize_t length, float* sums) noexcept nogil
    void _grad_double "fastdl_direct_grad_double"(
        const double* grad, Py_ssize_t grad_stride, const double* source,
        const Py_ssize_t* offsets, int groups, Py_ssize_t length,
        double* sums) noexcept nogil


BLOCK_SHAPES = ((4, 24), (6, 16), (3, 24))   # (output channels, positions) per block


def kernel_shapes():
    """The compiled kernels' shapes: ``(BLOCK_SHAPES, MAX_LANES, CO_BLOCK, GRAD_TAPS)``.

    ``BLOCK_SHAPES`` lists the forward's register blocks as (output channels,
    positions); ``CO_BLOCK`` x ``GRAD_TAPS`` is the weight gradient's block.
    """
    return BLOCK_SHAPES, MAX_LANES, CO_BLOCK, GRAD_TAPS


cdef inline void _blocks(int co_block, const floating* source, const Py_ssize_t* offsets,
                         int taps, const floating* weights, floating* wide,
                         Py_ssize_t wide_stride, Py_ssize_t blocks) noexcept nogil:
    """wide[b, q + v] = sum_t weights[t, b] * source[offsets[t] + q + v] for ``blocks``
    register blocks of ``co_block`` channels (one of BLOCK_SHAPES)."""
    if floating is float:
        _blocks_float(co_block, source, offsets, taps, weights, wide, wide_stride, blocks)
    else:
        _blocks_double(co_block, source, offsets, taps, weights, wide, wide_stride, blocks)


cdef struct Phases:
    # The padded image as stride_h x stride_w phase planes, each (channels, rows, cols):
    # plane (a, b) holds padded[c, y * stride_h + a, x * stride_w + b] at [c, y, x]. At
    # stride 1 that is the padded image itself.
    int channels, height, width, pad_h, pad_w, stride_h, stride_w, kernel_h, kernel_w
    int rows, cols


cdef Phases _phases(int channels, int height, int width, int pad_h, int pad_w, int stride_h,
                    int stride_w, int kernel_h, int kernel_w) noexcept nogil:
    cdef Phases p
    p.channels, p.height, p.width, p.pad_h, p.pad_w = channels, height, width, pad_h, pad_w
    p.stride_h, p.stride_w, p.kernel_h, p.kernel_w = stride_h, stride_w, kernel_h, kernel_w
    p.rows = (height + 2 * pad_h + stride_h - 1) // stride_h
    p.cols = (width + 2 * pad_w + stride_w - 1) // stride_w
    return p


cdef inline Py_ssize_t _phases_size(Phases p) noexcept nogil:
    return <Py_ssize_t>p.stride_h * p.stride_w * p.channels * p.rows * p.cols


cdef inline int _inside(int pad, int extent, int phase, int stride) noexcept nogil:
    """First index ``y`` of a phase plane with ``y * stride + phase - pad >= 0``, or
    with ``extent`` in place of 0 (so the image occupies [first, end))."""
    return (pad + extent - phase + stride - 1) // stride


cdef void _pad_image(const floating* image, Phases p, floating* padded) noexcept nogil:
    """Copy one (C, H, W) image into the interior of its phase planes.

    The border and the slack after the planes are the caller's: zeroed once per
    buffer, they stay zero (writing them per image took thousands of tiny memsets
    per call, a tenth of a batch-1 ResNet's time)."""
    cdef int a, b, c, y, x, top, bottom, left, right
    cdef floating* target
    cdef const floating* source
    # a stride beyond the kernel leaves phases no tap reads (a 1x1 stride-2 conv reads
    # one of four): those stay zero
    for a in range(min(p.stride_h, p.kernel_h)):
        top = _inside(p.pad_h, 0, a, p.stride_h)
        bottom = max(top, min(p.rows, _inside(p.pad_h, p.height, a, p.stride_h)))
        for b in range(min(p.stride_w, p.kernel_w)):
            left = _inside(p.pad_w, 0, b, p.stride_w)
            right = max(left, min(p.cols, _inside(p.pad_w, p.width, b, p.stride_w)))
            if bottom == top or right == left:
                continue
            for c in range(p.channels):
                target = padded + (((<Py_ssize_t>a * p.stride_w + b) * p.channels + c)
                                   * p.rows + top) * p.cols + left
                source = image + (<Py_ssize_t>c * p.height + top * p.stride_h + a - p.pad_h) \
                    * p.width + left * p.stride_w + b - p.pad_w
                if p.stride_w == 1:   # rows are contiguous runs: one vectorised copy
                    epilogue_rows(target, p.cols, source, <Py_ssize_t>p.stride_h * p.width,
                                  NULL, 0, bottom - top, right - left, NULL, False, 0)
                    continue
                for y in range(bottom - top):
                    for x in range(right - left):
                        target[x] = source[x * p.stride_w]
                    target = target + p.cols
                    source = source + <Py_ssize_t>p.stride_h * p.width


cdef void* _scratch(int threads, size_t per_thread, bint zeroed=True) except NULL:
    """Scratch for every thread (zeroed unless told), taken before the parallel region
    so that a failed allocation raises instead of leaving a thread with NULL."""
    cdef size_t size = <size_t>max(threads, 1) * per_thread
    cdef void* scratch = calloc(size, 1) if zeroed else malloc(size)
    if scratch == NULL:
        raise MemoryError()
    return scratch


cdef Py_ssize_t* _tap_offsets(Phases p, int kernel_h, int kernel_w, int extra=0) except NULL:
    """Flat offset of tap (c, i, j) in the phase planes (plane (i % stride_h, j %
    stride_w), row i // stride_h, column j // stride_w of channel c), and ``extra``
    slots after them for the caller to fill; the caller frees it."""
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(
        sizeof(Py_ssize_t) * (p.channels * kernel_h * kernel_w + extra))
    cdef int c, i, j, phase
    if offsets == NULL:
        raise MemoryError()
    for c in range(p.channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                phase = (i % p.stride_h) * p.stride_w + j % p.stride_w
                offsets[(c * kernel_h + i) * kernel_w + j] = (
                    (<Py_ssize_t>phase * p.channels + c) * p.rows + i // p.stride_h) \
                    * p.cols + j // p.stride_w
    return offsets


cdef int _check_output(str what, int height, int width, int out_h, int out_w, int kernel_h,
                       int kernel_w, tuple padding, tuple stride) except -1:
    """Refuse an output plane other than the conv's: the grid's reads stay inside the
    phase planes only for the conv's own output size."""
    if (out_h != (height + 2 * <int>padding[0] - kernel_h) // <int>stride[0] + 1
            or out_w != (width + 2 * <int>padding[1] - kernel_w) // <int>stride[1] + 1):
        raise ValueError("%s has %d x %d positions, not the conv's output" % (what, out_h,
                                                                            out_w))
    return 0


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
    int kernel_h, kernel_w, taps, co_blocks, co_block, lanes
    int n_images, out_channels, out_h, out_w
    int bands, per_image, chunk, total, next_item
    Py_ssize_t padded_size, wide_stride, image_in, plane
    const void* x
    const void* packed
    const void* bias
    const void* residual
    void* out
    Py_ssize_t* offsets
    bint activate
    double slope


cdef cnp.npy_intp* _dims(object array, str name, int ndim, int typenum,
                        bint writable) except NULL:
    """The shape of ``array``, once it is checked to be a C-contiguous ndarray of
    ``ndim`` dimensions and the chain's dtype (and writable). Read through NumPy's C
    API: typed memoryviews cost an object per array per call, and at batch 1 the
    garbage collector they set off took 3 % of a ResNet's time."""
    if not (cnp.PyArray_Check(array) and cnp.PyArray_NDIM(<cnp.ndarray>array) == ndim
            and cnp.PyArray_TYPE(<cnp.ndarray>array) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)
            and (not writable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>array))):
        raise ValueError("direct_forward_into: %s must be a C-contiguous%s %d-D %s array, "
                         "got %r" % (name, " writable" if writable else "", ndim,
                                     np.dtype(np.float32 if typenum == cnp.NPY_FLOAT32
                                              else np.float64),
                                     getattr(array, "shape", type(array))))
    return cnp.PyArray_DIMS(<cnp.ndarray>array)


cdef void* _data(object array) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef int _fill_layer(Layer* layer, tuple spec, int num_threads, int typenum) except -1:
    """Check one chain entry ``(x, packed, out, kernel_h, kernel_w, padding, stride, bias,
    residual, activate, slope)`` and lay it out in ``layer`` (its offsets malloc'ed)."""
    cdef object bias = spec[7], residual = spec[8]
    cdef cnp.npy_intp* x = _dims(spec[0], "x", 4, typenum, False)
    cdef cnp.npy_intp* packed = _dims(spec[1], "packed", 3, typenum, False)
    cdef cnp.npy_intp* out = _dims(spec[2], "out", 4, typenum, True)
    cdef cnp.npy_intp* shape
    cdef int kernel_h = spec[3], kernel_w = spec[4]
    cdef tuple padding = spec[5], stride = spec[6]
    cdef int b, lanes = 0
    cdef Py_ssize_t grid
    cdef Phases phases = _phases(x[1], x[2], x[3], padding[0], padding[1], stride[0],
                                 stride[1], kernel_h, kernel_w)
    for b, lanes in BLOCK_SHAPES:
        if b == packed[2]:
            break
    else:
        raise ValueError("direct_forward_into: packed weights have blocks of %d channels, "
                         "expected one of %s" % (packed[2], BLOCK_SHAPES))
    layer.taps = x[1] * kernel_h * kernel_w
    layer.out_channels = out[1]
    if packed[1] != layer.taps or packed[0] * packed[2] < out[1]:
        raise ValueError("direct_forward_into: packed weights of shape %s do not cover %d "
                         "channels x %d taps" % ((packed[0], packed[1], packed[2]), out[1],
                                                 layer.taps))
    _check_output("direct_forward_into: out", x[2], x[3], out[2], out[3], kernel_h, kernel_w,
                  padding, stride)
    layer.bias = layer.residual = NULL
    if bias is not None:
        shape = _dims(bias, "bias", 1, typenum, False)
        if shape[0] not in (0, out[1]):
            raise ValueError("direct_forward_into: bias has %d values for %d channels"
                             % (shape[0], out[1]))
        layer.bias = _data(bias) if shape[0] else NULL
    if residual is not None:
        shape = _dims(residual, "residual", 4, typenum, False)
        if shape[0] != out[0] or shape[1] != out[1] or shape[2] != out[2] or shape[3] != out[3]:
            raise ValueError("direct_forward_into: residual must match the conv's output")
        layer.residual = _data(residual)
    if out[0] != x[0]:
        raise ValueError("direct_forward_into: out has %d images, x %d: out must match the "
                         "conv's output" % (out[0], x[0]))
    layer.phases = phases
    layer.kernel_h, layer.kernel_w = kernel_h, kernel_w
    layer.co_blocks, layer.co_block, layer.lanes = packed[0], packed[2], lanes
    layer.n_images, layer.out_h, layer.out_w = x[0], out[2], out[3]
    # the wide grid rounded up to whole blocks; reads of the last block run past the
    # phase planes by up to MAX_LANES + kW elements, into zeroed slack
    grid = <Py_ssize_t>layer.out_h * phases.cols
    layer.wide_stride = (grid + lanes - 1) // lanes * lanes
    layer.padded_size = _phases_size(phases) + MAX_LANES + kernel_w
    layer.image_in = <Py_ssize_t>x[1] * x[2] * x[3]
    layer.plane = <Py_ssize_t>layer.out_h * layer.out_w
    layer.bands = _bands(layer.n_images, layer.co_blocks, layer.out_h, num_threads)
    layer.per_image = layer.bands * layer.co_blocks
    # a small batch is shared item by item: the thread that starts first takes more
    # while the others wake (~20 µs here); a large one image by image, so that each
    # image is padded once
    layer.chunk = 1 if layer.n_images < num_threads else layer.per_image
    layer.total = layer.n_images * layer.per_image if layer.plane else 0
    layer.next_item = 0
    layer.x, layer.packed, layer.out = _data(spec[0]), _data(spec[1]), _data(spec[2])
    layer.activate, layer.slope = spec[9], spec[10]
    layer.offsets = _tap_offsets(phases, kernel_h, kernel_w)
    return 0


cdef void _layer_items(Layer* layer, floating* padded, floating* wide) noexcept nogil:
    """Take work items of ``layer`` until none are left: out = act(conv(x) + bias +
    residual) over one channel block and row band of one image per item."""
    cdef const floating* x = <const floating*>layer.x
    cdef const floating* packed = <const floating*>layer.packed
    cdef const floating* bias = <const floating*>layer.bias
    cdef const floating* residual = <const floating*>layer.residual
    cdef floating* out = <floating*>layer.out
    cdef int lanes = layer.lanes, cols = layer.phases.cols, out_w = layer.out_w
    cdef int cached = -1
    cdef int item, last, image, band, block, b, co, first_row, end_row
    cdef Py_ssize_t first, end, at
    while True:
        item = _next_items(&layer.next_item, layer.chunk)
        if item >= layer.total:
            return
        last = min(item + layer.chunk, layer.total)
        while item < last:
            image = item // layer.per_image
            if image != cached:
                if cached == -1:   # the border and slack, once per layer
                    memset(padded, 0, sizeof(floating) * layer.padded_size)
                _pad_image(x + image * layer.image_in, layer.phases, padded)
                cached = image
            band = item % layer.per_image // layer.co_blocks
            block = item % layer.co_blocks
            # the band's output rows, and the whole register blocks that cover them
            first_row = band * layer.out_h // layer.bands
            end_row = (band + 1) * layer.out_h // layer.bands
            first = <Py_ssize_t>first_row * cols // lanes * lanes
            end = min(layer.wide_stride, (<Py_ssize_t>end_row * cols + lanes - 1) // lanes * lanes)
            _blocks(layer.co_block, padded + first, layer.offsets, layer.taps,
                    packed + <Py_ssize_t>block * layer.taps * layer.co_block, wide + first,
                    layer.wide_stride, (end - first) // lanes)
            for b in range(min(layer.co_block, layer.out_channels - block * layer.co_block)):
                co = block * layer.co_block + b
                at = (<Py_ssize_t>image * layer.out_channels + co) * layer.plane \
                    + <Py_ssize_t>first_row * out_w
                epilogue_rows(out + at, out_w,
                              wide + b * layer.wide_stride + <Py_ssize_t>first_row * cols, cols,
                              residual + at if residual != NULL else NULL, out_w,
                              end_row - first_row, out_w, bias + co if bias != NULL else NULL,
                              layer.activate, <floating>layer.slope)
            item = item + 1


cdef void _run_layers(Layer* layers, int count, int num_threads, char* scratch,
                      size_t per_thread, floating* kind) noexcept nogil:
    """Run the layers in order in one parallel region, the team meeting at a spinning
    barrier between them (``kind`` only selects the dtype)."""
    cdef Barrier barrier
    cdef int thread, team, k
    cdef floating* padded
    barrier.arrived = 0
    barrier.generation = 0
    with parallel(num_threads=num_threads):
        thread = threadid()
        team = omp_get_num_threads()
        padded = <floating*>(scratch + thread * per_thread)
        for k in range(count):
            _layer_items(&layers[k], padded, padded + layers[k].padded_size)
            if k + 1 < count and team > 1:
                _barrier_wait(&barrier, team)


def direct_chain_into(list specs, int num_threads):
    """Run direct convs one after another in one parallel region.

    Each spec is ``(x, packed, out, kernel_h, kernel_w, padding, stride, bias, residual,
    activate, slope)`` as ``direct_forward_into`` takes them; a later conv may read
    an earlier one's ``out`` (as ``x`` or ``residual``). Waking the team once instead
    of once per conv matters at batch 1, where a conv takes tens of microseconds.
    """
    cdef int count = len(specs), k
    cdef Layer* layers
    cdef size_t per_thread = 0
    cdef char* scratch
    cdef object first
    cdef bint single
    cdef int typenum
    if count == 0:
        return
    first = specs[0][0]
    if not (cnp.PyArray_Check(first) and cnp.PyArray_TYPE(<cnp.ndarray>first) in (
            cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        raise TypeError("direct_forward_into: x must be a float32 or float64 ndarray, got %r"
                        % (getattr(first, "dtype", type(first)),))
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>first)
    single = typenum == cnp.NPY_FLOAT32
    layers = <Layer*>calloc(count, sizeof(Layer))
    if layers == NULL:
        raise MemoryError()
    try:
        for k in range(count):
            _fill_layer(&layers[k], specs[k], num_threads, typenum)
            per_thread = max(per_thread, (layers[k].padded_size + <Py_ssize_t>layers[k].co_block
                                          * layers[k].wide_stride)
                             * (sizeof(float) if single else sizeof(double)))
        scratch = <char*>_scratch(num_threads, per_thread, False)
        with nogil:
            if single:
                _run_layers(layers, count, num_threads, scratch, per_thread, <float*>NULL)
            else:
                _run_layers(layers, count, num_threads, scratch, per_thread, <double*>NULL)
        free(scratch)
    finally:
        for k in range(count):
            free(layers[k].offsets)
        free(layers)


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
                        activate, slope)], num_threads)


cdef inline void _grad_taps(const floating* grad, Py_ssize_t grad_stride,
                            const floating* source, const Py_ssize_t* offsets, int groups,
                            Py_ssize_t length, floating* sums) noexcept nogil:
    """sums[g, b * GRAD_TAPS + k, :8] += lanes of grad[b] · source[offsets[g * GRAD_TAPS +
    k]:] over ``length``, for ``groups`` groups of taps."""
    if floating is float:
        _grad_float(grad, grad_stride, source, offsets, groups, length, sums)
    else:
        _grad_double(grad, grad_stride, source, offsets, groups, length, sums)


def direct_grad_weight_into(floating[:, :, :, ::1] x, floating[:, :, :, ::1] grad_out,
                            floating[:, :, :, ::1] partial, int kernel_h, int kernel_w,
                            tuple padding, tuple stride, int num_threads,
                            bint with_bias=False):
    """Per-thread, per-lane weight gradients of a one-group conv (wide grid; a stride
    reads phase planes, as the forward).

    ``partial`` (threads, co_blocks, tap_groups, CO_BLOCK * GRAD_TAPS * 8), zero on
    entry, with ``tap_groups = ceil((C_in * kH * kW + with_bias) / GRAD_TAPS)``:
    thread ``t`` adds the images it takes to ``partial[t, block, group, (b *
    GRAD_TAPS + k) * 8 + lane]``, the gradient of channel ``block * CO_BLOCK + b``
    and tap ``group * GRAD_TAPS + k`` split over 8 lanes; the caller sums threads and
    lanes and drops the padding. ``with_bias`` adds a last tap that reads ones: its
    gradient is the bias gradient, at no cost where it fills a group's spare slot.
    """
    cdef int n_images = x.shape[0], channels = x.shape[1]
    cdef int height = x.shape[2], width = x.shape[3]
    cdef int out_channels = grad_out.shape[1], out_h = grad_out.shape[2]
    cdef int out_w = grad_out.shape[3]
    cdef Phases phases = _phases(channels, height, width, padding[0], padding[1], stride[0],
                                 stride[1], kernel_h, kernel_w)
    cdef int padded_w = phases.cols
    cdef int taps = channels * kernel_h * kernel_w
    cdef int all_taps = taps + with_bias
    cdef int co_blocks = partial.shape[1], tap_groups = partial.shape[2]
    cdef Py_ssize_t length = (<Py_ssize_t>out_h * padded_w + 7) // 8 * 8
    cdef Py_ssize_t slack = 8 + kernel_w
    cdef Py_ssize_t padded_size = _phases_size(phases) + slack
    cdef Py_ssize_t image_in = <Py_ssize_t>channels * height * width
    # per thread: the padded image, grad_out of one image on the wide grid (grid
    # columns past the output width and channels beyond C_out stay zero), and the
    # bias tap's row of ones
    cdef Py_ssize_t wide_size = co_blocks * CO_BLOCK * length
    cdef size_t per_thread = sizeof(floating) * (padded_size + wide_size + length)
    cdef Py_ssize_t* offsets
    cdef floating* padded
    cdef floating* wide
    cdef Py_ssize_t q
    cdef int image, block, co, k, thread
    cdef char* scratch
    _check_output("direct_grad_weight_into: grad_out", height, width, out_h, out_w, kernel_h,
                  kernel_w, padding, stride)
    if n_images == 0 or out_h * out_w == 0:
        return
    if (tap_groups * GRAD_TAPS < all_taps or co_blocks * CO_BLOCK < out_channels
            or partial.shape[0] < num_threads or partial.shape[3] != CO_BLOCK * GRAD_TAPS * 8):
        raise ValueError("direct_grad_weight_into: partial has shape %s, too small for %d "
                         "threads, %d channels and %d taps"
                         % ((partial.shape[0], partial.shape[1], partial.shape[2],
                            partial.shape[3]), num_threads, out_channels, all_taps))
    offsets = _tap_offsets(phases, kernel_h, kernel_w, tap_groups * GRAD_TAPS - taps)
    if with_bias:
        offsets[taps] = padded_size + wide_size   # the ones, relative to the padded image
    # a last short group repeats its final tap into the slots past the taps
    for k in range(all_taps, tap_groups * GRAD_TAPS):
        offsets[k] = offsets[all_taps - 1]
    try:
        scratch = <char*>_scratch(num_threads, per_thread)
    except MemoryError:
        free(offsets)
        raise
    with nogil, parallel(num_threads=num_threads):
        thread = threadid()
        padded = <floating*>(scratch + thread * per_thread)
        wide = padded + padded_size
        for q in range(length):
            wide[wide_size + q] = 1
        for image in prange(n_images, schedule="static"):
            _pad_image(&x[0, 0, 0, 0] + image * image_in, phases, padded)
            for co in range(out_channels):
                epilogue_rows(wide + co * length, padded_w, &grad_out[image, co, 0, 0], out_w,
                              NULL, 0, out_h, out_w, NULL, False, 0)
            for block in range(co_blocks):
                _grad_taps(wide + block * CO_BLOCK * length, length, padded, offsets,
                           tap_groups, length, &partial[thread, block, 0, 0])
    free(scratch)
    free(offsets)
