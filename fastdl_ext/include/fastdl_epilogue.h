/* The fused conv epilogues: bias, residual add and (leaky) ReLU over rows, in place or
   into phase planes, and the mean a global average pool takes. Written in a form the
   compiler turns into vector masks: ``v if v > 0 else v * slope`` compiles to a
   data-dependent branch (IEEE trapping rules keep the multiply conditional),
   mispredicted on half the elements (3x a LeNet conv's own time). Here both selects
   pick v or 0 and the sum is exact; NaN goes to the second term and stays NaN.
   Declared for Cython in _epilogue.pxd. */

#ifndef FASTDL_EPILOGUE_H
#define FASTDL_EPILOGUE_H

#include "fastdl_vectors.h"

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

#endif  /* FASTDL_EPILOGUE_H */
