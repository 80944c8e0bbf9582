# cython: language_level=3
"""Convolutions of few output positions, shared out by output channels.

``conv.pyx`` gives each thread a tile of positions and all of the weights. Where a
conv has few positions in all (ResNet's 16x16, 8x8 and 4x4 stages at batch 1), every
thread would read every weight, and a GEMM call per chunk would pack the same columns
again for each chunk: both cost more than the multiplies. Here the caller unfolds the
images once into one column matrix ``(K, width)``, its width the N * P positions
rounded up to 16, and a work item is a tile of output channels: one thread multiplies
that tile's weight rows, read in place, by all the columns in register tiles
(``include/fastdl_thin.h``), then writes each image's rows through the fused epilogue
while they are in cache.

Each output value is summed by one accumulator in a fixed order, whatever the thread
count: the result is bitwise the same for any count.
"""
import numpy as np

from cython.parallel cimport prange, threadid

from fastdl_ext._blas cimport floating
from fastdl_ext._epilogue cimport bias_pointer, epilogue_rows

cdef extern from "fastdl_thin.h":
    int THIN_ROWS "FASTDL_THIN_ROWS"
    void _thin_gemm_float "fastdl_thin_gemm_float"(
        const float* weight, Py_ssize_t weight_stride, int rows, const float* cols,
        Py_ssize_t cols_stride, int depth, int width, float* out,
        Py_ssize_t out_stride) noexcept nogil
    void _thin_gemm_double "fastdl_thin_gemm_double"(
        const double* weight, Py_ssize_t weight_stride, int rows, const double* cols,
        Py_ssize_t cols_stride, int depth, int width, double* out,
        Py_ssize_t out_stride) noexcept nogil

# columns of a register tile: the width of the column matrix is a multiple of it
COLUMN_BLOCK = 16


cdef inline void _thin_gemm(const floating* weight, Py_ssize_t weight_stride, int rows,
                            const floating* cols, Py_ssize_t cols_stride, int depth,
                            int width, floating* out, Py_ssize_t out_stride) noexcept nogil:
    if floating is float:
        _thin_gemm_float(weight, weight_stride, rows, cols, cols_stride, depth, width, out,
                         out_stride)
    else:
        _thin_gemm_double(weight, weight_stride, rows, cols, cols_stride, depth, width, out,
                          out_stride)


def conv2d_channels_into(const floating[:, ::1] cols, const floating[:, ::1] weight,
                         floating[:, :, ::1] out, int num_threads,
                         const floating[::1] bias=None,
                         const floating[:, :, ::1] residual=None, bint activate=False,
                         double slope=0.0):
    """out[n] = act(weight @ cols[:, n*P:(n+1)*P] + bias + residual[n]) for every image.

    Parameters
    ----------
    cols : (K, width) the images' column matrices side by side, ``width`` a multiple of
        ``COLUMN_BLOCK`` and at least N * P (the columns past N * P are never written
        out; zeros keep them finite)
    weight : (C_out, K)
    out : (N, C_out, P), overwritten
    bias : (C_out,) or None; residual : like ``out`` or None
    activate, slope : ``v`` if ``v > 0`` else ``slope * v``, last
    """
    cdef int k = weight.shape[1], out_channels = weight.shape[0]
    cdef int n_images = out.shape[0], positions = out.shape[2]
    cdef int width = cols.shape[1]
    cdef int tiles, item, first, count, image, row, thread
    cdef floating* tile
    cdef floating* scratch_ptr
    cdef const floating* added
    cdef const floating* bias_ptr = bias_pointer(bias)
    cdef const floating* residual_ptr = &residual[0, 0, 0] if residual is not None else NULL
    cdef floating slope_value = <floating>slope
    if (cols.shape[0] != k or width < n_images * positions or width % COLUMN_BLOCK
            or out.shape[1] != out_channels or k < 1
            or (bias_ptr != NULL and bias.shape[0] != out_channels)
            or (residual is not None and (residual.shape[0] != n_images
                                         or residual.shape[1] != out_channels
                                         or residual.shape[2] != positions))):
        raise ValueError("conv2d_channels_into: cols must be (K, width) with width a multiple "
                         "of %d and at least N*P, weight (C_out, K), out and residual "
                         "(N, C_out, P), bias (C_out,); K >= 1" % COLUMN_BLOCK)
    if n_images * positions == 0 or out_channels == 0:
        return
    num_threads = max(1, num_threads)
    tiles = (out_channels + THIN_ROWS - 1) // THIN_ROWS
    scratch = np.empty((num_threads, THIN_ROWS * width),
                       dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] scratch_view = scratch
    scratch_ptr = &scratch_view[0, 0]
    with nogil:
        for item in prange(tiles, num_threads=num_threads, schedule="static"):
            thread = threadid()
            tile = scratch_ptr + <Py_ssize_t>thread * THIN_ROWS * width
            first = item * THIN_ROWS
            count = min(THIN_ROWS, out_channels - first)
            _thin_gemm(&weight[first, 0], k, count, &cols[0, 0], width, k, width, tile, width)
            for image in range(n_images):
                added = residual_ptr + (<Py_ssize_t>image * out_channels + first) * positions \
                    if residual_ptr != NULL else NULL
                for row in range(count):
                    epilogue_rows(&out[image, first + row, 0], 0,
                                  tile + <Py_ssize_t>row * width + image * positions, 0,
                                  added + <Py_ssize_t>row * positions if added != NULL
                                  else NULL, 0, 1, positions,
                                  bias_ptr + first + row if bias_ptr != NULL else NULL,
                                  activate, slope_value)
