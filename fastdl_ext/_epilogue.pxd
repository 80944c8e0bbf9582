# cython: language_level=3
"""The fused conv epilogues: bias, residual add and (leaky) ReLU over contiguous rows.

Their C is in ``include/fastdl_epilogue.h``, written in a form the compiler turns into
vector masks (a select where ``v if v > 0 else v * slope`` would branch), over the
8-lane vectors of ``include/fastdl_vectors.h``, whose ``FASTDL_CLONES`` compiles a
function for x86-64-v3 (AVX2 + FMA) and for the baseline, picked at load time. The
vector helpers other kernels share are declared here too: ``every_other`` (the column
phases of a stride-2 conv), ``max_rows`` and ``max_pairs`` (2x2 max pooling, alone and
fused into a conv), and ``mean`` (the global average pool, alone and in a chain's
classifier head).
"""
from fastdl_ext._blas cimport floating

cdef extern from "fastdl_epilogue.h":
    void _epilogue_rows_float "fastdl_epilogue_rows_float"(
        float* target, Py_ssize_t target_stride, const float* source,
        Py_ssize_t source_stride, const float* residual, Py_ssize_t residual_stride,
        Py_ssize_t rows, Py_ssize_t width, const float* shift, int activate,
        float slope) noexcept nogil
    void _epilogue_rows_double "fastdl_epilogue_rows_double"(
        double* target, Py_ssize_t target_stride, const double* source,
        Py_ssize_t source_stride, const double* residual, Py_ssize_t residual_stride,
        Py_ssize_t rows, Py_ssize_t width, const double* shift, int activate,
        double slope) noexcept nogil

    void _epilogue_split_float "fastdl_epilogue_split_float"(
        float* target, Py_ssize_t even, Py_ssize_t odd, Py_ssize_t phase_stride,
        Py_ssize_t cols, int phases, int border, int first_row, int rows, const float* source,
        Py_ssize_t source_stride, const float* residual, Py_ssize_t residual_stride,
        Py_ssize_t width, const float* shift, int activate, float slope) noexcept nogil
    void _epilogue_split_double "fastdl_epilogue_split_double"(
        double* target, Py_ssize_t even, Py_ssize_t odd, Py_ssize_t phase_stride,
        Py_ssize_t cols, int phases, int border, int first_row, int rows,
        const double* source, Py_ssize_t source_stride, const double* residual,
        Py_ssize_t residual_stride, Py_ssize_t width, const double* shift, int activate,
        double slope) noexcept nogil
    void _every_other_float "fastdl_every_other_float"(
        float* target, Py_ssize_t target_stride, const float* source,
        Py_ssize_t source_stride, Py_ssize_t rows, Py_ssize_t count,
        Py_ssize_t readable) noexcept nogil
    void _every_other_double "fastdl_every_other_double"(
        double* target, Py_ssize_t target_stride, const double* source,
        Py_ssize_t source_stride, Py_ssize_t rows, Py_ssize_t count,
        Py_ssize_t readable) noexcept nogil
    void _max_rows_float "fastdl_max_rows_float"(
        const float* first, const float* second, float* out, Py_ssize_t count) noexcept nogil
    void _max_rows_double "fastdl_max_rows_double"(
        const double* first, const double* second, double* out,
        Py_ssize_t count) noexcept nogil
    void _max_pairs_float "fastdl_max_pairs_float"(
        const float* values, float* out, Py_ssize_t count) noexcept nogil
    void _max_pairs_double "fastdl_max_pairs_double"(
        const double* values, double* out, Py_ssize_t count) noexcept nogil
    double _mean_float "fastdl_mean_float"(const float* values, Py_ssize_t count) noexcept nogil
    double _mean_double "fastdl_mean_double"(const double* values,
                                             Py_ssize_t count) noexcept nogil


cdef inline floating mean(const floating* values, Py_ssize_t count) noexcept nogil:
    """The mean of ``count`` values, summed in float64 in a fixed order."""
    if floating is float:
        return <float>_mean_float(values, count)
    return _mean_double(values, count)


cdef inline void epilogue_split(floating* target, Py_ssize_t even, Py_ssize_t odd,
                                Py_ssize_t phase_stride, Py_ssize_t cols, int phases,
                                int border, int first_row, int rows, const floating* source,
                                Py_ssize_t source_stride, const floating* residual,
                                Py_ssize_t residual_stride, Py_ssize_t width,
                                const floating* shift, bint activate,
                                floating slope) noexcept nogil:
    """Output rows [first_row, first_row + rows) of ``width`` values, act(source + *shift
    + residual), split by column parity into phase planes: row y lies at ``target`` +
    ((y + border) % phases) * phase_stride + (y + border) / phases * cols, its even
    columns ``even`` past that, its odd ones ``odd`` (``shift``, ``residual``: NULL to
    leave out)."""
    if floating is float:
        _epilogue_split_float(target, even, odd, phase_stride, cols, phases, border,
                              first_row, rows, source, source_stride, residual,
                              residual_stride, width, shift, activate, slope)
    else:
        _epilogue_split_double(target, even, odd, phase_stride, cols, phases, border,
                               first_row, rows, source, source_stride, residual,
                               residual_stride, width, shift, activate, slope)


cdef inline void every_other(floating* target, Py_ssize_t target_stride,
                             const floating* source, Py_ssize_t source_stride, Py_ssize_t rows,
                             Py_ssize_t count, Py_ssize_t readable) noexcept nogil:
    """target[r, i] = source[r, 2 i] for ``count`` values of ``rows`` rows; a row of
    ``source`` has ``readable`` values from its start (strides in elements)."""
    if floating is float:
        _every_other_float(target, target_stride, source, source_stride, rows, count, readable)
    else:
        _every_other_double(target, target_stride, source, source_stride, rows, count,
                            readable)


cdef inline void max_rows(const floating* first, const floating* second, floating* out,
                          Py_ssize_t count) noexcept nogil:
    """out[j] = max(first[j], second[j]), a NaN winning (``out`` may be ``first``)."""
    if floating is float:
        _max_rows_float(first, second, out, count)
    else:
        _max_rows_double(first, second, out, count)


cdef inline void max_pairs(const floating* values, floating* out,
                           Py_ssize_t count) noexcept nogil:
    """out[i] = max(values[2 i], values[2 i + 1]), i < count, a NaN winning (``out``
    may be ``values``)."""
    if floating is float:
        _max_pairs_float(values, out, count)
    else:
        _max_pairs_double(values, out, count)


cdef inline void epilogue_rows(floating* target, Py_ssize_t target_stride,
                               const floating* source, Py_ssize_t source_stride,
                               const floating* residual, Py_ssize_t residual_stride,
                               Py_ssize_t rows, Py_ssize_t width, const floating* shift,
                               bint activate, floating slope) noexcept nogil:
    """target[r, :width] = act(source[r, :width] + *shift + residual[r, :width]).

    ``shift`` and ``residual`` may be NULL (left out); ``activate``: ``v`` if
    ``v > 0`` else ``slope * v`` last. ``source`` may equal ``target``.
    """
    if floating is float:
        _epilogue_rows_float(target, target_stride, source, source_stride, residual,
                             residual_stride, rows, width, shift, activate, slope)
    else:
        _epilogue_rows_double(target, target_stride, source, source_stride, residual,
                              residual_stride, rows, width, shift, activate, slope)


cdef inline void leaky_relu(floating* values, Py_ssize_t count, floating slope) noexcept nogil:
    """values[i] = values[i] if values[i] > 0 else slope * values[i] (0: ReLU)."""
    epilogue_rows(values, 0, values, 0, NULL, 0, 1, count, NULL, True, slope)


cdef inline const floating* bias_pointer(const floating[::1] bias):
    """A fused epilogue's bias: its first value, or NULL where there is none."""
    return &bias[0] if bias is not None and bias.shape[0] else NULL


cdef inline const floating* residual_pointer(const floating[:, :, :, ::1] residual):
    """A fused epilogue's residual (N, C, H, W): its first value, or NULL."""
    return &residual[0, 0, 0, 0] if residual is not None else NULL
