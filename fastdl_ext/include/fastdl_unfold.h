/* Unfolding the image of a stride-2 conv into im2col's column matrix, and folding
   the columns back (conv.pyx's image-batched GEMMs). Declared for Cython in
   _unfold.pxd.

   Tap (i, j) of output (oy, ox) reads padded pixel (2 oy + i, 2 ox + j): every
   other pixel of a padded row, one short strided run per output row and tap. So
   each padded row of a channel is split once into its even and odd pixels (eight
   at a time by shuffles), after which every tap's run is a contiguous copy of one
   of them (even taps j = 2 m from the even half shifted by m, odd ones from the
   odd half). Folding is the adjoint: the runs are added into the halves, which
   are interleaved back and added into the image.

   The halves are split from (and folded into) the image rows directly: copied into
   a padded row first, every vector load of the split waited on the copy's stores
   (a failed store forwarding: a third of the unfold's time).

   Scratch (fastdl_unfold_scratch values): the padded rows' halves. */

#ifndef FASTDL_UNFOLD_H
#define FASTDL_UNFOLD_H

#include <string.h>
#include "fastdl_vectors.h"

typedef struct {
    Py_ssize_t channels, height, width, kernel_h, kernel_w, pad_h, pad_w, out_h, out_w;
} fastdl_unfold_geometry;

/* Padded rows the windows read, and the values of one row's half (a multiple of 8,
   past every tap's run). */
static inline Py_ssize_t fastdl_unfold_rows(fastdl_unfold_geometry g) {
    return 2 * (g.out_h - 1) + g.kernel_h;
}
static inline Py_ssize_t fastdl_unfold_half(fastdl_unfold_geometry g) {
    Py_ssize_t half = g.out_w + (g.kernel_w - 1) / 2;
    Py_ssize_t row = (g.width + g.pad_w + 2) / 2;   /* the row itself must fit */
    half = half > row ? half : row;
    return (half + 7) / 8 * 8;
}
static inline Py_ssize_t fastdl_unfold_scratch(fastdl_unfold_geometry g) {
    return 2 * fastdl_unfold_rows(g) * fastdl_unfold_half(g);
}

#define FASTDL_UNFOLD(type)                                                         \
    /* target[0:count] = source[0:count] (add: +=); inlined into each clone of its \
       caller (called, it went through the clones' dispatch once per run) */        \
    static inline __attribute__((always_inline)) void fastdl_run_##type(            \
            type *restrict target, const type *restrict source, Py_ssize_t count,   \
            int add) {                                                              \
        Py_ssize_t i = 0;                                                           \
        if (add) {                                                                  \
            for (; i + 8 <= count; i += 8)                                          \
                *(fastdl_##type##8u *)(target + i) =                                \
                    *(const fastdl_##type##8u *)(target + i)                        \
                    + *(const fastdl_##type##8u *)(source + i);                     \
            for (; i < count; i++)                                                  \
                target[i] += source[i];                                             \
        } else {                                                                    \
            for (; i + 8 <= count; i += 8)                                          \
                *(fastdl_##type##8u *)(target + i) =                                \
                    *(const fastdl_##type##8u *)(source + i);                       \
            for (; i < count; i++)                                                  \
                target[i] = source[i];                                              \
        }                                                                           \
    }                                                                               \
    /* evens[m] = row[2 m], odds[m] = row[2 m + 1] (m < the row's pairs; merge:    \
       the adjoint, row[2 m] += evens[m], row[2 m + 1] += odds[m]) */               \
    static inline __attribute__((always_inline)) void fastdl_split_##type(          \
            type *row, Py_ssize_t width, type *evens, type *odds, int merge) {      \
        Py_ssize_t m = 0;                                                           \
        for (; 2 * m + 16 <= width; m += 8) {                                       \
            if (merge) {                                                            \
                fastdl_##type##8 a = *(const fastdl_##type##8u *)(evens + m);       \
                fastdl_##type##8 b = *(const fastdl_##type##8u *)(odds + m);        \
                *(fastdl_##type##8u *)(row + 2 * m) =                               \
                    *(const fastdl_##type##8u *)(row + 2 * m) + FASTDL_ZIP_LOW8(a, b); \
                *(fastdl_##type##8u *)(row + 2 * m + 8) =                           \
                    *(const fastdl_##type##8u *)(row + 2 * m + 8) + FASTDL_ZIP_HIGH8(a, b); \
            } else {                                                                \
                fastdl_##type##8 a = *(const fastdl_##type##8u *)(row + 2 * m);     \
                fastdl_##type##8 b = *(const fastdl_##type##8u *)(row + 2 * m + 8); \
                *(fastdl_##type##8u *)(evens + m) = FASTDL_EVEN8(a, b);             \
                *(fastdl_##type##8u *)(odds + m) = FASTDL_ODD8(a, b);               \
            }                                                                       \
        }                                                                           \
        for (; 2 * m < width; m++) {                                                \
            if (merge) {                                                            \
                row[2 * m] += evens[m];                                             \
                if (2 * m + 1 < width)                                              \
                    row[2 * m + 1] += odds[m];                                      \
            } else {                                                                \
                evens[m] = row[2 * m];                                              \
                if (2 * m + 1 < width)                                              \
                    odds[m] = row[2 * m + 1];                                       \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    /* the image rows y of a channel that the windows read into padded rows         \
       y + pad_h (< rows) of the even and odd phases (merge: the adjoint); padded   \
       column u = x + pad_w, even u hold the pixels of x's parity pad_w */          \
    static inline __attribute__((always_inline)) void fastdl_split_rows_##type(     \
            type *channel, fastdl_unfold_geometry g, type *evens, type *odds,       \
            Py_ssize_t rows, Py_ssize_t half, int merge) {                          \
        Py_ssize_t shift = g.pad_w / 2, odd_pad = g.pad_w % 2;                       \
        Py_ssize_t end = rows - g.pad_h < g.height ? rows - g.pad_h : g.height;     \
        for (Py_ssize_t y = 0; y < end; y++) {                                      \
            type *even = evens + (y + g.pad_h) * half;                              \
            type *odd = odds + (y + g.pad_h) * half;                                \
            fastdl_split_##type(channel + y * g.width, g.width,                     \
                                odd_pad ? odd + shift : even + shift,               \
                                odd_pad ? even + shift + 1 : odd + shift, merge);   \
        }                                                                           \
    }                                                                               \
    /* cols[(c kH + i) kW + j][oy out_w + ox] (rows ld apart) = padded pixel        \
       (2 oy + i, 2 ox + j) of channel c of image (C, H, W); fold: the adjoint,     \
       added into image. */                                                         \
    FASTDL_CLONES static void fastdl_unfold_s2_##type(                             \
            type *image, fastdl_unfold_geometry g, type *cols, Py_ssize_t ld,       \
            type *scratch, int fold) {                                              \
        Py_ssize_t rows = fastdl_unfold_rows(g), half = fastdl_unfold_half(g);      \
        type *evens = scratch, *odds = scratch + rows * half;                       \
        for (Py_ssize_t c = 0; c < g.channels; c++) {                               \
            type *channel = image + c * g.height * g.width;                         \
            memset(evens, 0, 2 * rows * half * sizeof(type));                       \
            if (!fold)                                                              \
                fastdl_split_rows_##type(channel, g, evens, odds, rows, half, 0);   \
            for (Py_ssize_t i = 0; i < g.kernel_h; i++)                             \
                for (Py_ssize_t j = 0; j < g.kernel_w; j++) {                       \
                    type *source = (j % 2 ? odds : evens) + i * half + j / 2;       \
                    type *column = cols + ((c * g.kernel_h + i) * g.kernel_w + j) * ld; \
                    for (Py_ssize_t oy = 0; oy < g.out_h; oy++) {                   \
                        if (fold)                                                   \
                            fastdl_run_##type(source + 2 * oy * half,               \
                                              column + oy * g.out_w, g.out_w, 1);   \
                        else                                                        \
                            fastdl_run_##type(column + oy * g.out_w,                \
                                              source + 2 * oy * half, g.out_w, 0);  \
                    }                                                               \
                }                                                                   \
            if (fold)                                                               \
                fastdl_split_rows_##type(channel, g, evens, odds, rows, half, 1);   \
        }                                                                           \
    }
FASTDL_UNFOLD(float)
FASTDL_UNFOLD(double)

#endif  /* FASTDL_UNFOLD_H */
