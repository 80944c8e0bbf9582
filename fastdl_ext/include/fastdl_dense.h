/* The register kernel of a dense layer on packed weights (dense.pyx and the dense
   layers of a conv chain, direct.pyx). Declared for Cython in _dense.pxd. */

#ifndef FASTDL_DENSE_H
#define FASTDL_DENSE_H

#include "fastdl_vectors.h"

/* One register block of a dense layer on packed weights:
   out[b * out_stride + j] = act(sum_k x[b * x_stride + k] * panel[k * 8 VECTORS + j]
   + bias[j]) for the block's ``rows`` (at most ROWS; the missing ones repeat the
   last and are not stored) and ``features`` (at most 8 VECTORS; the panel's zeros
   beyond them are not stored). ROWS x VECTORS accumulators stay in registers
   through all the inputs (FASTDL_CLONES and the 8-lane vectors: fastdl_vectors.h). */
#define FASTDL_DENSE_BLOCK(type, ROWS, VECTORS)                                     \
    FASTDL_CLONES static void fastdl_dense_block_##type(                           \
            const type *restrict x, Py_ssize_t x_stride, int rows, Py_ssize_t inputs, \
            const type *restrict panel, const type *restrict bias, type *restrict out, \
            Py_ssize_t out_stride, int features, int activate, type slope) {       \
        const type *restrict row[ROWS];                                             \
        for (int b = 0; b < ROWS; b++)                                              \
            row[b] = x + (Py_ssize_t)(b < rows ? b : rows - 1) * x_stride;          \
        fastdl_##type##8 acc[ROWS][VECTORS];                                        \
        for (int b = 0; b < ROWS; b++)                                              \
            for (int v = 0; v < VECTORS; v++)                                       \
                acc[b][v] = (fastdl_##type##8){0};                                  \
        for (Py_ssize_t k = 0; k < inputs; k++) {                                   \
            fastdl_##type##8 w[VECTORS];                                            \
            for (int v = 0; v < VECTORS; v++)                                       \
                w[v] = *(const fastdl_##type##8u *)(panel + (k * VECTORS + v) * 8); \
            for (int b = 0; b < ROWS; b++) {                                        \
                type value = row[b][k];                                             \
                for (int v = 0; v < VECTORS; v++)                                   \
                    acc[b][v] += value * w[v];                                      \
            }                                                                       \
        }                                                                           \
        for (int b = 0; b < ROWS; b++) {                                            \
            if (b >= rows)                                                          \
                break;                                                              \
            for (int v = 0; v < VECTORS; v++) {                                     \
                fastdl_##type##8 value = acc[b][v];                                 \
                if (bias != NULL)                                                   \
                    value += *(const fastdl_##type##8u *)(bias + 8 * v);            \
                if (activate) {                                                     \
                    fastdl_##type##8m positive = value > 0;                         \
                    value = (fastdl_##type##8)(positive & (fastdl_##type##8m)value) \
                        + slope * (fastdl_##type##8)(~positive & (fastdl_##type##8m)value); \
                }                                                                   \
                type *target = out + b * out_stride + 8 * v;                        \
                int left = features - 8 * v;                                        \
                if (left >= 8)                                                      \
                    *(fastdl_##type##8u *)target = value;                           \
                else                                                                \
                    for (int j = 0; j < left; j++)                                  \
                        target[j] = value[j];                                       \
            }                                                                       \
        }                                                                           \
    }
/* 4 rows x 3 vectors: twelve accumulators, three weight vectors and a broadcast
   fill the sixteen AVX2 registers */
#define FASTDL_DENSE_ROWS 4
#define FASTDL_DENSE_PANEL 24
FASTDL_DENSE_BLOCK(float, 4, 3)

#endif  /* FASTDL_DENSE_H */
