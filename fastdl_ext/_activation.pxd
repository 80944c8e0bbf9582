# cython: language_level=3
"""The fused conv epilogues: bias, residual add and (leaky) ReLU over contiguous rows.

Written as plain C in a form the compiler turns into vector masks: ``v if v > 0
else v * slope`` compiles to a data-dependent branch (IEEE trapping rules keep
the multiply conditional), mispredicted on half the elements (3× a LeNet conv's
own time). Here both selects pick ``v`` or 0 and the sum is exact; NaN goes to
the second term and stays NaN.

``FASTDL_CLONES`` compiles a function twice where GCC can dispatch at load time
(an ifunc picks the clone the CPU runs): for x86-64-v3 (AVX2 + FMA) and for the
baseline the package is built for.
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
