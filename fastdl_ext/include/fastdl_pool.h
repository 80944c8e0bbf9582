/* 2x2 max pooling for inference plans (pool.pyx). */

#ifndef FASTDL_POOL_H
#define FASTDL_POOL_H

#include "fastdl_vectors.h"

/* Output rows [first, end) of 2x2 max pooling, row r being row r % out_h of plane
   r / out_h: the max of a window's four values, a NaN winning as in torch. In two
   passes over a few output rows at a time: the vertical max of each row pair
   (contiguous), then of each column pair of those, a stream as long as the rows
   together: LeNet's rows are 5 and 14 outputs long, too short to vectorise one
   by one. ``scratch`` holds FASTDL_POOL_SCRATCH values or one row pair's,
   whichever is more. */
#define FASTDL_POOL_SCRATCH 4096
#define FASTDL_MAX_POOL_ROWS(name, type)                                           \
    static void name(const type *restrict x, type *restrict out,                   \
                     type *restrict scratch, Py_ssize_t first, Py_ssize_t end,     \
                     int height, int out_h, int width, int out_w) {                \
        Py_ssize_t pair = 2 * (Py_ssize_t)out_w;                                   \
        Py_ssize_t chunk = pair < FASTDL_POOL_SCRATCH ? FASTDL_POOL_SCRATCH / pair : 1; \
        for (Py_ssize_t r = first; r < end;) {                                      \
            Py_ssize_t rows = chunk < end - r ? chunk : end - r;                    \
            for (Py_ssize_t k = 0; k < rows; k++) {                                 \
                Py_ssize_t row = r + k;                                             \
                const type *upper = x + (row / out_h * height + row % out_h * 2) * width; \
                fastdl_max_rows_##type(upper, upper + width, scratch + k * pair, pair); \
            }                                                                       \
            fastdl_max_pairs_##type(scratch, out + r * out_w, rows * out_w);        \
            r += rows;                                                              \
        }                                                                           \
    }
FASTDL_MAX_POOL_ROWS(fastdl_max_pool_rows_float, float)
FASTDL_MAX_POOL_ROWS(fastdl_max_pool_rows_double, double)

#endif  /* FASTDL_POOL_H */
