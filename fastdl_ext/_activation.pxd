# cython: language_level=3
"""The fused conv epilogues: bias, residual add and (leaky) ReLU over contiguous rows.

Written as plain C in a form the compiler turns into vector masks: ``v if v > 0
else v * slope`` compiles to a data-dependent branch (IEEE trapping rules keep
the multiply conditional), mispredicted on half the elements (3× a LeNet conv's
own time). Here both selects pick ``v`` or 0 and the sum is exact; NaN goes to
the second term and stays NaN.

``FASTDL_CLONES`` compiles a function twice where GCC can dispatch at load time
(an ifunc picks the clone the CPU runs): for x86-64-v3 (AVX2 + FMA) and for the
baseline the package is built for. The vector helpers other kernels share live
here too: ``FASTDL_EVEN8`` / ``FASTDL_ODD8`` (lane shuffles) and ``every_other`` (the
column phases of a stride-2 conv).
"""
from fastdl_ext._blas cimport floating

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #  if __GNUC__ >= 12
    #    define FASTDL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
    #  else
    #    define FASTDL_CLONES __attribute__((target_clones("avx2", "default")))
    #  endif
    #else
    #  define FASTDL_CLONES
    #endif
    /* The even and the odd lanes of two 8-lane vectors (a's, then b's): the columns
       of 2x2 windows, and of the phase planes of a stride-2 conv. */
    #if defined(__clang__) || __GNUC__ >= 12
    #  define FASTDL_EVEN8(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
    #  define FASTDL_ODD8(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
    #else
       typedef long long fastdl_lanes8 __attribute__((vector_size(64)));
    #  define FASTDL_EVEN8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 2, 4, 6, 8, 10, 12, 14})
    #  define FASTDL_ODD8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){1, 3, 5, 7, 9, 11, 13, 15})
    #endif
    /* target[r * target_stride + i] = source[r * source_stride + 2 i], i < count, for
       ``rows`` rows: a stride-2 conv's phase plane. Eight at a time where a row has
       ``readable`` values from its start for the two vectors read, split by
       shuffles; GCC gathered them one by one (a third of a strided ResNet conv). */
    #define FASTDL_EVERY_OTHER(name, type)                                             \
        typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));     \
        typedef type name##_unaligned __attribute__((vector_size(8 * sizeof(type)),    \
                                                     aligned(sizeof(type)), may_alias)); \
        FASTDL_CLONES static void name(type *restrict target, Py_ssize_t target_stride, \
                                       const type *restrict source,                    \
                                       Py_ssize_t source_stride, Py_ssize_t rows,      \
                                       Py_ssize_t count, Py_ssize_t readable) {        \
            for (Py_ssize_t r = 0; r < rows; r++) {                                     \
                const type *restrict from = source + r * source_stride;                 \
                type *restrict to = target + r * target_stride;                         \
                Py_ssize_t i = 0;                                                       \
                for (; i + 8 <= count && 2 * i + 16 <= readable; i += 8) {              \
                    name##_vector a = *(const name##_unaligned *)(from + 2 * i);        \
                    name##_vector b = *(const name##_unaligned *)(from + 2 * i + 8);    \
                    *(name##_unaligned *)(to + i) = FASTDL_EVEN8(a, b);                 \
                }                                                                       \
                for (; i < count; i++)                                                  \
                    to[i] = from[2 * i];                                                \
            }                                                                           \
        }
    FASTDL_EVERY_OTHER(fastdl_every_other_float, float)
    FASTDL_EVERY_OTHER(fastdl_every_other_double, double)
    #define FASTDL_LEAKY(v, slope)                                                     \
        (((v) > 0 ? (v) : 0) + (slope) * ((v) > 0 ? 0 : (v)))
    /* target[r, :width] = act(source[r, :width] + *shift + residual[r, :width]) per
       row, each term only when given (shift, residual: NULL; act: ``activate``).
       ``source`` may be ``target`` (an in-place epilogue): it is not restrict. One
       pass over the rows instead of one per term: the direct conv's output of a
       ResNet block spent as long in three passes as in a third of its taps. */
    #define FASTDL_EPILOGUE_ROWS(name, type)                                           \
        FASTDL_CLONES static void name(type *target, Py_ssize_t target_stride,        \
                                       const type *source, Py_ssize_t source_stride,  \
                                       const type *restrict residual,                 \
                                       Py_ssize_t residual_stride, Py_ssize_t rows,   \
                                       Py_ssize_t width, const type *restrict shift,  \
                                       int activate, type slope) {                    \
            type add = shift != NULL ? *shift : (type)0;                               \
            for (Py_ssize_t r = 0; r < rows; r++) {                                     \
                type *to = target + r * target_stride;                                  \
                const type *from = source + r * source_stride;                          \
                const type *restrict added =                                           \
                    residual != NULL ? residual + r * residual_stride : NULL;           \
                /* loop-invariant branches: GCC unswitches them into vector loops */    \
                for (Py_ssize_t i = 0; i < width; i++) {                                \
                    type v = from[i];                                                   \
                    if (shift != NULL) v = v + add;                                     \
                    if (residual != NULL) v = v + added[i];                             \
                    to[i] = activate ? FASTDL_LEAKY(v, slope) : v;                      \
                }                                                                       \
            }                                                                           \
        }
    FASTDL_EPILOGUE_ROWS(fastdl_epilogue_rows_float, float)
    FASTDL_EPILOGUE_ROWS(fastdl_epilogue_rows_double, double)
    """
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

    void _every_other_float "fastdl_every_other_float"(
        float* target, Py_ssize_t target_stride, const float* source,
        Py_ssize_t source_stride, Py_ssize_t rows, Py_ssize_t count,
        Py_ssize_t readable) noexcept nogil
    void _every_other_double "fastdl_every_other_double"(
        double* target, Py_ssize_t target_stride, const double* source,
        Py_ssize_t source_stride, Py_ssize_t rows, Py_ssize_t count,
        Py_ssize_t readable) noexcept nogil


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
