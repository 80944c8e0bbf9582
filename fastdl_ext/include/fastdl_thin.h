/* The product of a few rows of a conv's weights with a narrow column matrix: the
   register tiles of conv_channels.pyx (a conv run once on few positions in all, as
   ResNet's 8x8 and 4x4 stages at batch 1). Declared for Cython in conv_channels.pyx.

   The weights are read as they are, (rows, depth) with a row stride: packing them
   would stream them twice, and here each weight is used for only ``width`` positions.
   A tile is FASTDL_THIN_ROWS rows by 16 columns (two 8-lane vectors a row, 12
   accumulators: AVX2's 16 registers hold them with the two column vectors and a
   broadcast). Each output value is summed by one accumulator lane over ``depth`` in
   order, in blocks of FASTDL_THIN_DEPTH whose sums are added to the output in order,
   so it does not depend on the tiling or the thread count; the blocks bound the
   float32 rounding as a GEMM's own depth blocks do. */

#ifndef FASTDL_THIN_H
#define FASTDL_THIN_H

#include "fastdl_vectors.h"

#define FASTDL_THIN_ROWS 6
#define FASTDL_THIN_DEPTH 256

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && __GNUC__ >= 12
#  define FASTDL_THIN_CLONES __attribute__((target_clones("arch=x86-64-v4", \
                                                          "arch=x86-64-v3", "default")))
#else
#  define FASTDL_THIN_CLONES FASTDL_CLONES
#endif

/* One tile of ``ROWS`` rows: out[r, 0:16] = sum over i < depth of weight[r, i] *
   cols[i, 0:16], in depth blocks (``first``: the first block stores, later ones add). */
#define FASTDL_THIN_TILE(type, ROWS, weight, weight_stride, cols, cols_stride, depth,   \
                         out, out_stride)                                            \
    for (int start = 0; start < (depth); start += FASTDL_THIN_DEPTH) {               \
        int stop = start + FASTDL_THIN_DEPTH < (depth) ? start + FASTDL_THIN_DEPTH : (depth); \
        fastdl_##type##8 acc[ROWS][2];                                               \
        for (int r = 0; r < (ROWS); r++)                                             \
            acc[r][0] = acc[r][1] = (fastdl_##type##8){0};                           \
        for (int i = start; i < stop; i++) {                                         \
            const type *column = (cols) + (Py_ssize_t)i * (cols_stride);             \
            fastdl_##type##8 low = *(const fastdl_##type##8u *)column;               \
            fastdl_##type##8 high = *(const fastdl_##type##8u *)(column + 8);        \
            for (int r = 0; r < (ROWS); r++) {                                       \
                type w = (weight)[r * (weight_stride) + i];                          \
                acc[r][0] += w * low;                                                \
                acc[r][1] += w * high;                                               \
            }                                                                        \
        }                                                                            \
        for (int r = 0; r < (ROWS); r++) {                                           \
            fastdl_##type##8u *target = (fastdl_##type##8u *)((out) + r * (out_stride)); \
            if (start == 0) {                                                        \
                target[0] = acc[r][0];                                               \
                target[1] = acc[r][1];                                               \
            } else {                                                                 \
                target[0] += acc[r][0];                                              \
                target[1] += acc[r][1];                                              \
            }                                                                        \
        }                                                                            \
    }

/* out[r, j] = sum_i weight[r * weight_stride + i] * cols[i * cols_stride + j] for
   r < rows, j < width (a multiple of 16; strides in elements). */
#define FASTDL_THIN_GEMM(type)                                                       \
    FASTDL_THIN_CLONES static void fastdl_thin_gemm_##type(                          \
            const type *restrict weight, Py_ssize_t weight_stride, int rows,        \
            const type *restrict cols, Py_ssize_t cols_stride, int depth, int width, \
            type *restrict out, Py_ssize_t out_stride) {                            \
        for (int j = 0; j + 16 <= width; j += 16) {                                  \
            for (int r = 0, step; r < rows; r += step) {                             \
                /* the tile's operands named before the macro's own loop variables */ \
                const type *tile_weight = weight + r * weight_stride;                \
                const type *tile_cols = cols + j;                                    \
                type *tile_out = out + r * out_stride + j;                           \
                step = r + FASTDL_THIN_ROWS <= rows ? FASTDL_THIN_ROWS : 1;          \
                if (step == FASTDL_THIN_ROWS) {                                      \
                    FASTDL_THIN_TILE(type, FASTDL_THIN_ROWS, tile_weight, weight_stride, \
                                     tile_cols, cols_stride, depth, tile_out, out_stride) \
                } else {                                                             \
                    FASTDL_THIN_TILE(type, 1, tile_weight, weight_stride, tile_cols, \
                                     cols_stride, depth, tile_out, out_stride)       \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }
FASTDL_THIN_GEMM(float)
FASTDL_THIN_GEMM(double)

#endif  /* FASTDL_THIN_H */
