# cython: language_level=3
"""The phase-plane layout the direct convolution loops read (forward and weight gradient).

A conv of stride ``(sh, sw)`` reads its zero-padded input as ``sh x sw`` phase
planes, each (C, rows, cols): plane ``(a, b)`` holds ``padded[c, y * sh + a, x * sw
+ b]`` at ``[c, y, x]``, so every tap reads one contiguous run of a plane per output
row, as at stride 1 (where the single plane is the padded image itself).
"""
from libc.stdlib cimport calloc, malloc

cimport numpy as cnp

from fastdl_ext._activation cimport epilogue_rows, every_other
from fastdl_ext._blas cimport floating


cdef struct Phases:
    # one image's geometry and its planes' size (rows, cols)
    int channels, height, width, pad_h, pad_w, stride_h, stride_w, kernel_h, kernel_w
    int rows, cols


cdef inline Phases _phases(int channels, int height, int width, int pad_h, int pad_w,
                           int stride_h, int stride_w, int kernel_h,
                           int kernel_w) noexcept nogil:
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


cdef inline void _pad_image(const floating* image, Phases p, floating* padded) noexcept nogil:
    """Copy one (C, H, W) image into the interior of its phase planes.

    The border and the slack after the planes are the caller's: zeroed once per
    buffer, they stay zero (writing them per image took thousands of tiny memsets
    per call, a tenth of a batch-1 ResNet's time)."""
    _pad_view(image, p.width, <Py_ssize_t>p.height * p.width, p, padded)


cdef inline void _pad_view(const floating* image, Py_ssize_t row_stride,
                           Py_ssize_t channel_stride, Phases p, floating* padded) noexcept nogil:
    """``_pad_image`` of an image stored with rows ``row_stride`` and channels
    ``channel_stride`` elements apart (the interior of a bordered buffer)."""
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
                source = image + c * channel_stride + (top * p.stride_h + a - p.pad_h) \
                    * row_stride + left * p.stride_w + b - p.pad_w
                if p.stride_w == 1:   # rows are contiguous runs: one vectorised copy
                    epilogue_rows(target, p.cols, source, p.stride_h * row_stride,
                                  NULL, 0, bottom - top, right - left, NULL, False, 0)
                    continue
                if p.stride_w == 2:
                    every_other(target, p.cols, source, p.stride_h * row_stride,
                                bottom - top, right - left,
                                p.width - (left * p.stride_w + b - p.pad_w))
                    continue
                for y in range(bottom - top):
                    for x in range(right - left):
                        target[x] = source[x * p.stride_w]
                    target = target + p.cols
                    source = source + p.stride_h * row_stride


cdef struct View:
    # Where an image's values lie in an array stored with a zero border around each
    # plane: rows ``cols`` apart, planes ``plane`` apart, the first value at ``interior``.
    Py_ssize_t cols, plane, interior


cdef inline int _view(View* view, str caller, cnp.npy_intp* dims, object border, str name,
                      int* height, int* width) except -1:
    """Lay out ``view`` for an (N, C, H + 2 bh, W + 2 bw) array with border ``(bh, bw)``,
    and give its interior ``H x W``."""
    cdef int border_h = border[0], border_w = border[1]
    if border_h < 0 or border_w < 0 or dims[2] < 2 * border_h or dims[3] < 2 * border_w:
        raise ValueError("%s: %s of shape %s cannot have a border of %r"
                         % (caller, name, (dims[0], dims[1], dims[2], dims[3]), border))
    view.cols, view.plane = dims[3], <Py_ssize_t>dims[2] * dims[3]
    view.interior = <Py_ssize_t>border_h * dims[3] + border_w
    height[0], width[0] = dims[2] - 2 * border_h, dims[3] - 2 * border_w
    return 0


cdef inline Py_ssize_t _at(const View* view, Py_ssize_t plane, int row) noexcept nogil:
    """Offset of ``row`` of the plane ``plane`` (image * channels + channel) in ``view``."""
    return plane * view.plane + view.interior + <Py_ssize_t>row * view.cols


cdef inline void* _scratch(int threads, size_t per_thread, bint zeroed=True) except NULL:
    """Scratch for every thread (zeroed unless told), taken before the parallel region
    so that a failed allocation raises instead of leaving a thread with NULL."""
    cdef size_t size = <size_t>max(threads, 1) * per_thread
    cdef void* scratch = calloc(size, 1) if zeroed else malloc(size)
    if scratch == NULL:
        raise MemoryError()
    return scratch


cdef inline Py_ssize_t* _tap_offsets(Phases p, int kernel_h, int kernel_w,
                                     int extra=0) except NULL:
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


cdef inline int _check_output(str what, int height, int width, int out_h, int out_w,
                              int kernel_h, int kernel_w, tuple padding,
                              tuple stride) except -1:
    """Refuse an output plane other than the conv's: the grid's reads stay inside the
    phase planes only for the conv's own output size."""
    if (out_h != (height + 2 * <int>padding[0] - kernel_h) // <int>stride[0] + 1
            or out_w != (width + 2 * <int>padding[1] - kernel_w) // <int>stride[1] + 1):
        raise ValueError("%s has %d x %d positions, not the conv's output" % (what, out_h,
                                                                            out_w))
    return 0
