# cython: language_level=3
"""The phase-plane layout the direct convolution loops read (forward and weight gradient).

A conv of stride ``(sh, sw)`` reads its zero-padded input as ``sh x sw`` phase
planes, each (C, rows, cols): plane ``(a, b)`` holds ``padded[c, y * sh + a, x * sw
+ b]`` at ``[c, y, x]``, so every tap reads one contiguous run of a plane per output
row, as at stride 1 (where the single plane is the padded image itself). A conv
copies its input into such planes per thread (``_pad_view``), or reads them in place
from an array a plan keeps in that layout (``View``), which the conv before writes
in its epilogue (``_epilogue_phases``).
"""
from libc.stdlib cimport calloc, malloc

cimport numpy as cnp

from fastdl_ext._epilogue cimport epilogue_rows, epilogue_split, every_other
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


cdef inline void strided_rows(floating* target, Py_ssize_t target_stride,
                              const floating* source, Py_ssize_t source_stride,
                              Py_ssize_t rows, Py_ssize_t count, int stride,
                              Py_ssize_t readable) noexcept nogil:
    """target[r, i] = source[r, stride * i] for i < count, over ``rows`` rows (rows of
    ``readable`` values from ``source``'s start): the column phase of a row."""
    cdef Py_ssize_t r, i
    if stride == 1:   # contiguous runs: one vectorised copy
        epilogue_rows(target, target_stride, source, source_stride, NULL, 0, rows, count,
                      NULL, False, 0)
    elif stride == 2:
        every_other(target, target_stride, source, source_stride, rows, count, readable)
    else:
        for r in range(rows):
            for i in range(count):
                target[r * target_stride + i] = source[r * source_stride + i * stride]


cdef inline void _pad_view(const floating* image, Py_ssize_t row_stride,
                           Py_ssize_t channel_stride, Phases p, floating* padded) noexcept nogil:
    """``_pad_image`` of an image stored with rows ``row_stride`` and channels
    ``channel_stride`` elements apart (the interior of a bordered buffer)."""
    cdef int a, b, c, top, bottom, left, right
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
                strided_rows(target, p.cols, source, p.stride_h * row_stride, bottom - top,
                             right - left, p.stride_w,
                             p.width - (left * p.stride_w + b - p.pad_w))


cdef struct View:
    # How an array stores its images: each channel's plane inside a zero border
    # (border_h, border_w), and split into the phase planes of a stride (stride_h,
    # stride_w) as ``Phases`` lays them out ((1, 1): one plane a channel). Planes of
    # rows ``cols`` apart lie ``plane`` apart, images ``image`` apart; at stride 1 an
    # image's first value is ``interior`` into its plane.
    Py_ssize_t cols, plane, image, interior
    int channels, border_h, border_w, stride_h, stride_w


cdef inline int _view(View* view, str caller, cnp.npy_intp* dims, tuple layout, str name,
                      int* channels, int* height, int* width) except -1:
    """Lay out ``view`` for an (N, C', H', W') array stored as ``layout`` = (bh, bw, sh,
    sw), and give its images' C x H x W: C' = sh sw C, and sh H' = H + 2 bh (phase planes
    that cover the padded image exactly; at stride 1 simply H' = H + 2 bh)."""
    cdef int border_h = layout[0], border_w = layout[1]
    cdef int stride_h = layout[2], stride_w = layout[3]
    if (border_h < 0 or border_w < 0 or stride_h < 1 or stride_w < 1
            or dims[1] % (stride_h * stride_w) or stride_h * dims[2] < 2 * border_h
            or stride_w * dims[3] < 2 * border_w):
        raise ValueError("%s: %s of shape %s cannot be stored with a border of %r and phase "
                         "planes of stride %r" % (caller, name, (dims[0], dims[1], dims[2],
                                                                  dims[3]),
                                                  layout[:2], layout[2:]))
    view.border_h, view.border_w, view.stride_h, view.stride_w = layout
    view.channels = dims[1] // (stride_h * stride_w)
    view.cols, view.plane = dims[3], <Py_ssize_t>dims[2] * dims[3]
    view.image = dims[1] * view.plane
    view.interior = <Py_ssize_t>border_h * dims[3] + border_w
    channels[0] = view.channels
    height[0] = stride_h * dims[2] - 2 * border_h
    width[0] = stride_w * dims[3] - 2 * border_w
    return 0


cdef inline Py_ssize_t _at(const View* view, Py_ssize_t plane, int row) noexcept nogil:
    """Offset of ``row`` of the plane ``plane`` (image * channels + channel) in a view of
    stride 1."""
    return plane * view.plane + view.interior + <Py_ssize_t>row * view.cols


cdef inline void _epilogue_phases(floating* image, const View* view, int channel,
                                  floating* rows, Py_ssize_t row_stride,
                                  const floating* residual, Py_ssize_t residual_stride,
                                  int first_row, int count, int width, const floating* shift,
                                  bint activate, floating slope) noexcept nogil:
    """act(rows + *shift + residual) for rows ``first_row`` .. ``first_row + count - 1``
    of one channel (``width`` values each; ``shift``, ``residual``: NULL to leave out)
    into the phase planes of ``image`` stored as ``view``: value (y, x) goes to plane
    ((y + bh) % sh, (x + bw) % sw), row (y + bh) / sh, column (x + bw) / sw. At
    column stride 2 in one pass (``epilogue_split``); else ``rows`` takes the epilogue
    in place and is then copied a column phase at a time."""
    cdef int y, b, first_x, sh = view.stride_h, sw = view.stride_w, bw = view.border_w
    cdef Py_ssize_t channel_planes = view.channels * view.plane
    cdef floating* row
    cdef floating* target
    # channel ``channel`` of plane (0, 0); a row phase is sw planes of channels on
    image = image + channel * view.plane
    if sw == 2:
        epilogue_split(image, bw % 2 * channel_planes + bw // 2,
                       (bw + 1) % 2 * channel_planes + (bw + 1) // 2, sw * channel_planes,
                       view.cols, sh, view.border_h, first_row, count, rows, row_stride,
                       residual, residual_stride, width, shift, activate, slope)
        return
    epilogue_rows(rows, row_stride, rows, row_stride, residual, residual_stride, count, width,
                  shift, activate, slope)
    for y in range(first_row, first_row + count):
        row = rows + <Py_ssize_t>(y - first_row) * row_stride
        target = image + (y + view.border_h) % sh * sw * channel_planes \
            + <Py_ssize_t>(y + view.border_h) // sh * view.cols
        for b in range(sw):
            first_x = ((b - bw) % sw + sw) % sw
            if first_x < width:
                strided_rows(target + b * channel_planes + (first_x + bw) // sw, 0,
                             row + first_x, 0, 1, (width - first_x + sw - 1) // sw, sw,
                             width - first_x)


cdef enum:
    LINE = 64   # bytes of a cache line


cdef inline size_t _whole_lines(size_t size) noexcept nogil:
    """``size`` bytes rounded up to whole cache lines."""
    return (size + LINE - 1) // LINE * LINE


cdef inline char* _scratch(int threads, size_t per_thread, bint zeroed,
                           void** allocated) except NULL:
    """Scratch for every thread (zeroed unless told), taken before the parallel region
    so that a failed allocation raises instead of leaving a thread with NULL: thread t's
    part at ``t * per_thread`` from the returned pointer, which starts on a cache line
    (``per_thread`` should be whole lines: ``_whole_lines``). Vectors read at multiples
    of 32 bytes from it then never split across two lines (image lanes, 1.65x on
    LeNet-5's second conv when malloc's block was only 16-byte aligned). The caller
    frees ``allocated[0]``."""
    cdef size_t size = <size_t>max(threads, 1) * per_thread + LINE
    cdef void* scratch = calloc(size, 1) if zeroed else malloc(size)
    if scratch == NULL:
        raise MemoryError()
    allocated[0] = scratch
    return <char*>_whole_lines(<size_t>scratch)


cdef inline Py_ssize_t* _tap_offsets(Phases p, int kernel_h, int kernel_w, int extra=0,
                                     int shift_h=0, int shift_w=0) except NULL:
    """Flat offset of tap (c, i, j) in the phase planes (with u = i + shift_h, v = j +
    shift_w: plane (u % stride_h, v % stride_w), row u // stride_h, column v //
    stride_w of channel c; a shift reads planes padded by that much more than the
    conv), and ``extra`` slots after them for the caller to fill; the caller frees it."""
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(
        sizeof(Py_ssize_t) * (p.channels * kernel_h * kernel_w + extra))
    cdef int c, i, j, u, v, phase
    if offsets == NULL:
        raise MemoryError()
    for c in range(p.channels):
        for i in range(kernel_h):
            u = i + shift_h
            for j in range(kernel_w):
                v = j + shift_w
                phase = (u % p.stride_h) * p.stride_w + v % p.stride_w
                offsets[(c * kernel_h + i) * kernel_w + j] = (
                    (<Py_ssize_t>phase * p.channels + c) * p.rows + u // p.stride_h) \
                    * p.cols + v // p.stride_w
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
