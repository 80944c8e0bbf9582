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
here too: ``every_other`` (the column phases of a stride-2 conv), ``max_rows`` and
``max_pairs`` (2x2 max pooling, alone and fused into a conv), and ``mean`` (the
global average pool, alone and in a chain's classifier head).
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
       of 2x2 windows, and of the phase planes of a stride-2 conv; and the reverse, the
       lanes of a and b interleaved (the low and the high halves). */
    #if defined(__clang__) || __GNUC__ >= 12
    #  define FASTDL_EVEN8(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
    #  define FASTDL_ODD8(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
    #  define FASTDL_ZIP_LOW8(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
    #  define FASTDL_ZIP_HIGH8(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
    #else
       typedef long long fastdl_lanes8 __attribute__((vector_size(64)));
    #  define FASTDL_EVEN8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 2, 4, 6, 8, 10, 12, 14})
    #  define FASTDL_ODD8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){1, 3, 5, 7, 9, 11, 13, 15})
    #  define FASTDL_ZIP_LOW8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 8, 1, 9, 2, 10, 3, 11})
    #  define FASTDL_ZIP_HIGH8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){4, 12, 5, 13, 6, 14, 7, 15})
    #endif
    /* The later of two window values in torch's order wins when it is larger or NaN,
       as a select (an ``||`` would branch). */
    #define FASTDL_TAKE(best, v) (((v) > (best)) | ((v) != (v)))
    /* 8-lane vectors of ``type`` (loaded unaligned) and the helpers on them:
       fastdl_every_other_<type>: target[r * target_stride + i] = source[r *
         source_stride + 2 i], i < count, for ``rows`` rows (a stride-2 conv's phase
         plane), eight at a time where a row has ``readable`` values from its start;
       fastdl_max_rows_<type>: out[j] = the winner of first[j] and second[j] (out may
         be first);
       fastdl_max_pairs_<type>: out[i] = the winner of values[2 i] and values[2 i + 1]
         (out may be values).
       Column pairs are split by shuffles of explicit vectors: GCC gathered them value
       by value (3x slower than the Numba pooling loop, a third of a strided conv). */
    #define FASTDL_VECTOR_HELPERS(type, mask_type)                                     \
        typedef type fastdl_##type##8 __attribute__((vector_size(8 * sizeof(type))));  \
        typedef type fastdl_##type##8u __attribute__((vector_size(8 * sizeof(type)),   \
                                                      aligned(sizeof(type)), may_alias)); \
        typedef mask_type fastdl_##type##8m __attribute__((vector_size(8 * sizeof(type)))); \
        FASTDL_CLONES static void fastdl_every_other_##type(                           \
                type *restrict target, Py_ssize_t target_stride,                       \
                const type *restrict source, Py_ssize_t source_stride, Py_ssize_t rows, \
                Py_ssize_t count, Py_ssize_t readable) {                               \
            for (Py_ssize_t r = 0; r < rows; r++) {                                     \
                const type *restrict from = source + r * source_stride;                 \
                type *restrict to = target + r * target_stride;                         \
                Py_ssize_t i = 0;                                                       \
                for (; i + 8 <= count && 2 * i + 16 <= readable; i += 8) {              \
                    fastdl_##type##8 a = *(const fastdl_##type##8u *)(from + 2 * i);    \
                    fastdl_##type##8 b = *(const fastdl_##type##8u *)(from + 2 * i + 8); \
                    *(fastdl_##type##8u *)(to + i) = FASTDL_EVEN8(a, b);                \
                }                                                                       \
                for (; i < count; i++)                                                  \
                    to[i] = from[2 * i];                                                \
            }                                                                           \
        }                                                                               \
        FASTDL_CLONES static void fastdl_max_rows_##type(                              \
                const type *first, const type *restrict second, type *out,             \
                Py_ssize_t count) {                                                     \
            for (Py_ssize_t j = 0; j < count; j++)                                      \
                out[j] = FASTDL_TAKE(first[j], second[j]) ? second[j] : first[j];       \
        }                                                                               \
        FASTDL_CLONES static void fastdl_max_pairs_##type(const type *values, type *out, \
                                                          Py_ssize_t count) {          \
            Py_ssize_t i = 0;                                                           \
            for (; i + 8 <= count; i += 8) {   /* reads stay ahead of the writes */     \
                fastdl_##type##8 a = *(const fastdl_##type##8u *)(values + 2 * i);      \
                fastdl_##type##8 b = *(const fastdl_##type##8u *)(values + 2 * i + 8);  \
                fastdl_##type##8 left = FASTDL_EVEN8(a, b), right = FASTDL_ODD8(a, b);  \
                fastdl_##type##8m take = FASTDL_TAKE(left, right);                      \
                *(fastdl_##type##8u *)(out + i) = (fastdl_##type##8)(                   \
                    (take & (fastdl_##type##8m)right) | (~take & (fastdl_##type##8m)left)); \
            }                                                                           \
            for (; i < count; i++) {                                                    \
                type left = values[2 * i], right = values[2 * i + 1];                   \
                out[i] = FASTDL_TAKE(left, right) ? right : left;                       \
            }                                                                           \
        }
    FASTDL_VECTOR_HELPERS(float, int)
    FASTDL_VECTOR_HELPERS(double, long long)
    #define FASTDL_LEAKY(v, slope)                                                     \
        (((v) > 0 ? (v) : 0) + (slope) * ((v) > 0 ? 0 : (v)))
    /* target[r, :width] = act(source[r, :width] + *shift + residual[r, :width]) per
       row, each term only when given (shift, residual: NULL; act: ``activate``).
       ``source`` may be ``target`` (an in-place epilogue). One pass over the rows
       instead of one per term: the direct conv's output of a ResNet block spent as
       long in three passes as in a third of its taps. Rows that follow each other in
       all three arrays run as one, and each run goes through a loop whose pointers
       are restrict (or one pointer, in place): rows of 8-32 values had spent more
       time in GCC's overlap checks and loop set-up than in the loop. */
    #define FASTDL_EPILOGUE_RUN(type, to, from)                                        \
        for (Py_ssize_t i = 0; i < width; i++) {                                        \
            type v = from[i];                                                           \
            if (has_shift) v = v + add;                                                 \
            if (added != NULL) v = v + added[i];                                        \
            to[i] = activate ? FASTDL_LEAKY(v, slope) : v;                              \
        }
    #define FASTDL_EPILOGUE_ROWS(name, type)                                           \
        /* loop-invariant branches: GCC unswitches them into vector loops */            \
        static inline void name##_apart(type *restrict to, const type *restrict from,  \
                                        const type *restrict added, Py_ssize_t width,  \
                                        int has_shift, type add, int activate,         \
                                        type slope) {                                  \
            FASTDL_EPILOGUE_RUN(type, to, from)                                         \
        }                                                                               \
        static inline void name##_in_place(type *to, const type *restrict added,       \
                                           Py_ssize_t width, int has_shift, type add,  \
                                           int activate, type slope) {                 \
            FASTDL_EPILOGUE_RUN(type, to, to)                                           \
        }                                                                               \
        FASTDL_CLONES static void name(type *target, Py_ssize_t target_stride,        \
                                       const type *source, Py_ssize_t source_stride,  \
                                       const type *restrict residual,                 \
                                       Py_ssize_t residual_stride, Py_ssize_t rows,   \
                                       Py_ssize_t width, const type *restrict shift,  \
                                       int activate, type slope) {                    \
            type add = shift != NULL ? *shift : (type)0;                               \
            if (rows > 1 && target_stride == width && source_stride == width           \
                    && (residual == NULL || residual_stride == width)) {               \
                width *= rows;                                                          \
                rows = 1;                                                               \
            }                                                                           \
            for (Py_ssize_t r = 0; r < rows; r++) {                                     \
                type *to = target + r * target_stride;                                  \
                const type *from = source + r * source_stride;                          \
                const type *added = residual != NULL ? residual + r * residual_stride : NULL; \
                if (to == from)                                                         \
                    name##_in_place(to, added, width, shift != NULL, add, activate, slope); \
                else                                                                    \
                    name##_apart(to, from, added, width, shift != NULL, add, activate,  \
                                 slope);                                                \
            }                                                                           \
        }
    FASTDL_EPILOGUE_ROWS(fastdl_epilogue_rows_float, float)
    FASTDL_EPILOGUE_ROWS(fastdl_epilogue_rows_double, double)
    /* Rows of a conv's epilogue split by column parity, as a stride-2 conv's phase
       planes hold them: output row y (first_row <= y < first_row + rows) goes to the
       row of ``target`` at ((y + border) % phases) * phase_stride + (y + border) /
       phases * cols, its even columns act(source[2 i] + *shift + residual[2 i]) at
       ``even`` past it, the odd ones at ``odd``. One pass of vector shuffles for all
       rows: the epilogue and then a copy per parity, or a call per row, cost as long
       as the copy into phase planes this replaces. */
    #define FASTDL_EPILOGUE_SPLIT(type)                                                \
        FASTDL_CLONES static void fastdl_epilogue_split_##type(                        \
                type *target, Py_ssize_t even, Py_ssize_t odd, Py_ssize_t phase_stride, \
                Py_ssize_t cols, int phases, int border, int first_row, int rows,      \
                const type *source, Py_ssize_t source_stride, const type *residual,    \
                Py_ssize_t residual_stride, Py_ssize_t width, const type *shift,       \
                int activate, type slope) {                                             \
            type add = shift != NULL ? *shift : (type)0;                               \
            for (int y = first_row; y < first_row + rows; y++) {                        \
                type *row = target + (Py_ssize_t)((y + border) % phases) * phase_stride \
                    + (Py_ssize_t)((y + border) / phases) * cols;                       \
                type *restrict to_even = row + even, *restrict to_odd = row + odd;      \
                const type *restrict from = source + (Py_ssize_t)(y - first_row) * source_stride; \
                const type *restrict added = residual == NULL ? NULL                   \
                    : residual + (Py_ssize_t)(y - first_row) * residual_stride;         \
                Py_ssize_t i = 0;                                                       \
                for (; 2 * i + 16 <= width; i += 8) {                                   \
                    fastdl_##type##8 v[2];                                              \
                    for (int k = 0; k < 2; k++) {                                       \
                        v[k] = *(const fastdl_##type##8u *)(from + 2 * i + 8 * k) + add; \
                        if (added != NULL)                                              \
                            v[k] += *(const fastdl_##type##8u *)(added + 2 * i + 8 * k); \
                        if (activate) {                                                 \
                            fastdl_##type##8m positive = v[k] > 0;                      \
                            v[k] = (fastdl_##type##8)(positive & (fastdl_##type##8m)v[k]) \
                                + slope * (fastdl_##type##8)(~positive & (fastdl_##type##8m)v[k]); \
                        }                                                               \
                    }                                                                   \
                    *(fastdl_##type##8u *)(to_even + i) = FASTDL_EVEN8(v[0], v[1]);     \
                    *(fastdl_##type##8u *)(to_odd + i) = FASTDL_ODD8(v[0], v[1]);       \
                }                                                                       \
                for (Py_ssize_t x = 2 * i; x < width; x++) {                            \
                    type value = from[x] + add;                                         \
                    if (added != NULL)                                                  \
                        value += added[x];                                              \
                    (x % 2 ? to_odd : to_even)[x / 2] =                                 \
                        activate ? FASTDL_LEAKY(value, slope) : value;                  \
                }                                                                       \
            }                                                                           \
        }
    FASTDL_EPILOGUE_SPLIT(float)
    FASTDL_EPILOGUE_SPLIT(double)
    /* The mean of ``count`` values, summed in double in sixteen interleaved sums of
       explicit vectors (a fixed order, so the result does not depend on the thread
       count; four scalar sums were one add latency per value). */
    #define FASTDL_MEAN(name, type)                                                    \
        typedef type name##_quad __attribute__((vector_size(4 * sizeof(type)),         \
                                                aligned(sizeof(type)), may_alias));    \
        typedef double name##_sums __attribute__((vector_size(32)));                   \
        FASTDL_CLONES static double name(const type *restrict values, Py_ssize_t count) { \
            name##_sums sums[4] = {{0}, {0}, {0}, {0}};                                 \
            Py_ssize_t i = 0;                                                           \
            for (; i + 16 <= count; i += 16)                                            \
                for (int k = 0; k < 4; k++)                                             \
                    sums[k] += __builtin_convertvector(                                 \
                        *(const name##_quad *)(values + i + 4 * k), name##_sums);       \
            double total = 0;                                                           \
            for (; i < count; i++)                                                      \
                total += values[i];                                                     \
            name##_sums all = (sums[0] + sums[1]) + (sums[2] + sums[3]);                \
            return (total + ((all[0] + all[1]) + (all[2] + all[3]))) / count;           \
        }
    FASTDL_MEAN(fastdl_mean_float, float)
    FASTDL_MEAN(fastdl_mean_double, double)
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
