# cython: language_level=3
"""The direct convolution's register blocks (``direct.pyx``): output channels x
positions in registers over all taps, each tap a weight per channel times a vector of
positions read at one offset. Winograd's layers run the same blocks as a 1x1 conv
over tiles, one tap per input channel."""
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_blocks.h":
    enum:
        MAX_LANES "FASTDL_MAX_LANES"  # output positions of the widest register block
    ctypedef struct Grid "fastdl_grid":
        Py_ssize_t row_vectors, cols, vectors
    void _blocks_float "fastdl_direct_blocks_float"(
        int co_block, const float* source, const Py_ssize_t* offsets, int taps,
        const float* weights, float* wide, Py_ssize_t wide_stride, Py_ssize_t first,
        Py_ssize_t blocks, Grid grid) noexcept nogil
    void _blocks_double "fastdl_direct_blocks_double"(
        int co_block, const double* source, const Py_ssize_t* offsets, int taps,
        const double* weights, double* wide, Py_ssize_t wide_stride, Py_ssize_t first,
        Py_ssize_t blocks, Grid grid) noexcept nogil


cdef inline void _blocks(int co_block, const floating* source, const Py_ssize_t* offsets,
                         int taps, const floating* weights, floating* wide,
                         Py_ssize_t wide_stride, Py_ssize_t first, Py_ssize_t blocks,
                         Grid grid) noexcept nogil:
    """wide[b, q] = sum_t weights[t, b] * source[offsets[t] + where(q)] for ``blocks``
    register blocks of ``co_block`` channels (one of BLOCK_SHAPES) from position
    ``first`` of the grid on (``where``: the grid's, ``fastdl_grid``)."""
    if floating is float:
        _blocks_float(co_block, source, offsets, taps, weights, wide, wide_stride, first,
                      blocks, grid)
    else:
        _blocks_double(co_block, source, offsets, taps, weights, wide, wide_stride, first,
                       blocks, grid)
