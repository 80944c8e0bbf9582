/* The direct convolution's weight-gradient block (direct_grad.pyx). */

#ifndef FASTDL_DIRECT_GRAD_H
#define FASTDL_DIRECT_GRAD_H

#include "fastdl_vectors.h"

/* Weight gradient of one channel block and GRAD_TAPS taps over a whole wide grid:
   sums[g][b][k] += lanes of sum_q grad[b][q] * source[offsets[3g + k] + q], q < length (a
   multiple of 8; grid columns past the output width hold zero gradient). Twelve
   accumulators, as in the forward block; the three taps are unrolled by hand
   (kept in arrays, GCC spilled them: 3x slower). The sums stay 8-lane vectors,
   added to memory: horizontal sums per pass (a serial chain of 8 adds each)
   cost more than the pass on LeNet-sized grids; the caller reduces the lanes once. */
#define FASTDL_GRAD_TAPS 3
#define FASTDL_GRAD_CO_BLOCK 4
#define FASTDL_GRAD_BLOCK(name, type)                                               \
    typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
    FASTDL_CLONES static void name(const type *restrict grad, Py_ssize_t grad_stride, \
                                   const type *restrict source,                     \
                                   const Py_ssize_t *restrict offsets, int groups,  \
                                   Py_ssize_t length, type *restrict sums) {        \
        /* all tap groups of a channel block in one call: on LeNet's 144-position   \
           grids a call per group cost a sixth of the step's weight gradient */      \
        for (int group = 0; group < groups; group++) {                              \
            name##_vector acc[FASTDL_GRAD_CO_BLOCK][FASTDL_GRAD_TAPS];              \
            for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++)                          \
                for (int k = 0; k < FASTDL_GRAD_TAPS; k++)                          \
                    acc[b][k] = (name##_vector){0};                                 \
            const Py_ssize_t *restrict at_taps = offsets + FASTDL_GRAD_TAPS * group; \
            const type *restrict first = source + at_taps[0];                       \
            const type *restrict second = source + at_taps[1];                      \
            const type *restrict third = source + at_taps[2];                       \
            for (Py_ssize_t q = 0; q < length; q += 8) {                            \
                name##_vector x0, x1, x2, g;                                        \
                __builtin_memcpy(&x0, first + q, sizeof x0);                        \
                __builtin_memcpy(&x1, second + q, sizeof x1);                       \
                __builtin_memcpy(&x2, third + q, sizeof x2);                        \
                for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++) {                    \
                    __builtin_memcpy(&g, grad + b * grad_stride + q, sizeof g);     \
                    acc[b][0] += g * x0;                                            \
                    acc[b][1] += g * x1;                                            \
                    acc[b][2] += g * x2;                                            \
                }                                                                   \
            }                                                                       \
            type *restrict group_sums =                                             \
                sums + (Py_ssize_t)group * FASTDL_GRAD_CO_BLOCK * FASTDL_GRAD_TAPS * 8; \
            for (int b = 0; b < FASTDL_GRAD_CO_BLOCK; b++)                          \
                for (int k = 0; k < FASTDL_GRAD_TAPS; k++) {                        \
                    name##_vector total;                                            \
                    type *restrict at = group_sums + (FASTDL_GRAD_TAPS * b + k) * 8; \
                    __builtin_memcpy(&total, at, sizeof total);                     \
                    total += acc[b][k];                                             \
                    __builtin_memcpy(at, &total, sizeof total);                     \
                }                                                                   \
        }                                                                           \
    }
FASTDL_GRAD_BLOCK(fastdl_direct_grad_float, float)
FASTDL_GRAD_BLOCK(fastdl_direct_grad_double, double)

#endif  /* FASTDL_DIRECT_GRAD_H */
