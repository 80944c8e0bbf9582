/* A GEMM on weights packed in panels, by the pointwise convs' register tiles
   (fastdl_pointwise_body.h), for im2col's column matrices: the forward of a conv by
   whole images (conv.pyx) multiplies its packed weights (M, K) by the images' columns
   (K, images * P, side by side) and writes each image's rows straight into the output,
   with the epilogue (bias, residual, activation) in the store. Each output sums its K
   products in order in one accumulator lane, whatever the blocking. Declared for
   Cython in conv.pyx.

   OpenBLAS packs both operands on each call and reached about 170 GFLOP/s on a stride-2
   conv's (128, 576) x (576, 256); the tiles read the columns where the unfold wrote
   them (batch 32, 64 -> 128 channels from 16x16 at stride 2: the GEMMs' 1.7 ms of the
   forward's 2.0 against the tiles' 1.4). */

#ifndef FASTDL_PANEL_GEMM_H
#define FASTDL_PANEL_GEMM_H

#include "fastdl_pointwise.h"

/* acc = the tile of ``vectors`` (1 to FASTDL_PW_WIDE) vectors of positions. */
#define FASTDL_PANEL_TILE(T, vectors, w, columns, ld, depth, acc)                        \
    ((vectors) == 3 ? fastdl_pw_tile3_##T(w, columns, ld, depth, acc)                    \
     : (vectors) == 2 ? fastdl_pw_tile2_##T(w, columns, ld, depth, acc)                  \
                      : fastdl_pw_tile1_##T(w, columns, ld, depth, acc))

/* fastdl_panel_gemm where the images' columns lie side by side and each image holds
   ``per_image`` whole vectors of positions: a tile's vectors run on across images (an
   image of 16 float32 positions alone would fill one vector of the three a tile takes),
   each stored to its own image. */
#define FASTDL_PANEL_GEMM_ACROSS(T)                                                      \
    FASTDL_PW_CLONES static void fastdl_panel_gemm_across_##T(                          \
            const T *packed, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t per_image,    \
            Py_ssize_t images, const T *x, Py_ssize_t ldx, T *out, Py_ssize_t ldout,     \
            Py_ssize_t out_image_stride, const T *bias, const T *residual, int activate, \
            T slope, int wide) {                                                         \
        const Py_ssize_t lanes = (Py_ssize_t)(64 / sizeof(T));                           \
        const Py_ssize_t vectors_in_all = per_image * images;                            \
        fastdl_pw_vec_##T acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
        fastdl_pw_vec_##T one[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
        for (Py_ssize_t q = 0; q < vectors_in_all; q += wide) {                          \
            int vectors = vectors_in_all - q < wide ? (int)(vectors_in_all - q) : wide;  \
            const T *columns = x + q * lanes;                                            \
            for (Py_ssize_t m = 0; m < rows; m += FASTDL_PW_ROWS) {                      \
                const T *w = packed + m * depth;                                         \
                int rows_here = rows - m < FASTDL_PW_ROWS ? (int)(rows - m)              \
                                                          : FASTDL_PW_ROWS;              \
                FASTDL_PANEL_TILE(T, vectors, w, columns, ldx, depth, acc);              \
                for (int j = 0; j < vectors; j++) {                                      \
                    Py_ssize_t image = (q + j) / per_image;                              \
                    Py_ssize_t at = image * out_image_stride + m * ldout                 \
                                    + (q + j) % per_image * lanes;                       \
                    for (int r = 0; r < rows_here; r++)                                  \
                        one[r][0] = acc[r][j];                                           \
                    fastdl_pw_store_##T(one, rows_here, 1, lanes, out + at,              \
                                        residual != NULL ? residual + at : NULL, ldout,  \
                                        bias != NULL ? bias + m : NULL, activate, slope); \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    }
FASTDL_PANEL_GEMM_ACROSS(float)
FASTDL_PANEL_GEMM_ACROSS(double)

/* out[b][m, p] = act(sum_k packed[m // ROWS, k, m % ROWS] * x[b][k, p] + bias[m]
   + residual[b][m, p]) for the ``images`` images, ``rows`` rows (M), ``depth`` (K) and
   ``positions`` (P) an image: image b of x at ``x + b * x_image_stride``, its rows
   ``ldx`` apart; of out (and residual) at ``out + b * out_image_stride``, rows ``ldout``
   apart. ``spill``: depth * 64 bytes of scratch (a last part of a vector of positions is
   copied there, zeros after). ``wide``: fastdl_pw_wide(). */
#define FASTDL_PANEL_GEMM(T)                                                             \
    FASTDL_PW_CLONES static void fastdl_panel_gemm_##T(                                 \
            const T *packed, Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t positions,    \
            Py_ssize_t images, const T *x, Py_ssize_t ldx, Py_ssize_t x_image_stride,     \
            T *out, Py_ssize_t ldout, Py_ssize_t out_image_stride, const T *bias,         \
            const T *residual, int activate, T slope, T *spill, int wide) {              \
        const Py_ssize_t lanes = (Py_ssize_t)(64 / sizeof(T));                           \
        fastdl_pw_vec_##T acc[FASTDL_PW_ROWS][FASTDL_PW_WIDE];                           \
        if (images > 1 && positions % lanes == 0 && x_image_stride == positions) {       \
            fastdl_panel_gemm_across_##T(packed, rows, depth, positions / lanes, images, \
                                         x, ldx, out, ldout, out_image_stride, bias,     \
                                         residual, activate, slope, wide);               \
            return;                                                                      \
        }                                                                                \
        for (Py_ssize_t b = 0; b < images; b++) {                                        \
            T *target = out + b * out_image_stride;                                      \
            const T *added = residual != NULL ? residual + b * out_image_stride : NULL;  \
            for (Py_ssize_t p = 0; p < positions;) {                                     \
                Py_ssize_t left = positions - p, cols, ld = ldx;                         \
                const T *columns = x + b * x_image_stride + p;                           \
                int vectors = left / lanes < wide ? (int)(left / lanes) : wide;          \
                if (vectors == 0) {                                                      \
                    for (Py_ssize_t k = 0; k < depth; k++) {                             \
                        memcpy(spill + k * lanes, columns + k * ldx, sizeof(T) * left);  \
                        memset(spill + k * lanes + left, 0, sizeof(T) * (lanes - left)); \
                    }                                                                    \
                    columns = spill;                                                     \
                    ld = lanes;                                                          \
                    vectors = 1;                                                         \
                    cols = left;                                                         \
                } else {                                                                 \
                    cols = vectors * lanes;                                              \
                }                                                                        \
                for (Py_ssize_t m = 0; m < rows; m += FASTDL_PW_ROWS) {                  \
                    const T *w = packed + m * depth;                                     \
                    FASTDL_PANEL_TILE(T, vectors, w, columns, ld, depth, acc);           \
                    fastdl_pw_store_##T(                                                 \
                        acc, rows - m < FASTDL_PW_ROWS ? (int)(rows - m) : FASTDL_PW_ROWS, \
                        vectors, cols, target + m * ldout + p,                           \
                        added != NULL ? added + m * ldout + p : NULL, ldout,              \
                        bias != NULL ? bias + m : NULL, activate, slope);                \
                }                                                                        \
                p += cols;                                                               \
            }                                                                            \
        }                                                                                \
    }
FASTDL_PANEL_GEMM(float)
FASTDL_PANEL_GEMM(double)

#endif
