/* Image lanes: a vector holds one position of 8 images (direct.pyx). Declared for
   Cython in _lanes.pxd. */

#ifndef FASTDL_LANES_H
#define FASTDL_LANES_H

#include "fastdl_vectors.h"

/* Images go in and out through 8 x 8 transposes (vector shuffles):
   fastdl_lanes_pad_<type>: images [0, images) of a group, plane rows of ``width``
     values, into the padded planes' interior (rows x cols positions of 8);
   fastdl_lanes_pool_<type>: the grid (out_h x out_w positions of 8) 2x2 max pooled
     in place, a NaN winning;
   fastdl_lanes_out_<type>: ``positions`` of the grid to the images' planes (image
     l at target + l * image_stride), act(v + *shift + residual). */
#define FASTDL_SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define FASTDL_LANES(type)                                                          \
    typedef fastdl_##type##8 fastdl_lanes_##type;                                   \
    static inline void fastdl_transpose8_##type(const fastdl_lanes_##type r[8],     \
                                                fastdl_lanes_##type t[8]) {         \
        fastdl_lanes_##type a0 = FASTDL_SHUFFLE8(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13); \
        fastdl_lanes_##type a1 = FASTDL_SHUFFLE8(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15); \
        fastdl_lanes_##type a2 = FASTDL_SHUFFLE8(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13); \
        fastdl_lanes_##type a3 = FASTDL_SHUFFLE8(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15); \
        fastdl_lanes_##type a4 = FASTDL_SHUFFLE8(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13); \
        fastdl_lanes_##type a5 = FASTDL_SHUFFLE8(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15); \
        fastdl_lanes_##type a6 = FASTDL_SHUFFLE8(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13); \
        fastdl_lanes_##type a7 = FASTDL_SHUFFLE8(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15); \
        fastdl_lanes_##type b0 = FASTDL_SHUFFLE8(a0, a2, 0, 1, 8, 9, 4, 5, 12, 13);  \
        fastdl_lanes_##type b1 = FASTDL_SHUFFLE8(a0, a2, 2, 3, 10, 11, 6, 7, 14, 15); \
        fastdl_lanes_##type b2 = FASTDL_SHUFFLE8(a1, a3, 0, 1, 8, 9, 4, 5, 12, 13);  \
        fastdl_lanes_##type b3 = FASTDL_SHUFFLE8(a1, a3, 2, 3, 10, 11, 6, 7, 14, 15); \
        fastdl_lanes_##type b4 = FASTDL_SHUFFLE8(a4, a6, 0, 1, 8, 9, 4, 5, 12, 13);  \
        fastdl_lanes_##type b5 = FASTDL_SHUFFLE8(a4, a6, 2, 3, 10, 11, 6, 7, 14, 15); \
        fastdl_lanes_##type b6 = FASTDL_SHUFFLE8(a5, a7, 0, 1, 8, 9, 4, 5, 12, 13);  \
        fastdl_lanes_##type b7 = FASTDL_SHUFFLE8(a5, a7, 2, 3, 10, 11, 6, 7, 14, 15); \
        t[0] = FASTDL_SHUFFLE8(b0, b4, 0, 1, 2, 3, 8, 9, 10, 11);                   \
        t[4] = FASTDL_SHUFFLE8(b0, b4, 4, 5, 6, 7, 12, 13, 14, 15);                 \
        t[1] = FASTDL_SHUFFLE8(b1, b5, 0, 1, 2, 3, 8, 9, 10, 11);                   \
        t[5] = FASTDL_SHUFFLE8(b1, b5, 4, 5, 6, 7, 12, 13, 14, 15);                 \
        t[2] = FASTDL_SHUFFLE8(b2, b6, 0, 1, 2, 3, 8, 9, 10, 11);                   \
        t[6] = FASTDL_SHUFFLE8(b2, b6, 4, 5, 6, 7, 12, 13, 14, 15);                 \
        t[3] = FASTDL_SHUFFLE8(b3, b7, 0, 1, 2, 3, 8, 9, 10, 11);                   \
        t[7] = FASTDL_SHUFFLE8(b3, b7, 4, 5, 6, 7, 12, 13, 14, 15);                 \
    }                                                                               \
    FASTDL_CLONES static void fastdl_lanes_pad_##type(                             \
            const type *x, Py_ssize_t image_in, int images, int channels, int height, \
            int width, int rows, int cols, int pad_h, int pad_w, type *padded) {   \
        for (int c = 0; c < channels; c++)                                          \
            for (int y = 0; y < height; y++) {                                      \
                const type *source = x + ((Py_ssize_t)c * height + y) * width;      \
                type *target = padded + (((Py_ssize_t)c * rows + y + pad_h) * cols  \
                                         + pad_w) * 8;                              \
                int column = 0;                                                     \
                for (; column + 8 <= width; column += 8) {                          \
                    fastdl_lanes_##type r[8], t[8];                                 \
                    for (int k = 0; k < 8; k++) {                                   \
                        r[k] = (fastdl_lanes_##type){0};                            \
                        if (k < images)                                             \
                            r[k] = *(const fastdl_##type##8u *)(source + k * image_in \
                                                                + column);          \
                    }                                                               \
                    fastdl_transpose8_##type(r, t);                                 \
                    for (int l = 0; l < 8; l++)                                     \
                        *(fastdl_##type##8u *)(target + (Py_ssize_t)(column + l) * 8) = t[l]; \
                }                                                                   \
                for (; column < width; column++)                                    \
                    for (int k = 0; k < images; k++)                                \
                        target[(Py_ssize_t)column * 8 + k] = source[k * image_in + column]; \
            }                                                                       \
    }                                                                               \
    FASTDL_CLONES static void fastdl_lanes_pool_##type(type *grid, Py_ssize_t out_h, \
                                                       Py_ssize_t out_w) {          \
        for (Py_ssize_t y = 0; y < out_h / 2; y++)                                  \
            for (Py_ssize_t x = 0; x < out_w / 2; x++) {  /* reads stay ahead */    \
                const type *at = grid + (2 * y * out_w + 2 * x) * 8;                \
                fastdl_lanes_##type best = *(const fastdl_##type##8u *)at;          \
                const type *later[3] = {at + 8, at + out_w * 8, at + out_w * 8 + 8}; \
                for (int k = 0; k < 3; k++) {                                       \
                    fastdl_lanes_##type v = *(const fastdl_##type##8u *)later[k];   \
                    fastdl_##type##8m take = FASTDL_TAKE(best, v);                  \
                    best = (fastdl_lanes_##type)((take & (fastdl_##type##8m)v)      \
                                                 | (~take & (fastdl_##type##8m)best)); \
                }                                                                   \
                *(fastdl_##type##8u *)(grid + (y * (out_w / 2) + x) * 8) = best;    \
            }                                                                       \
    }                                                                               \
    FASTDL_CLONES static void fastdl_lanes_out_##type(                             \
            const type *grid, Py_ssize_t positions, int images, type *target,      \
            Py_ssize_t image_stride, const type *residual, const type *shift,      \
            int activate, type slope) {                                             \
        type add = shift != NULL ? *shift : (type)0;                               \
        Py_ssize_t p = 0;                                                           \
        for (; p + 8 <= positions; p += 8) {                                        \
            fastdl_lanes_##type r[8], t[8];                                         \
            for (int k = 0; k < 8; k++)                                             \
                r[k] = *(const fastdl_##type##8u *)(grid + (p + k) * 8);            \
            fastdl_transpose8_##type(r, t);                                         \
            for (int l = 0; l < images; l++) {                                      \
                fastdl_lanes_##type v = t[l];                                       \
                if (shift != NULL) v = v + add;                                     \
                if (residual != NULL)                                               \
                    v = v + *(const fastdl_##type##8u *)(residual + l * image_stride + p); \
                if (activate) {                                                     \
                    fastdl_##type##8m positive = v > 0;                             \
                    v = (fastdl_lanes_##type)(positive & (fastdl_##type##8m)v)      \
                        + slope * (fastdl_lanes_##type)(~positive & (fastdl_##type##8m)v); \
                }                                                                   \
                *(fastdl_##type##8u *)(target + l * image_stride + p) = v;          \
            }                                                                       \
        }                                                                           \
        for (; p < positions; p++)                                                  \
            for (int l = 0; l < images; l++) {                                      \
                type v = grid[p * 8 + l];                                           \
                if (shift != NULL) v = v + add;                                     \
                if (residual != NULL) v = v + residual[l * image_stride + p];       \
                target[l * image_stride + p] = activate ? FASTDL_LEAKY(v, slope) : v; \
            }                                                                       \
    }
FASTDL_LANES(float)
FASTDL_LANES(double)

#endif  /* FASTDL_LANES_H */
