# cython: language_level=3
"""Image lanes: the layout a direct conv uses for a batch of 8 or more images whose
output rows are not whole vectors (``direct.pyx``).

A vector holds one position of 8 images, so no grid column is computed and dropped
(the wide grid drops kW - 1 of every W + 2 pW: two fifths of LeNet-5's second
conv). Images go into padded planes of 8 values a position, and the conv's grid of
8 values a position comes out into the images' planes, both through 8 x 8
transposes of vector shuffles; the epilogue (bias, residual, activation, and a
fused 2x2 max pool) runs on the vectors.
"""
from fastdl_ext._blas cimport floating
from fastdl_ext._phases cimport Phases

cdef extern from "fastdl_lanes.h":
    void _lanes_pad_float "fastdl_lanes_pad_float"(
        const float* x, Py_ssize_t image_in, int images, int channels, int height, int width,
        int rows, int cols, int pad_h, int pad_w, float* padded) noexcept nogil
    void _lanes_pad_double "fastdl_lanes_pad_double"(
        const double* x, Py_ssize_t image_in, int images, int channels, int height,
        int width, int rows, int cols, int pad_h, int pad_w, double* padded) noexcept nogil
    void _lanes_pool_float "fastdl_lanes_pool_float"(
        float* grid, Py_ssize_t out_h, Py_ssize_t out_w) noexcept nogil
    void _lanes_pool_double "fastdl_lanes_pool_double"(
        double* grid, Py_ssize_t out_h, Py_ssize_t out_w) noexcept nogil
    void _lanes_out_float "fastdl_lanes_out_float"(
        const float* grid, Py_ssize_t positions, int images, float* target,
        Py_ssize_t image_stride, const float* residual, const float* shift, int activate,
        float slope) noexcept nogil
    void _lanes_out_double "fastdl_lanes_out_double"(
        const double* grid, Py_ssize_t positions, int images, double* target,
        Py_ssize_t image_stride, const double* residual, const double* shift, int activate,
        double slope) noexcept nogil


cdef inline void pad_lanes(const floating* x, Py_ssize_t image_in, int images, Phases p,
                           floating* padded) noexcept nogil:
    """Images [0, images) from ``x`` (``image_in`` values apart) into the interior of
    the padded planes (stride 1), 8 values a position; missing images' lanes hold
    zeros or stale values, never stored."""
    if floating is float:
        _lanes_pad_float(x, image_in, images, p.channels, p.height, p.width, p.rows, p.cols,
                         p.pad_h, p.pad_w, padded)
    else:
        _lanes_pad_double(x, image_in, images, p.channels, p.height, p.width, p.rows,
                          p.cols, p.pad_h, p.pad_w, padded)


cdef inline void lanes_epilogue(floating* grid, int out_h, int out_w, int images,
                                floating* target, Py_ssize_t image_stride,
                                const floating* residual, const floating* shift,
                                bint activate, floating slope, bint pool) noexcept nogil:
    """One channel of images [0, images) from the conv's ``grid`` (out_h x out_w
    positions of 8): act(v + *shift + residual), or with ``pool`` the 2x2 max pool
    (in place in the grid) then act(v + *shift). Image l is written at ``target + l *
    image_stride``."""
    if floating is float:
        if pool:
            _lanes_pool_float(grid, out_h, out_w)
        _lanes_out_float(grid, (out_h >> pool) * (out_w >> pool), images, target,
                         image_stride, residual, shift, activate, slope)
    else:
        if pool:
            _lanes_pool_double(grid, out_h, out_w)
        _lanes_out_double(grid, (out_h >> pool) * (out_w >> pool), images, target,
                          image_stride, residual, shift, activate, slope)
