# cython: language_level=3
"""Direct convolution for few output channels (stride 1, dilation 1, one group).

With few output channels (LeNet's 6 and 16, ResNet's 16 and 32) im2col + GEMM
spends its time unfolding and packing, not multiplying: the GEMM's M is 6 to 32,
and Winograd's 16 GEMMs are as thin. Here each padded image is kept in cache
and the output is computed on a *wide grid*: with
the padded row length ``Wp``, output position ``q = oy * Wp + ox`` of tap
``(c, i, j)`` reads ``padded[c, oy + i, ox + j] = padded_flat[q + offset(c, i,
j)]``, one linear offset per tap. A block of ``LANES`` consecutive ``q`` times
``CO_BLOCK`` output channels lives in registers over all taps; grid columns
``ox >= OW`` are computed and dropped (``(kW - 1) / Wp`` extra work).

Weights come packed as ``(co_blocks, taps, CO_BLOCK)``, zero beyond C_out. The
weight gradient runs on the same grids: per channel block and pair of taps, one
pass of 8-lane FMAs over the image's grid, then horizontal sums.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy

from fastdl_ext._activation cimport leaky_relu
from fastdl_ext._blas cimport floating

cdef extern from *:
    """
    /* One register block: acc[b][v] = sum_t weights[t][b] * source[offsets[t] + v].
       Compiled twice where GCC can dispatch at load time (an ifunc picks the clone
       the CPU runs): for x86-64-v3 (AVX2 + FMA: twelve 8-wide accumulators, enough
       independent chains to keep two FMA pipes busy through their 4-cycle latency;
       eight left them half idle) and for the baseline the package is built for. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #  if __GNUC__ >= 12
    #    define FASTDL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
    #  else
    #    define FASTDL_CLONES __attribute__((target_clones("avx2", "default")))
    #  endif
    #else
    #  define FASTDL_CLONES
    #endif
    #define FASTDL_LANES 24
    #define FASTDL_CO_BLOCK 4
    /* Explicit vectors of 8 lanes (GCC/Clang vector extensions; lowered to what the
       target has): left to itself the vectoriser splats the sources instead. */
    #define FASTDL_DIRECT_BLOCK(name, type)                                             \
        typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
        FASTDL_CLONES static void name(const type *restrict source,                    \
                                       const Py_ssize_t *restrict offsets, int taps,   \
                                       const type *restrict weights,                   \
                                       type *restrict wide, Py_ssize_t wide_stride,    \
                                       Py_ssize_t blocks) {                            \
            /* all of a channel block's position blocks in one call: a call per block   \
               cost as much as 27 taps of work */                                       \
            for (Py_ssize_t q = 0; q < blocks * FASTDL_LANES; q += FASTDL_LANES) {      \
                const type *restrict at = source + q;                                   \
                name##_vector acc[FASTDL_CO_BLOCK][3];                                  \
                for (int b = 0; b < FASTDL_CO_BLOCK; b++)                               \
                    acc[b][0] = acc[b][1] = acc[b][2] = (name##_vector){0};             \
                for (int t = 0; t < taps; t++) {                                        \
                    name##_vector x0, x1, x2;                                           \
                    __builtin_memcpy(&x0, at + offsets[t], sizeof x0);                  \
                    __builtin_memcpy(&x1, at + offsets[t] + 8, sizeof x1);              \
                    __builtin_memcpy(&x2, at + offsets[t] + 16, sizeof x2);             \
                    const type *restrict w = weights + (Py_ssize_t)t * FASTDL_CO_BLOCK; \
                    for (int b = 0; b < FASTDL_CO_BLOCK; b++) {                         \
                        acc[b][0] += w[b] * x0;                                         \
                        acc[b][1] += w[b] * x1;                                         \
                        acc[b][2] += w[b] * x2;                                         \
                    }                                                                   \
                }                                                                       \
                for (int b = 0; b < FASTDL_CO_BLOCK; b++)                               \
                    __builtin_memcpy(wide + b * wide_stride + q, acc[b], sizeof acc[b]); \
            }                                                                           \
        }
    FASTDL_DIRECT_BLOCK(fastdl_direct_block_float, float)
    FASTDL_DIRECT_BLOCK(fastdl_direct_block_double, double)

    /* Weight gradient of one channel block and GRAD_TAPS taps over a whole wide grid:
       sums[b][k] = sum_q grad[b][q] * source[offsets[k] + q], q < length (a multiple
       of 8; grid columns past the output width hold zero gradient). Twelve
       accumulators, as in the forward block; the three taps are unrolled by hand
       (kept in arrays, GCC spilled them: 3x slower). */
    #define FASTDL_GRAD_TAPS 3
    #define FASTDL_GRAD_BLOCK(name, type)                                               \
        typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
        FASTDL_CLONES static void name(const type *restrict grad, Py_ssize_t grad_stride, \
                                       const type *restrict source,                    \
                                       const Py_ssize_t *restrict offsets,             \
                                       Py_ssize_t length, type *restrict sums) {       \
            name##_vector acc[FASTDL_CO_BLOCK][FASTDL_GRAD_TAPS];                       \
            for (int b = 0; b < FASTDL_CO_BLOCK; b++)                                   \
                for (int k = 0; k < FASTDL_GRAD_TAPS; k++)                              \
                    acc[b][k] = (name##_vector){0};                                     \
            const type *restrict first = source + offsets[0];                           \
            const type *restrict second = source + offsets[1];                          \
            const type *restrict third = source + offsets[2];                           \
            for (Py_ssize_t q = 0; q < length; q += 8) {                                \
                name##_vector x0, x1, x2, g;                                            \
                __builtin_memcpy(&x0, first + q, sizeof x0);                            \
                __builtin_memcpy(&x1, second + q, sizeof x1);                           \
                __builtin_memcpy(&x2, third + q, sizeof x2);                            \
                for (int b = 0; b < FASTDL_CO_BLOCK; b++) {                             \
                    __builtin_memcpy(&g, grad + b * grad_stride + q, sizeof g);         \
                    acc[b][0] += g * x0;                                                \
                    acc[b][1] += g * x1;                                                \
                    acc[b][2] += g * x2;                                                \
                }                                                                       \
            }                                                                           \
            for (int b = 0; b < FASTDL_CO_BLOCK; b++)                                   \
                for (int k = 0; k < FASTDL_GRAD_TAPS; k++) {                            \
                    type total = 0;                                                     \
                    for (int v = 0; v < 8; v++) total += acc[b][k][v];                  \
                    sums[FASTDL_GRAD_TAPS * b + k] = total;                             \
                }                                                                       \
        }
    FASTDL_GRAD_BLOCK(fastdl_direct_grad_float, float)
    FASTDL_GRAD_BLOCK(fastdl_direct_grad_double, double)
    """
    enum:
        LANES "FASTDL_LANES"          # output positions per register block
        CO_BLOCK "FASTDL_CO_BLOCK"    # output channels per register block
    void _block_float "fastdl_direct_block_float"(
        const float* source, const Py_ssize_t* offsets, int taps, const float* weights,
        float* wide, Py_ssize_t wide_stride, Py_ssize_t blocks) noexcept nogil
    void _block_double "fastdl_direct_block_double"(
        const double* source, const Py_ssize_t* offsets, int taps, const double* weights,
        double* wide, Py_ssize_t wide_stride, Py_ssize_t blocks) noexcept nogil

    enum:
        GRAD_TAPS "FASTDL_GRAD_TAPS"  # taps per weight-gradient pass
    void _grad_float "fastdl_direct_grad_float"(
        const float* grad, Py_ssize_t grad_stride, const float* source,
        const Py_ssize_t* offsets, Py_ssize_t length, float* sums) noexcept nogil
    void _grad_double "fastdl_direct_grad_double"(
        const double* grad, Py_ssize_t grad_stride, const double* source,
        const Py_ssize_t* offsets, Py_ssize_t length, double* sums) noexcept nogil


def lanes_and_block():
    """(LANES, CO_BLOCK) of the compiled kernel, for packing the weights."""
    return LANES, CO_BLOCK


cdef inline void _blocks(const floating* source, const Py_ssize_t* offsets, int taps,
                         const floating* weights, floating* wide, Py_ssize_t wide_stride,
                         Py_ssize_t blocks) noexcept nogil:
    """wide[b, q + v] = sum_t weights[t, b] * source[offsets[t] + q + v] for ``blocks``
    register blocks of LANES positions."""
    if floating is float:
        _block_float(source, offsets, taps, weights, wide, wide_stride, blocks)
    else:
        _block_double(source, offsets, taps, weights, wide, wide_stride, blocks)


cdef void _pad_image(const floating* image, int channels, int height, int width, int pad_h,
                     int pad_w, int padded_h, int padded_w, floating* padded) noexcept nogil:
    """Copy one (C, H, W) image into the zeroed interior of its (C, Hp, Wp) buffer."""
    cdef int c, y
    for c in range(channels):
        for y in range(height):
            memcpy(padded + (<Py_ssize_t>c * padded_h + y + pad_h) * padded_w + pad_w,
                   image + (<Py_ssize_t>c * height + y) * width, width * sizeof(floating))


cdef void* _scratch(int threads, size_t per_thread) except NULL:
    """Zeroed scratch for every thread, taken before the parallel region so that a
    failed allocation raises instead of leaving a thread with NULL."""
    cdef void* scratch = calloc(<size_t>max(threads, 1), per_thread)
    if scratch == NULL:
        raise MemoryError()
    return scratch


cdef Py_ssize_t* _tap_offsets(int channels, int kernel_h, int kernel_w, int padded_h,
                              int padded_w) except NULL:
    """Flat offset of tap (c, i, j) in a (C, Hp, Wp) padded image; the caller frees it."""
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(
        sizeof(Py_ssize_t) * channels * kernel_h * kernel_w)
    cdef int c, i, j
    if offsets == NULL:
        raise MemoryError()
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                offsets[(c * kernel_h + i) * kernel_w + j] = \
                    (<Py_ssize_t>c * padded_h + i) * padded_w + j
    return offsets


def direct_forward_into(floating[:, :, :, ::1] x, floating[:, :, ::1] packed,
                        floating[:, :, :, ::1] out, int kernel_h, int kernel_w, tuple padding,
                        int num_threads, floating[::1] bias=None,
                        floating[:, :, :, ::1] residual=None, bint activate=False,
                        double slope=0.0):
    """out[n] = act(conv(x[n]) + bias + residual[n]), stride 1, dilation 1, one group.

    ``packed`` is (co_blocks, C_in * kH * kW, CO_BLOCK); ``out`` (N, C_out, OH, OW)
    is overwritten.
    """
    cdef int n_images = x.shape[0], channels = x.shape[1]
    cdef int height = x.shape[2], width = x.shape[3]
    cdef int out_channels = out.shape[1], out_h = out.shape[2], out_w = out.shape[3]
    cdef int pad_h = padding[0], pad_w = padding[1]
    cdef int padded_h = height + 2 * pad_h, padded_w = width + 2 * pad_w
    cdef int taps = channels * kernel_h * kernel_w
    cdef int co_blocks = packed.shape[0]
    # the wide grid rounded up to whole blocks; reads of the last block run past
    # the padded image by up to LANES + kW elements, into zeroed slack
    cdef Py_ssize_t grid = <Py_ssize_t>out_h * padded_w
    cdef Py_ssize_t wide_stride = (grid + LANES - 1) // LANES * LANES
    cdef Py_ssize_t padded_size = <Py_ssize_t>channels * padded_h * padded_w + LANES + kernel_w
    cdef Py_ssize_t image_in = <Py_ssize_t>channels * height * width
    cdef Py_ssize_t plane = <Py_ssize_t>out_h * out_w
    cdef const floating* bias_ptr = &bias[0] if bias is not None and bias.shape[0] else NULL
    cdef const floating* residual_ptr = &residual[0, 0, 0, 0] if residual is not None \
        else NULL
    cdef floating slope_value = <floating>slope
    cdef Py_ssize_t* offsets
    cdef floating* padded
    cdef floating* wide
    cdef floating* target
    cdef const floating* row
    cdef const floating* added
    cdef floating shift
    cdef int* cached
    cdef int item, image, block, b, co, oy, ox, thread
    # per thread: the padded image (border and slack zero) and one channel block's grid
    cdef size_t per_thread = sizeof(floating) * (padded_size + CO_BLOCK * wide_stride)
    cdef char* scratch
    if n_images == 0 or plane == 0:
        return
    offsets = _tap_offsets(channels, kernel_h, kernel_w, padded_h, padded_w)
    try:
        scratch = <char*>_scratch(num_threads, per_thread)
        # the image each thread has in ``padded`` (memory, not a variable: prange may
        # not assign the parallel block's own variables)
        cached = <int*>_scratch(num_threads, sizeof(int))
    except MemoryError:
        free(offsets)
        raise
    for thread in range(num_threads):
        cached[thread] = -1
    with nogil, parallel(num_threads=num_threads):
        thread = threadid()
        padded = <floating*>(scratch + thread * per_thread)
        wide = padded + padded_size
        for item in prange(n_images * co_blocks, schedule="static"):
            image = item // co_blocks
            if image != cached[thread]:
                # the border and slack stay zero; only the interior changes
                _pad_image(&x[0, 0, 0, 0] + image * image_in, channels, height, width,
                           pad_h, pad_w, padded_h, padded_w, padded)
                cached[thread] = image
            block = item % co_blocks
            _blocks(padded, offsets, taps, &packed[block, 0, 0], wide, wide_stride,
                    wide_stride // LANES)
            for b in range(min(CO_BLOCK, out_channels - block * CO_BLOCK)):
                co = block * CO_BLOCK + b
                shift = bias_ptr[co] if bias_ptr != NULL else 0
                for oy in range(out_h):
                    target = &out[image, co, oy, 0]
                    row = wide + b * wide_stride + <Py_ssize_t>oy * padded_w
                    if bias_ptr == NULL:
                        memcpy(target, row, out_w * sizeof(floating))
                    else:
                        for ox in range(out_w):
                            target[ox] = row[ox] + shift
                    if residual_ptr != NULL:
                        added = residual_ptr + (image * out_channels + co) * plane + oy * out_w
                        for ox in range(out_w):
                            target[ox] = target[ox] + added[ox]
                    if activate:
                        leaky_relu(target, out_w, slope_value)
    free(cached)
    free(scratch)
    free(offsets)


cdef inline void _grad_taps(const floating* grad, Py_ssize_t grad_stride,
                            const floating* source, const Py_ssize_t* offsets,
                            Py_ssize_t length, floating* sums) noexcept nogil:
    """sums[b * GRAD_TAPS + k] = grad[b] · source[offsets[k]:] over ``length``."""
    if floating is float:
        _grad_float(grad, grad_stride, source, offsets, length, sums)
    else:
        _grad_double(grad, grad_stride, source, offsets, length, sums)


def direct_grad_weight_into(floating[:, :, :, ::1] x, floating[:, :, :, ::1] grad_out,
                            floating[:, :, ::1] partial, int kernel_h, int kernel_w,
                            tuple padding, int num_threads):
    """Per-thread weight gradients of a stride-1, one-group conv, on the wide grid.

    ``partial`` (threads, co_blocks * CO_BLOCK, C_in * kH * kW), zero on entry:
    thread ``t`` adds the images it takes; the caller sums over threads.
    """
    cdef int n_images = x.shape[0], channels = x.shape[1]
    cdef int height = x.shape[2], width = x.shape[3]
    cdef int out_channels = grad_out.shape[1], out_h = grad_out.shape[2]
    cdef int out_w = grad_out.shape[3]
    cdef int pad_h = padding[0], pad_w = padding[1]
    cdef int padded_h = height + 2 * pad_h, padded_w = width + 2 * pad_w
    cdef int taps = channels * kernel_h * kernel_w
    cdef int co_blocks = partial.shape[1] // CO_BLOCK
    cdef Py_ssize_t length = (<Py_ssize_t>out_h * padded_w + 7) // 8 * 8
    cdef Py_ssize_t padded_size = <Py_ssize_t>channels * padded_h * padded_w + 8 + kernel_w
    cdef Py_ssize_t image_in = <Py_ssize_t>channels * height * width
    cdef Py_ssize_t* offsets
    cdef floating* padded
    cdef floating* wide
    cdef floating* sums
    cdef Py_ssize_t* group
    cdef Py_ssize_t* groups_of_taps
    cdef int image, block, b, co, oy, k, t, thread
    # per thread: the padded image, grad_out of one image on the wide grid (grid
    # columns past the output width and channels beyond C_out stay zero), the sums
    cdef size_t per_thread = sizeof(floating) * (padded_size + co_blocks * CO_BLOCK * length
                                                 + GRAD_TAPS * CO_BLOCK)
    cdef char* scratch
    if n_images == 0 or out_h * out_w == 0:
        return
    offsets = _tap_offsets(channels, kernel_h, kernel_w, padded_h, padded_w)
    try:
        scratch = <char*>_scratch(num_threads, per_thread)
        groups_of_taps = <Py_ssize_t*>_scratch(num_threads, sizeof(Py_ssize_t) * GRAD_TAPS)
    except MemoryError:
        free(offsets)
        raise
    with nogil, parallel(num_threads=num_threads):
        thread = threadid()
        padded = <floating*>(scratch + thread * per_thread)
        wide = padded + padded_size
        sums = wide + co_blocks * CO_BLOCK * length
        group = groups_of_taps + thread * GRAD_TAPS
        for image in prange(n_images, schedule="static"):
            _pad_image(&x[0, 0, 0, 0] + image * image_in, channels, height, width,
                       pad_h, pad_w, padded_h, padded_w, padded)
            for co in range(out_channels):
                for oy in range(out_h):
                    memcpy(wide + co * length + oy * padded_w, &grad_out[image, co, oy, 0],
                           out_w * sizeof(floating))
            for block in range(co_blocks):
                for t in range((taps + GRAD_TAPS - 1) // GRAD_TAPS):
                    t = t * GRAD_TAPS
                    # a last short group repeats its final tap; the repeats are dropped
                    for k in range(GRAD_TAPS):
                        group[k] = offsets[min(t + k, taps - 1)]
                    _grad_taps(wide + block * CO_BLOCK * length, length, padded, group,
                               length, sums)
                    for b in range(CO_BLOCK):
                        for k in range(min(GRAD_TAPS, taps - t)):
                            partial[thread, block * CO_BLOCK + b, t + k] += \
                                sums[b * GRAD_TAPS + k]
    free(groups_of_taps)
    free(scratch)
    free(offsets)
