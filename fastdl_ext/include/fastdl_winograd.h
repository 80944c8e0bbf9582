/* The per-tile halves of Winograd F(2x2, 3x3)'s transforms (winograd.pyx, and a conv
   chain's Winograd layers in direct.pyx; declared for Cython in _winograd.pxd), eight
   tiles of a tile row at a time on 8-lane vectors (the vector helpers of
   fastdl_vectors.h), the rest one by one; tile by tile they were a third of the
   forward at 8 tiles a row. */

#ifndef FASTDL_WINOGRAD_H
#define FASTDL_WINOGRAD_H

#include "fastdl_vectors.h"

/* fastdl_winograd_finish_<type> takes and returns a vector by value, whose ABI GCC notes
   depends on AVX (-Wpsabi): it is always inlined, never called across that boundary. */
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* fastdl_winograd_input_<type>, fastdl_winograd_rows_<type>:
   fastdl_winograd_input_<type>: the transformed tiles of a tile row, from its four
     input rows s0 .. s3 (``count`` values each, for row-buffer columns lo ..;
     zero rows past the image): Bᵀ down the columns into ``mixed`` (4 rows of
     ``width``, zero outside those columns on entry), then its columns, dst[(4 r + i) * plane + tx]
     = Bᵀ's column i of mixed row r at 2 tx .. 2 tx + 3 (pairs of columns split by
     shuffles).
   fastdl_winograd_rows_<type>: output rows out0 (and out1 unless NULL) of a tile
     row, width values each, = Aᵀ M A + shift; m[k * plane + tx] is M's k-th value
     of tile tx; the two columns of each tile interleaved by shuffles. */
/* Bᵀ along the columns of eight tiles, from the 18 values at ``at`` (tile t's
   columns at 2 t .. 2 t + 3): the pairs split into even and odd columns by SPLIT_EVEN
   and SPLIT_ODD, the four results at dst, dst + plane, dst + 2 plane, dst + 3 plane. */
#define FASTDL_WINOGRAD_COLUMN_EIGHT(type, at, dst, plane, SPLIT_EVEN, SPLIT_ODD)  \
    do {                                                                            \
        fastdl_##type##8 a = *(const fastdl_##type##8u *)(at);                      \
        fastdl_##type##8 b = *(const fastdl_##type##8u *)((at) + 8);                \
        fastdl_##type##8 c = *(const fastdl_##type##8u *)((at) + 2);                \
        fastdl_##type##8 d = *(const fastdl_##type##8u *)((at) + 10);               \
        fastdl_##type##8 a0 = SPLIT_EVEN(a, b), a1 = SPLIT_ODD(a, b);               \
        fastdl_##type##8 a2 = SPLIT_EVEN(c, d), a3 = SPLIT_ODD(c, d);               \
        *(fastdl_##type##8u *)(dst) = a0 - a2;                                      \
        *(fastdl_##type##8u *)((dst) + (plane)) = a1 + a2;                          \
        *(fastdl_##type##8u *)((dst) + 2 * (plane)) = a2 - a1;                      \
        *(fastdl_##type##8u *)((dst) + 3 * (plane)) = a1 - a3;                      \
    } while (0)
/* Aᵀ M A: y[2 r + c] = output (r, c) of a tile whose 16 products M[k] are
   AT(..., k) (a value, or a vector of eight tiles). */
#define FASTDL_SCALAR_AT(m, plane, t, k) ((m)[(k) * (plane) + (t)])
#define FASTDL_VECTOR_AT(type, m, plane, t, k)                                     \
    (*(const fastdl_##type##8u *)((m) + (k) * (plane) + (t)))
#define FASTDL_WINOGRAD_OUTPUT_TILE(value_type, y, AT, ...)                        \
    do {                                                                            \
        value_type top[4], bottom[4];                                               \
        for (int q = 0; q < 4; q++) {                                               \
            top[q] = AT(__VA_ARGS__, q) + AT(__VA_ARGS__, 4 + q)                    \
                + AT(__VA_ARGS__, 8 + q);                                           \
            bottom[q] = AT(__VA_ARGS__, 4 + q) - AT(__VA_ARGS__, 8 + q)             \
                - AT(__VA_ARGS__, 12 + q);                                          \
        }                                                                           \
        (y)[0] = top[0] + top[1] + top[2];                                          \
        (y)[1] = top[1] - top[2] - top[3];                                          \
        (y)[2] = bottom[0] + bottom[1] + bottom[2];                                 \
        (y)[3] = bottom[1] - bottom[2] - bottom[3];                                 \
    } while (0)
#define FASTDL_WINOGRAD_HELPERS(type)                                               \
    static inline void fastdl_winograd_columns_##type(                              \
            const type *restrict mixed, type *restrict dst, Py_ssize_t plane,       \
            Py_ssize_t tiles) {                                                     \
        Py_ssize_t tx = 0;                                                          \
        for (; tx + 8 <= tiles; tx += 8) {                                          \
            FASTDL_WINOGRAD_COLUMN_EIGHT(type, mixed + 2 * tx, dst + tx, plane,     \
                                         FASTDL_EVEN8, FASTDL_ODD8);                \
        }                                                                           \
        for (; tx < tiles; tx++) {                                                  \
            const type *at = mixed + 2 * tx;                                        \
            dst[tx] = at[0] - at[2];                                                \
            dst[plane + tx] = at[1] + at[2];                                        \
            dst[2 * plane + tx] = at[2] - at[1];                                    \
            dst[3 * plane + tx] = at[1] - at[3];                                    \
        }                                                                           \
    }                                                                               \
    FASTDL_CLONES static void fastdl_winograd_input_##type(                         \
            const type *s0, const type *s1, const type *s2, const type *s3,         \
            Py_ssize_t lo, Py_ssize_t count, type *restrict mixed, Py_ssize_t width, \
            type *restrict dst, Py_ssize_t plane, Py_ssize_t tiles) {               \
        for (Py_ssize_t q = 0; q < count; q++) {                                    \
            mixed[lo + q] = s0[q] - s2[q];                                          \
            mixed[width + lo + q] = s1[q] + s2[q];                                  \
            mixed[2 * width + lo + q] = s2[q] - s1[q];                              \
            mixed[3 * width + lo + q] = s1[q] - s3[q];                              \
        }                                                                           \
        for (int r = 0; r < 4; r++)                                                 \
            fastdl_winograd_columns_##type(mixed + r * width, dst + 4 * r * plane,  \
                                           plane, tiles);                           \
    }                                                                               \
    /* Aᵀ M A of tile t: y = (row 0, column 0), (0, 1), (1, 0), (1, 1). */          \
    static inline void fastdl_winograd_tile_##type(                                 \
            const type *m, Py_ssize_t plane, Py_ssize_t t, type *y) {               \
        FASTDL_WINOGRAD_OUTPUT_TILE(type, y, FASTDL_SCALAR_AT, m, plane, t);        \
    }                                                                               \
    /* act(v + add + added[0 .. 7]) (added: NULL to leave out), as the epilogues    \
       of fastdl_epilogue.h compute it */                                           \
    static inline __attribute__((always_inline)) fastdl_##type##8                   \
    fastdl_winograd_finish_##type(fastdl_##type##8 v, type add, const type *added,  \
                                  int activate, type slope) {                       \
        v = v + add;                                                                \
        if (added != NULL)                                                          \
            v += *(const fastdl_##type##8u *)added;                                 \
        if (activate) {                                                             \
            fastdl_##type##8m positive = v > 0;                                     \
            v = (fastdl_##type##8)(positive & (fastdl_##type##8m)v)                 \
                + slope * (fastdl_##type##8)(~positive & (fastdl_##type##8m)v);     \
        }                                                                           \
        return v;                                                                   \
    }                                                                               \
    /* The same for the eight tiles from t on, y[k] a vector of outputs k. */       \
    static inline __attribute__((always_inline)) void                               \
    fastdl_winograd_tiles8_##type(const type *m, Py_ssize_t plane, Py_ssize_t t,    \
                                  fastdl_##type##8 *y) {                            \
        FASTDL_WINOGRAD_OUTPUT_TILE(fastdl_##type##8, y, FASTDL_VECTOR_AT, type, m,  \
                                    plane, t);                                      \
    }                                                                               \
    FASTDL_CLONES static void fastdl_winograd_rows_##type(                          \
            const type *restrict m, Py_ssize_t plane, Py_ssize_t tiles, type shift, \
            type *restrict out0, type *restrict out1, Py_ssize_t width) {           \
        Py_ssize_t tx = 0;                                                          \
        for (; tx + 8 <= tiles && 2 * tx + 16 <= width; tx += 8) {                  \
            fastdl_##type##8 y[4], left, right;                                     \
            fastdl_winograd_tiles8_##type(m, plane, tx, y);                         \
            left = y[0] + shift;                                                    \
            right = y[1] + shift;                                                   \
            *(fastdl_##type##8u *)(out0 + 2 * tx) = FASTDL_ZIP_LOW8(left, right);   \
            *(fastdl_##type##8u *)(out0 + 2 * tx + 8) = FASTDL_ZIP_HIGH8(left, right); \
            if (out1) {                                                             \
                left = y[2] + shift;                                                \
                right = y[3] + shift;                                               \
                *(fastdl_##type##8u *)(out1 + 2 * tx) = FASTDL_ZIP_LOW8(left, right); \
                *(fastdl_##type##8u *)(out1 + 2 * tx + 8) =                         \
                    FASTDL_ZIP_HIGH8(left, right);                                  \
            }                                                                       \
        }                                                                           \
        for (; tx < tiles; tx++) {                                                  \
            type y[4];                                                              \
            fastdl_winograd_tile_##type(m, plane, tx, y);                           \
            out0[2 * tx] = y[0] + shift;                                            \
            if (out1)                                                               \
                out1[2 * tx] = y[2] + shift;                                        \
            if (2 * tx + 1 < width) {                                               \
                out0[2 * tx + 1] = y[1] + shift;                                    \
                if (out1)                                                           \
                    out1[2 * tx + 1] = y[3] + shift;                                \
            }                                                                       \
        }                                                                           \
    }
/* fastdl_winograd_adjoint_rows_<type>: dm[k * plane + tx] for k < 16 = (A dY Aᵀ)[k]
   of tile tx, dY read from the output-gradient rows g0 and g1 (zero if NULL, or
   past width). */
#define FASTDL_WINOGRAD_ADJOINT(type)                                               \
    static inline void fastdl_winograd_adjoint_tile_##type(                         \
            type g00, type g01, type g10, type g11, type *dm, Py_ssize_t plane) {   \
        type rows[4][2] = {{g00, g01}, {g00 + g10, g01 + g11},                      \
                           {g00 - g10, g01 - g11}, {-g10, -g11}};                   \
        for (int r = 0; r < 4; r++) {                                               \
            dm[(4 * r) * plane] = rows[r][0];                                       \
            dm[(4 * r + 1) * plane] = rows[r][0] + rows[r][1];                      \
            dm[(4 * r + 2) * plane] = rows[r][0] - rows[r][1];                      \
            dm[(4 * r + 3) * plane] = -rows[r][1];                                  \
        }                                                                           \
    }                                                                               \
    FASTDL_CLONES static void fastdl_winograd_adjoint_rows_##type(                  \
            const type *g0, const type *g1, Py_ssize_t width, Py_ssize_t tiles,     \
            type *restrict dm, Py_ssize_t plane) {                                  \
        Py_ssize_t tx = 0;                                                          \
        for (; tx + 8 <= tiles && 2 * tx + 16 <= width; tx += 8) {                  \
            fastdl_##type##8 a = *(const fastdl_##type##8u *)(g0 + 2 * tx);         \
            fastdl_##type##8 b = *(const fastdl_##type##8u *)(g0 + 2 * tx + 8);     \
            fastdl_##type##8 g00 = FASTDL_EVEN8(a, b), g01 = FASTDL_ODD8(a, b);     \
            fastdl_##type##8 g10 = {0}, g11 = {0};                                  \
            if (g1) {                                                               \
                a = *(const fastdl_##type##8u *)(g1 + 2 * tx);                      \
                b = *(const fastdl_##type##8u *)(g1 + 2 * tx + 8);                  \
                g10 = FASTDL_EVEN8(a, b);                                           \
                g11 = FASTDL_ODD8(a, b);                                            \
            }                                                                       \
            fastdl_##type##8 rows[4][2] = {{g00, g01}, {g00 + g10, g01 + g11},      \
                                           {g00 - g10, g01 - g11}, {-g10, -g11}};   \
            for (int r = 0; r < 4; r++) {                                           \
                *(fastdl_##type##8u *)(dm + (4 * r) * plane + tx) = rows[r][0];     \
                *(fastdl_##type##8u *)(dm + (4 * r + 1) * plane + tx) =             \
                    rows[r][0] + rows[r][1];                                        \
                *(fastdl_##type##8u *)(dm + (4 * r + 2) * plane + tx) =             \
                    rows[r][0] - rows[r][1];                                        \
                *(fastdl_##type##8u *)(dm + (4 * r + 3) * plane + tx) = -rows[r][1]; \
            }                                                                       \
        }                                                                           \
        for (; tx < tiles; tx++) {                                                  \
            Py_ssize_t ox = 2 * tx;                                                 \
            int second = ox + 1 < width;                                            \
            fastdl_winograd_adjoint_tile_##type(                                    \
                g0[ox], second ? g0[ox + 1] : 0, g1 ? g1[ox] : 0,                   \
                g1 && second ? g1[ox + 1] : 0, dm + tx, plane);                     \
        }                                                                           \
    }
FASTDL_WINOGRAD_HELPERS(float)
FASTDL_WINOGRAD_HELPERS(double)
FASTDL_WINOGRAD_ADJOINT(float)
FASTDL_WINOGRAD_ADJOINT(double)
/* A band of whole tile rows at once (a conv chain's Winograd layers), its tiles
   t = ty * tiles_x + tx numbered across rows, so that even a map of four tiles a
   row runs on whole vectors.
   fastdl_winograd_band_input_<type>: v[ξ * plane + c * channel_tiles + t] =
     (Bᵀ d B)[ξ], d read from a padded image (``padded`` at the band's first row,
     padding included; rows ``row_stride``, channels ``channel_stride`` apart). Per
     channel the column half runs once per input row (each serves two tile rows)
     into ``columns`` ([k][row parity][row / 2][tx], ``8 (tile_rows + 1) tiles_x``
     values), where a tile row's four input rows are consecutive tile runs; the row
     half then runs over the band's tiles at unit stride. Lanes from the last tile
     to ``channel_tiles`` are zeroed.
   fastdl_winograd_band_output_<type>: out rows 2 ty, 2 ty + 1 at 2 tx, 2 tx + 1 =
     act(Aᵀ M A + add + residual) of tile t (m[ξ * plane + t]; residual: NULL to
     leave out), rows ``row_stride`` (``residual_stride``) apart: the conv's
     epilogue on the way out, its output written once. Eight tiles a step where
     tiles_x is a multiple of 4 (each half of a vector then lies in one tile row),
     one by one otherwise. */
/* Even and odd lanes of a and b within each 128-bit half, [a0 a2 b0 b2 a4 a6 b4 b6]:
   one in-lane shuffle each where the ordered split takes three. Eight tiles of a
   row then sit in the order 0 1 4 5 2 3 6 7, the same for every plane, and the
   in-lane interleaves put the output columns back in order. */
#if defined(__clang__) || __GNUC__ >= 12
#  define FASTDL_EVEN_LANES8(a, b) __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14)
#  define FASTDL_ODD_LANES8(a, b) __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15)
#  define FASTDL_ZIP_LANES_LOW8(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#  define FASTDL_ZIP_LANES_HIGH8(a, b) __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#else
#  define FASTDL_EVEN_LANES8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 2, 8, 10, 4, 6, 12, 14})
#  define FASTDL_ODD_LANES8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){1, 3, 9, 11, 5, 7, 13, 15})
#  define FASTDL_ZIP_LANES_LOW8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){0, 8, 1, 9, 4, 12, 5, 13})
#  define FASTDL_ZIP_LANES_HIGH8(a, b) __builtin_shuffle(a, b, (fastdl_lanes8){2, 10, 3, 11, 6, 14, 7, 15})
#endif
#define FASTDL_WINOGRAD_BAND(type)                                                  \
    /* The column half of a row whose tiles come in whole eights, each eight in     \
       the lanes' order (FASTDL_EVEN_LANES8). */                                    \
    static inline __attribute__((always_inline)) void                               \
    fastdl_winograd_lane_columns_##type(const type *restrict row,                   \
                                        type *restrict dst, Py_ssize_t plane,       \
                                        Py_ssize_t tiles) {                         \
        for (Py_ssize_t tx = 0; tx < tiles; tx += 8) {                              \
            FASTDL_WINOGRAD_COLUMN_EIGHT(type, row + 2 * tx, dst + tx, plane,       \
                                         FASTDL_EVEN_LANES8, FASTDL_ODD_LANES8);    \
        }                                                                           \
    }                                                                               \
    /* Four tiles a row (an 8 x 8 map): the rows of a tile row's pair (2 Y, 2 Y + 1)  \
       share the vectors, one in each half, so that the column half still runs on   \
       whole vectors. */                                                            \
    static inline __attribute__((always_inline)) void                               \
    fastdl_winograd_column_pairs_##type(                                            \
            const type *image, Py_ssize_t row_stride, int tile_rows,                \
            type *restrict columns, Py_ssize_t half) {                              \
        for (int y = 0; y < 2 * tile_rows + 2; y += 2) {                            \
            const type *top = image + y * row_stride, *bottom = top + row_stride;   \
            fastdl_##type##8 a = *(const fastdl_##type##8u *)top;                   \
            fastdl_##type##8 b = *(const fastdl_##type##8u *)bottom;                \
            fastdl_##type##8 c = *(const fastdl_##type##8u *)(top + 2);             \
            fastdl_##type##8 d = *(const fastdl_##type##8u *)(bottom + 2);          \
            fastdl_##type##8 a0 = FASTDL_EVEN8(a, b), a1 = FASTDL_ODD8(a, b);       \
            fastdl_##type##8 a2 = FASTDL_EVEN8(c, d), a3 = FASTDL_ODD8(c, d);       \
            fastdl_##type##8 k[4] = {a0 - a2, a1 + a2, a2 - a1, a1 - a3};           \
            for (int q = 0; q < 4; q++)                                             \
                for (int lane = 0; lane < 8; lane++)                                \
                    columns[2 * q * half + (lane >> 2) * half + (y >> 1) * 4        \
                            + (lane & 3)] = k[q][lane];                             \
        }                                                                           \
    }                                                                               \
    FASTDL_CLONES static void fastdl_winograd_band_input_##type(                    \
            const type *padded, Py_ssize_t channel_stride, Py_ssize_t row_stride,   \
            int channels, int tile_rows, int tiles_x, type *restrict v,             \
            Py_ssize_t plane, Py_ssize_t channel_tiles, type *restrict columns) {   \
        Py_ssize_t tiles = (Py_ssize_t)tile_rows * tiles_x;                         \
        Py_ssize_t half = (Py_ssize_t)(tile_rows + 1) * tiles_x;                    \
        for (int c = 0; c < channels; c++) {                                        \
            const type *image = padded + c * channel_stride;                        \
            if (tiles_x == 4)                                                       \
                fastdl_winograd_column_pairs_##type(image, row_stride, tile_rows,   \
                                                    columns, half);                 \
            else if (tiles_x % 8 == 0)                                              \
                for (int y = 0; y < 2 * tile_rows + 2; y++)                         \
                    fastdl_winograd_lane_columns_##type(image + y * row_stride,     \
                                                        columns + (y & 1) * half    \
                                                        + (y >> 1) * tiles_x,       \
                                                        2 * half, tiles_x);         \
            else                                                                    \
                for (int y = 0; y < 2 * tile_rows + 2; y++)                         \
                    fastdl_winograd_columns_##type(image + y * row_stride,          \
                                                   columns + (y & 1) * half         \
                                                   + (y >> 1) * tiles_x,            \
                                                   2 * half, tiles_x);              \
            for (int k = 0; k < 4; k++) {                                           \
                const type *even = columns + 2 * k * half, *odd = even + half;      \
                type *dst = v + c * channel_tiles + k * plane;                      \
                Py_ssize_t t = 0;                                                   \
                for (; t + 8 <= tiles; t += 8) {                                    \
                    fastdl_##type##8 r0 = *(const fastdl_##type##8u *)(even + t);   \
                    fastdl_##type##8 r1 = *(const fastdl_##type##8u *)(odd + t);    \
                    fastdl_##type##8 r2 =                                           \
                        *(const fastdl_##type##8u *)(even + t + tiles_x);           \
                    fastdl_##type##8 r3 =                                           \
                        *(const fastdl_##type##8u *)(odd + t + tiles_x);            \
                    *(fastdl_##type##8u *)(dst + t) = r0 - r2;                      \
                    *(fastdl_##type##8u *)(dst + 4 * plane + t) = r1 + r2;          \
                    *(fastdl_##type##8u *)(dst + 8 * plane + t) = r2 - r1;          \
                    *(fastdl_##type##8u *)(dst + 12 * plane + t) = r1 - r3;         \
                }                                                                   \
                for (; t < tiles; t++) {                                            \
                    type r0 = even[t], r1 = odd[t];                                 \
                    type r2 = even[t + tiles_x], r3 = odd[t + tiles_x];             \
                    dst[t] = r0 - r2;                                               \
                    dst[4 * plane + t] = r1 + r2;                                   \
                    dst[8 * plane + t] = r2 - r1;                                   \
                    dst[12 * plane + t] = r1 - r3;                                  \
                }                                                                   \
                /* whole vectors: up to 7 values past a channel's tiles land in the \
                   next channel's (written after) or the planes' 16 of slack */     \
                for (int r = 0; r < 4; r++)                                         \
                    for (t = tiles; t < channel_tiles; t += 8)                      \
                        *(fastdl_##type##8u *)(dst + 4 * r * plane + t) =           \
                            (fastdl_##type##8){0};                                  \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    FASTDL_CLONES static void fastdl_winograd_band_output_##type(                   \
            const type *restrict m, Py_ssize_t plane, Py_ssize_t tiles,             \
            Py_ssize_t tiles_x, type *restrict out, Py_ssize_t row_stride,          \
            type add, const type *restrict residual, Py_ssize_t residual_stride,    \
            int activate, type slope) {                                             \
        Py_ssize_t t = 0;                                                           \
        for (; tiles_x % 4 == 0 && t + 8 <= tiles; t += 8) {                        \
            fastdl_##type##8 y[4];                                                  \
            fastdl_winograd_tiles8_##type(m, plane, t, y);                          \
            fastdl_##type##8 rows[4];                                               \
            if (tiles_x % 8 == 0) {   /* the lanes' order of the input transform */ \
                rows[0] = FASTDL_ZIP_LANES_LOW8(y[0], y[1]);                        \
                rows[1] = FASTDL_ZIP_LANES_LOW8(y[2], y[3]);                        \
                rows[2] = FASTDL_ZIP_LANES_HIGH8(y[0], y[1]);                       \
                rows[3] = FASTDL_ZIP_LANES_HIGH8(y[2], y[3]);                       \
            } else {                                                                \
                rows[0] = FASTDL_ZIP_LOW8(y[0], y[1]);                              \
                rows[1] = FASTDL_ZIP_LOW8(y[2], y[3]);                              \
                rows[2] = FASTDL_ZIP_HIGH8(y[0], y[1]);                             \
                rows[3] = FASTDL_ZIP_HIGH8(y[2], y[3]);                             \
            }                                                                       \
            for (int k = 0; k < 4; k++) {                                           \
                /* each half of the vector: 4 tiles of one tile row, 8 outputs a row */ \
                Py_ssize_t at = t + 4 * (k >> 1), ty = at / tiles_x, tx = at % tiles_x; \
                Py_ssize_t row = 2 * ty + (k & 1);                                  \
                *(fastdl_##type##8u *)(out + row * row_stride + 2 * tx) =           \
                    fastdl_winograd_finish_##type(                                  \
                        rows[k], add, residual != NULL                              \
                        ? residual + row * residual_stride + 2 * tx : NULL,         \
                        activate, slope);                                           \
            }                                                                       \
        }                                                                           \
        for (; t < tiles; t++) {                                                    \
            type y[4];                                                              \
            Py_ssize_t ty = t / tiles_x, tx = t % tiles_x;                          \
            fastdl_winograd_tile_##type(m, plane, t, y);                            \
            for (int k = 0; k < 4; k++) {                                           \
                Py_ssize_t row = 2 * ty + (k >> 1), column = 2 * tx + (k & 1);      \
                type v = y[k] + add;                                                \
                if (residual != NULL)                                               \
                    v += residual[row * residual_stride + column];                  \
                out[row * row_stride + column] = activate ? FASTDL_LEAKY(v, slope) : v; \
            }                                                                       \
        }                                                                           \
    }
FASTDL_WINOGRAD_BAND(float)
FASTDL_WINOGRAD_BAND(double)

#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic pop
#endif

#endif  /* FASTDL_WINOGRAD_H */
