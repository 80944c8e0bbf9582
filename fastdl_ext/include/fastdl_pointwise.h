/* Pointwise (1x1, stride 1, unpadded, one group) convs and depthwise convs run one
   after another in one parallel region: the layers of a MobileNet's inverted residual
   blocks. Declared for Cython in pointwise.pyx.

   A pointwise conv of one image is out (M, P) = W (M, K) @ x (K, P) over its P
   positions. Its work items are blocks of rows and positions of one image; each
   element is summed by one thread over k in order, in one accumulator (a vector lane),
   so results do not depend on the blocking or the thread count. The weights are packed
   in panels of FASTDL_PW_ROWS rows, (ceil(M / rows), K, rows), zero rows at the end:
   each k of a tile reads its rows' weights as one run of broadcasts.

   A depthwise step runs over runs of whole planes: on small maps, where the CPU has
   AVX-512, by lane permutes (a plane's output in one or two vectors), by rows of whole
   vectors shifted a lane (3x3: stride 1, rows of one to four vectors; stride 2, output
   rows of one) or flat unaligned loads (stride 1, the output the input's size:
   fastdl_pointwise_body.h), else the
   depthwise loops (fastdl_depthwise.h), each step in scratch of its own (zeroed once:
   the loops keep the borders zero for one shape). A mean step averages each plane (a
   global average pool, as the pool kernels sum it). Threads take items as the direct
   chain's do (fastdl_team.h): a thread that is late joins at whatever step the others
   have reached; or, with many images, whole images through every step
   (fastdl_pw_run). */

#ifndef FASTDL_POINTWISE_H
#define FASTDL_POINTWISE_H

#include "fastdl_depthwise.h"
#include "fastdl_epilogue.h"
#include "fastdl_team.h"
#include <limits.h>
#include <stdlib.h>

#define FASTDL_PW_ROWS 8
/* Vectors of positions per tile, at most: 8 x 3 accumulators fill 24 of AVX-512's 32
   registers; with 16 (AVX2, or the baseline's SSE) one vector of 64 bytes is already
   8 x 2 of them. */
#define FASTDL_PW_WIDE 3

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && __GNUC__ >= 12
#  define FASTDL_PW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                                        "default")))
#else
#  define FASTDL_PW_CLONES FASTDL_CLONES
#endif

enum { FASTDL_PW_POINTWISE = 0, FASTDL_PW_DEPTHWISE = 1, FASTDL_PW_MEAN = 2 };

/* Lane permutes by a vector of indices (GCC's __builtin_shuffle; Clang has none for
   indices known only at run time, and there the small maps take the other loops). */
#if defined(__GNUC__) && !defined(__clang__)
#  define FASTDL_PW_PERMUTES 1
#else
#  define FASTDL_PW_PERMUTES 0
#endif

/* The small-map depthwise loops' limits: output and input vectors of one plane
   (fastdl_pointwise_body.h says why so few output vectors). */
#define FASTDL_PW_TAP_VECTORS 2
#define FASTDL_PW_IN_VECTORS 64
/* The flat depthwise loops' limits: values and columns of one plane. */
#define FASTDL_PW_FLAT_VALUES 256
#define FASTDL_PW_FLAT_WIDTH 64
/* The row loops' limit: vectors of one row. */
#define FASTDL_PW_ROW_VECTORS 4

/* Where each tap of each output vector of a small depthwise map reads (built by
   fastdl_pw_build_taps_<type>): entry e = vector * K * K + tap has its window's first
   input vector ``base[e]`` (-1: no lane inside the image), whether the window is more
   than two vectors wide, and per lane the value's index in the window and whether it
   lies inside the image (all bits set) or is a zero of the padding. */
typedef struct {
    int out_vectors, in_vectors;
    int base[FASTDL_PW_TAP_VECTORS * 25];
    char wide[FASTDL_PW_TAP_VECTORS * 25];
    long long index[FASTDL_PW_TAP_VECTORS * 25 * 8] __attribute__((aligned(64)));
    long long valid[FASTDL_PW_TAP_VECTORS * 25 * 8] __attribute__((aligned(64)));
} fastdl_pw_taps;   /* index, valid: one 64-byte vector of lanes an entry */

/* ``bytes`` zeroed on 64 bytes (tables whose vectors are read aligned), or NULL. */
static void *fastdl_pw_aligned(size_t bytes) {
    void *table;
    if (posix_memalign(&table, 64, bytes ? bytes : 64))
        return NULL;
    memset(table, 0, bytes);
    return table;
}
static fastdl_pw_taps *fastdl_pw_new_taps(void) {
    return fastdl_pw_aligned(sizeof(fastdl_pw_taps));
}

typedef struct fastdl_pw_step {
    int kind;
    Py_ssize_t images, in_channels, out_channels, positions;   /* N, K, M, P */
    Py_ssize_t row_block, col_block, row_blocks, col_blocks;   /* pointwise items */
    fastdl_dw_shape dw;                                        /* depthwise */
    const void *x, *weight, *bias, *residual;
    void *out;
    int activate, pack;   /* pack: a pointwise step copies its tiles' columns */
    double slope;
    Py_ssize_t items, planes;      /* planes: of a depthwise or mean step, N * C_out */
    const fastdl_pw_taps *taps;    /* a depthwise step's on small maps, else NULL */
    const void *columns;           /* a flat depthwise step's output columns, else NULL */
    int rows;                      /* a depthwise step run by the row loops' vectors a
                                      row (fastdl_pointwise_body.h), else 0 */
    /* a pointwise step's depthwise step after it that reads its output, run by each
       item on the item's rows (whole maps: ``col_blocks`` 1) instead of after all of
       them: no wait between the two, and the planes read from the cache they were
       written to; that step (``fused``) then has nothing left to do */
    const struct fastdl_pw_step *then;
    int fused;
    Py_ssize_t scratch_offset;     /* bytes into a thread's scratch: a depthwise step's
                                      own, or the pointwise steps' spill */
    int *taken;                    /* one per thread */
    int done, sleepers;
} fastdl_pw_step;

/* Whether the CPU runs the AVX-512 clones (their tiles may be FASTDL_PW_WIDE vectors
   wide; the others' one). */
static int fastdl_pw_wide(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    return __builtin_cpu_supports("avx512f") ? FASTDL_PW_WIDE : 1;
#else
    return 1;
#endif
}

#define PW_T float
#define PW_MASK_T int
#define PW_IOTA {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#define PW(name) fastdl_pw_##name##_float
#define PW_MEAN fastdl_mean_float
#define PW_DEPTHWISE fastdl_dw_forward_float
#include "fastdl_pointwise_body.h"
#undef PW
#undef PW_T
#undef PW_MASK_T
#undef PW_IOTA
#undef PW_DEPTHWISE
#undef PW_MEAN
#define PW_T double
#define PW_MASK_T long long
#define PW_IOTA {0, 1, 2, 3, 4, 5, 6, 7}
#define PW(name) fastdl_pw_##name##_double
#define PW_MEAN fastdl_mean_double
#define PW_DEPTHWISE fastdl_dw_forward_double
#include "fastdl_pointwise_body.h"
#undef PW
#undef PW_T
#undef PW_MASK_T
#undef PW_IOTA
#undef PW_DEPTHWISE
#undef PW_MEAN

/* Thread ``thread`` of ``threads`` runs the steps in order: items of each step until
   none is left, then waits until all of them are done. ``scratch``: this thread's.
   With ``images`` (0: step by step) the threads first take whole images, from
   ``*next``, through the first ``split`` steps, and wait for all (``*done``,
   ``*sleepers``) before the others: no waits between those steps, and an image's
   values stay in the thread's cache from one step to the next (at batch 32 the early
   steps' outputs, megabytes each, went through memory); the steps from ``split`` on,
   whose weights outweigh an image's values, share each step over all images, a
   thread's items reading one block of weights for many images. */
static void fastdl_pw_run(fastdl_pw_step *steps, int count, int thread, int threads,
                          char *scratch, int wide, int is_float, Py_ssize_t images,
                          int split, int *next, int *done, int *sleepers) {
    int k = 0;
    if (images > 0) {
        int image;
        while ((image = fastdl_next_items(next, 1)) < images) {
            if (is_float)
                fastdl_pw_image_float(steps, split, image, scratch, wide);
            else
                fastdl_pw_image_double(steps, split, image, scratch, wide);
            fastdl_items_done(done, sleepers, 1, (int)images);
        }
        fastdl_wait_done(done, sleepers, (int)images);
        k = split;
    }
    for (; k < count; k++) {
        fastdl_pw_step *s = &steps[k];
        int first, taken;
        if (s->fused && (images == 0 || k > split))
            continue;
        while ((taken = fastdl_take_items(s->taken, threads, thread, (int)s->items, 1,
                                          &first)) > 0) {
            if (is_float)
                fastdl_pw_item_float(s, first, scratch, wide);
            else
                fastdl_pw_item_double(s, first, scratch, wide);
            fastdl_items_done(&s->done, &s->sleepers, taken, (int)s->items);
        }
        fastdl_wait_done(&s->done, &s->sleepers, (int)s->items);
    }
}

#endif  /* FASTDL_POINTWISE_H */
