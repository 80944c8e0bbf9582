# cython: language_level=3
"""Weight gradient of the direct convolution, on the forward's wide grids.

Per block of ``CO_BLOCK`` output channels and ``GRAD_TAPS`` taps, one pass of
8-lane FMAs over an image's wide grid (grad_out laid out with the row length of
the input's phase planes, ``_phases.pxd``) into per-lane partial sums; threads
take whole images and the caller adds threads and lanes in a fixed order.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free

from fastdl_ext._epilogue cimport epilogue_rows
from fastdl_ext._blas cimport floating
from fastdl_ext._phases cimport (Phases, _check_output, _pad_image, _phases, _phases_size,
                                 _scratch, _tap_offsets, _whole_lines)

cdef extern from "fastdl_direct_grad.h":
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


def kernel_shapes():
    """``(CO_BLOCK, GRAD_TAPS)``: output channels and taps of one pass's block."""
    return CO_BLOCK, GRAD_TAPS


cdef inline void _grad_taps(const floating* grad, Py_ssize_t grad_stride,
                            const floating* source, const Py_ssize_t* offsets, int groups,
                            Py_ssize_t length, floating* sums) noexcept nogil:
    """sums[g, b * GRAD_TAPS + k, :8] += lanes of grad[b] · source[offsets[g * GRAD_TAPS +
    k]:] over ``length``, for ``groups`` groups of taps."""
    if floating is float:
        _grad_float(grad, grad_stride, source, offsets, groups, length, sums)
    else:
        _grad_double(grad, grad_stride, source, offsets, groups, length, sums)


def direct_grad_weight_into(const floating[:, :, :, ::1] x,
                            const floating[:, :, :, ::1] grad_out,
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
    # whole cache lines, so that the wide grid after it starts on one too (``_scratch``)
    cdef Py_ssize_t padded_size = _whole_lines(
        sizeof(floating) * (_phases_size(phases) + slack)) // sizeof(floating)
    cdef Py_ssize_t image_in = <Py_ssize_t>channels * height * width
    # per thread: the padded image, grad_out of one image on the wide grid (grid
    # columns past the output width and channels beyond C_out stay zero), and the
    # bias tap's row of ones
    cdef Py_ssize_t wide_size = co_blocks * CO_BLOCK * length
    cdef size_t per_thread = _whole_lines(sizeof(floating) * (padded_size + wide_size + length))
    cdef Py_ssize_t* offsets
    cdef floating* padded
    cdef floating* wide
    cdef Py_ssize_t q
    cdef int image, block, co, k, thread
    cdef char* scratch
    cdef void* allocated
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
        scratch = _scratch(num_threads, per_thread, True, &allocated)
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
    free(allocated)
    free(offsets)
