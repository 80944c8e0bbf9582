# cython: language_level=3
"""The per-tile halves of Winograd F(2×2, 3×3)'s transforms (``winograd.pyx``), eight
tiles of a tile row at a time on 8-lane vectors.

Tile ``tx`` of a row reads input columns 2 tx .. 2 tx + 3 and writes output columns
2 tx, 2 tx + 1: the pairs are split and joined by vector shuffles, so that the
transforms run along the row's tiles at unit stride. Tile by tile, gathering from
and scattering to the 16 transformed planes, they were a third of the forward at
8 tiles a row (64 -> 64 at 16², batch 32).
"""
from fastdl_ext._activation cimport leaky_relu  # its C: FASTDL_CLONES, the 8-lane vectors
from fastdl_ext._blas cimport floating

cdef extern from *:
    """
    /* The per-tile halves of the transforms, eight tiles of a tile row at a time on
       8-lane vectors (the vector helpers of _activation.pxd), the rest one by one;
       tile by tile they were a third of the forward at 8 tiles a row.
       fastdl_winograd_input_<type>: the transformed tiles of a tile row, from its four
         input rows s0 .. s3 (``count`` values each, for row-buffer columns lo ..;
         zero rows past the image): Bᵀ down the columns into ``mixed`` (4 rows of
         ``width``, zero outside those columns on entry), then its columns, dst[(4 r + i) * plane + tx]
         = Bᵀ's column i of mixed row r at 2 tx .. 2 tx + 3 (pairs of columns split by
         shuffles).
       fastdl_winograd_rows_<type>: output rows out0 (and out1 unless NULL) of a tile
         row, width values each, = Aᵀ M A + shift; m[k * plane + tx] is M's k-th value
         of tile tx; the two columns of each tile interleaved by shuffles. */
    #define FASTDL_WINOGRAD_HELPERS(type)                                               \
        static inline void fastdl_winograd_columns_##type(                              \
                const type *restrict mixed, type *restrict dst, Py_ssize_t plane,       \
                Py_ssize_t tiles) {                                                     \
            Py_ssize_t tx = 0;                                                          \
            for (; tx + 8 <= tiles; tx += 8) {                                          \
                const type *at = mixed + 2 * tx;                                        \
                fastdl_##type##8 a = *(const fastdl_##type##8u *)at;                    \
                fastdl_##type##8 b = *(const fastdl_##type##8u *)(at + 8);              \
                fastdl_##type##8 c = *(const fastdl_##type##8u *)(at + 2);              \
                fastdl_##type##8 d = *(const fastdl_##type##8u *)(at + 10);             \
                fastdl_##type##8 a0 = FASTDL_EVEN8(a, b), a1 = FASTDL_ODD8(a, b);       \
                fastdl_##type##8 a2 = FASTDL_EVEN8(c, d), a3 = FASTDL_ODD8(c, d);       \
                *(fastdl_##type##8u *)(dst + tx) = a0 - a2;                             \
                *(fastdl_##type##8u *)(dst + plane + tx) = a1 + a2;                     \
                *(fastdl_##type##8u *)(dst + 2 * plane + tx) = a2 - a1;                 \
                *(fastdl_##type##8u *)(dst + 3 * plane + tx) = a1 - a3;                 \
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
        FASTDL_CLONES static void fastdl_winograd_rows_##type(                          \
                const type *restrict m, Py_ssize_t plane, Py_ssize_t tiles, type shift, \
                type *restrict out0, type *restrict out1, Py_ssize_t width) {           \
            Py_ssize_t tx = 0;                                                          \
            for (; tx + 8 <= tiles && 2 * tx + 16 <= width; tx += 8) {                  \
                fastdl_##type##8 p[16], top[4], bottom[4], left, right;                 \
                for (int k = 0; k < 16; k++)                                            \
                    p[k] = *(const fastdl_##type##8u *)(m + k * plane + tx);            \
                for (int q = 0; q < 4; q++) {                                           \
                    top[q] = p[q] + p[4 + q] + p[8 + q];                                \
                    bottom[q] = p[4 + q] - p[8 + q] - p[12 + q];                        \
                }                                                                       \
                left = top[0] + top[1] + top[2] + shift;                                \
                right = top[1] - top[2] - top[3] + shift;                               \
                *(fastdl_##type##8u *)(out0 + 2 * tx) = FASTDL_ZIP_LOW8(left, right);   \
                *(fastdl_##type##8u *)(out0 + 2 * tx + 8) = FASTDL_ZIP_HIGH8(left, right); \
                if (out1) {                                                             \
                    left = bottom[0] + bottom[1] + bottom[2] + shift;                   \
                    right = bottom[1] - bottom[2] - bottom[3] + shift;                  \
                    *(fastdl_##type##8u *)(out1 + 2 * tx) = FASTDL_ZIP_LOW8(left, right); \
                    *(fastdl_##type##8u *)(out1 + 2 * tx + 8) =                         \
                        FASTDL_ZIP_HIGH8(left, right);                                  \
                }                                                                       \
            }                                                                           \
            for (; tx < tiles; tx++) {                                                  \
                type top[4], bottom[4];                                                 \
                for (int q = 0; q < 4; q++) {                                           \
                    top[q] = m[q * plane + tx] + m[(4 + q) * plane + tx]                \
                        + m[(8 + q) * plane + tx];                                      \
                    bottom[q] = m[(4 + q) * plane + tx] - m[(8 + q) * plane + tx]       \
                        - m[(12 + q) * plane + tx];                                     \
                }                                                                       \
                out0[2 * tx] = top[0] + top[1] + top[2] + shift;                        \
                if (out1)                                                               \
                    out1[2 * tx] = bottom[0] + bottom[1] + bottom[2] + shift;           \
                if (2 * tx + 1 < width) {                                               \
                    out0[2 * tx + 1] = top[1] - top[2] - top[3] + shift;                \
                    if (out1)                                                           \
                        out1[2 * tx + 1] = bottom[1] - bottom[2] - bottom[3] + shift;   \
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
    """
    void _input_float "fastdl_winograd_input_float"(
        const float* s0, const float* s1, const float* s2, const float* s3, Py_ssize_t lo,
        Py_ssize_t count, float* mixed, Py_ssize_t width, float* dst, Py_ssize_t plane,
        Py_ssize_t tiles) noexcept nogil
    void _input_double "fastdl_winograd_input_double"(
        const double* s0, const double* s1, const double* s2, const double* s3, Py_ssize_t lo,
        Py_ssize_t count, double* mixed, Py_ssize_t width, double* dst, Py_ssize_t plane,
        Py_ssize_t tiles) noexcept nogil
    void _rows_float "fastdl_winograd_rows_float"(
        const float* m, Py_ssize_t plane, Py_ssize_t tiles, float shift, float* out0,
        float* out1, Py_ssize_t width) noexcept nogil
    void _adjoint_rows_float "fastdl_winograd_adjoint_rows_float"(
        const float* g0, const float* g1, Py_ssize_t width, Py_ssize_t tiles, float* dm,
        Py_ssize_t plane) noexcept nogil
    void _adjoint_rows_double "fastdl_winograd_adjoint_rows_double"(
        const double* g0, const double* g1, Py_ssize_t width, Py_ssize_t tiles, double* dm,
        Py_ssize_t plane) noexcept nogil
    void _rows_double "fastdl_winograd_rows_double"(
        const double* m, Py_ssize_t plane, Py_ssize_t tiles, double shift, double* out0,
        double* out1, Py_ssize_t width) noexcept nogil


cdef inline void _input_rows(const floating* s0, const floating* s1, const floating* s2,
                             const floating* s3, Py_ssize_t lo, Py_ssize_t count,
                             floating* mixed, Py_ssize_t width, floating* dst,
                             Py_ssize_t plane, Py_ssize_t tiles) noexcept nogil:
    """The transformed tiles of a tile row from its input rows (``fastdl_winograd_input``)."""
    if floating is float:
        _input_float(s0, s1, s2, s3, lo, count, mixed, width, dst, plane, tiles)
    else:
        _input_double(s0, s1, s2, s3, lo, count, mixed, width, dst, plane, tiles)


cdef inline void _adjoint_rows(const floating* g0, const floating* g1, Py_ssize_t width,
                               Py_ssize_t tiles, floating* dm, Py_ssize_t plane) noexcept nogil:
    """dm[k * plane + tx], k < 16: A dY Aᵀ of tile tx, dY from rows g0 and g1 (NULL: 0)."""
    if floating is float:
        _adjoint_rows_float(g0, g1, width, tiles, dm, plane)
    else:
        _adjoint_rows_double(g0, g1, width, tiles, dm, plane)


cdef inline void _tile_rows(const floating* m, Py_ssize_t plane, Py_ssize_t tiles,
                            floating shift, floating* out0, floating* out1,
                            Py_ssize_t width) noexcept nogil:
    """Output rows ``out0`` (and ``out1`` unless NULL) of a tile row = Aᵀ M A + shift."""
    if floating is float:
        _rows_float(m, plane, tiles, shift, out0, out1, width)
    else:
        _rows_double(m, plane, tiles, shift, out0, out1, width)
