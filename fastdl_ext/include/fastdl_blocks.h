/* The direct convolution's register blocks (direct.pyx): output channels x positions
   in registers over all taps. Declared for Cython in _blocks.pxd. */

#ifndef FASTDL_BLOCKS_H
#define FASTDL_BLOCKS_H

#include "fastdl_vectors.h"

/* One register block: acc[b][v] = sum_t weights[t][b] * source[offsets[t] + v],
   compiled for x86-64-v3 and the baseline (FASTDL_CLONES, fastdl_vectors.h). */
/* The register block is CO output channels x VECTORS 8-lane vectors of positions:
   twelve accumulators, or nine for three channels (3 x 4 left one accumulator on
   the stack, a store-to-load chain through every tap); at least eight chains
   keep two FMA pipes busy through their latency. The shapes divide common
   channel counts without padding (4: 16, 32; 6: LeNet's 6; 3: the input
   gradient of RGB convs). */
#define FASTDL_MAX_LANES 24
/* Explicit vectors of 8 lanes (GCC/Clang vector extensions; lowered to what the
   target has): left to itself the vectoriser splats the sources instead. Loads and
   stores go through an unaligned, aliasing vector type rather than memcpy into
   the arrays: an array whose address is taken stays on the stack (measured 3.5x
   slower), one only indexed by unrolled constants lives in registers. */
/* Where a block's vectors read: on the wide grid (row_vectors 0), vector v of the
   block at q reads source[q + 8 v + offset]; on a dense grid (output rows of
   8 * row_vectors positions, none dropped), vector g = q / 8 + v is the
   (g % row_vectors)-th eight of output row g / row_vectors, a row of the phase
   planes being cols long. Vectors past the grid's ``vectors`` recompute the last
   one (their results land in the wide buffer's rounding and are never read). */
typedef struct { Py_ssize_t row_vectors, cols, vectors; } fastdl_grid;
#define FASTDL_DIRECT_BLOCK(name, type, CO, VECTORS)                                \
    typedef type name##_vector __attribute__((vector_size(8 * sizeof(type))));      \
    typedef type name##_unaligned __attribute__((vector_size(8 * sizeof(type)),     \
                                                 aligned(sizeof(type)), may_alias)); \
    FASTDL_CLONES static void name(const type *restrict source,                    \
                                   const Py_ssize_t *restrict offsets, int taps,   \
                                   const type *restrict weights,                   \
                                   type *restrict wide, Py_ssize_t wide_stride,    \
                                   Py_ssize_t first, Py_ssize_t blocks,            \
                                   fastdl_grid grid) {                             \
        /* all of a channel block's position blocks in one call: a call per block   \
           cost as much as 27 taps of work */                                       \
        for (Py_ssize_t q = first; q < first + blocks * 8 * VECTORS; q += 8 * VECTORS) { \
            const type *restrict at[VECTORS];                                       \
            for (int v = 0; v < VECTORS; v++) {                                     \
                Py_ssize_t g = q / 8 + v;                                           \
                g = g < grid.vectors ? g : grid.vectors - 1;                        \
                at[v] = grid.row_vectors == 0 ? source + q + 8 * v                  \
                    : source + g / grid.row_vectors * grid.cols                     \
                      + g % grid.row_vectors * 8;                                   \
            }                                                                       \
            name##_vector acc[CO][VECTORS];                                         \
            for (int b = 0; b < CO; b++)                                            \
                for (int v = 0; v < VECTORS; v++)                                   \
                    acc[b][v] = (name##_vector){0};                                 \
            for (int t = 0; t < taps; t++) {                                        \
                name##_vector x[VECTORS];                                           \
                for (int v = 0; v < VECTORS; v++)                                   \
                    x[v] = *(const name##_unaligned *)(at[v] + offsets[t]);         \
                const type *restrict w = weights + (Py_ssize_t)t * CO;              \
                for (int b = 0; b < CO; b++)                                        \
                    for (int v = 0; v < VECTORS; v++)                               \
                        acc[b][v] += w[b] * x[v];                                   \
            }                                                                       \
            for (int b = 0; b < CO; b++)                                            \
                for (int v = 0; v < VECTORS; v++)                                   \
                    *(name##_unaligned *)(wide + b * wide_stride + q + 8 * v) =     \
                        acc[b][v];                                                  \
        }                                                                           \
    }
FASTDL_DIRECT_BLOCK(fastdl_direct_block4_float, float, 4, 3)
FASTDL_DIRECT_BLOCK(fastdl_direct_block4_double, double, 4, 3)
FASTDL_DIRECT_BLOCK(fastdl_direct_block6_float, float, 6, 2)
FASTDL_DIRECT_BLOCK(fastdl_direct_block6_double, double, 6, 2)
FASTDL_DIRECT_BLOCK(fastdl_direct_block3_float, float, 3, 3)
FASTDL_DIRECT_BLOCK(fastdl_direct_block3_double, double, 3, 3)
/* The block shape by its channel count (4, 6 or 3). */
#define FASTDL_DIRECT_BLOCKS(type)                                                  \
    static void fastdl_direct_blocks_##type(int co_block, const type *source,       \
                                            const Py_ssize_t *offsets, int taps,    \
                                            const type *weights, type *wide,        \
                                            Py_ssize_t wide_stride, Py_ssize_t first, \
                                            Py_ssize_t blocks, fastdl_grid grid) {  \
        if (co_block == 4)                                                          \
            fastdl_direct_block4_##type(source, offsets, taps, weights, wide,       \
                                        wide_stride, first, blocks, grid);          \
        else if (co_block == 6)                                                     \
            fastdl_direct_block6_##type(source, offsets, taps, weights, wide,       \
                                        wide_stride, first, blocks, grid);          \
        else                                                                        \
            fastdl_direct_block3_##type(source, offsets, taps, weights, wide,       \
                                        wide_stride, first, blocks, grid);          \
    }
FASTDL_DIRECT_BLOCKS(float)
FASTDL_DIRECT_BLOCKS(double)

#endif  /* FASTDL_BLOCKS_H */
