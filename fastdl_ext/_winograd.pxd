# cython: language_level=3
"""The per-tile halves of Winograd F(2×2, 3×3)'s transforms (``winograd.pyx``), eight
tiles of a tile row at a time on 8-lane vectors.

Tile ``tx`` of a row reads input columns 2 tx .. 2 tx + 3 and writes output columns
2 tx, 2 tx + 1: the pairs are split and joined by vector shuffles, so that the
transforms run along the row's tiles at unit stride. Tile by tile, gathering from
and scattering to the 16 transformed planes, they were a third of the forward at
8 tiles a row (64 -> 64 at 16², batch 32).
"""
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_winograd.h":
    void _input_float "fastdl_winograd_input_float"(
        const float* s0, const float* s1, const float* s2, const float* s3, Py_ssize_t lo,
        Py_ssize_t count, float* mixed, Py_ssize_t width, float* dst, Py_ssize_t plane,
        Py_ssize_t tiles) noexcept nogil
    void _input_double "fastdl_winograd_input_double"(
        const double* s0, const double* s1, const double* s2, const double* s3, Py_ssize_t lo,
        Py_ssize_t count, double* mixed, Py_ssize_t width, double* dst, Py_ssize_t plane,
        Py_ssize_t tiles) noexcept nogil
    void _rows_float "fastdl_winograd_rows_float"(
        const float* m, Py_ssize_t plane, Py_ssize_t tiles, float shift, float* out0,
        float* out1, Py_ssize_t width) noexcept nogil
    void _adjoint_rows_float "fastdl_winograd_adjoint_rows_float"(
        const float* g0, const float* g1, Py_ssize_t width, Py_ssize_t tiles, float* dm,
        Py_ssize_t plane) noexcept nogil
    void _adjoint_rows_double "fastdl_winograd_adjoint_rows_double"(
        const double* g0, const double* g1, Py_ssize_t width, Py_ssize_t tiles, double* dm,
        Py_ssize_t plane) noexcept nogil
    void _band_input_float "fastdl_winograd_band_input_float"(
        const float* padded, Py_ssize_t channel_stride, Py_ssize_t row_stride, int channels,
        int tile_rows, int tiles_x, float* v, Py_ssize_t plane, Py_ssize_t channel_tiles,
        float* columns) noexcept nogil
    void _band_input_double "fastdl_winograd_band_input_double"(
        const double* padded, Py_ssize_t channel_stride, Py_ssize_t row_stride, int channels,
        int tile_rows, int tiles_x, double* v, Py_ssize_t plane, Py_ssize_t channel_tiles,
        double* columns) noexcept nogil
    void _band_output_float "fastdl_winograd_band_output_float"(
        const float* m, Py_ssize_t plane, Py_ssize_t tiles, Py_ssize_t tiles_x, float* out,
        Py_ssize_t row_stride, float add, const float* residual, Py_ssize_t residual_stride,
        bint activate, float slope) noexcept nogil
    void _band_output_double "fastdl_winograd_band_output_double"(
        const double* m, Py_ssize_t plane, Py_ssize_t tiles, Py_ssize_t tiles_x, double* out,
        Py_ssize_t row_stride, double add, const double* residual, Py_ssize_t residual_stride,
        bint activate, double slope) noexcept nogil
    void _rows_double "fastdl_winograd_rows_double"(
        const double* m, Py_ssize_t plane, Py_ssize_t tiles, double shift, double* out0,
        double* out1, Py_ssize_t width) noexcept nogil


cdef inline void _input_rows(const floating* s0, const floating* s1, const floating* s2,
                             const floating* s3, Py_ssize_t lo, Py_ssize_t count,
                             floating* mixed, Py_ssize_t width, floating* dst,
                             Py_ssize_t plane, Py_ssize_t tiles) noexcept nogil:
    """The transformed tiles of a tile row from its input rows (``fastdl_winograd_input``)."""
    if floating is float:
        _input_float(s0, s1, s2, s3, lo, count, mixed, width, dst, plane, tiles)
    else:
        _input_double(s0, s1, s2, s3, lo, count, mixed, width, dst, plane, tiles)


cdef inline void _adjoint_rows(const floating* g0, const floating* g1, Py_ssize_t width,
                               Py_ssize_t tiles, floating* dm, Py_ssize_t plane) noexcept nogil:
    """dm[k * plane + tx], k < 16: A dY Aᵀ of tile tx, dY from rows g0 and g1 (NULL: 0)."""
    if floating is float:
        _adjoint_rows_float(g0, g1, width, tiles, dm, plane)
    else:
        _adjoint_rows_double(g0, g1, width, tiles, dm, plane)


cdef inline void _tile_rows(const floating* m, Py_ssize_t plane, Py_ssize_t tiles,
                            floating shift, floating* out0, floating* out1,
                            Py_ssize_t width) noexcept nogil:
    """Output rows ``out0`` (and ``out1`` unless NULL) of a tile row = Aᵀ M A + shift."""
    if floating is float:
        _rows_float(m, plane, tiles, shift, out0, out1, width)
    else:
        _rows_double(m, plane, tiles, shift, out0, out1, width)



cdef inline void band_input(const floating* padded, Py_ssize_t channel_stride,
                            Py_ssize_t row_stride, int channels, int tile_rows, int tiles_x,
                            floating* v, Py_ssize_t plane, Py_ssize_t channel_tiles,
                            floating* columns) noexcept nogil:
    """The transformed input tiles of a band of ``tile_rows`` tile rows
    (``fastdl_winograd_band_input``)."""
    if floating is float:
        _band_input_float(padded, channel_stride, row_stride, channels, tile_rows, tiles_x, v,
                          plane, channel_tiles, columns)
    else:
        _band_input_double(padded, channel_stride, row_stride, channels, tile_rows, tiles_x,
                           v, plane, channel_tiles, columns)


cdef inline void band_output(const floating* m, Py_ssize_t plane, Py_ssize_t tiles,
                             Py_ssize_t tiles_x, floating* out, Py_ssize_t row_stride,
                             floating add, const floating* residual,
                             Py_ssize_t residual_stride, bint activate,
                             floating slope) noexcept nogil:
    """One channel's output rows of a band from its tiles' products, with the epilogue:
    act(conv + add + residual) (``fastdl_winograd_band_output``)."""
    if floating is float:
        _band_output_float(m, plane, tiles, tiles_x, out, row_stride, add, residual,
                           residual_stride, activate, slope)
    else:
        _band_output_double(m, plane, tiles, tiles_x, out, row_stride, add, residual,
                            residual_stride, activate, slope)
